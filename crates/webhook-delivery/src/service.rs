//! The webhook service's API: endpoints, deliveries, inbound sources and inbound webhooks,
//! served over gRPC as crm.webhooks.v1.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use crm_bus::Event;
pub use crm_kit::access::Permissions;
use crm_kit::{
    ApiError, ApiResult, Caller, Db, ErrorCode, TenantId, TenantTx,
    error::Violations,
    paging::{PageTokens, page_size},
    rpc::{etag, fingerprint, parse_etag, path_id, ts},
};
use crm_proto::{
    identity::identity_service_client::IdentityServiceClient,
    webhooks::{self as pb, webhook_service_server::WebhookService},
};
use sea_orm::DbErr;
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    catalog,
    config::WebhookSettings,
    crypto::{self, SecretCipher},
    ssrf::AddressPolicy,
    store::{self, DeliveryRow, EndpointRow, SourceRow},
};

const SERVICE: &str = "webhook-delivery";
const OBJECT: &str = "webhook";
const MAX_DESCRIPTION: usize = 500;
const MAX_NAME: usize = 200;
const MAX_EVENT_TYPES: usize = 200;
/// How far an inbound webhook's timestamp may be from now.
const INBOUND_TOLERANCE_SECS: i64 = 300;
const STATUSES: &[&str] = &["pending", "delivering", "succeeded", "failed"];
const SOURCE_KINDS: &[&str] = &["web_to_lead", "generic"];

/// Permissions read from identity at `identity_url` (lazily connected), kept briefly per
/// caller.
pub fn permissions(identity_url: &str) -> anyhow::Result<Permissions> {
    let channel = tonic::transport::Endpoint::from_shared(identity_url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(Permissions::new(IdentityServiceClient::new(channel)))
}

/// What endpoints and inbound sources share: a signing secret sealed in their row, made
/// when they are created (idempotently), shown only then and on rotation, and rotated with
/// an overlap during which the previous one stays valid.
#[async_trait::async_trait]
trait SecretHolder: Sized + Send + Sync {
    /// The validated fields of a new one.
    type New: Send + Sync;
    const TABLE: store::SecretTable;
    /// The entity type of its events: `<entity>.created`, `<entity>.secret_rotated`.
    const ENTITY: &'static str;
    /// Its name in messages.
    const NOUN: &'static str;
    /// The idempotency operation of its create.
    const CREATE: &'static str;

    fn id(&self) -> Uuid;
    /// The sealed current secret: ciphertext and nonce.
    fn sealed(&self) -> (&[u8], &[u8]);
    fn public_json(&self) -> serde_json::Value;
    async fn insert(
        tx: &TenantTx,
        id: Uuid,
        new: &Self::New,
        sealed: crypto::Sealed,
        created_by: Uuid,
    ) -> Result<(), DbErr>;
    /// The live row, locked for update when `lock`.
    async fn find(tx: &TenantTx, id: Uuid, lock: bool) -> Result<Option<Self>, DbErr>;
}

/// A new endpoint's validated fields.
struct NewEndpointFields {
    url: String,
    description: String,
    event_types: Vec<String>,
    enabled: bool,
}

#[async_trait::async_trait]
impl SecretHolder for EndpointRow {
    type New = NewEndpointFields;
    const TABLE: store::SecretTable = store::SecretTable::Endpoints;
    const ENTITY: &'static str = "webhook_endpoint";
    const NOUN: &'static str = "endpoint";
    const CREATE: &'static str = "create_endpoint";

    fn id(&self) -> Uuid {
        self.id
    }

    fn sealed(&self) -> (&[u8], &[u8]) {
        (&self.secret_enc, &self.secret_nonce)
    }

    fn public_json(&self) -> serde_json::Value {
        EndpointRow::public_json(self)
    }

    async fn insert(
        tx: &TenantTx,
        id: Uuid,
        new: &NewEndpointFields,
        sealed: crypto::Sealed,
        created_by: Uuid,
    ) -> Result<(), DbErr> {
        store::insert_endpoint(
            tx,
            store::NewEndpoint {
                id,
                url: &new.url,
                description: &new.description,
                event_types: &new.event_types,
                enabled: new.enabled,
                secret_enc: sealed.ciphertext,
                secret_nonce: sealed.nonce,
                created_by: Some(created_by),
            },
        )
        .await
    }

    async fn find(tx: &TenantTx, id: Uuid, lock: bool) -> Result<Option<Self>, DbErr> {
        store::endpoint(tx, id, lock).await
    }
}

/// A new inbound source's validated fields.
struct NewSourceFields {
    name: String,
    kind: String,
}

#[async_trait::async_trait]
impl SecretHolder for SourceRow {
    type New = NewSourceFields;
    const TABLE: store::SecretTable = store::SecretTable::InboundSources;
    const ENTITY: &'static str = "inbound_source";
    const NOUN: &'static str = "inbound source";
    const CREATE: &'static str = "create_source";

    fn id(&self) -> Uuid {
        self.id
    }

    fn sealed(&self) -> (&[u8], &[u8]) {
        (&self.secret_enc, &self.secret_nonce)
    }

    fn public_json(&self) -> serde_json::Value {
        SourceRow::public_json(self)
    }

    async fn insert(
        tx: &TenantTx,
        id: Uuid,
        new: &NewSourceFields,
        sealed: crypto::Sealed,
        created_by: Uuid,
    ) -> Result<(), DbErr> {
        store::insert_source(
            tx,
            id,
            &new.name,
            &new.kind,
            sealed.ciphertext,
            sealed.nonce,
            Some(created_by),
        )
        .await
    }

    async fn find(tx: &TenantTx, id: Uuid, lock: bool) -> Result<Option<Self>, DbErr> {
        store::source_locked(tx, id, lock).await
    }
}

/// The service's state.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: Arc<WebhookSettings>,
    policy: AddressPolicy,
    cipher: SecretCipher,
    pages: PageTokens,
    permissions: Permissions,
    production: bool,
}

