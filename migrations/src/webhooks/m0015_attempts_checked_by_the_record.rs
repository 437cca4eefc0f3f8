//! A try's row in `webhooks.attempts` no longer has PostgreSQL check that its delivery
//! exists. The record inserts tries only for the deliveries its own update has just
//! settled or rescheduled, in the same statement, so the check could never fail; yet it
//! ran once per try, a query of its own on `deliveries` (about 9 ms of a record of 1,000
//! tries that took 27 ms). Without it, the benchmark's worker sent about 8 % more
//! deliveries per second (the median of eight alternate pairs; faster in seven).
//!
//! The key also removed a delivery's tries with it. The sweep does that itself now: it
//! locks a batch of old settled deliveries, deletes their tries, then the deliveries. A
//! record settling one of them meanwhile either committed before the lock, so its tries are
//! seen and deleted, or waits for the sweep and then finds no delivery to record a try for.

use sea_orm_migration::prelude::*;

use super::m0005_lease_table;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0015_attempts_checked_by_the_record"
    }
}

/// The key m0001 gave the tries, by the name PostgreSQL gave it.
const KEY: &str = "attempts_tenant_id_delivery_id_fkey";

/// The sweep, removing each delivery's tries itself, a batch of deliveries at a time.
const PURGE: &str = r#"-- Payloads are kept for the retention period; attempts go with their delivery. Old
-- settled deliveries are locked a batch at a time (one locked by a record meanwhile is left
-- for the next sweep), so that the statements after the lock see every try recorded for
-- them, and no try of theirs is recorded after. Leases that ran out a day ago hold nothing
-- back (a run-out lease is taken over like no lease); they are removed too.
CREATE OR REPLACE FUNCTION webhooks.purge(retention_secs bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    tenants uuid[]; ids uuid[]; n bigint; purged bigint := 0;
BEGIN
    LOOP
        SELECT array_agg(o.tenant_id), array_agg(o.id) INTO tenants, ids
          FROM (SELECT d.tenant_id, d.id FROM webhooks.deliveries d
                 WHERE d.created_at < now() - make_interval(secs => retention_secs)
                   AND d.status IN ('succeeded', 'failed')
                 LIMIT 10000
                   FOR UPDATE SKIP LOCKED) o;
        EXIT WHEN ids IS NULL;
        DELETE FROM webhooks.attempts a
         USING unnest(tenants, ids) AS g(tenant_id, id)
         WHERE a.tenant_id = g.tenant_id AND a.delivery_id = g.id;
        DELETE FROM webhooks.deliveries d
         USING unnest(tenants, ids) AS g(tenant_id, id)
         WHERE d.tenant_id = g.tenant_id AND d.id = g.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        purged := purged + n;
    END LOOP;
    DELETE FROM webhooks.inbound_seen s WHERE s.received_at < now() - interval '1 day';
    DELETE FROM webhooks.leases l WHERE l.until < now() - interval '1 day';
    RETURN purged;
END
$fn$;
"#;

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    // Dropping the key briefly locks both tables against writes.
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        super::execute(
            manager,
            &format!("ALTER TABLE webhooks.attempts DROP CONSTRAINT IF EXISTS {KEY};\n{PURGE}"),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The key comes back checked, so tries left without a delivery (none, unless a row
        // was deleted by hand) go first.
        super::execute(
            manager,
            &format!(
                "DELETE FROM webhooks.attempts a
                  WHERE NOT EXISTS (SELECT 1 FROM webhooks.deliveries d
                                     WHERE d.tenant_id = a.tenant_id AND d.id = a.delivery_id);
                 ALTER TABLE webhooks.attempts DROP CONSTRAINT IF EXISTS {KEY};
                 ALTER TABLE webhooks.attempts ADD CONSTRAINT {KEY}
                     FOREIGN KEY (tenant_id, delivery_id)
                     REFERENCES webhooks.deliveries (tenant_id, id) ON DELETE CASCADE;
                 {}",
                m0005_lease_table::PURGE
            ),
        )
        .await
    }
}
