//! SQL of the webhooks schema. Every function that touches tenant data takes a [`TenantTx`]
//! and filters by its tenant on top of row-level security.

use chrono::{DateTime, Utc};
use crm_bus::Event;
use crm_kit::{ApiError, ApiResult, TenantId, TenantTx};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value};
use uuid::Uuid;

/// The schema this service owns.
pub const SCHEMA: &str = "webhooks";
/// The channel that announces new deliveries.
pub const NOTIFY_CHANNEL: &str = "webhooks_deliveries";

pub(crate) fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn t(tx: &TenantTx) -> Value {
    tx.tenant().uuid().into()
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct EndpointRow {
    pub id: Uuid,
    pub url: String,
    pub description: String,
    pub event_types: serde_json::Value,
    pub enabled: bool,
    pub disabled_reason: String,
    pub secret_enc: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub previous_secret_enc: Option<Vec<u8>>,
    pub previous_secret_nonce: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
}

impl EndpointRow {
    /// The subscribed event types.
    pub fn types(&self) -> Vec<String> {
        serde_json::from_value(self.event_types.clone()).unwrap_or_default()
    }

    /// What events and audit views may show (never a secret).
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "eventTypes": self.types(),
            "enabled": self.enabled,
            "disabledReason": self.disabled_reason,
            "version": self.version,
        })
    }
}

const ENDPOINT_SELECT: &str = "SELECT id, url, description, event_types, enabled, disabled_reason, \
    secret_enc, secret_nonce, previous_secret_enc, previous_secret_nonce, previous_secret_expires_at, \
    failing_since, version, created_at, updated_at, deleted_at IS NOT NULL AS deleted FROM webhooks.endpoints";

#[derive(Debug, Clone, FromQueryResult)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempt_count: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Deliveries as the API shows them: a pending one that a worker holds a live lease on is
/// `delivering`.
const DELIVERY_SELECT: &str = "SELECT id, endpoint_id, event_id, event_type, payload, status, attempt_count, \
    next_attempt_at, created_at, updated_at FROM (SELECT d.tenant_id, d.id, d.endpoint_id, d.event_id, \
    d.event_type, d.payload, CASE WHEN d.status = 'pending' AND EXISTS (SELECT 1 FROM webhooks.queue q \
    WHERE q.tenant_id = d.tenant_id AND q.delivery_id = d.id AND q.lease_until > now()) \
    THEN 'delivering' \
    ELSE d.status END AS status, d.attempt_count, d.next_attempt_at, d.created_at, d.updated_at \
    FROM webhooks.deliveries d) deliveries";

#[derive(Debug, Clone, FromQueryResult)]
pub struct AttemptRow {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub status: String,
    pub response_code: i32,
    pub response_body: String,
    pub error: String,
    pub duration_ms: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct SourceRow {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub secret_enc: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub previous_secret_enc: Option<Vec<u8>>,
    pub previous_secret_nonce: Option<Vec<u8>>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub enabled: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SourceRow {
    /// What events and audit views may show (never a secret).
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            "version": self.version,
        })
    }
}

/// A new endpoint.
pub struct NewEndpoint<'a> {
    pub id: Uuid,
    pub url: &'a str,
    pub description: &'a str,
    pub event_types: &'a [String],
    pub enabled: bool,
    pub secret_enc: Vec<u8>,
    pub secret_nonce: Vec<u8>,
    pub created_by: Option<Uuid>,
}