/// The webhook-id of a delivery: stable across every try.
pub fn webhook_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}

fn endpoint_pb(e: &EndpointRow) -> pb::Endpoint {
    pb::Endpoint {
        id: e.id.to_string(),
        url: e.url.clone(),
        event_types: e.types(),
        description: e.description.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        version: e.version,
        etag: etag(e.version),
        create_time: ts(e.created_at),
        update_time: ts(e.updated_at),
        previous_secret_expire_time: e
            .previous_secret_expires_at
            .filter(|t| *t > Utc::now())
            .and_then(ts),
    }
}

fn delivery_pb(d: &DeliveryRow, attempts: Vec<pb::Attempt>) -> pb::Delivery {
    pb::Delivery {
        id: d.id.to_string(),
        endpoint_id: d.endpoint_id.to_string(),
        webhook_id: webhook_id(d.id),
        event_id: d.event_id.to_string(),
        event_type: d.event_type.clone(),
        status: d.status.clone(),
        attempt_count: d.attempt_count,
        next_attempt_time: d.next_attempt_at.and_then(ts),
        create_time: ts(d.created_at),
        update_time: ts(d.updated_at),
        payload: d.payload.clone(),
        attempts,
    }
}

fn attempt_pb(a: &store::AttemptRow) -> pb::Attempt {
    pb::Attempt {
        id: a.id.to_string(),
        status: a.status.clone(),
        response_status_code: a.response_code,
        response_body: a.response_body.clone(),
        error: a.error.clone(),
        duration_ms: a.duration_ms,
        create_time: ts(a.created_at),
        next_attempt_time: a.next_attempt_at.and_then(ts),
    }
}

fn source_pb(s: &SourceRow) -> pb::InboundSource {
    pb::InboundSource {
        id: s.id.to_string(),
        name: s.name.clone(),
        kind: s.kind.clone(),
        enabled: s.enabled,
        create_time: ts(s.created_at),
        version: s.version,
        etag: etag(s.version),
        update_time: ts(s.updated_at),
        previous_secret_expire_time: s
            .previous_secret_expires_at
            .filter(|t| *t > Utc::now())
            .and_then(ts),
    }
}

impl Webhooks {
    /// The service over its database.
    pub fn new(
        db: Db,
        settings: Arc<WebhookSettings>,
        cipher: SecretCipher,
        pages: PageTokens,
        permissions: Permissions,
        production: bool,
    ) -> Self {
        let policy = AddressPolicy::new(settings.allow_nets.clone());
        Self {
            inner: Arc::new(Inner {
                db,
                settings,
                policy,
                cipher,
                pages,
                permissions,
                production,
            }),
        }
    }

    async fn tx(&self, tenant: TenantId) -> ApiResult<TenantTx> {
        Ok(self.inner.db.tenant_tx(tenant).await?)
    }

    async fn require(&self, caller: &Caller, action: &str) -> ApiResult<()> {
        self.inner
            .permissions
            .of(caller)
            .await?
            .require(OBJECT, action)
            .map(|_| ())
    }

