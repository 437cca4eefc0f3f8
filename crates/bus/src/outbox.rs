//! The transactional outbox: events are written in the same transaction as the change
//! they describe, and the relay publishes them once that transaction has committed.

use crm_kit::db::TenantTx;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::{BusError, Event};

/// The longest routing key AMQP accepts (a short string).
const MAX_EVENT_TYPE_LEN: usize = 255;

/// Idempotent DDL for the outbox and processed-events tables of one service schema.
///
/// Run it as the role that owns the schema (migrations); `runtime_role` is the role
/// the service connects as. The runtime role may only read and append its tenant's
/// rows; the relay reaches every tenant's unpublished rows through
/// `SECURITY DEFINER` functions that run as the owner.
pub fn ddl(schema: &str, runtime_role: &str) -> String {
    let s = quote_ident(schema);
    let role = quote_ident(runtime_role);
    let channel = quote_literal(&notify_channel(schema));
    let tenant = "NULLIF(current_setting('app.tenant_id', true), '')::uuid";
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {s};
GRANT USAGE ON SCHEMA {s} TO {role};

CREATE TABLE IF NOT EXISTS {s}.outbox (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    event_type text NOT NULL,
    subject text NOT NULL,
    actor_id uuid NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz NULL,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx
    ON {s}.outbox (created_at, id) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_tenant_history_idx
    ON {s}.outbox (tenant_id, created_at);

ALTER TABLE {s}.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.outbox FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS outbox_tenant ON {s}.outbox;
CREATE POLICY outbox_tenant ON {s}.outbox TO {role}
    USING (tenant_id = {tenant})
    WITH CHECK (tenant_id = {tenant});
-- FORCE subjects the owner to row-level security too; the relay functions below run
-- as the owner and must see every tenant's rows.
DROP POLICY IF EXISTS outbox_relay ON {s}.outbox;
CREATE POLICY outbox_relay ON {s}.outbox TO CURRENT_USER USING (true) WITH CHECK (true);
REVOKE ALL ON {s}.outbox FROM {role};
GRANT SELECT, INSERT ON {s}.outbox TO {role};

CREATE OR REPLACE FUNCTION {s}.outbox_claim(batch integer)
RETURNS TABLE (id uuid, tenant_id uuid, event_type text, payload jsonb, created_at timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT o.id, o.tenant_id, o.event_type, o.payload, o.created_at
      FROM {s}.outbox o
     WHERE o.published_at IS NULL
     ORDER BY o.created_at, o.id
     LIMIT batch
       FOR UPDATE SKIP LOCKED
$fn$;

CREATE OR REPLACE FUNCTION {s}.outbox_mark_published(ids uuid[])
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH done AS (
        UPDATE {s}.outbox o
           SET published_at = now(), attempts = o.attempts + 1
         WHERE o.id = ANY(ids) AND o.published_at IS NULL
        RETURNING 1
    )
    SELECT count(*)::integer FROM done
$fn$;

CREATE OR REPLACE FUNCTION {s}.outbox_record_failure(ids uuid[])
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE {s}.outbox o SET attempts = o.attempts + 1
     WHERE o.id = ANY(ids) AND o.published_at IS NULL
$fn$;

REVOKE ALL ON FUNCTION {s}.outbox_claim(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.outbox_mark_published(uuid[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION {s}.outbox_record_failure(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION {s}.outbox_claim(integer) TO {role};
GRANT EXECUTE ON FUNCTION {s}.outbox_mark_published(uuid[]) TO {role};
GRANT EXECUTE ON FUNCTION {s}.outbox_record_failure(uuid[]) TO {role};

CREATE OR REPLACE FUNCTION {s}.outbox_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM pg_notify({channel}, '');
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS outbox_notify ON {s}.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON {s}.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.outbox_notify();

CREATE TABLE IF NOT EXISTS {s}.processed_events (
    consumer text NOT NULL,
    event_id uuid NOT NULL,
    tenant_id uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, consumer, event_id)
);
ALTER TABLE {s}.processed_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.processed_events FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS processed_events_tenant ON {s}.processed_events;
CREATE POLICY processed_events_tenant ON {s}.processed_events TO {role}
    USING (tenant_id = {tenant})
    WITH CHECK (tenant_id = {tenant});
REVOKE ALL ON {s}.processed_events FROM {role};
GRANT SELECT, INSERT ON {s}.processed_events TO {role};
"#
    )
}

/// Writes `event` to the outbox of `schema` inside the caller's transaction.
///
/// The event is published only if that transaction commits.
pub async fn append(tx: &TenantTx, schema: &str, event: &Event) -> Result<(), BusError> {
    if event.tenantid != tx.tenant() {
        return Err(BusError::TenantMismatch {
            event: event.tenantid,
            tx: tx.tenant(),
        });
    }
    if event.event_type.is_empty() || event.event_type.len() > MAX_EVENT_TYPE_LEN {
        return Err(BusError::InvalidEvent(format!(
            "type must be 1 to {MAX_EVENT_TYPE_LEN} bytes long"
        )));
    }
    let payload = serde_json::to_value(event)?;
    tx.conn()
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO {}.outbox (id, tenant_id, event_type, subject, actor_id, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                quote_ident(schema)
            ),
            [
                event.id.into(),
                event.tenantid.uuid().into(),
                event.event_type.clone().into(),
                event.subject.clone().into(),
                event.actorid.into(),
                payload.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// The LISTEN/NOTIFY channel that announces new outbox rows of `schema`.
pub(crate) fn notify_channel(schema: &str) -> String {
    format!("{schema}_outbox")
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_quotes_names() {
        let sql = ddl("sales", "crm_app");
        assert!(sql.contains(r#"CREATE TABLE IF NOT EXISTS "sales".outbox"#));
        assert!(sql.contains(r#"GRANT SELECT, INSERT ON "sales".outbox TO "crm_app""#));
        assert!(sql.contains("pg_notify('sales_outbox', '')"));
        let hostile = ddl(r#"x"; DROP TABLE y; --"#, "r'");
        assert!(hostile.contains(r#""x""; DROP TABLE y; --""#));
        assert!(hostile.contains(r#"pg_notify('x"; DROP TABLE y; --_outbox', '')"#));
    }
}
