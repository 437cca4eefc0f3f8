//! The delivery claim scans due deliveries and expired leases separately, each by its own
//! index: one OR over both made PostgreSQL read the whole table on every claim.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0002_claim_index_scans"
    }
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // CREATE OR REPLACE keeps the owner and the grants of m0001.
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE OR REPLACE FUNCTION webhooks.claim_deliveries(batch integer, per_endpoint integer, lease_secs integer)
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH inflight AS (
        SELECT d.endpoint_id, count(*) AS n
          FROM webhooks.deliveries d
         WHERE d.status = 'delivering' AND d.lease_until > now()
         GROUP BY d.endpoint_id
    ), due AS (
        -- Two index-friendly scans, not one OR: the due ones by the partial index on
        -- next_attempt_at, the expired leases among the few in flight.
        SELECT d.tenant_id, d.id, d.endpoint_id, d.next_attempt_at
          FROM webhooks.deliveries d
         WHERE d.status = 'pending' AND d.next_attempt_at <= now()
           AND NOT EXISTS (SELECT 1 FROM inflight i
                            WHERE i.endpoint_id = d.endpoint_id AND i.n >= per_endpoint)
         ORDER BY d.next_attempt_at
         LIMIT batch * 4
           FOR UPDATE SKIP LOCKED
    ), expired AS (
        SELECT d.tenant_id, d.id, d.endpoint_id, d.lease_until AS next_attempt_at
          FROM webhooks.deliveries d
         WHERE d.status = 'delivering' AND d.lease_until <= now()
         ORDER BY d.lease_until
         LIMIT batch
           FOR UPDATE SKIP LOCKED
    ), candidates AS (
        SELECT * FROM due UNION ALL SELECT * FROM expired
    ), ranked AS (
        SELECT c.tenant_id, c.id, c.next_attempt_at,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id)
                 + COALESCE((SELECT i.n FROM inflight i WHERE i.endpoint_id = c.endpoint_id), 0) AS slot
          FROM candidates c
    ), chosen AS (
        SELECT r.tenant_id, r.id FROM ranked r
         WHERE r.slot <= per_endpoint
         ORDER BY r.next_attempt_at
         LIMIT batch
    )
    UPDATE webhooks.deliveries d
       SET status = 'delivering', lease_until = now() + make_interval(secs => lease_secs),
           updated_at = now()
      FROM chosen
     WHERE d.tenant_id = chosen.tenant_id AND d.id = chosen.id
    RETURNING d.tenant_id, d.id
$fn$;
"#,
            )
            .await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // m0001's function is equivalent, only slower; dropping the schema undoes both.
        Ok(())
    }
}
