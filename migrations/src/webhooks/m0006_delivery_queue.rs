//! Deliveries waiting for a try, and those being tried, move to a narrow queue of their own,
//! `webhooks.queue`: one row per pending delivery, with the time it is due (`at`, indexed)
//! and the lease a worker holds on it (`worker`, `lease_until`, on the row itself). Before,
//! a claim's scan of due deliveries stepped past every delivery in flight or waiting for
//! its record and probed `leases` for each, four buffers a row; now the lease is on the
//! row the scan already reads. A claim writes no indexed column of the queue, so its update
//! stays on the row's page (HOT, the table keeps room for it), and the `at` index only ever
//! gains entries at or before the time they are due: a lease written into `at` would leave
//! a dead entry in the future with every delivery, and claims would step over those as
//! they came due. The record takes the row out of the queue; a retry puts it back with its
//! next time. The delivery's own row is written once per try, at record time, and with no
//! indexed column changing, that write can stay on its page as well where the page has
//! room (the table keeps a fifth of each page free for it).
//!
//! Rows enter the queue by triggers on `deliveries`: when a delivery is inserted pending, and
//! when an update makes it pending or moves its next try (manual retry, recover, a retry
//! recorded), so every writer of `deliveries`, a service of the previous version during a
//! rolling update included, keeps the queue whole.
//!
//! `webhooks.leases` stays for a claim or record of the previous version that began before
//! this step commits and waited for its locks: it runs its own body against the new tables.
//! Live leases stay in it until they run out, so such a claim skips what is in flight and
//! such a record finds its lease; triggers carry its writes into the queue: a lease it takes
//! holds the queue row too, or is refused where another worker holds that row, and a lease
//! it deletes frees the queue row, due when the delivery now is.

use sea_orm_migration::prelude::*;

use super::{m0001_initial::tenant_rls, m0005_lease_table};
use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_delivery_queue"
    }
}

/// The record of this migration, on its own so that a later one can state its changes to it
/// and step back to it.
pub(super) const RECORD: &str = r#"-- (`worker` is qualified by the function's name wherever a column of that name is in scope:
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
        DELETE FROM webhooks.queue q
         USING v
         WHERE q.tenant_id = v.tenant_id AND q.delivery_id = v.id AND q.worker = record_batch.worker
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
        RETURNING tenant_id, delivery_id
    )
    SELECT t.tenant_id, t.delivery_id FROM tries t
$fn$;
"#;