    /// The `whsec_` form of a sealed secret.
    fn show_secret(&self, owner: Uuid, (enc, nonce): (&[u8], &[u8])) -> ApiResult<String> {
        let key = self
            .inner
            .cipher
            .open(owner, enc, nonce)
            .map_err(ApiError::internal)?;
        Ok(crypto::display_secret(&key).expose_secret().to_owned())
    }

    /// Creates an endpoint or inbound source with a new secret, or returns the one an
    /// earlier request with the same `request_id` created; the secret in `whsec_` form.
    async fn create_holder<R: SecretHolder>(
        &self,
        caller: &Caller,
        request_id: &str,
        fingerprint: &str,
        new: R::New,
    ) -> ApiResult<(R, String)> {
        let tx = self.tx(caller.tenant).await?;
        if !request_id.is_empty()
            && let Some(id) =
                crm_kit::idempotency::find(&tx, store::SCHEMA, R::CREATE, request_id, fingerprint)
                    .await?
        {
            let r = R::find(&tx, id, false)
                .await?
                .ok_or_else(|| ApiError::not_found(R::NOUN))?;
            tx.commit().await?;
            let secret = self.show_secret(r.id(), r.sealed())?;
            return Ok((r, secret));
        }
        let id = Uuid::now_v7();
        let key = crypto::new_key();
        R::insert(
            &tx,
            id,
            &new,
            self.inner.cipher.seal(id, &key),
            caller.subject,
        )
        .await?;
        if !request_id.is_empty() {
            crm_kit::idempotency::remember(
                &tx,
                store::SCHEMA,
                R::CREATE,
                request_id,
                fingerprint,
                id,
            )
            .await?;
        }
        let r = R::find(&tx, id, false)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{} vanished", R::NOUN)))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                &format!("{}.created", R::ENTITY),
                caller.tenant,
                Some(caller.subject),
                R::ENTITY,
                id,
                None,
                Some(r.public_json()),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((r, crypto::display_secret(&key).expose_secret().to_owned()))
    }

