//! The delivery worker claims a batch with everything it needs to send (payload, URL,
//! sealed secrets) in one statement, keeps per-endpoint in-flight counts itself, and records
//! a batch of tries in one statement. Each claim carries the worker's lease token: only the
//! holder of a lease records or releases it, so a worker whose lease ran out cannot
//! overwrite the result of the one that took the delivery over.

use sea_orm_migration::prelude::*;

use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_batched_delivery"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = format!(
            r#"
ALTER TABLE webhooks.deliveries ADD COLUMN IF NOT EXISTS lease_token uuid;

-- Expired leases are found by their expiry; per-endpoint counting of leased rows is gone.
CREATE INDEX IF NOT EXISTS deliveries_lease ON webhooks.deliveries (lease_until)
    WHERE status = 'delivering';
DROP INDEX IF EXISTS webhooks.deliveries_leased;

-- Claims due deliveries (and those whose lease ran out) of every tenant with SKIP LOCKED,
-- at most `per_endpoint` in flight per endpoint counting the worker's own (`busy_*`), leases
-- them to `worker` and returns what sending needs. Deliveries of a disabled or deleted
-- endpoint are settled as failed here, without a try.
CREATE OR REPLACE FUNCTION webhooks.claim_batch(
    worker uuid, batch integer, per_endpoint integer, lease_secs integer,
    busy_endpoints uuid[], busy_counts integer[])
RETURNS TABLE (tenant_id uuid, id uuid, endpoint_id uuid, payload text, attempt_count integer,
    url text, endpoint_version bigint, secret_enc bytea, secret_nonce bytea,
    previous_secret_enc bytea, previous_secret_nonce bytea,
    previous_secret_expires_at timestamptz, failing_since timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH busy AS (
        SELECT b.endpoint_id, b.n FROM unnest(busy_endpoints, busy_counts) AS b(endpoint_id, n)
    ), due AS (
        SELECT d.tenant_id, d.id, d.endpoint_id, d.next_attempt_at AS at
          FROM webhooks.deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (SELECT 1 FROM busy b
                            WHERE b.endpoint_id = d.endpoint_id AND b.n >= per_endpoint)
         ORDER BY d.next_attempt_at
         LIMIT batch * 4
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        SELECT d.tenant_id, d.id, d.endpoint_id, d.lease_until AS at
          FROM webhooks.deliveries d
         WHERE d.status = 'delivering' AND d.lease_until <= now()
         ORDER BY d.lease_until
         LIMIT batch
           FOR UPDATE SKIP LOCKED
    ), ranked AS (
        SELECT c.tenant_id, c.id, c.endpoint_id, c.at,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.at, c.id)
                 + COALESCE((SELECT b.n FROM busy b WHERE b.endpoint_id = c.endpoint_id), 0) AS slot
          FROM (SELECT * FROM due UNION ALL SELECT * FROM expired) c
    ), chosen AS (
        SELECT r.tenant_id, r.id, (e.enabled AND e.deleted_at IS NULL) AS live, e.url,
               e.version, e.secret_enc, e.secret_nonce, e.previous_secret_enc,
               e.previous_secret_nonce, e.previous_secret_expires_at, e.failing_since
          FROM ranked r
          JOIN webhooks.endpoints e ON e.tenant_id = r.tenant_id AND e.id = r.endpoint_id
         WHERE r.slot <= per_endpoint
         ORDER BY r.at
         LIMIT batch
    ), claimed AS (
        UPDATE webhooks.deliveries d
           SET status = CASE WHEN c.live THEN 'delivering' ELSE 'failed' END,
               lease_until = CASE WHEN c.live THEN now() + make_interval(secs => lease_secs) END,
               lease_token = CASE WHEN c.live THEN worker END,
               next_attempt_at = CASE WHEN c.live THEN d.next_attempt_at END,
               updated_at = now()
          FROM chosen c
         WHERE d.tenant_id = c.tenant_id AND d.id = c.id
        RETURNING d.tenant_id, d.id, d.endpoint_id, d.payload, d.attempt_count
    )
    SELECT k.tenant_id, k.id, k.endpoint_id, k.payload, k.attempt_count, c.url, c.version,
           c.secret_enc, c.secret_nonce, c.previous_secret_enc, c.previous_secret_nonce,
           c.previous_secret_expires_at, c.failing_since
      FROM claimed k
      JOIN chosen c ON c.tenant_id = k.tenant_id AND c.id = k.id
     WHERE c.live
$fn$;

-- Records a batch of tries (a JSON array, one object per try) in one statement: each delivery still leased to `worker` is
-- settled or rescheduled and gets its attempt row; returns the deliveries recorded.
CREATE OR REPLACE FUNCTION webhooks.record_batch(worker uuid, tries jsonb)
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH v AS (
        SELECT * FROM jsonb_to_recordset(tries)
            AS v(tenant_id uuid, id uuid, attempt_id uuid, status text, attempt_status text,
                 code integer, body text, error text, duration_ms bigint, next_at timestamptz)
    ), done AS (
        UPDATE webhooks.deliveries d
           SET status = v.status, attempt_count = d.attempt_count + 1,
               next_attempt_at = v.next_at, lease_until = NULL, lease_token = NULL,
               updated_at = now()
          FROM v
         WHERE d.tenant_id = v.tenant_id AND d.id = v.id
           AND d.status = 'delivering' AND d.lease_token = worker
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
        UPDATE webhooks.deliveries d
           SET status = 'pending', lease_until = NULL, lease_token = NULL,
               next_attempt_at = COALESCE(d.next_attempt_at, now()), updated_at = now()
         WHERE d.status = 'delivering' AND d.lease_token = worker
        RETURNING 1
    )
    SELECT count(*) FROM released
$fn$;

REVOKE ALL ON FUNCTION webhooks.claim_batch(uuid, integer, integer, integer, uuid[], integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.record_batch(uuid, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.release_leases(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.claim_batch(uuid, integer, integer, integer, uuid[], integer[]) TO {RUNTIME_GROUP};
GRANT EXECUTE ON FUNCTION webhooks.record_batch(uuid, jsonb) TO {RUNTIME_GROUP};
GRANT EXECUTE ON FUNCTION webhooks.release_leases(uuid) TO {RUNTIME_GROUP};
"#
        );
        manager.get_connection().execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP FUNCTION IF EXISTS webhooks.claim_batch(uuid, integer, integer, integer, uuid[], integer[]);
                 DROP FUNCTION IF EXISTS webhooks.record_batch(uuid, jsonb);
                 DROP FUNCTION IF EXISTS webhooks.release_leases(uuid);
                 CREATE INDEX IF NOT EXISTS deliveries_leased ON webhooks.deliveries (endpoint_id, lease_until)
                     WHERE status = 'delivering';
                 DROP INDEX IF EXISTS webhooks.deliveries_lease;
                 ALTER TABLE webhooks.deliveries DROP COLUMN IF EXISTS lease_token;",
            )
            .await?;
        Ok(())
    }
}