pub async fn insert_endpoint(tx: &TenantTx, e: NewEndpoint<'_>) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO webhooks.endpoints (tenant_id, id, url, description, event_types, enabled, \
             secret_enc, secret_nonce, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                t(tx),
                e.id.into(),
                e.url.into(),
                e.description.into(),
                serde_json::json!(e.event_types).into(),
                e.enabled.into(),
                e.secret_enc.into(),
                e.secret_nonce.into(),
                e.created_by.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// An endpoint, deleted ones included (the worker must know it was deleted).
pub async fn endpoint_any(tx: &TenantTx, id: Uuid) -> Result<Option<EndpointRow>, DbErr> {
    EndpointRow::find_by_statement(stmt(
        &format!("{ENDPOINT_SELECT} WHERE tenant_id = $1 AND id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

/// A live endpoint, locked for update when `lock`.
pub async fn endpoint(tx: &TenantTx, id: Uuid, lock: bool) -> Result<Option<EndpointRow>, DbErr> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    EndpointRow::find_by_statement(stmt(
        &format!(
            "{ENDPOINT_SELECT} WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL{suffix}"
        ),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn list_endpoints(
    tx: &TenantTx,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<EndpointRow>, DbErr> {
    EndpointRow::find_by_statement(stmt(
        &format!(
            "{ENDPOINT_SELECT} WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ),
        [t(tx), after.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

/// Enabled endpoints subscribed to `event_type`.
pub async fn subscribers(tx: &TenantTx, event_type: &str) -> Result<Vec<Uuid>, DbErr> {
    let rows = tx
        .conn()
        .query_all_raw(stmt(
            "SELECT id FROM webhooks.endpoints WHERE tenant_id = $1 AND deleted_at IS NULL AND enabled \
             AND (jsonb_array_length(event_types) = 0 OR event_types @> jsonb_build_array($2::text))",
            [t(tx), event_type.into()],
        ))
        .await?;
    rows.iter().map(|r| r.try_get::<Uuid>("", "id")).collect()
}

/// The changes an update applies.
pub struct EndpointChange {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: String,
    pub reset_failing: bool,
}

pub async fn update_endpoint(tx: &TenantTx, id: Uuid, c: EndpointChange) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "UPDATE webhooks.endpoints SET url = $3, description = $4, event_types = $5, enabled = $6, \
             disabled_reason = $7, failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END, \
             version = version + 1, updated_at = now() WHERE tenant_id = $1 AND id = $2",
            [
                t(tx),
                id.into(),
                c.url.into(),
                c.description.into(),
                serde_json::json!(c.event_types).into(),
                c.enabled.into(),
                c.disabled_reason.into(),
                c.reset_failing.into(),
            ],
        ))
        .await?;
    Ok(())
}

pub async fn delete_endpoint(tx: &TenantTx, id: Uuid) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "UPDATE webhooks.endpoints SET deleted_at = now(), enabled = false, version = version + 1, \
             updated_at = now() WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            [t(tx), id.into()],
        ))
        .await?
        .rows_affected()
        > 0)
}

/// Makes a new secret of an endpoint or inbound source (`table`) current; the current one
/// stays valid until `previous_until`.
pub async fn rotate_secret(
    tx: &TenantTx,
    table: SecretTable,
    id: Uuid,
    secret_enc: Vec<u8>,
    secret_nonce: Vec<u8>,
    previous_until: DateTime<Utc>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            &format!(
                "UPDATE webhooks.{} SET previous_secret_enc = secret_enc, previous_secret_nonce = secret_nonce, \
                 previous_secret_expires_at = $5, secret_enc = $3, secret_nonce = $4, version = version + 1, \
                 updated_at = now() WHERE tenant_id = $1 AND id = $2",
                table.name()
            ),
            [
                t(tx),
                id.into(),
                secret_enc.into(),
                secret_nonce.into(),
                previous_until.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// The tables whose rows hold a signing secret.
#[derive(Clone, Copy, Debug)]
pub enum SecretTable {
    Endpoints,
    InboundSources,
}

impl SecretTable {
    fn name(self) -> &'static str {
        match self {
            Self::Endpoints => "endpoints",
            Self::InboundSources => "inbound_sources",
        }
    }
}

/// Records the outcome of a try on the endpoint's health: a success ends a failing streak;
/// returns since when the endpoint has been failing.
pub async fn record_health(
    tx: &TenantTx,
    id: Uuid,
    success: bool,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let row = tx
        .conn()
        .query_one_raw(stmt(
            "UPDATE webhooks.endpoints SET failing_since = CASE WHEN $3 THEN NULL \
             ELSE COALESCE(failing_since, now()) END WHERE tenant_id = $1 AND id = $2 \
             RETURNING failing_since",
            [t(tx), id.into(), success.into()],
        ))
        .await?;
    Ok(row.and_then(|r| {
        r.try_get::<Option<DateTime<Utc>>>("", "failing_since")
            .ok()
            .flatten()
    }))
}

/// Disables an endpoint on the service's own account; false when it already was.
pub async fn disable_endpoint(tx: &TenantTx, id: Uuid, reason: &str) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "UPDATE webhooks.endpoints SET enabled = false, disabled_reason = $3, version = version + 1, \
             updated_at = now() WHERE tenant_id = $1 AND id = $2 AND enabled",
            [t(tx), id.into(), reason.into()],
        ))
        .await?
        .rows_affected()
        > 0)
}

/// Queues one message for an endpoint; an event already queued for it is left alone.
pub async fn insert_delivery(
    tx: &TenantTx,
    endpoint_id: Uuid,
    event_id: Uuid,
    event_type: &str,
    payload: &str,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO webhooks.deliveries (tenant_id, id, endpoint_id, event_id, event_type, payload, \
             status, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', now()) \
             ON CONFLICT (tenant_id, endpoint_id, event_id) DO NOTHING",
            [
                t(tx),
                Uuid::now_v7().into(),
                endpoint_id.into(),
                event_id.into(),
                event_type.into(),
                payload.into(),
            ],
        ))
        .await?;
    Ok(())
}

pub async fn delivery(tx: &TenantTx, id: Uuid) -> Result<Option<DeliveryRow>, DbErr> {
    DeliveryRow::find_by_statement(stmt(
        &format!("{DELIVERY_SELECT} WHERE tenant_id = $1 AND id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn list_deliveries(
    tx: &TenantTx,
    endpoint_id: Uuid,
    status: Option<&str>,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<DeliveryRow>, DbErr> {
    DeliveryRow::find_by_statement(stmt(
        &format!(
            "{DELIVERY_SELECT} WHERE tenant_id = $1 AND endpoint_id = $2 AND ($3::text IS NULL OR status = $3) \
             AND ($4::uuid IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        ),
        [
            t(tx),
            endpoint_id.into(),
            status.map(str::to_owned).into(),
            before.into(),
            (limit as i64).into(),
        ],
    ))
    .all(tx.conn())
    .await
}

/// The attempts of some deliveries, newest first.
pub async fn attempts_of(tx: &TenantTx, ids: &[Uuid]) -> Result<Vec<AttemptRow>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = ids
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    AttemptRow::find_by_statement(stmt(
        "SELECT id, delivery_id, status, response_code, response_body, error, duration_ms, next_attempt_at, \
         created_at FROM webhooks.attempts WHERE tenant_id = $1 \
         AND delivery_id = ANY(string_to_array($2, ',')::uuid[]) ORDER BY id DESC",
        [t(tx), list.into()],
    ))
    .all(tx.conn())
    .await
}

/// Schedules deliveries to be sent now (manual retry, recover) and wakes the workers.
pub async fn schedule_now(tx: &TenantTx, ids_sql: &str, values: Vec<Value>) -> Result<u64, DbErr> {
    let n = tx
        .conn()
        .execute_raw(stmt(
            &format!(
                "UPDATE webhooks.deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now() WHERE tenant_id = $1 AND {ids_sql}"
            ),
            std::iter::once(t(tx)).chain(values),
        ))
        .await?
        .rows_affected();
    if n > 0 {
        tx.conn()
            .execute_raw(stmt("SELECT pg_notify($1, '')", [NOTIFY_CHANNEL.into()]))
            .await?;
    }
    Ok(n)
}

/// What a try came to.
pub struct AttemptOutcome {
    pub succeeded: bool,
    pub response_code: i32,
    pub response_body: String,
    pub error: String,
    pub duration_ms: i64,
    /// The next try, or None when the delivery is settled.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Records tries of any tenant and settles or reschedules their deliveries, in one
/// statement; only deliveries still leased to `worker` are recorded, and those are returned.
/// The tries go as one array per column.
pub async fn record_tries(
    pool: &sqlx::PgPool,
    worker: Uuid,
    items: &[(TenantId, Uuid, &AttemptOutcome)],
) -> Result<std::collections::HashSet<Uuid>, sqlx::Error> {
    if items.is_empty() {
        return Ok(Default::default());
    }
    let n = items.len();
    let mut tenants = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut attempt_ids = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut attempt_statuses = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut next_ats = Vec::with_capacity(n);
    for (tenant, id, o) in items {
        tenants.push(tenant.uuid());
        ids.push(*id);
        attempt_ids.push(Uuid::now_v7());
        statuses.push(match (o.succeeded, o.next_attempt_at) {
            (true, _) => "succeeded",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        });
        attempt_statuses.push(if o.succeeded { "succeeded" } else { "failed" });
        codes.push(o.response_code);
        bodies.push(o.response_body.as_str());
        errors.push(o.error.as_str());
        durations.push(o.duration_ms);
        next_ats.push(o.next_attempt_at);
    }
    let recorded: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM webhooks.record_tries($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(worker)
    .bind(tenants)
    .bind(ids)
    .bind(attempt_ids)
    .bind(statuses)
    .bind(attempt_statuses)
    .bind(codes)
    .bind(bodies)
    .bind(errors)
    .bind(durations)
    .bind(next_ats)
    .fetch_all(pool)
    .await?;
    Ok(recorded.into_iter().map(|(id,)| id).collect())
}

pub async fn insert_source(
    tx: &TenantTx,
    id: Uuid,
    name: &str,
    kind: &str,
    secret_enc: Vec<u8>,
    secret_nonce: Vec<u8>,
    created_by: Option<Uuid>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO webhooks.inbound_sources (tenant_id, id, name, kind, secret_enc, secret_nonce, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                t(tx),
                id.into(),
                name.into(),
                kind.into(),
                secret_enc.into(),
                secret_nonce.into(),
                created_by.into(),
            ],
        ))
        .await?;
    Ok(())
}

const SOURCE_SELECT: &str = "SELECT id, name, kind, secret_enc, secret_nonce, previous_secret_enc, \
    previous_secret_nonce, previous_secret_expires_at, enabled, version, created_at, updated_at \
    FROM webhooks.inbound_sources";

pub async fn source(tx: &TenantTx, id: Uuid) -> Result<Option<SourceRow>, DbErr> {
    source_locked(tx, id, false).await
}

/// A live inbound source, locked for update when `lock`.
pub async fn source_locked(
    tx: &TenantTx,
    id: Uuid,
    lock: bool,
) -> Result<Option<SourceRow>, DbErr> {
    let suffix = if lock { " FOR UPDATE" } else { "" };
    SourceRow::find_by_statement(stmt(
        &format!("{SOURCE_SELECT} WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL{suffix}"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn update_source(
    tx: &TenantTx,
    id: Uuid,
    name: &str,
    enabled: bool,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "UPDATE webhooks.inbound_sources SET name = $3, enabled = $4, version = version + 1, \
             updated_at = now() WHERE tenant_id = $1 AND id = $2",
            [t(tx), id.into(), name.into(), enabled.into()],
        ))
        .await?;
    Ok(())
}

pub async fn list_sources(
    tx: &TenantTx,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<SourceRow>, DbErr> {
    SourceRow::find_by_statement(stmt(
        &format!(
            "{SOURCE_SELECT} WHERE tenant_id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ),
        [t(tx), after.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

pub async fn delete_source(tx: &TenantTx, id: Uuid) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "UPDATE webhooks.inbound_sources SET deleted_at = now(), updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            [t(tx), id.into()],
        ))
        .await?
        .rows_affected()
        > 0)
}

/// The tenant of an inbound source, before any tenant is known.
pub async fn source_tenant<C: ConnectionTrait>(c: &C, id: Uuid) -> Result<Option<TenantId>, DbErr> {
    let row = c
        .query_one_raw(stmt(
            "SELECT webhooks.inbound_source_tenant($1) AS tenant_id",
            [id.into()],
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<Option<Uuid>>("", "tenant_id").ok().flatten())
        .map(TenantId))
}

/// Remembers an inbound webhook-id; false when it was already seen.
pub async fn first_sighting(
    tx: &TenantTx,
    source_id: Uuid,
    webhook_id: &str,
) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "INSERT INTO webhooks.inbound_seen (tenant_id, source_id, webhook_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            [t(tx), source_id.into(), webhook_id.into()],
        ))
        .await?
        .rows_affected()
        > 0)
}

/// Writes a domain event to the outbox in the caller's transaction.
pub async fn emit(tx: &TenantTx, event: Event) -> ApiResult<()> {
    crm_bus::outbox::append(tx, SCHEMA, &event)
        .await
        .map_err(ApiError::internal)
}
