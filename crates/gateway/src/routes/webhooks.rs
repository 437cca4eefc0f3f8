//! The webhooks section of the partner API: event types, endpoints with their secrets and
//! deliveries, inbound sources, and the public inbound receiver.

use axum::{
    Json as AJson,
    body::Bytes,
    extract::{FromRequest, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use crm_kit::{ApiError, ErrorCode};
use crm_proto::webhooks as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    backends::Ctx,
    dto::{ListParams, StdErrors, next_cursor, time},
    error::{GwError, GwResult, Json, Query, body_rejection},
};

// ---- shapes ----------------------------------------------------------------------------

/// An event type endpoints can subscribe to.
#[derive(Serialize, ToSchema)]
pub struct EventType {
    /// e.g. `contact.created`.
    pub name: String,
    pub description: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    pub items: Vec<EventType>,
}

/// Where events are sent, signed with the endpoint's secret (Standard Webhooks).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// Empty means every event type.
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    /// Why the service disabled the endpoint: `gone` (it answered 410), `failing` (it
    /// failed for 5 days) or `manual`; null while enabled.
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    pub version: i64,
    /// Until when the previous secret still signs deliveries, after a rotation.
    #[schema(required = true, format = DateTime)]
    pub previous_secret_expires_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

/// An endpoint with its signing secret, shown only on creation and rotation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_` followed by the base64 of the key.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateEndpointRequest {
    /// https URL (http only where the deployment allows it); private and reserved
    /// addresses are refused.
    #[schema(max_length = 2048, example = "https://hooks.example.com/crm")]
    pub url: String,
    /// Event types to send (see GET /webhooks/event-types); empty or absent means all.
    pub event_types: Option<Vec<String>>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Defaults to true.
    pub enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateEndpointRequest {
    #[schema(max_length = 2048)]
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Enabling an endpoint the service disabled clears its failure streak.
    pub enabled: Option<bool>,
}

/// One try to send a delivery.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    /// The HTTP status; null when no response arrived.
    #[schema(required = true)]
    pub response_status_code: Option<i32>,
    /// The first bytes of the response body.
    pub response_body: String,
    /// Why no response arrived (timed out, refused address, connection error).
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: i64,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// When the next try is due; null when none is.
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
}

