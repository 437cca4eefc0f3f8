//! A claim no longer reads through a backlog. Before, its scan of due rows in order left
//! out the rows of endpoints at their limit only after reading them, so a large due
//! backlog behind one slow endpoint was read by every claim, and deliveries to every other
//! endpoint slowed down with it. Now the scan in due order stops after a budget of rows;
//! when it comes back short of a batch with more due than it read, the claim goes endpoint
//! by endpoint through a new index by endpoint and due time (`queue_lanes`): it skips from
//! one endpoint with queued rows to the next and takes, from each with room, its first free
//! due rows. An endpoint at its limit is not read at all.
//!
//! The claim also keeps the order of its joins as written: planned generically, with a few
//! rows expected, it could otherwise join the claimed rows to every endpoint of their
//! tenant and read each endpoint's deliveries whole.

use sea_orm_migration::prelude::*;

use super::m0006_delivery_queue;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_claim_past_backlogs"
    }
}

/// Queued rows by endpoint, in due order: the claim's way past a backlog.
const LANES: &str = "CREATE INDEX IF NOT EXISTS queue_lanes ON webhooks.queue (endpoint_id, at);";

/// The claim alone: later migrations that step back to it replace only the function, and
/// take no lock on the queue for it.
pub(super) const CLAIM: &str = r#"
-- Claims due deliveries of every tenant, at most `per_endpoint` in flight per endpoint
-- counting the worker's own (`busy_*`), leases them to `worker` and returns what sending
-- needs. Candidates are due rows without a live lease; only the rows taken are locked
-- (SKIP LOCKED), which re-reads them, so a row another worker has meanwhile leased or
-- recorded is left alone. Deliveries of a disabled or deleted endpoint are settled as
-- failed here, without a try, and leave the queue.
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
SET join_collapse_limit = 1
AS $fn$
#variable_conflict use_column
DECLARE
    -- Most due rows read in order before the claim goes endpoint by endpoint.
    scan_budget constant integer := 2048;
    tenants uuid[]; ids uuid[]; endpoints uuid[]; ats timestamptz[];
    seen bigint; past_budget boolean;
BEGIN
    -- Candidates in due order: free rows of endpoints with room, from at most `scan_budget`
    -- due rows (the last of the budget comes along to tell that it ran out), up to four
    -- per row wanted, ranked per endpoint against what the worker holds.
    WITH busy AS (
        SELECT b.endpoint_id, b.n FROM unnest(busy_endpoints, busy_counts) AS b(endpoint_id, n)
    ), scan AS (
        SELECT s.tenant_id, s.delivery_id, s.endpoint_id, s.at,
               row_number() OVER (ORDER BY s.at) AS rn,
               (s.lease_until IS NULL OR s.lease_until <= now())
               AND NOT EXISTS (SELECT 1 FROM busy b
                                WHERE b.endpoint_id = s.endpoint_id AND b.n >= per_endpoint) AS free
          FROM (SELECT q.tenant_id, q.delivery_id, q.endpoint_id, q.at, q.lease_until
                  FROM webhooks.queue q
                 WHERE q.at <= now()
                 ORDER BY q.at
                 LIMIT scan_budget) s
    ), due AS (
        SELECT * FROM scan s WHERE s.free OR s.rn = scan_budget LIMIT batch * 4
    ), ranked AS (
        SELECT d.*, row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.at, d.delivery_id)
                 + COALESCE((SELECT b.n FROM busy b WHERE b.endpoint_id = d.endpoint_id), 0) AS slot
          FROM due d WHERE d.free
    )
    SELECT array_agg(r.tenant_id) FILTER (WHERE r.slot <= per_endpoint),
           array_agg(r.delivery_id) FILTER (WHERE r.slot <= per_endpoint),
           array_agg(r.endpoint_id) FILTER (WHERE r.slot <= per_endpoint),
           array_agg(r.at) FILTER (WHERE r.slot <= per_endpoint),
           (SELECT count(*) FROM due), (SELECT bool_or(d.rn = scan_budget) FROM due d)
      INTO tenants, ids, endpoints, ats, seen, past_budget
      FROM ranked r;
    -- Short of a batch while more is due than was read: a backlog of endpoints at their
    -- limit, or of rows leased, stands in front. Each endpoint with queued rows (found by
    -- skipping through `queue_lanes`) then gives its first free due rows, as many as it
    -- has room for.
    IF coalesce(cardinality(ids), 0) < batch AND (seen >= batch * 4 OR past_budget) THEN
        WITH RECURSIVE lanes(endpoint_id) AS (
            (SELECT q.endpoint_id FROM webhooks.queue q ORDER BY q.endpoint_id LIMIT 1)
            UNION ALL
            SELECT (SELECT q.endpoint_id FROM webhooks.queue q
                     WHERE q.endpoint_id > l.endpoint_id ORDER BY q.endpoint_id LIMIT 1)
              FROM lanes l WHERE l.endpoint_id IS NOT NULL
        ), busy AS (
            SELECT b.endpoint_id, b.n FROM unnest(busy_endpoints, busy_counts) AS b(endpoint_id, n)
        ), room AS (
            SELECT l.endpoint_id,
                   per_endpoint - COALESCE((SELECT b.n FROM busy b
                                             WHERE b.endpoint_id = l.endpoint_id), 0) AS n
              FROM lanes l WHERE l.endpoint_id IS NOT NULL
        ), more AS (
            SELECT t.* FROM room r CROSS JOIN LATERAL (
                SELECT q.tenant_id, q.delivery_id, q.endpoint_id, q.at
                  FROM webhooks.queue q
                 WHERE q.endpoint_id = r.endpoint_id AND q.at <= now()
                   AND (q.lease_until IS NULL OR q.lease_until <= now())
                 ORDER BY q.at
                 LIMIT r.n) t
             WHERE r.n > 0
             ORDER BY t.at
             LIMIT batch * 4
        )
        SELECT coalesce(tenants, '{}') || array_agg(m.tenant_id),
               coalesce(ids, '{}') || array_agg(m.delivery_id),
               coalesce(endpoints, '{}') || array_agg(m.endpoint_id),
               coalesce(ats, '{}') || array_agg(m.at)
          INTO tenants, ids, endpoints, ats
          FROM more m;
    END IF;
RETURN QUERY
    WITH busy AS (
        SELECT b.endpoint_id, b.n FROM unnest(busy_endpoints, busy_counts) AS b(endpoint_id, n)
    ), due AS (
        SELECT DISTINCT c.tenant_id, c.delivery_id, c.endpoint_id, c.at
          FROM unnest(tenants, ids, endpoints, ats) AS c(tenant_id, delivery_id, endpoint_id, at)
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
"#;

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(LANES).await?;
        db.execute_unprepared(CLAIM).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS webhooks.queue_lanes;")
            .await?;
        // The queue's functions of m0006 (its steps are safe to run again).
        m0006_delivery_queue::Migration.up(manager).await
    }
}
