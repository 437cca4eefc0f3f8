//! Start-up: the router with its middleware, the OpenAPI document, the docs page, and serving.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::from_fn_with_state,
    response::{Html, IntoResponse, Response},
};
use crm_kit::{
    Cache, Config, TokenVerifier,
    auth::GrpcJwksSource,
    server::{self, Readiness},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    backends::Backends,
    config::GatewaySettings,
    error::{OwnErrorFormat, render_problems},
    middleware::{Idempotency, RateLimiter, authenticate, client_address, idempotency, rate_limit},
    routes::{accounts, identity, pipeline, search, timeline, webhooks},
};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub backends: Backends,
    pub readiness: Arc<Readiness>,
    pub openapi: Arc<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "CRM partner API", version = "1", description = "REST API of the multi-tenant CRM. \
        Errors are application/problem+json; lists are cursor pages {items, nextCursor}; POSTs honour \
        Idempotency-Key; PATCHes honour If-Match; every response carries X-Request-Id and RateLimit headers."),
    modifiers(&BearerAuth),
    components(schemas(crate::dto::Problem, crate::dto::ProblemField))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
    }
}

const RAPIDOC_JS: &[u8] = include_bytes!("../assets/rapidoc-min.js");

const DOCS_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>CRM partner API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script type="module" src="/api/v1/docs/rapidoc-min.js"></script>
</head>
<body>
<rapi-doc spec-url="/api/v1/openapi.json" render-style="read" show-header="false" allow-server-selection="false"
  allow-authentication="true" theme="light"></rapi-doc>
</body>
</html>
"#;

/// The OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "This document", body = serde_json::Value)))]
async fn openapi_json(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_str().to_owned(),
    )
        .into_response()
}

/// The API reference (renders offline: its assets are served from here).
#[utoipa::path(get, path = "/docs", tag = "meta", responses((status = 200, description = "HTML page", content_type = "text/html", body = String)))]
async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}

/// The docs page's script.
#[utoipa::path(get, path = "/docs/rapidoc-min.js", tag = "meta", responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
async fn docs_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        RAPIDOC_JS,
    )
        .into_response()
}

/// Liveness.
#[utoipa::path(get, path = "/livez", tag = "meta", responses((status = 200, description = "Alive", content_type = "text/plain", body = String)))]
async fn livez() -> &'static str {
    "ok"
}

/// Readiness: Redis, identity, accounts-contacts, pipeline and activity-timeline answer.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses(
    (status = 200, description = "Ready", content_type = "text/plain", body = String),
    (status = 503, description = "A dependency is down, one line each", content_type = "text/plain", body = String)))]
async fn readyz(State(s): State<AppState>) -> Response {
    let not_ready = |text: String| {
        let mut res = (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
        // The probe's plain-text answer, as documented; not turned into problem+json.
        res.extensions_mut().insert(OwnErrorFormat);
        res
    };
    let mut failures = s.readiness.check().await;
    let cell = match s.backends.cell(None) {
        Ok(c) => c.clone(),
        Err(_) => return not_ready("no default cell".to_owned()),
    };
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        cell.identity
            .clone()
            .get_jwks(crm_proto::identity::GetJwksRequest {}),
    )
    .await;
    if !matches!(probe, Ok(Ok(_))) {
        failures.push("identity: unreachable".into());
    }
    // Any answer, even "unauthenticated", shows accounts-contacts is up; transport errors
    // and time-outs do not.
    let mut accounts = cell.accounts.clone();
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        accounts.list_custom_fields(crm_proto::accounts::ListCustomFieldsRequest::default()),
    )
    .await;
    if !answered(probe) {
        failures.push("accounts-contacts: unreachable".into());
    }
    let mut pipeline = cell.pipeline.clone();
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        pipeline.list_pipelines(crm_proto::pipeline::ListPipelinesRequest::default()),
    )
    .await;
    if !answered(probe) {
        failures.push("pipeline: unreachable".into());
    }
    let mut timeline = cell.timeline.clone();
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        timeline.list_tasks(crm_proto::timeline::ListTasksRequest::default()),
    )
    .await;
    if !answered(probe) {
        failures.push("activity-timeline: unreachable".into());
    }
    if failures.is_empty() {
        (StatusCode::OK, "ok".to_owned()).into_response()
    } else {
        not_ready(failures.join("\n"))
    }
}