/// One event's message to one endpoint, with every try.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    /// The `webhook-id` header: the same on every try.
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivering`, `succeeded` or `failed`.
    pub status: String,
    pub attempt_count: i32,
    #[schema(required = true, format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    /// The body that is sent: `{type, timestamp, data}`.
    pub payload: serde_json::Value,
    /// Newest first.
    pub attempts: Vec<Attempt>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RecoverRequest {
    /// RFC 3339; deliveries created since then that never succeeded are sent again.
    #[schema(format = DateTime, example = "2026-01-01T00:00:00Z")]
    pub since: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverResponse {
    /// How many deliveries were scheduled again.
    pub scheduled: i64,
}

/// Where signed webhooks from outside arrive (POST /inbound/{id}).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundSource {
    pub id: String,
    pub name: String,
    /// `web_to_lead` publishes `lead.submitted`; `generic` publishes `inbound.received`.
    pub kind: String,
    /// A disabled source refuses its webhooks.
    pub enabled: bool,
    pub version: i64,
    /// Until when the previous secret is still accepted, after a rotation.
    #[schema(required = true, format = DateTime)]
    pub previous_secret_expires_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

/// An inbound source with its secret, shown only on creation and rotation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundSourceWithSecret {
    #[serde(flatten)]
    pub source: InboundSource,
    /// `whsec_...`: the sender signs with it (Standard Webhooks).
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateInboundSourceRequest {
    #[schema(min_length = 1, max_length = 200, example = "Website contact form")]
    pub name: String,
    /// `web_to_lead` or `generic`.
    #[schema(example = "web_to_lead")]
    pub kind: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateInboundSourceRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// A disabled source refuses its webhooks.
    pub enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundAccepted {
    /// True when this webhook-id was already received: nothing happened again.
    pub duplicate: bool,
}

macro_rules! page {
    ($name:ident, $item:ty) => {
        #[derive(Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub items: Vec<$item>,
            /// Null on the last page.
            #[schema(required = true)]
            pub next_cursor: Option<String>,
        }
    };
}
page!(EndpointPage, Endpoint);
page!(DeliveryPage, Delivery);
page!(InboundSourcePage, InboundSource);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    /// Only deliveries in this status: pending, delivering, succeeded or failed.
    pub status: Option<String>,
}

// ---- conversions -------------------------------------------------------------------------

fn none_if_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn endpoint(e: pb::Endpoint) -> Endpoint {
    Endpoint {
        id: e.id,
        url: e.url,
        event_types: e.event_types,
        description: e.description,
        enabled: e.enabled,
        disabled_reason: none_if_empty(e.disabled_reason),
        version: e.version,
        previous_secret_expires_at: time(e.previous_secret_expire_time),
        created_at: time(e.create_time),
        updated_at: time(e.update_time),
    }
}

fn delivery(d: pb::Delivery) -> Delivery {
    Delivery {
        id: d.id,
        endpoint_id: d.endpoint_id,
        webhook_id: d.webhook_id,
        event_id: d.event_id,
        event_type: d.event_type,
        status: d.status,
        attempt_count: d.attempt_count,
        next_attempt_at: time(d.next_attempt_time),
        created_at: time(d.create_time),
        updated_at: time(d.update_time),
        payload: serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| Attempt {
                id: a.id,
                status: a.status,
                response_status_code: (a.response_status_code != 0)
                    .then_some(a.response_status_code),
                response_body: a.response_body,
                error: none_if_empty(a.error),
                duration_ms: a.duration_ms,
                created_at: time(a.create_time),
                next_attempt_at: time(a.next_attempt_time),
            })
            .collect(),
    }
}

fn source(s: pb::InboundSource) -> InboundSource {
    InboundSource {
        id: s.id,
        name: s.name,
        kind: s.kind,
        enabled: s.enabled,
        version: s.version,
        previous_secret_expires_at: time(s.previous_secret_expire_time),
        created_at: time(s.create_time),
        updated_at: time(s.update_time),
    }
}

fn missing(what: &str) -> impl FnOnce() -> GwError + '_ {
    move || {
        GwError(ApiError::internal(format!(
            "backend answered without {what}"
        )))
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn with_etag(version: i64, body: impl IntoResponse) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::ETAG, etag(version));
    res
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn created(location: String, version: Option<i64>, body: impl IntoResponse) -> Response {
    let mut res = (StatusCode::CREATED, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(v) = version {
        res.headers_mut().insert(header::ETAG, etag(v));
    }
    res
}

/// The If-Match header as the service's etag; `*` matches any version.
fn if_match(headers: &HeaderMap) -> GwResult<String> {
    match headers.get(header::IF_MATCH) {
        None => Ok(String::new()),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::invalid("If-Match", "must be an entity tag"))?
                .trim();
            if s == "*" {
                return Ok(String::new());
            }
            let inner = s.trim_start_matches("W/").trim_matches('"');
            if inner.parse::<i64>().is_err() {
                return Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    "If-Match does not match the current version",
                )
                .into());
            }
            Ok(inner.to_owned())
        }
    }
}

// ---- routes -------------------------------------------------------------------------------

/// Every event type an endpoint can subscribe to.
#[utoipa::path(get, path = "/webhooks/event-types", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, description = "The event type catalogue", body = EventTypeList), StdErrors))]
async fn list_event_types(State(s): State<AppState>, ctx: Ctx) -> GwResult<AJson<EventTypeList>> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .list_event_types(s.backends.request(&ctx, pb::ListEventTypesRequest {}))
        .await?
        .into_inner();
    Ok(AJson(EventTypeList {
        items: r
            .event_types
            .into_iter()
            .map(|t| EventType {
                name: t.name,
                description: t.description,
            })
            .collect(),
    }))
}

/// The tenant's webhook endpoints.
#[utoipa::path(get, path = "/webhooks/endpoints", tag = "webhooks", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of endpoints", body = EndpointPage), StdErrors))]
async fn list_endpoints(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<EndpointPage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .list_endpoints(s.backends.request(
            &ctx,
            pb::ListEndpointsRequest {
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(EndpointPage {
        items: r.endpoints.into_iter().map(endpoint).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates an endpoint; its `whsec_` secret is shown only now.
#[utoipa::path(post, path = "/webhooks/endpoints", tag = "webhooks", security(("bearer" = [])), request_body = CreateEndpointRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Endpoint created", body = EndpointWithSecret,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateEndpointRequest>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .create_endpoint(s.backends.request(
            &ctx,
            pb::CreateEndpointRequest {
                url: b.url,
                event_types: b.event_types.unwrap_or_default(),
                description: b.description.unwrap_or_default(),
                enabled: b.enabled,
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner();
    let e = r.endpoint.ok_or_else(missing("endpoint"))?;
    let (id, version) = (e.id.clone(), e.version);
    Ok(no_store(created(
        format!("/api/v1/webhooks/endpoints/{id}"),
        Some(version),
        AJson(EndpointWithSecret {
            endpoint: endpoint(e),
            secret: r.secret,
        }),
    )))
}

/// One endpoint.
#[utoipa::path(get, path = "/webhooks/endpoints/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The endpoint", body = Endpoint,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let e = c
        .get_endpoint(s.backends.request(&ctx, pb::GetEndpointRequest { id }))
        .await?
        .into_inner()
        .endpoint
        .ok_or_else(missing("endpoint"))?;
    Ok(with_etag(e.version, AJson(endpoint(e))))
}

/// Changes an endpoint's URL, event types, description or enabled flag.
#[utoipa::path(patch, path = "/webhooks/endpoints/{id}", tag = "webhooks", security(("bearer" = [])), request_body = UpdateEndpointRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed endpoint", body = Endpoint,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateEndpointRequest>,
) -> GwResult<Response> {
    let mut req = pb::UpdateEndpointRequest {
        id,
        etag: if_match(&headers)?,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(v) = b.url {
        paths.push("url".to_owned());
        req.url = v;
    }
    if let Some(v) = b.event_types {
        paths.push("event_types".to_owned());
        req.event_types = v;
    }
    if let Some(v) = b.description {
        paths.push("description".to_owned());
        req.description = v;
    }
    if let Some(v) = b.enabled {
        paths.push("enabled".to_owned());
        req.enabled = v;
    }
    if paths.is_empty() {
        return Err(ApiError::invalid("body", "names no field to change").into());
    }
    req.update_mask = Some(prost_types::FieldMask { paths });
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let e = c
        .update_endpoint(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .endpoint
        .ok_or_else(missing("endpoint"))?;
    Ok(with_etag(e.version, AJson(endpoint(e))))
}

/// Removes an endpoint; deliveries still pending for it are not sent.
#[utoipa::path(delete, path = "/webhooks/endpoints/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<StatusCode> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    c.delete_endpoint(s.backends.request(&ctx, pb::DeleteEndpointRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new secret; for 24 hours every delivery carries signatures of the old and the new one.
#[utoipa::path(post, path = "/webhooks/endpoints/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The endpoint and its new secret", body = EndpointWithSecret), StdErrors))]
async fn rotate_secret(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .rotate_endpoint_secret(
            s.backends
                .request(&ctx, pb::RotateEndpointSecretRequest { id }),
        )
        .await?
        .into_inner();
    let e = r.endpoint.ok_or_else(missing("endpoint"))?;
    let version = e.version;
    Ok(no_store(with_etag(
        version,
        AJson(EndpointWithSecret {
            endpoint: endpoint(e),
            secret: r.secret,
        }),
    )))
}

/// Sends again everything of the endpoint that never succeeded since a time.
#[utoipa::path(post, path = "/webhooks/endpoints/{id}/recover", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    request_body = RecoverRequest,
    responses((status = 202, description = "Deliveries scheduled again", body = RecoverResponse), StdErrors))]
async fn recover_endpoint(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(b): Json<RecoverRequest>,
) -> GwResult<Response> {
    let since = DateTime::parse_from_rfc3339(b.since.trim())
        .map_err(|_| ApiError::invalid("since", "must be an RFC 3339 time"))?
        .with_timezone(&Utc);
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .recover_endpoint(s.backends.request(
            &ctx,
            pb::RecoverEndpointRequest {
                id,
                since: Some(prost_types::Timestamp {
                    seconds: since.timestamp(),
                    nanos: since.timestamp_subsec_nanos() as i32,
                }),
            },
        ))
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        AJson(RecoverResponse {
            scheduled: r.scheduled,
        }),
    )
        .into_response())
}

/// The endpoint's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/webhooks/endpoints/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path), DeliveryParams),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage), StdErrors))]
async fn list_deliveries(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<DeliveryParams>,
) -> GwResult<AJson<DeliveryPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .list_deliveries(s.backends.request(
            &ctx,
            pb::ListDeliveriesRequest {
                endpoint_id: id,
                page_size,
                page_token,
                status: q.status.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(DeliveryPage {
        items: r.deliveries.into_iter().map(delivery).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Sends a delivery again now, with the same webhook-id.
#[utoipa::path(post, path = "/webhooks/deliveries/{id}/retry", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 202, description = "Scheduled", body = Delivery), StdErrors))]
async fn retry_delivery(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let d = c
        .retry_delivery(s.backends.request(&ctx, pb::RetryDeliveryRequest { id }))
        .await?
        .into_inner()
        .delivery
        .ok_or_else(missing("delivery"))?;
    Ok((StatusCode::ACCEPTED, AJson(delivery(d))).into_response())
}

/// The tenant's inbound sources.
#[utoipa::path(get, path = "/webhooks/inbound-sources", tag = "webhooks", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of inbound sources", body = InboundSourcePage), StdErrors))]
async fn list_sources(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<InboundSourcePage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .list_inbound_sources(s.backends.request(
            &ctx,
            pb::ListInboundSourcesRequest {
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(InboundSourcePage {
        items: r.inbound_sources.into_iter().map(source).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates an inbound source; senders sign with its secret, shown only now, and POST to
/// /inbound/{id}.
#[utoipa::path(post, path = "/webhooks/inbound-sources", tag = "webhooks", security(("bearer" = [])), request_body = CreateInboundSourceRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Inbound source created", body = InboundSourceWithSecret,
        headers(("Location" = String, description = "Where senders POST their webhooks"),
            ("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn create_source(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateInboundSourceRequest>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .create_inbound_source(s.backends.request(
            &ctx,
            pb::CreateInboundSourceRequest {
                name: b.name,
                kind: b.kind,
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner();
    let src = r.inbound_source.ok_or_else(missing("inbound source"))?;
    let version = src.version;
    Ok(no_store(created(
        format!("/api/v1/inbound/{}", src.id),
        Some(version),
        AJson(InboundSourceWithSecret {
            source: source(src),
            secret: r.secret,
        }),
    )))
}

/// One inbound source.
#[utoipa::path(get, path = "/webhooks/inbound-sources/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The inbound source", body = InboundSource,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_source(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let src = c
        .get_inbound_source(s.backends.request(&ctx, pb::GetInboundSourceRequest { id }))
        .await?
        .into_inner()
        .inbound_source
        .ok_or_else(missing("inbound source"))?;
    Ok(with_etag(src.version, AJson(source(src))))
}

/// Renames an inbound source, or enables or disables it.
#[utoipa::path(patch, path = "/webhooks/inbound-sources/{id}", tag = "webhooks", security(("bearer" = [])), request_body = UpdateInboundSourceRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed inbound source", body = InboundSource,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_source(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateInboundSourceRequest>,
) -> GwResult<Response> {
    let mut req = pb::UpdateInboundSourceRequest {
        id,
        etag: if_match(&headers)?,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(v) = b.name {
        paths.push("name".to_owned());
        req.name = v;
    }
    if let Some(v) = b.enabled {
        paths.push("enabled".to_owned());
        req.enabled = v;
    }
    if paths.is_empty() {
        return Err(ApiError::invalid("body", "names no field to change").into());
    }
    req.update_mask = Some(prost_types::FieldMask { paths });
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let src = c
        .update_inbound_source(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .inbound_source
        .ok_or_else(missing("inbound source"))?;
    Ok(with_etag(src.version, AJson(source(src))))
}

/// A new secret; for 24 hours webhooks signed with the old or the new one are accepted.
#[utoipa::path(post, path = "/webhooks/inbound-sources/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The inbound source and its new secret", body = InboundSourceWithSecret), StdErrors))]
async fn rotate_source_secret(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    let r = c
        .rotate_inbound_source_secret(
            s.backends
                .request(&ctx, pb::RotateInboundSourceSecretRequest { id }),
        )
        .await?
        .into_inner();
    let src = r.inbound_source.ok_or_else(missing("inbound source"))?;
    let version = src.version;
    Ok(no_store(with_etag(
        version,
        AJson(InboundSourceWithSecret {
            source: source(src),
            secret: r.secret,
        }),
    )))
}

/// Removes an inbound source; its webhooks are refused from now on.
#[utoipa::path(delete, path = "/webhooks/inbound-sources/{id}", tag = "webhooks", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_source(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<StatusCode> {
    let mut c = s.backends.webhooks(ctx.tenant())?;
    c.delete_inbound_source(
        s.backends
            .request(&ctx, pb::DeleteInboundSourceRequest { id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of an inbound webhook, taken as raw bytes: the signature is verified over them
/// before anything parses them.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = GwError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            Bytes::from_request(req, state)
                .await
                .map_err(body_rejection)?,
        ))
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Receives a signed webhook (Standard Webhooks: `webhook-id`, `webhook-timestamp`,
/// `webhook-signature`, signed with the source's secret). No bearer token: the signature
/// authenticates it. A timestamp more than 5 minutes off is refused; a webhook-id already
/// received is accepted and dropped. A web-to-lead source needs a JSON object with
/// `lastName` (and optionally `firstName`, `email`, `company`, `phone`, `title`, `message`)
/// and publishes `lead.submitted`; a generic source publishes `inbound.received`.
#[utoipa::path(post, path = "/inbound/{sourceId}", tag = "webhooks", params(("sourceId" = String, Path),
    ("webhook-id" = String, Header, description = "Unique per message; repeats are dropped"),
    ("webhook-timestamp" = String, Header, description = "Unix seconds; at most 5 minutes from now"),
    ("webhook-signature" = String, Header, description = "Space-separated `v1,<base64>` HMAC-SHA256 signatures of `id.timestamp.body`")),
    request_body(content = serde_json::Value, description = "Any JSON (web-to-lead: the lead's fields)", content_type = "application/json"),
    responses((status = 202, description = "Accepted", body = InboundAccepted), StdErrors))]
async fn receive_inbound(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> GwResult<Response> {
    let mut c = s.backends.webhooks(None)?;
    let r = c
        .receive_inbound(s.backends.request(
            &ctx,
            pb::ReceiveInboundRequest {
                source_id,
                webhook_id: header_text(&headers, "webhook-id"),
                webhook_timestamp: header_text(&headers, "webhook-timestamp"),
                webhook_signature: header_text(&headers, "webhook-signature"),
                body: body.to_vec(),
            },
        ))
        .await?
        .into_inner();
    Ok((
        StatusCode::ACCEPTED,
        AJson(InboundAccepted {
            duplicate: r.duplicate,
        }),
    )
        .into_response())
}

/// Routes that need no token.
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive_inbound))
}

/// Routes behind authentication.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(recover_endpoint))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
        .routes(routes!(list_sources, create_source))
        .routes(routes!(get_source, update_source, delete_source))
        .routes(routes!(rotate_source_secret))
}
