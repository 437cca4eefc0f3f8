//! The record carries each try through the statement that takes its delivery out of the
//! queue, instead of joining the tries back to what that statement returned. Planned with
//! a few rows expected, that join read every try once per delivery recorded, so its cost
//! grew with the square of the batch: the whole record took about 9.4 ms for 128 tries
//! and 254 ms for 1,000 (the largest batch a worker records), against 5.5 ms and 32 ms
//! now. Each try now finds its queue row through the primary key, the
//! delete returns the try with it, and the update of the delivery and the insert of the
//! attempt read the rows that came before them, one each.

use sea_orm_migration::prelude::*;

use super::m0010_record_from_arrays;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0012_record_through_the_delete"
    }
}

/// m0010's steps after the tries are read, and this migration's.
const BY_JOINS: &str = "    ), held AS (
        DELETE FROM webhooks.queue q
         WHERE q.ctid = ANY (ARRAY(
                   SELECT k.ctid FROM v CROSS JOIN LATERAL (
                       SELECT r.ctid FROM webhooks.queue r
                        WHERE r.tenant_id = v.tenant_id AND r.delivery_id = v.id
                       OFFSET 0) k))
           AND q.worker = record_tries.worker
        RETURNING q.tenant_id, q.delivery_id
    ), done AS (
        UPDATE webhooks.deliveries d
           SET status = v.status, attempt_count = d.attempt_count + 1,
               next_attempt_at = v.next_at, updated_at = now()
          FROM v JOIN held h ON h.tenant_id = v.tenant_id AND h.delivery_id = v.id
         WHERE d.tenant_id = v.tenant_id AND d.id = v.id
        RETURNING d.tenant_id, d.id
    ), tries AS (
        INSERT INTO webhooks.attempts (tenant_id, id, delivery_id, status, response_code,
                                       response_body, error, duration_ms, next_attempt_at)
        SELECT v.tenant_id, v.attempt_id, v.id, v.attempt_status, v.code, v.body, v.error,
               v.duration_ms, v.next_at
          FROM v JOIN done ON done.tenant_id = v.tenant_id AND done.id = v.id
";
/// Each try with the position of its queue row (`OFFSET 0` keeps the lookup by key from
/// being merged into a join the planner may turn into a scan of the whole queue); the
/// delete by position returns the try, and each step after reads the one before it. A row
/// another worker has leased since is left alone, and so is its delivery.
const THROUGH_DELETE: &str = "    ), k AS (
        SELECT v.*, r.ctid AS row_at FROM v CROSS JOIN LATERAL (
            SELECT r.ctid FROM webhooks.queue r
             WHERE r.tenant_id = v.tenant_id AND r.delivery_id = v.id
            OFFSET 0) r
    ), held AS (
        DELETE FROM webhooks.queue q
         USING k
         WHERE q.ctid = k.row_at AND q.worker = record_tries.worker
        RETURNING k.*
    ), done AS (
        UPDATE webhooks.deliveries d
           SET status = h.status, attempt_count = d.attempt_count + 1,
               next_attempt_at = h.next_at, updated_at = now()
          FROM held h
         WHERE d.tenant_id = h.tenant_id AND d.id = h.id
        RETURNING h.*
    ), tries AS (
        INSERT INTO webhooks.attempts (tenant_id, id, delivery_id, status, response_code,
                                       response_body, error, duration_ms, next_attempt_at)
        SELECT t.tenant_id, t.attempt_id, t.id, t.attempt_status, t.code, t.body, t.error,
               t.duration_ms, t.next_at
          FROM done t
";

/// m0010's record with the tries carried through the delete; everything else is the same.
fn record() -> String {
    super::amended(
        &m0010_record_from_arrays::record(),
        BY_JOINS,
        THROUGH_DELETE,
    )
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(manager, &record()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Only the function, as m0010 had it: stepping back takes no lock on the queue.
        super::execute(manager, &m0010_record_from_arrays::record()).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_record_differs_from_m0010s_only_in_its_steps() {
        let sql = super::record();
        assert!(sql.contains(super::THROUGH_DELETE));
        assert!(!sql.contains("FROM v JOIN"));
        assert_eq!(
            sql.len() + super::BY_JOINS.len() - super::THROUGH_DELETE.len(),
            super::m0010_record_from_arrays::record().len()
        );
    }
}
