//! The record finds the queue rows of its tries through the primary key, one lookup per
//! try, and deletes them by their position. Left to the planner, the delete read the whole
//! queue and compared each row with every try of the batch: the planner takes the rows a
//! worker holds for few, so it saw no reason to use the key. That cost grows with the
//! square of the batch (146 ms for a batch of 730 tries over a queue of 20,000 rows,
//! against 15 ms now) and with the size of the queue.

use sea_orm_migration::prelude::*;

use super::m0006_delivery_queue;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0009_record_through_the_key"
    }
}

/// The delete of m0006's record: a join the planner plans.
const BY_JOIN: &str = "        DELETE FROM webhooks.queue q
         USING v
         WHERE q.tenant_id = v.tenant_id AND q.delivery_id = v.id AND q.worker = record_batch.worker
";

/// The delete of this migration: each try's row looked up by key (`OFFSET 0` keeps the
/// lookup from being merged into a join the planner may turn into a scan of the whole
/// queue), then deleted by position. A row another worker has leased since is left alone.
const BY_KEY: &str = "        DELETE FROM webhooks.queue q
         WHERE q.ctid = ANY (ARRAY(
                   SELECT k.ctid FROM v CROSS JOIN LATERAL (
                       SELECT r.ctid FROM webhooks.queue r
                        WHERE r.tenant_id = v.tenant_id AND r.delivery_id = v.id
                       OFFSET 0) k))
           AND q.worker = record_batch.worker
";

/// m0006's record with the delete by key; everything else is the same.
pub(super) fn record() -> String {
    super::amended(m0006_delivery_queue::RECORD, BY_JOIN, BY_KEY)
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(manager, &record()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Only the function, as m0006 had it: stepping back takes no lock on the queue here,
        // so a claim running meanwhile cannot deadlock with the steps after it.
        super::execute(manager, m0006_delivery_queue::RECORD).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_record_differs_from_m0006s_only_in_its_delete() {
        let sql = super::record();
        assert!(sql.contains(super::BY_KEY));
        assert!(!sql.contains("USING v"));
        assert_eq!(
            sql.len() + super::BY_JOIN.len() - super::BY_KEY.len(),
            super::m0006_delivery_queue::RECORD.len()
        );
    }
}
