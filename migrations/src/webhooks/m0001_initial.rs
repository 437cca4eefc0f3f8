//! Endpoints, deliveries and their attempts, inbound sources and the webhook-ids they have
//! seen, idempotent requests, the outbox and consumer idempotency records.

use sea_orm_migration::prelude::*;

use crate::RUNTIME_GROUP;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

/// The retention sweep of this version; m0005 puts it back when it is rolled back.
pub(super) const PURGE: &str = r#"-- Payloads are kept for the retention period; attempts go with their delivery.
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
    )
    SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM seen) * 0
$fn$;"#;

/// Every tenant table: row-level security forced on the owner too, one policy on the tenant
/// setting, and a policy that lets the owner's security-definer functions (the delivery
/// worker's claim and the retention sweep) see every tenant.
pub(super) fn tenant_rls(table: &str) -> String {
    format!(
        "ALTER TABLE webhooks.{table} ENABLE ROW LEVEL SECURITY;
         ALTER TABLE webhooks.{table} FORCE ROW LEVEL SECURITY;
         DROP POLICY IF EXISTS tenant_isolation ON webhooks.{table};
         CREATE POLICY tenant_isolation ON webhooks.{table} TO {RUNTIME_GROUP}
           USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
           WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
         DROP POLICY IF EXISTS definer_access ON webhooks.{table};
         CREATE POLICY definer_access ON webhooks.{table} TO CURRENT_USER USING (true) WITH CHECK (true);"
    )
}

// The trait's signature elides the lifetime of SchemaManager; matching it needs the elision.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let mut sql = format!(
            r#"
CREATE SCHEMA IF NOT EXISTS webhooks;
GRANT USAGE ON SCHEMA webhooks TO {RUNTIME_GROUP};

CREATE TABLE IF NOT EXISTS webhooks.endpoints (
    tenant_id                 uuid NOT NULL,
    id                        uuid NOT NULL,
    url                       text NOT NULL,
    description               text NOT NULL DEFAULT '',
    -- A JSON array of event type names; empty means every type.
    event_types               jsonb NOT NULL DEFAULT '[]',
    enabled                   boolean NOT NULL DEFAULT true,
    disabled_reason           text NOT NULL DEFAULT '',
    secret_enc                bytea NOT NULL,
    secret_nonce              bytea NOT NULL,
    previous_secret_enc       bytea,
    previous_secret_nonce     bytea,
    previous_secret_expires_at timestamptz,
    failing_since             timestamptz,
    version                   bigint NOT NULL DEFAULT 1,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    created_by                uuid,
    deleted_at                timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- One row per event and endpoint: the message. Its id is the webhook-id of every try.
CREATE TABLE IF NOT EXISTS webhooks.deliveries (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    endpoint_id      uuid NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    payload          text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed')),
    attempt_count    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    lease_until      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, endpoint_id, event_id),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhooks.endpoints (tenant_id, id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON webhooks.deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON webhooks.deliveries (endpoint_id, lease_until)
    WHERE status = 'delivering';
CREATE INDEX IF NOT EXISTS deliveries_endpoint ON webhooks.deliveries (tenant_id, endpoint_id, id);
CREATE INDEX IF NOT EXISTS deliveries_created ON webhooks.deliveries (created_at);

CREATE TABLE IF NOT EXISTS webhooks.attempts (
    tenant_id        uuid NOT NULL,
    id               uuid NOT NULL,
    delivery_id      uuid NOT NULL,
    status           text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    response_code    integer NOT NULL DEFAULT 0,
    response_body    text NOT NULL DEFAULT '',
    error            text NOT NULL DEFAULT '',
    duration_ms      bigint NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, delivery_id) REFERENCES webhooks.deliveries (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON webhooks.attempts (tenant_id, delivery_id, id);

CREATE TABLE IF NOT EXISTS webhooks.inbound_sources (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    name          text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('web_to_lead', 'generic')),
    secret_enc    bytea NOT NULL,
    secret_nonce  bytea NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    created_by    uuid,
    deleted_at    timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE IF NOT EXISTS webhooks.inbound_seen (
    tenant_id    uuid NOT NULL,
    source_id    uuid NOT NULL,
    webhook_id   text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, source_id, webhook_id)
);

CREATE TABLE IF NOT EXISTS webhooks.idempotent_requests (
    tenant_id   uuid NOT NULL,
    request_id  text NOT NULL,
    operation   text NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, operation, request_id)
);

-- The delivery worker serves every tenant: it claims due deliveries (and those whose lease
-- ran out because a worker died) with SKIP LOCKED, never more than `per_endpoint` in flight
-- for one endpoint, and leases them. Everything else it does runs in a tenant transaction.
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
    ), candidates AS (
        SELECT d.tenant_id, d.id, d.endpoint_id, d.next_attempt_at
          FROM webhooks.deliveries d
         WHERE ((d.status = 'pending' AND d.next_attempt_at <= now())
             OR (d.status = 'delivering' AND d.lease_until <= now()))
           AND NOT EXISTS (SELECT 1 FROM inflight i
                            WHERE i.endpoint_id = d.endpoint_id AND i.n >= per_endpoint)
         ORDER BY d.next_attempt_at
         LIMIT batch * 4
           FOR UPDATE SKIP LOCKED
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

{PURGE}

-- Inbound webhooks arrive without a token: the source id alone names the tenant.
CREATE OR REPLACE FUNCTION webhooks.inbound_source_tenant(p_id uuid) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $fn$ SELECT s.tenant_id FROM webhooks.inbound_sources s WHERE s.id = p_id AND s.deleted_at IS NULL $fn$;

-- New deliveries wake the workers (on commit); a short poll backs it up.
CREATE OR REPLACE FUNCTION webhooks.deliveries_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_notify('webhooks_deliveries', '');
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS deliveries_notify ON webhooks.deliveries;
CREATE TRIGGER deliveries_notify AFTER INSERT ON webhooks.deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks.deliveries_notify();

REVOKE ALL ON FUNCTION webhooks.claim_deliveries(integer, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.purge(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhooks.inbound_source_tenant(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION webhooks.claim_deliveries(integer, integer, integer) TO {RUNTIME_GROUP};
GRANT EXECUTE ON FUNCTION webhooks.purge(bigint) TO {RUNTIME_GROUP};
GRANT EXECUTE ON FUNCTION webhooks.inbound_source_tenant(uuid) TO {RUNTIME_GROUP};

GRANT SELECT, INSERT, UPDATE ON webhooks.endpoints, webhooks.deliveries, webhooks.inbound_sources
    TO {RUNTIME_GROUP};
GRANT SELECT, INSERT ON webhooks.attempts, webhooks.inbound_seen, webhooks.idempotent_requests
    TO {RUNTIME_GROUP};
"#
        );
        for t in [
            "endpoints",
            "deliveries",
            "attempts",
            "inbound_sources",
            "inbound_seen",
            "idempotent_requests",
        ] {
            sql.push_str(&tenant_rls(t));
        }
        sql.push_str(&crm_bus::outbox::ddl("webhooks", RUNTIME_GROUP));
        db.execute_unprepared(&sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP SCHEMA IF EXISTS webhooks CASCADE")
            .await?;
        Ok(())
    }
}
