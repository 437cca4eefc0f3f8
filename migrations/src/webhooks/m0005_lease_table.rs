//! Leases move to a table of their own, so a delivery's row is written once per try (when
//! the try is recorded) instead of twice: before, the claim updated the row as well, and
//! neither update could be HOT because `status` and `next_attempt_at` are indexed. A leased
//! delivery stays `pending`; its lease row (inserted by the claim, deleted by the record)
//! keeps other workers off it until it runs out. The claim is PL/pgSQL with a generic plan,
//! planned once per connection instead of on every call.
//!
//! `deliveries.lease_until` and `lease_token` are no longer written; they stay so that a
//! service of the previous version, still running during a rolling update, keeps working.

use sea_orm_migration::prelude::*;

use super::{
    m0001_initial::{self, tenant_rls},
    m0003_batched_delivery,
};
use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_lease_table"
    }
}

/// The sweep as this step leaves it; a later step that changes it steps back to it.
pub(super) const PURGE: &str = r#"-- Payloads are kept for the retention period; attempts go with their delivery. Leases that
-- ran out a day ago hold nothing back (a run-out lease is taken over like no lease); they
-- are removed too.
CREATE OR REPLACE FUNCTION webhooks.purge(retention_secs bigint)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM webhooks.deliveries d
         WHERE d.created_at < now() - make_interval(secs => retention_secs)
           AND d.status IN ('succeeded', 'failed')
        RETURNING 1
    ), seen AS (
        DELETE FROM webhooks.inbound_seen s
         WHERE s.received_at < now() - interval '1 day'
        RETURNING 1
    ), stale AS (
        DELETE FROM webhooks.leases l
         WHERE l.until < now() - interval '1 day'
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM seen) * 0
           + (SELECT count(*) FROM stale) * 0
$fn$;
"#;

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let rls = tenant_rls("leases");
        let sql = format!(
            r#"
-- One row per delivery being tried: which worker holds it, and until when.
CREATE TABLE IF NOT EXISTS webhooks.leases (
    tenant_id    uuid NOT NULL,
    delivery_id  uuid NOT NULL,
    worker       uuid NOT NULL,
    until        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, delivery_id)
);
{rls}
GRANT SELECT ON webhooks.leases TO {RUNTIME_GROUP};

-- Deliveries leased by the previous claim keep their lease, now as a row.
INSERT INTO webhooks.leases (tenant_id, delivery_id, worker, until)
SELECT d.tenant_id, d.id, d.lease_token, COALESCE(d.lease_until, now())
  FROM webhooks.deliveries d
 WHERE d.status = 'delivering' AND d.lease_token IS NOT NULL
ON CONFLICT DO NOTHING;
UPDATE webhooks.deliveries
   SET status = 'pending', next_attempt_at = COALESCE(next_attempt_at, now()),
       lease_until = NULL, lease_token = NULL
 WHERE status = 'delivering';
DROP INDEX IF EXISTS webhooks.deliveries_lease;