/// Whether a probe got any answer, even "unauthenticated": transport errors and time-outs
/// are no answer.
fn answered<T>(probe: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>) -> bool {
    match probe {
        Ok(Ok(_)) => true,
        Ok(Err(status)) => !matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
        ),
        Err(_) => false,
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crm_kit::telemetry::prometheus().render(),
    )
        .into_response()
}

/// The router and its OpenAPI document.
pub fn router(
    state_parts: (Backends, Readiness),
    verifier: Arc<TokenVerifier>,
    cache: Cache,
    settings: &GatewaySettings,
) -> (Router, utoipa::openapi::OpenApi) {
    crm_kit::telemetry::prometheus();
    let limiter = RateLimiter::new(
        cache.clone(),
        settings.tenant_quota,
        settings.client_quota,
        settings.anonymous_quota,
    );
    let idem = Idempotency {
        cache,
        body_limit: settings.body_limit,
    };
    let public = identity::public()
        .merge(webhooks::public())
        .layer(from_fn_with_state(limiter.clone(), rate_limit));
    // Layers run outermost-last: authenticate, then rate limit (it needs the caller), then idempotency.
    let protected = identity::protected()
        .merge(accounts::protected())
        .merge(webhooks::protected())
        .merge(search::protected())
        .merge(pipeline::protected())
        .merge(timeline::protected())
        .layer(from_fn_with_state(idem, idempotency))
        .layer(from_fn_with_state(limiter, rate_limit))
        .layer(from_fn_with_state(verifier, authenticate));
    let api = OpenApiRouter::new()
        .merge(public)
        .merge(protected)
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
        .routes(routes!(docs_js));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", api)
        .routes(routes!(identity::jwks))
        .routes(routes!(livez))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
        .split_for_parts();
    let state = AppState {
        backends: state_parts.0,
        readiness: Arc::new(state_parts.1),
        openapi: Arc::new(doc.to_json().unwrap_or_default()),
    };
    (router.with_state(state), doc)
}