    /// Gives an endpoint or inbound source a new secret; the previous one stays valid for
    /// the rotation overlap. The new secret in `whsec_` form.
    async fn rotate_holder<R: SecretHolder>(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ApiResult<(R, String)> {
        self.require(caller, "update").await?;
        let id = path_id(R::NOUN, id)?;
        let tx = self.tx(caller.tenant).await?;
        let before = R::find(&tx, id, true)
            .await?
            .ok_or_else(|| ApiError::not_found(R::NOUN))?;
        let key = crypto::new_key();
        let sealed = self.inner.cipher.seal(id, &key);
        let until = Utc::now()
            + chrono::Duration::from_std(self.inner.settings.rotation_overlap)
                .unwrap_or_else(|_| chrono::Duration::hours(24));
        store::rotate_secret(&tx, R::TABLE, id, sealed.ciphertext, sealed.nonce, until).await?;
        let after = R::find(&tx, id, false)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{} vanished", R::NOUN)))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                &format!("{}.secret_rotated", R::ENTITY),
                caller.tenant,
                Some(caller.subject),
                R::ENTITY,
                id,
                Some(before.public_json()),
                Some(after.public_json()),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((
            after,
            crypto::display_secret(&key).expose_secret().to_owned(),
        ))
    }

    fn check_url(&self, v: &mut Violations, url: &str) {
        let allow_http = self.inner.settings.allow_http && !self.inner.production;
        if let Err(m) = self.inner.policy.check_url(url.trim(), allow_http) {
            v.add("url", m);
        }
    }

    fn check_event_types(v: &mut Violations, types: &[String]) {
        if types.len() > MAX_EVENT_TYPES {
            v.add(
                "event_types",
                format!("at most {MAX_EVENT_TYPES} event types"),
            );
        }
        for (i, t) in types.iter().enumerate() {
            if !catalog::contains(t) {
                v.add(
                    format!("event_types[{i}]"),
                    "unknown event type; GET /webhooks/event-types lists them",
                );
            } else if types[..i].contains(t) {
                v.add(format!("event_types[{i}]"), "listed twice");
            }
        }
    }

    fn check_description(v: &mut Violations, d: &str) {
        v.text("description", d);
        v.check(
            d.chars().count() > MAX_DESCRIPTION,
            "description",
            "must be at most 500 characters",
        );
    }

    /// Every event type an endpoint can subscribe to.
    pub fn event_types(&self) -> pb::ListEventTypesResponse {
        pb::ListEventTypesResponse {
            event_types: catalog::EVENT_TYPES
                .iter()
                .map(|(n, d)| pb::EventType {
                    name: (*n).to_owned(),
                    description: (*d).to_owned(),
                })
                .collect(),
        }
    }

    pub async fn list_endpoints(
        &self,
        caller: &Caller,
        r: pb::ListEndpointsRequest,
    ) -> ApiResult<pb::ListEndpointsResponse> {
        self.require(caller, "read").await?;
        let size = page_size(r.page_size, "page_size")?;
        let after = self.after(caller, "endpoints", &r.page_token)?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::list_endpoints(&tx, after, size + 1).await?;
        tx.commit().await?;
        let next = self.next_token(caller, "endpoints", &mut rows, size, |e| e.id);
        Ok(pb::ListEndpointsResponse {
            endpoints: rows.iter().map(endpoint_pb).collect(),
            next_page_token: next,
        })
    }

    fn after(&self, caller: &Caller, query: &str, token: &str) -> ApiResult<Option<Uuid>> {
        self.inner
            .pages
            .decode(token, caller.tenant, query, "page_token")?
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))
    }

    fn next_token<T>(
        &self,
        caller: &Caller,
        query: &str,
        rows: &mut Vec<T>,
        size: u64,
        id: impl Fn(&T) -> Uuid,
    ) -> String {
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|r| {
                    self.inner
                        .pages
                        .encode(caller.tenant, query, &id(r).to_string())
                })
                .unwrap_or_default()
        } else {
            String::new()
        }
    }

    pub async fn get_endpoint(&self, caller: &Caller, id: &str) -> ApiResult<pb::Endpoint> {
        self.require(caller, "read").await?;
        let id = path_id("endpoint", id)?;
        let tx = self.tx(caller.tenant).await?;
        let e = store::endpoint(&tx, id, false)
            .await?
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        tx.commit().await?;
        Ok(endpoint_pb(&e))
    }

    pub async fn create_endpoint(
        &self,
        caller: &Caller,
        r: pb::CreateEndpointRequest,
    ) -> ApiResult<pb::CreateEndpointResponse> {
        self.require(caller, "create").await?;
        let mut v = Violations::new();
        self.check_url(&mut v, &r.url);
        Self::check_event_types(&mut v, &r.event_types);
        Self::check_description(&mut v, &r.description);
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        v.finish()?;
        let fp = fingerprint(&pb::CreateEndpointRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let (e, secret) = self
            .create_holder::<EndpointRow>(
                caller,
                &r.request_id,
                &fp,
                NewEndpointFields {
                    url: r.url.trim().to_owned(),
                    description: r.description.clone(),
                    event_types: r.event_types.clone(),
                    enabled: r.enabled.unwrap_or(true),
                },
            )
            .await?;
        Ok(pb::CreateEndpointResponse {
            endpoint: Some(endpoint_pb(&e)),
            secret,
        })
    }

    pub async fn update_endpoint(
        &self,
        caller: &Caller,
        r: pb::UpdateEndpointRequest,
    ) -> ApiResult<pb::Endpoint> {
        self.require(caller, "update").await?;
        let id = path_id("endpoint", &r.id)?;
        let paths = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to change"));
        }
        let mut v = Violations::new();
        for p in &paths {
            match p.as_str() {
                "url" => self.check_url(&mut v, &r.url),
                "event_types" => Self::check_event_types(&mut v, &r.event_types),
                "description" => Self::check_description(&mut v, &r.description),
                "enabled" => {}
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        v.finish()?;
        let expected = parse_etag(&r.etag)?;
        let tx = self.tx(caller.tenant).await?;
        let before = store::endpoint(&tx, id, true)
            .await?
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        if expected.is_some_and(|v| v != before.version) {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                "the endpoint changed since it was read",
            ));
        }
        let has = |f: &str| paths.iter().any(|p| p == f);
        let enabled = if has("enabled") {
            r.enabled
        } else {
            before.enabled
        };
        let reenabled = enabled && !before.enabled;
        let change = store::EndpointChange {
            url: if has("url") {
                r.url.trim().to_owned()
            } else {
                before.url.clone()
            },
            description: if has("description") {
                r.description.clone()
            } else {
                before.description.clone()
            },
            event_types: if has("event_types") {
                r.event_types.clone()
            } else {
                before.types()
            },
            enabled,
            disabled_reason: if enabled {
                String::new()
            } else if has("enabled") {
                "manual".into()
            } else {
                before.disabled_reason.clone()
            },
            reset_failing: reenabled,
        };
        store::update_endpoint(&tx, id, change).await?;
        let after = store::endpoint(&tx, id, false)
            .await?
            .ok_or_else(|| ApiError::internal("endpoint vanished"))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "webhook_endpoint.updated",
                caller.tenant,
                Some(caller.subject),
                "webhook_endpoint",
                id,
                Some(before.public_json()),
                Some(after.public_json()),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(endpoint_pb(&after))
    }

    pub async fn delete_endpoint(&self, caller: &Caller, id: &str) -> ApiResult<()> {
        self.require(caller, "delete").await?;
        let id = path_id("endpoint", id)?;
        let tx = self.tx(caller.tenant).await?;
        let before = store::endpoint(&tx, id, true)
            .await?
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        store::delete_endpoint(&tx, id).await?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "webhook_endpoint.deleted",
                caller.tenant,
                Some(caller.subject),
                "webhook_endpoint",
                id,
                Some(before.public_json()),
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ApiResult<pb::RotateEndpointSecretResponse> {
        let (e, secret) = self.rotate_holder::<EndpointRow>(caller, id).await?;
        Ok(pb::RotateEndpointSecretResponse {
            endpoint: Some(endpoint_pb(&e)),
            secret,
        })
    }

    pub async fn recover(&self, caller: &Caller, r: pb::RecoverEndpointRequest) -> ApiResult<i64> {
        self.require(caller, "update").await?;
        let id = path_id("endpoint", &r.id)?;
        let since = r
            .since
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
            .ok_or_else(|| ApiError::invalid("since", "is required (an RFC 3339 time)"))?;
        if since > Utc::now() {
            return Err(ApiError::invalid("since", "must not be in the future"));
        }
        let tx = self.tx(caller.tenant).await?;
        store::endpoint(&tx, id, false)
            .await?
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        let n = store::schedule_now(
            &tx,
            "endpoint_id = $2 AND created_at >= $3 AND status IN ('failed', 'pending')",
            vec![id.into(), since.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(n as i64)
    }

    pub async fn list_deliveries(
        &self,
        caller: &Caller,
        r: pb::ListDeliveriesRequest,
    ) -> ApiResult<pb::ListDeliveriesResponse> {
        self.require(caller, "read").await?;
        let endpoint_id = path_id("endpoint", &r.endpoint_id)?;
        let size = page_size(r.page_size, "page_size")?;
        if !r.status.is_empty() && !STATUSES.contains(&r.status.as_str()) {
            return Err(ApiError::invalid(
                "status",
                "must be pending, delivering, succeeded or failed",
            ));
        }
        let query = format!("deliveries:{endpoint_id}:{}", r.status);
        let before = self.after(caller, &query, &r.page_token)?;
        let tx = self.tx(caller.tenant).await?;
        store::endpoint(&tx, endpoint_id, false)
            .await?
            .ok_or_else(|| ApiError::not_found("endpoint"))?;
        let status = (!r.status.is_empty()).then_some(r.status.as_str());
        let mut rows = store::list_deliveries(&tx, endpoint_id, status, before, size + 1).await?;
        let next = self.next_token(caller, &query, &mut rows, size, |d| d.id);
        let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
        let attempts = store::attempts_of(&tx, &ids).await?;
        tx.commit().await?;
        Ok(pb::ListDeliveriesResponse {
            deliveries: rows
                .iter()
                .map(|d| {
                    delivery_pb(
                        d,
                        attempts
                            .iter()
                            .filter(|a| a.delivery_id == d.id)
                            .map(attempt_pb)
                            .collect(),
                    )
                })
                .collect(),
            next_page_token: next,
        })
    }

    pub async fn retry_delivery(&self, caller: &Caller, id: &str) -> ApiResult<pb::Delivery> {
        self.require(caller, "update").await?;
        let id = path_id("delivery", id)?;
        let tx = self.tx(caller.tenant).await?;
        let d = store::delivery(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery"))?;
        let endpoint = store::endpoint(&tx, d.endpoint_id, false)
            .await?
            .ok_or_else(|| ApiError::not_found("delivery"))?;
        if d.status == "delivering" {
            return Err(ApiError::conflict("the delivery is being sent right now"));
        }
        if !endpoint.enabled {
            return Err(ApiError::new(
                ErrorCode::RuleViolation,
                "the endpoint is disabled; enable it first",
            ));
        }
        store::schedule_now(&tx, "id = $2", vec![id.into()]).await?;
        let d = store::delivery(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("delivery vanished"))?;
        let attempts = store::attempts_of(&tx, &[id]).await?;
        tx.commit().await?;
        Ok(delivery_pb(&d, attempts.iter().map(attempt_pb).collect()))
    }

    pub async fn list_sources(
        &self,
        caller: &Caller,
        r: pb::ListInboundSourcesRequest,
    ) -> ApiResult<pb::ListInboundSourcesResponse> {
        self.require(caller, "read").await?;
        let size = page_size(r.page_size, "page_size")?;
        let after = self.after(caller, "inbound_sources", &r.page_token)?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::list_sources(&tx, after, size + 1).await?;
        tx.commit().await?;
        let next = self.next_token(caller, "inbound_sources", &mut rows, size, |s| s.id);
        Ok(pb::ListInboundSourcesResponse {
            inbound_sources: rows.iter().map(source_pb).collect(),
            next_page_token: next,
        })
    }

    pub async fn create_source(
        &self,
        caller: &Caller,
        r: pb::CreateInboundSourceRequest,
    ) -> ApiResult<pb::CreateInboundSourceResponse> {
        self.require(caller, "create").await?;
        let mut v = Violations::new();
        let name = r.name.trim();
        Self::check_name(&mut v, name);
        v.check(
            !SOURCE_KINDS.contains(&r.kind.as_str()),
            "kind",
            "must be web_to_lead or generic",
        );
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        v.finish()?;
        let fp = fingerprint(&pb::CreateInboundSourceRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let (src, secret) = self
            .create_holder::<SourceRow>(
                caller,
                &r.request_id,
                &fp,
                NewSourceFields {
                    name: name.to_owned(),
                    kind: r.kind.clone(),
                },
            )
            .await?;
        Ok(pb::CreateInboundSourceResponse {
            inbound_source: Some(source_pb(&src)),
            secret,
        })
    }

    pub async fn get_source(&self, caller: &Caller, id: &str) -> ApiResult<pb::InboundSource> {
        self.require(caller, "read").await?;
        let id = path_id("inbound source", id)?;
        let tx = self.tx(caller.tenant).await?;
        let s = store::source(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("inbound source"))?;
        tx.commit().await?;
        Ok(source_pb(&s))
    }

    fn check_name(v: &mut Violations, name: &str) {
        v.text("name", name);
        v.check(name.is_empty(), "name", "is required");
        v.check(
            name.chars().count() > MAX_NAME,
            "name",
            "must be at most 200 characters",
        );
    }

    pub async fn update_source(
        &self,
        caller: &Caller,
        r: pb::UpdateInboundSourceRequest,
    ) -> ApiResult<pb::InboundSource> {
        self.require(caller, "update").await?;
        let id = path_id("inbound source", &r.id)?;
        let paths = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to change"));
        }
        let mut v = Violations::new();
        for p in &paths {
            match p.as_str() {
                "name" => Self::check_name(&mut v, r.name.trim()),
                "enabled" => {}
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        v.finish()?;
        let expected = parse_etag(&r.etag)?;
        let tx = self.tx(caller.tenant).await?;
        let before = store::source_locked(&tx, id, true)
            .await?
            .ok_or_else(|| ApiError::not_found("inbound source"))?;
        if expected.is_some_and(|v| v != before.version) {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                "the inbound source changed since it was read",
            ));
        }
        let has = |f: &str| paths.iter().any(|p| p == f);
        let name = if has("name") {
            r.name.trim()
        } else {
            before.name.as_str()
        };
        let enabled = if has("enabled") {
            r.enabled
        } else {
            before.enabled
        };
        store::update_source(&tx, id, name, enabled).await?;
        let after = store::source(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("inbound source vanished"))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "inbound_source.updated",
                caller.tenant,
                Some(caller.subject),
                "inbound_source",
                id,
                Some(before.public_json()),
                Some(after.public_json()),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(source_pb(&after))
    }

    pub async fn rotate_source_secret(
        &self,
        caller: &Caller,
        id: &str,
    ) -> ApiResult<pb::RotateInboundSourceSecretResponse> {
        let (src, secret) = self.rotate_holder::<SourceRow>(caller, id).await?;
        Ok(pb::RotateInboundSourceSecretResponse {
            inbound_source: Some(source_pb(&src)),
            secret,
        })
    }

    pub async fn delete_source(&self, caller: &Caller, id: &str) -> ApiResult<()> {
        self.require(caller, "delete").await?;
        let id = path_id("inbound source", id)?;
        let tx = self.tx(caller.tenant).await?;
        if !store::delete_source(&tx, id).await? {
            return Err(ApiError::not_found("inbound source"));
        }
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "inbound_source.deleted",
                caller.tenant,
                Some(caller.subject),
                "inbound_source",
                id,
                None,
                None,
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Verifies an inbound webhook before reading it, drops a webhook-id already seen, and
    /// publishes it: `lead.submitted` for web-to-lead sources, `inbound.received` otherwise.
    pub async fn receive(
        &self,
        r: pb::ReceiveInboundRequest,
    ) -> ApiResult<pb::ReceiveInboundResponse> {
        let id = path_id("inbound source", &r.source_id)?;
        let tenant = store::source_tenant(self.inner.db.conn(), id)
            .await?
            .ok_or_else(|| ApiError::not_found("inbound source"))?;
        let tx = self.tx(tenant).await?;
        let source = store::source(&tx, id)
            .await?
            .filter(|s| s.enabled)
            .ok_or_else(|| ApiError::not_found("inbound source"))?;
        let cipher = &self.inner.cipher;
        let mut keys = vec![
            cipher
                .open(source.id, &source.secret_enc, &source.secret_nonce)
                .map_err(ApiError::internal)?,
        ];
        // During a rotation's overlap the sender may still sign with the previous secret.
        if let (Some(enc), Some(nonce), Some(until)) = (
            &source.previous_secret_enc,
            &source.previous_secret_nonce,
            source.previous_secret_expires_at,
        ) && until > Utc::now()
        {
            keys.push(
                cipher
                    .open(source.id, enc, nonce)
                    .map_err(ApiError::internal)?,
            );
        }
        let now = Utc::now().timestamp();
        let mut verified = Err(crypto::VerifyError::NoMatch);
        for key in &keys {
            verified = crypto::verify(
                key,
                &r.webhook_id,
                &r.webhook_timestamp,
                &r.webhook_signature,
                &r.body,
                now,
                INBOUND_TOLERANCE_SECS,
            );
            if !matches!(verified, Err(crypto::VerifyError::NoMatch)) {
                break;
            }
        }
        verified
            .map_err(|e| ApiError::unauthenticated(format!("webhook signature refused: {e}")))?;
        if r.webhook_id.len() > 255 {
            return Err(ApiError::invalid(
                "webhook-id",
                "must be at most 255 characters",
            ));
        }
        let body: serde_json::Value = serde_json::from_slice(&r.body)
            .map_err(|_| ApiError::invalid("body", "must be JSON"))?;
        if !store::first_sighting(&tx, id, &r.webhook_id).await? {
            tx.commit().await?;
            return Ok(pb::ReceiveInboundResponse {
                duplicate: true,
                event_id: String::new(),
            });
        }
        let event = match source.kind.as_str() {
            "web_to_lead" => {
                let lead = web_to_lead(&body)?;
                Event::new(
                    SERVICE,
                    "lead.submitted",
                    tenant,
                    None,
                    "lead_submission",
                    Uuid::now_v7(),
                    None,
                    Some(serde_json::json!({
                        "sourceId": id, "sourceName": source.name, "webhookId": r.webhook_id, "lead": lead,
                    })),
                )
            }
            _ => Event::new(
                SERVICE,
                "inbound.received",
                tenant,
                None,
                "inbound_source",
                id,
                None,
                Some(serde_json::json!({
                    "sourceId": id, "sourceName": source.name, "webhookId": r.webhook_id, "payload": body,
                })),
            ),
        };
        let event_id = event.id.to_string();
        store::emit(&tx, event).await?;
        tx.commit().await?;
        metrics::counter!("crm_webhook_inbound_total", "kind" => source.kind).increment(1);
        Ok(pb::ReceiveInboundResponse {
            duplicate: false,
            event_id,
        })
    }
}

/// The lead a web-to-lead form submitted: `lastName` is required; `firstName`, `email`,
/// `company`, `phone`, `title` and `message` are optional strings.
fn web_to_lead(body: &serde_json::Value) -> ApiResult<serde_json::Value> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    let mut v = Violations::new();
    let mut lead = serde_json::Map::new();
    for (field, required, max) in [
        ("firstName", false, 200),
        ("lastName", true, 200),
        ("email", false, 254),
        ("company", false, 200),
        ("phone", false, 50),
        ("title", false, 200),
        ("message", false, 5000),
    ] {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => {
                v.check(required, field, "is required");
            }
            Some(serde_json::Value::String(s)) => {
                v.text(field, s);
                v.check(required && s.trim().is_empty(), field, "is required");
                v.check(s.chars().count() > max, field, "is too long");
                if field == "email" && !s.is_empty() {
                    v.check(!s.contains('@'), field, "must be an e-mail address");
                }
                lead.insert(
                    field.to_owned(),
                    serde_json::Value::String(s.trim().to_owned()),
                );
            }
            Some(_) => v.add(field, "must be a string"),
        }
    }
    v.finish()?;
    Ok(serde_json::Value::Object(lead))
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    crm_kit::auth::caller(req)
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    async fn list_event_types(
        &self,
        _req: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        Ok(Response::new(self.event_types()))
    }

    async fn list_endpoints(
        &self,
        req: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            Webhooks::list_endpoints(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_endpoint(
        &self,
        req: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::GetEndpointResponse>, Status> {
        let c = caller(&req)?;
        let e = Webhooks::get_endpoint(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetEndpointResponse { endpoint: Some(e) }))
    }

    async fn create_endpoint(
        &self,
        req: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::CreateEndpointResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            Webhooks::create_endpoint(self, &c, req.into_inner()).await?,
        ))
    }

    async fn update_endpoint(
        &self,
        req: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::UpdateEndpointResponse>, Status> {
        let c = caller(&req)?;
        let e = Webhooks::update_endpoint(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateEndpointResponse {
            endpoint: Some(e),
        }))
    }

    async fn delete_endpoint(
        &self,
        req: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        let c = caller(&req)?;
        Webhooks::delete_endpoint(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn rotate_endpoint_secret(
        &self,
        req: Request<pb::RotateEndpointSecretRequest>,
    ) -> Result<Response<pb::RotateEndpointSecretResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            self.rotate_secret(&c, &req.get_ref().id).await?,
        ))
    }

    async fn recover_endpoint(
        &self,
        req: Request<pb::RecoverEndpointRequest>,
    ) -> Result<Response<pb::RecoverEndpointResponse>, Status> {
        let c = caller(&req)?;
        let scheduled = self.recover(&c, req.into_inner()).await?;
        Ok(Response::new(pb::RecoverEndpointResponse { scheduled }))
    }

    async fn list_deliveries(
        &self,
        req: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            Webhooks::list_deliveries(self, &c, req.into_inner()).await?,
        ))
    }

    async fn retry_delivery(
        &self,
        req: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::RetryDeliveryResponse>, Status> {
        let c = caller(&req)?;
        let d = Webhooks::retry_delivery(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::RetryDeliveryResponse {
            delivery: Some(d),
        }))
    }

    async fn list_inbound_sources(
        &self,
        req: Request<pb::ListInboundSourcesRequest>,
    ) -> Result<Response<pb::ListInboundSourcesResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            self.list_sources(&c, req.into_inner()).await?,
        ))
    }

    async fn create_inbound_source(
        &self,
        req: Request<pb::CreateInboundSourceRequest>,
    ) -> Result<Response<pb::CreateInboundSourceResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            self.create_source(&c, req.into_inner()).await?,
        ))
    }

    async fn get_inbound_source(
        &self,
        req: Request<pb::GetInboundSourceRequest>,
    ) -> Result<Response<pb::GetInboundSourceResponse>, Status> {
        let c = caller(&req)?;
        let s = self.get_source(&c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetInboundSourceResponse {
            inbound_source: Some(s),
        }))
    }

    async fn update_inbound_source(
        &self,
        req: Request<pb::UpdateInboundSourceRequest>,
    ) -> Result<Response<pb::UpdateInboundSourceResponse>, Status> {
        let c = caller(&req)?;
        let s = self.update_source(&c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateInboundSourceResponse {
            inbound_source: Some(s),
        }))
    }

    async fn rotate_inbound_source_secret(
        &self,
        req: Request<pb::RotateInboundSourceSecretRequest>,
    ) -> Result<Response<pb::RotateInboundSourceSecretResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(
            self.rotate_source_secret(&c, &req.get_ref().id).await?,
        ))
    }

    async fn delete_inbound_source(
        &self,
        req: Request<pb::DeleteInboundSourceRequest>,
    ) -> Result<Response<pb::DeleteInboundSourceResponse>, Status> {
        let c = caller(&req)?;
        self.delete_source(&c, &req.get_ref().id).await?;
        Ok(Response::new(pb::DeleteInboundSourceResponse {}))
    }

    async fn receive_inbound(
        &self,
        req: Request<pb::ReceiveInboundRequest>,
    ) -> Result<Response<pb::ReceiveInboundResponse>, Status> {
        Ok(Response::new(self.receive(req.into_inner()).await?))
    }
}