-- Claims due deliveries of every tenant that no live lease holds, at most `per_endpoint`
-- in flight per endpoint counting the worker's own (`busy_*`), leases them to `worker` and
-- returns what sending needs. Candidates are read without locks; only the rows taken are
-- locked (SKIP LOCKED), which re-reads them, so a delivery another worker has meanwhile
-- recorded is left alone. Two workers taking the same row meet on the lease's key: the
-- second finds the first's lease and skips it, unless that lease has run out. Deliveries
-- of a disabled or deleted endpoint are settled as failed here, without a try.
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
        SELECT d.tenant_id, d.id, d.endpoint_id, d.next_attempt_at AS at
          FROM webhooks.deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (SELECT 1 FROM busy b
                            WHERE b.endpoint_id = d.endpoint_id AND b.n >= per_endpoint)
           AND NOT EXISTS (SELECT 1 FROM webhooks.leases l
                            WHERE l.tenant_id = d.tenant_id AND l.delivery_id = d.id
                              AND l.until > now())
         ORDER BY d.next_attempt_at
         LIMIT batch * 4
    ), ranked AS (
        SELECT c.tenant_id, c.id, c.at,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.at, c.id)
                 + COALESCE((SELECT b.n FROM busy b WHERE b.endpoint_id = c.endpoint_id), 0) AS slot
          FROM due c
    ), picked AS (
        SELECT r.tenant_id, r.id FROM ranked r
         WHERE r.slot <= per_endpoint
         ORDER BY r.at
         LIMIT batch
    ), locked AS (
        SELECT d.tenant_id, d.id, d.endpoint_id, d.payload, d.attempt_count, d.next_attempt_at AS at
          FROM picked p
          JOIN webhooks.deliveries d ON d.tenant_id = p.tenant_id AND d.id = p.id
         -- Still due once locked. (A CASE, so that no plan reads the due index for it.)
         WHERE CASE WHEN d.status = 'pending' THEN d.next_attempt_at <= now() ELSE false END
           FOR NO KEY UPDATE OF d SKIP LOCKED
    ), chosen AS (
        SELECT l.tenant_id, l.id, l.endpoint_id, l.payload, l.attempt_count, l.at,
               (e.enabled AND e.deleted_at IS NULL) AS live, e.url, e.version,
               e.secret_enc, e.secret_nonce, e.previous_secret_enc, e.previous_secret_nonce,
               e.previous_secret_expires_at, e.failing_since
          FROM locked l
          JOIN webhooks.endpoints e ON e.tenant_id = l.tenant_id AND e.id = l.endpoint_id
    ), settled AS (
        UPDATE webhooks.deliveries d
           SET status = 'failed', next_attempt_at = NULL, updated_at = now()
          FROM chosen c
         WHERE NOT c.live AND d.tenant_id = c.tenant_id AND d.id = c.id
    ), leased AS (
        INSERT INTO webhooks.leases AS l (tenant_id, delivery_id, worker, until)
        SELECT c.tenant_id, c.id, claim_batch.worker, now() + make_interval(secs => lease_secs)
          FROM chosen c
         WHERE c.live
        ON CONFLICT (tenant_id, delivery_id) DO UPDATE
           SET worker = excluded.worker, until = excluded.until
         WHERE l.until <= now()
        RETURNING l.tenant_id, l.delivery_id
    )
    SELECT c.tenant_id, c.id, c.endpoint_id, c.payload, c.attempt_count, c.url, c.version,
           c.secret_enc, c.secret_nonce, c.previous_secret_enc, c.previous_secret_nonce,
           c.previous_secret_expires_at, c.failing_since
      FROM leased k
      JOIN chosen c ON c.tenant_id = k.tenant_id AND c.id = k.delivery_id
     ORDER BY c.at;
END
$fn$;

-- (`worker` is qualified by the function's name wherever a column of that name is in scope:
-- a bare name would mean the column.)
--
-- Records a batch of tries (a JSON array, one object per try) in one statement: each
-- delivery whose lease `worker` still holds is settled or rescheduled, gets its attempt row
-- and loses its lease; returns the deliveries recorded.
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
        DELETE FROM webhooks.leases l
         USING v
         WHERE l.tenant_id = v.tenant_id AND l.delivery_id = v.id AND l.worker = record_batch.worker
        RETURNING l.tenant_id, l.delivery_id
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

-- Hands back what a stopping worker still holds (claimed, not recorded): due again at once,
-- for another worker, without waiting for the lease to run out.
CREATE OR REPLACE FUNCTION webhooks.release_leases(worker uuid)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH released AS (
        DELETE FROM webhooks.leases l WHERE l.worker = release_leases.worker
        RETURNING 1
    )
    SELECT count(*) FROM released
$fn$;

{PURGE}"#
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // Leased deliveries go back to the previous form of a lease.
        db.execute_unprepared(
            "UPDATE webhooks.deliveries d
                SET status = 'delivering', lease_until = l.until, lease_token = l.worker
               FROM webhooks.leases l
              WHERE d.tenant_id = l.tenant_id AND d.id = l.delivery_id AND d.status = 'pending';
             DROP TABLE IF EXISTS webhooks.leases;",
        )
        .await?;
        // The claim, record and release of m0003 and its index; the sweep of m0001.
        m0003_batched_delivery::Migration.up(manager).await?;
        db.execute_unprepared(m0001_initial::PURGE).await?;
        Ok(())
    }
}