/// Wraps the router in the cross-cutting layers.
fn layered(router: Router, settings: &GatewaySettings) -> Router {
    let mut r = router
        .layer(from_fn_with_state(
            Arc::new(settings.trusted_proxies.clone()),
            client_address,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(axum::middleware::from_fn(render_problems))
        .layer(CompressionLayer::new());
    if !settings.cors_origins.is_empty() {
        let origin = if settings.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(settings.cors_origins.iter().filter_map(|o| o.parse().ok()))
        };
        r = r.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PATCH,
                    Method::PUT,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    header::HeaderName::from_static("idempotency-key"),
                    header::HeaderName::from_static("x-request-id"),
                ])
                .expose_headers([
                    header::ETAG,
                    header::LOCATION,
                    header::RETRY_AFTER,
                    header::HeaderName::from_static("x-request-id"),
                    header::HeaderName::from_static("ratelimit"),
                    header::HeaderName::from_static("ratelimit-policy"),
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    r.layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &axum::http::Request<_>| {
                crm_kit::telemetry::server_span(req.headers(), "http", req.uri().path())
            })
            .on_response(
                |res: &axum::http::Response<_>, latency: Duration, _span: &tracing::Span| {
                    let status = res.status().as_u16().to_string();
                    metrics::counter!("crm_http_requests_total", "status" => status).increment(1);
                    metrics::histogram!("crm_http_request_duration_seconds")
                        .record(latency.as_secs_f64());
                },
            ),
    )
    .layer(PropagateRequestIdLayer::x_request_id())
    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// A built, bound, not yet running gateway.
pub struct Application {
    router: Router,
    listener: TcpListener,
}

impl Application {
    /// Builds the gateway and binds its port.
    pub async fn build(
        config: &Config,
        settings: GatewaySettings,
        cache: Cache,
    ) -> anyhow::Result<Self> {
        let backends = Backends::new(&settings)?;
        let verifier = Arc::new(TokenVerifier::new(
            Arc::new(GrpcJwksSource::new(&config.identity_url)?),
            &config.jwt_issuer,
            &config.jwt_audience,
        ));
        let readiness = Readiness {
            db: None,
            amqp_url: None,
            cache: Some(cache.clone()),
        };
        let (router, _) = router((backends, readiness), verifier, cache, &settings);
        let router = layered(router, &settings);
        let listener = server::bind(SocketAddr::new(
            config.bind_host,
            config.http_port("gateway"),
        ))
        .await?;
        Ok(Self { router, listener })
    }

    /// The bound address.
    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel` fires, then drains in-flight requests.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        use axum::serve::ListenerExt;
        // Replies are small; without TCP_NODELAY each would wait on Nagle's algorithm.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
        Ok(())
    }
}

/// The OpenAPI document as served (for tooling).
pub fn openapi_document() -> anyhow::Result<String> {
    let settings = GatewaySettings::from_map(&Default::default(), "http://127.0.0.1:1")?;
    let backends = Backends::new(&settings)?;
    let verifier = Arc::new(TokenVerifier::new(
        Arc::new(GrpcJwksSource::new("http://127.0.0.1:1")?),
        "iss",
        "aud",
    ));
    let (_, doc) = router(
        (backends, Readiness::default()),
        verifier,
        Cache::memory(),
        &settings,
    );
    Ok(doc.to_pretty_json()?)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn openapi_document_lists_the_accounts_section() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::openapi_document().unwrap()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/v1/contacts", &["get", "post"][..]),
            ("/api/v1/contacts/bulk", &["post"]),
            ("/api/v1/contacts/{id}", &["get", "patch", "delete"]),
            ("/api/v1/contacts/{id}/restore", &["post"]),
            ("/api/v1/accounts", &["get", "post"]),
            ("/api/v1/accounts/{id}", &["get", "patch", "delete"]),
            ("/api/v1/accounts/{id}/restore", &["post"]),
            ("/api/v1/accounts/{id}/contacts", &["get"]),
            (
                "/api/v1/accounts/{id}/contacts/{contactId}",
                &["put", "delete"],
            ),
            ("/api/v1/custom-fields", &["get", "post"]),
            ("/api/v1/custom-fields/{id}", &["patch", "delete"]),
            ("/api/v1/activities", &["get", "post"]),
            ("/api/v1/activities/{id}", &["get", "patch", "delete"]),
            ("/api/v1/activities/{id}/restore", &["post"]),
            ("/api/v1/activities/{id}/complete", &["post"]),
            ("/api/v1/tasks", &["get"]),
            ("/api/v1/accounts/{id}/timeline", &["get"]),
            ("/api/v1/contacts/{id}/timeline", &["get"]),
            ("/api/v1/opportunities/{id}/timeline", &["get"]),
            ("/api/v1/leads/{id}/timeline", &["get"]),
            ("/api/v1/tickets/{id}/timeline", &["get"]),
            ("/api/v1/audit-log", &["get"]),
            ("/api/v1/audit-log/export", &["get"]),
        ] {
            for m in methods {
                assert!(
                    paths[path].get(*m).is_some(),
                    "{m} {path} is not documented"
                );
            }
        }
        // Every reference resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling reference to {name}"
            );
        }
        // Fields a role may hide are optional in the schema.
        let required = &doc["components"]["schemas"]["Contact"]["required"];
        assert!(!required.as_array().unwrap().iter().any(|f| f == "email"));
    }

    #[tokio::test]
    async fn openapi_document_lists_the_pipeline_section() {
        let doc: serde_json::Value =
            serde_json::from_str(&super::openapi_document().unwrap()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/v1/pipelines", &["get", "post"][..]),
            ("/api/v1/pipelines/{id}", &["get", "patch"]),
            ("/api/v1/opportunities", &["get", "post"]),
            ("/api/v1/opportunities/{id}", &["get", "patch", "delete"]),
            ("/api/v1/opportunities/{id}/restore", &["post"]),
            ("/api/v1/opportunities/{id}/stage", &["post"]),
            ("/api/v1/opportunities/bulk", &["post"]),
            ("/api/v1/opportunities/{id}/stage-history", &["get"]),
            ("/api/v1/tickets", &["get", "post"]),
            ("/api/v1/tickets/{id}", &["get", "patch", "delete"]),
            ("/api/v1/tickets/{id}/stage", &["post"]),
            ("/api/v1/leads", &["get", "post"]),
            ("/api/v1/leads/{id}", &["get", "patch", "delete"]),
            ("/api/v1/leads/{id}/convert", &["post"]),
            ("/api/v1/reports/pipeline", &["get"]),
        ] {
            for m in methods {
                assert!(
                    paths[path].get(*m).is_some(),
                    "{m} {path} is not documented"
                );
            }
        }
        // Hidden amounts are optional; the broken rule is part of problem+json.
        let required = &doc["components"]["schemas"]["Opportunity"]["required"];
        assert!(
            !required
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "amountCents")
        );
        assert!(doc["components"]["schemas"]["Problem"]["properties"]["rule"].is_object());
    }
}
