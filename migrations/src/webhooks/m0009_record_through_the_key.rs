//! The record finds the queue rows of its tries through the primary key, one lookup per
//! try, and deletes them by their position. Left to the planner, the delete read the whole
//! queue and compared each row with every try of the batch: the planner takes the rows a
//! worker holds for few, so it saw no reason to use the key. That cost grows with the
//! square of the batch (146 ms for a batch of 730 tries over a queue of 20,000 rows,
//! against 15 ms now) and with the size of the queue.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0009_record_through_the_key"
    }
}

/// The record, with its delete of the tries' queue rows left out (`{DELETE}`).
const RECORD: &str = r#"
-- (`worker` is qualified by the function's name wherever a column of that name is in scope:
-- a bare name would mean the column.)
--
-- Records a batch of tries (a JSON array, one object per try) in one statement: each
-- delivery `worker` still holds leaves the queue, is settled or rescheduled (a retry goes
-- back into the queue by the trigger) and gets its attempt row; returns the deliveries
-- recorded.
CREATE OR REPLACE FUNCTION webhooks.record_batch(worker uuid, tries jsonb)
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH v AS (
        SELECT * FROM jsonb_to_recordset(tries)
            AS v(tenant_id uuid, id uuid, attempt_id uuid, status text, attempt_status text,
                 code integer, body text, error text, duration_ms bigint, next_at timestamptz)
    ), held AS (
{DELETE}        RETURNING q.tenant_id, q.delivery_id
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
        RETURNING tenant_id, delivery_id
    )
    SELECT t.tenant_id, t.delivery_id FROM tries t
$fn$;
"#;

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

/// The delete of m0006, as a join the planner plans.
const BY_JOIN: &str = "        DELETE FROM webhooks.queue q
         USING v
         WHERE q.tenant_id = v.tenant_id AND q.delivery_id = v.id AND q.worker = record_batch.worker
";

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(&RECORD.replace("{DELETE}", BY_KEY))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Only the function, as m0006 had it: stepping back takes no lock on the queue here,
        // so a claim running meanwhile cannot deadlock with the steps after it.
        manager
            .get_connection()
            .execute_unprepared(&RECORD.replace("{DELETE}", BY_JOIN))
            .await?;
        Ok(())
    }
}