/// The release of this migration, on its own so that a later one can state its change to it
/// and step back to it.
pub(super) const RELEASE: &str = r#"-- Hands back what a stopping worker still holds (claimed, not recorded): due again at once,
-- for another worker, without waiting for the lease to run out. (A held row was due when
-- it was claimed, which keeps the search to the queue's due rows.)
CREATE OR REPLACE FUNCTION webhooks.release_leases(worker uuid)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH released AS (
        UPDATE webhooks.queue q SET worker = NULL, lease_until = NULL
         WHERE q.at <= now() AND q.worker = release_leases.worker
        RETURNING 1
    )
    SELECT count(*) FROM released
$fn$;
"#;

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let rls = tenant_rls("queue");
        let sql = format!(
            r#"
-- One row per pending delivery, due at `at`; `worker` holds it until `lease_until`.
CREATE TABLE IF NOT EXISTS webhooks.queue (
    tenant_id    uuid NOT NULL,
    delivery_id  uuid NOT NULL,
    endpoint_id  uuid NOT NULL,
    at           timestamptz NOT NULL,
    worker       uuid,
    lease_until  timestamptz,
    PRIMARY KEY (tenant_id, delivery_id),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES webhooks.deliveries (tenant_id, id)
        ON DELETE CASCADE
) WITH (fillfactor = 50);
CREATE INDEX IF NOT EXISTS queue_due ON webhooks.queue (at);
{rls}
GRANT SELECT ON webhooks.queue TO {RUNTIME_GROUP};

-- Every pending delivery is queued; one a worker holds a live lease on keeps its lease.
INSERT INTO webhooks.queue (tenant_id, delivery_id, endpoint_id, at, worker, lease_until)
SELECT d.tenant_id, d.id, d.endpoint_id, COALESCE(d.next_attempt_at, now()),
       CASE WHEN l.until > now() THEN l.worker END,
       CASE WHEN l.until > now() THEN l.until END
  FROM webhooks.deliveries d
  LEFT JOIN webhooks.leases l ON l.tenant_id = d.tenant_id AND l.delivery_id = d.id
 WHERE d.status = 'pending'
ON CONFLICT DO NOTHING;
DELETE FROM webhooks.leases WHERE until <= now();

-- A lease the previous claim takes holds the queue row as well, if that row is free or
-- already the same worker's; otherwise the lease is refused and the claim leaves the
-- delivery alone. (A BEFORE INSERT trigger also runs for a row that then meets a lease
-- already there; a live one is on the queue row too, so it is refused here as well.)
CREATE OR REPLACE FUNCTION webhooks.lease_into_queue()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE webhooks.queue q SET worker = NEW.worker, lease_until = NEW.until
     WHERE q.tenant_id = NEW.tenant_id AND q.delivery_id = NEW.delivery_id
       AND (q.lease_until IS NULL OR q.lease_until <= now() OR q.worker = NEW.worker);
    IF FOUND THEN
        RETURN NEW;
    END IF;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION webhooks.lease_into_queue() FROM PUBLIC;

-- A lease the previous record or release deletes frees the queue row it holds (the same
-- worker and time: a lease purged long after leaves a later one alone), due when the
-- delivery now is.
CREATE OR REPLACE FUNCTION webhooks.lease_out_of_queue()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    UPDATE webhooks.queue q
       SET worker = NULL, lease_until = NULL, at = COALESCE(d.next_attempt_at, q.at)
      FROM webhooks.deliveries d
     WHERE q.tenant_id = OLD.tenant_id AND q.delivery_id = OLD.delivery_id
       AND q.worker = OLD.worker AND q.lease_until = OLD.until
       AND d.tenant_id = q.tenant_id AND d.id = q.delivery_id;
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION webhooks.lease_out_of_queue() FROM PUBLIC;

DROP TRIGGER IF EXISTS lease_taken ON webhooks.leases;
CREATE TRIGGER lease_taken BEFORE INSERT OR UPDATE ON webhooks.leases
    FOR EACH ROW EXECUTE FUNCTION webhooks.lease_into_queue();
DROP TRIGGER IF EXISTS lease_given_back ON webhooks.leases;
CREATE TRIGGER lease_given_back AFTER DELETE ON webhooks.leases
    FOR EACH ROW EXECUTE FUNCTION webhooks.lease_out_of_queue();

-- The queue finds what is due; `deliveries` needs no index on it, and its rows keep room
-- for the record's update to stay on their page.
DROP INDEX IF EXISTS webhooks.deliveries_due;
ALTER TABLE webhooks.deliveries SET (fillfactor = 80);

-- Queues a delivery that became pending or whose next try moved. A live lease is left as
-- it is: the try in flight settles the delivery, and a second one must not start beside it.
CREATE OR REPLACE FUNCTION webhooks.queue_delivery()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO webhooks.queue AS q (tenant_id, delivery_id, endpoint_id, at)
    VALUES (NEW.tenant_id, NEW.id, NEW.endpoint_id, NEW.next_attempt_at)
    ON CONFLICT (tenant_id, delivery_id) DO UPDATE
       SET at = excluded.at, worker = NULL, lease_until = NULL
     WHERE q.lease_until IS NULL OR q.lease_until <= now();
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION webhooks.queue_delivery() FROM PUBLIC;

DROP TRIGGER IF EXISTS queue_inserted ON webhooks.deliveries;
CREATE TRIGGER queue_inserted AFTER INSERT ON webhooks.deliveries
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.next_attempt_at IS NOT NULL)
    EXECUTE FUNCTION webhooks.queue_delivery();
DROP TRIGGER IF EXISTS queue_rescheduled ON webhooks.deliveries;
CREATE TRIGGER queue_rescheduled AFTER UPDATE OF status, next_attempt_at ON webhooks.deliveries
    FOR EACH ROW WHEN (NEW.status = 'pending' AND NEW.next_attempt_at IS NOT NULL
                       AND (OLD.status IS DISTINCT FROM NEW.status
                            OR OLD.next_attempt_at IS DISTINCT FROM NEW.next_attempt_at))
    EXECUTE FUNCTION webhooks.queue_delivery();

-- Claims due deliveries of every tenant, at most `per_endpoint` in flight per endpoint
-- counting the worker's own (`busy_*`), leases them to `worker` and returns what sending
-- needs. Candidates are due rows without a live lease (the leases in flight are among the
-- first due, and are stepped past on their own rows). They are read without locks; only
-- the rows taken are locked (SKIP LOCKED), which re-reads them, so a row another worker
-- has meanwhile leased or recorded is left alone. Deliveries of a disabled or deleted
-- endpoint are settled as failed here, without a try, and leave the queue.
CREATE OR REPLACE FUNCTION webhooks.claim_batch(
    worker uuid, batch integer, per_endpoint integer, lease_secs integer,
    busy_endpoints uuid[], busy_counts integer[])
RETURNS TABLE (tenant_id uuid, id uuid, endpoint_id uuid, payload text, attempt_count integer,
    url text, endpoint_version bigint, secret_enc bytea, secret_nonce bytea,
    previous_secret_enc bytea, previous_secret_nonce bytea,
    previous_secret_expires_at timestamptz, failing_since timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
BEGIN
RETURN QUERY
    WITH busy AS (
        SELECT b.endpoint_id, b.n FROM unnest(busy_endpoints, busy_counts) AS b(endpoint_id, n)
    ), due AS (
        SELECT q.tenant_id, q.delivery_id, q.endpoint_id, q.at
          FROM webhooks.queue q
         WHERE q.at <= now() AND (q.lease_until IS NULL OR q.lease_until <= now())
           AND NOT EXISTS (SELECT 1 FROM busy b
                            WHERE b.endpoint_id = q.endpoint_id AND b.n >= per_endpoint)
         ORDER BY q.at
         LIMIT batch * 4
    ), ranked AS (
        SELECT c.tenant_id, c.delivery_id, c.at,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.at, c.delivery_id)
                 + COALESCE((SELECT b.n FROM busy b WHERE b.endpoint_id = c.endpoint_id), 0) AS slot
          FROM due c
    ), picked AS (
        SELECT r.tenant_id, r.delivery_id FROM ranked r
         WHERE r.slot <= per_endpoint
         ORDER BY r.at
         LIMIT batch
    ), locked AS (
        SELECT q.tenant_id, q.delivery_id, q.at
          FROM picked p
          JOIN webhooks.queue q ON q.tenant_id = p.tenant_id AND q.delivery_id = p.delivery_id
         -- Still free once locked.
         WHERE q.lease_until IS NULL OR q.lease_until <= now()
           FOR NO KEY UPDATE OF q SKIP LOCKED
    ), chosen AS (
        SELECT l.tenant_id, l.delivery_id AS id, d.endpoint_id, d.payload, d.attempt_count, l.at,
               d.status = 'pending' AND e.enabled AND e.deleted_at IS NULL AS live,
               d.status = 'pending' AS pending, e.url, e.version,
               e.secret_enc, e.secret_nonce, e.previous_secret_enc, e.previous_secret_nonce,
               e.previous_secret_expires_at, e.failing_since
          FROM locked l
          JOIN webhooks.deliveries d ON d.tenant_id = l.tenant_id AND d.id = l.delivery_id
          JOIN webhooks.endpoints e ON e.tenant_id = d.tenant_id AND e.id = d.endpoint_id
    ), settled AS (
        UPDATE webhooks.deliveries d
           SET status = 'failed', next_attempt_at = NULL, updated_at = now()
          FROM chosen c
         WHERE c.pending AND NOT c.live AND d.tenant_id = c.tenant_id AND d.id = c.id
    ), dropped AS (
        DELETE FROM webhooks.queue q
         USING chosen c
         WHERE NOT c.live AND q.tenant_id = c.tenant_id AND q.delivery_id = c.id
    ), leased AS (
        UPDATE webhooks.queue q
           SET worker = claim_batch.worker, lease_until = now() + make_interval(secs => lease_secs)
          FROM chosen c
         WHERE c.live AND q.tenant_id = c.tenant_id AND q.delivery_id = c.id
        RETURNING q.tenant_id, q.delivery_id
    )
    SELECT c.tenant_id, c.id, c.endpoint_id, c.payload, c.attempt_count, c.url, c.version,
           c.secret_enc, c.secret_nonce, c.previous_secret_enc, c.previous_secret_nonce,
           c.previous_secret_expires_at, c.failing_since
      FROM leased k
      JOIN chosen c ON c.tenant_id = k.tenant_id AND c.id = k.delivery_id
     ORDER BY c.at;
END
$fn$;

{RECORD}
{RELEASE}"#
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // The queue holds every lease: its live ones make the lease table again. The due
        // index comes back.
        db.execute_unprepared(
            "DROP TRIGGER IF EXISTS lease_taken ON webhooks.leases;
             DROP TRIGGER IF EXISTS lease_given_back ON webhooks.leases;
             DROP FUNCTION IF EXISTS webhooks.lease_into_queue();
             DROP FUNCTION IF EXISTS webhooks.lease_out_of_queue();
             DELETE FROM webhooks.leases;
             INSERT INTO webhooks.leases (tenant_id, delivery_id, worker, until)
             SELECT q.tenant_id, q.delivery_id, q.worker, q.lease_until
               FROM webhooks.queue q
              WHERE q.worker IS NOT NULL AND q.lease_until > now();
             DROP TRIGGER IF EXISTS queue_inserted ON webhooks.deliveries;
             DROP TRIGGER IF EXISTS queue_rescheduled ON webhooks.deliveries;
             DROP FUNCTION IF EXISTS webhooks.queue_delivery();
             DROP TABLE IF EXISTS webhooks.queue;
             ALTER TABLE webhooks.deliveries RESET (fillfactor);
             CREATE INDEX IF NOT EXISTS deliveries_due ON webhooks.deliveries (next_attempt_at)
                 WHERE status = 'pending';",
        )
        .await?;
        // The claim, record and release of m0005.
        m0005_lease_table::Migration.up(manager).await
    }
}
