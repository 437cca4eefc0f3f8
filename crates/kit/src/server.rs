//! Server bootstrap: a gRPC server with health, reflection, tracing, metrics and auth; the HTTP
//! operations endpoints (/livez, /readyz, /metrics); graceful shutdown through one token.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tower_http::trace::TraceLayer;

use crate::{auth::AuthLayer, cache::Cache, db::Db, telemetry};

/// Binds a listener; port 0 picks a free port.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves gRPC until `cancel` fires, then drains in-flight calls.
///
/// `services` are the fully-qualified names reported as SERVING by grpc.health.v1.
pub async fn serve_grpc(
    routes: Routes,
    services: &[&str],
    auth: AuthLayer,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for s in services {
        reporter
            .set_service_status(*s, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crm_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let routes = routes
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let trace = TraceLayer::new_for_grpc()
        .make_span_with(|req: &http::Request<_>| {
            telemetry::server_span(req.headers(), "grpc", req.uri().path())
        })
        .on_response(
            |res: &http::Response<_>, latency: Duration, _span: &tracing::Span| {
                let code = res
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned();
                metrics::counter!("crm_grpc_requests_total", "code" => code).increment(1);
                metrics::histogram!("crm_grpc_request_duration_seconds")
                    .record(latency.as_secs_f64());
            },
        );
    let shutdown_reporter = reporter.clone();
    let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
    let signal = async move {
        cancel.cancelled().await;
        for s in names {
            shutdown_reporter
                .set_service_status(s, tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    tonic::transport::Server::builder()
        .timeout(Duration::from_secs(30))
        .layer(trace)
        .layer(auth)
        .add_routes(routes)
        // Small unary replies must not wait on Nagle's algorithm: without TCP_NODELAY a
        // round trip over loopback costs tens of milliseconds.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            signal,
        )
        .await?;
    Ok(())
}

/// What `/readyz` touches.
#[derive(Clone, Default)]
pub struct Readiness {
    pub db: Option<Db>,
    pub amqp_url: Option<SecretString>,
    pub cache: Option<Cache>,
}

impl Readiness {
    /// Checks every dependency; returns the failures by name.
    pub async fn check(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Some(db) = &self.db
            && let Err(e) = tokio::time::timeout(Duration::from_secs(2), db.ping())
                .await
                .map_err(|_| "timeout".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()))
        {
            failures.push(format!("postgres: {e}"));
        }
        if let Some(url) = &self.amqp_url {
            let res = tokio::time::timeout(Duration::from_secs(2), async {
                let conn = lapin::Connection::connect(
                    url.expose_secret(),
                    lapin::ConnectionProperties::default(),
                )
                .await?;
                conn.close(200, "readiness probe".into()).await
            })
            .await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("rabbitmq: {e}")),
                Err(_) => failures.push("rabbitmq: timeout".into()),
            }
        }
        if let Some(cache) = &self.cache
            && let Err(e) = tokio::time::timeout(Duration::from_secs(2), cache.ping())
                .await
                .map_err(|_| "timeout".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()))
        {
            failures.push(format!("redis: {e}"));
        }
        failures
    }
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Arc<Readiness>>) -> impl IntoResponse {
    let failures = r.check().await;
    if failures.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        tracing::warn!(failures = ?failures, "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, failures.join("\n"))
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
}

/// `/livez`, `/readyz` and `/metrics`; services merge their own HTTP routes into it.
pub fn ops_router(readiness: Readiness) -> Router {
    // Counters only count once a recorder is installed.
    telemetry::prometheus();
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(readiness))
        .route("/metrics", get(metrics_text))
}

/// Serves HTTP until `cancel` fires.
pub async fn serve_http(
    router: Router,
    listener: TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

/// Cancels `cancel` on SIGTERM or Ctrl-C.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
}
