//! Start-up: build the service from configuration, bind its ports, run until cancelled.

use std::{net::SocketAddr, sync::Arc};

use axum::{Json, Router, extract::State, routing::get};
use crm_bus::{BusConfig, Relay};
use crm_kit::{
    Cache, Config, Db, TokenVerifier,
    auth::AuthLayer,
    paging::PageTokens,
    server::{self, Readiness},
};
use crm_proto::identity::identity_service_server::IdentityServiceServer;
use secrecy::{ExposeSecret, SecretBox};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    keys::KeyStore,
    passwords::Passwords,
    service::{Identity, TokenSettings},
};

/// Calls that need no access token.
pub const PUBLIC_METHODS: &[&str] = &[
    "/crm.identity.v1.IdentityService/SignUp",
    "/crm.identity.v1.IdentityService/Login",
    "/crm.identity.v1.IdentityService/RefreshToken",
    "/crm.identity.v1.IdentityService/Logout",
    "/crm.identity.v1.IdentityService/IssueClientToken",
    "/crm.identity.v1.IdentityService/GetJwks",
];

/// What the service runs on: shared with other services when they run in one process.
#[derive(Clone)]
pub struct Deps {
    pub db: Db,
    pub cache: Cache,
    /// RabbitMQ or an in-process broker ([`BusConfig::in_process`]); None runs without
    /// publishing events (the outbox still records them).
    pub bus: Option<BusConfig>,
}

/// A built, bound, not yet running identity service.
pub struct Application {
    identity: Identity,
    deps: Deps,
    readiness: Readiness,
    grpc: TcpListener,
    http: TcpListener,
}

impl Application {
    /// Builds the service and binds its ports (port 0 in the config picks free ones).
    pub async fn build(config: &Config, deps: Deps) -> anyhow::Result<Self> {
        let keys = KeyStore::new(
            deps.db.clone(),
            SecretBox::new(Box::new(*config.key_encryption_key.expose_secret())),
        );
        keys.ensure_current().await?;
        let verifier = Arc::new(TokenVerifier::new(
            Arc::new(keys.clone()),
            &config.jwt_issuer,
            &config.jwt_audience,
        ));
        let concurrency = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let identity = Identity::new(
            deps.db.clone(),
            deps.cache.clone(),
            keys,
            Passwords::new(concurrency)?,
            PageTokens::derive(config.key_encryption_key.expose_secret()),
            TokenSettings {
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
                access_ttl: config.access_token_ttl,
                refresh_idle_ttl: config.refresh_idle_ttl,
                refresh_absolute_ttl: config.refresh_absolute_ttl,
            },
            verifier,
        )?;
        let grpc = server::bind(SocketAddr::new(
            config.bind_host,
            config.grpc_port("identity"),
        ))
        .await?;
        let http = server::bind(SocketAddr::new(
            config.bind_host,
            config.http_port("identity"),
        ))
        .await?;
        let readiness = Readiness {
            db: Some(deps.db.clone()),
            // An in-process bus has no broker to probe.
            amqp_url: deps
                .bus
                .as_ref()
                .filter(|b| b.in_process_broker().is_none())
                .map(|b| b.amqp_url.clone().into()),
            cache: Some(deps.cache.clone()),
        };
        Ok(Self {
            identity,
            deps,
            readiness,
            grpc,
            http,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// The service, for callers in the same process.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Serves gRPC, HTTP and the outbox relay until `cancel` fires.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let auth = AuthLayer::new(self.identity.verifier(), PUBLIC_METHODS);
        let routes = tonic::service::Routes::new(IdentityServiceServer::new(self.identity.clone()));
        let http_router = server::ops_router(self.readiness).merge(
            Router::new()
                .route("/.well-known/jwks.json", get(jwks))
                .with_state(self.identity.clone()),
        );
        let grpc = server::serve_grpc(
            routes,
            &["crm.identity.v1.IdentityService"],
            auth,
            self.grpc,
            cancel.clone(),
        );
        let http = server::serve_http(http_router, self.http, cancel.clone());
        let relay = async {
            match self.deps.bus {
                Some(bus) => {
                    Relay::new(self.deps.db.clone(), crate::store::SCHEMA, bus)
                        .run(cancel.clone())
                        .await
                }
                None => Ok(()),
            }
        };
        let (g, h, r) = tokio::join!(grpc, http, relay);
        g?;
        h?;
        r?;
        Ok(())
    }
}

async fn jwks(
    State(identity): State<Identity>,
) -> Result<Json<serde_json::Value>, axum::http::StatusCode> {
    let keys = identity
        .jwks()
        .await
        .map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(serde_json::json!({
        "keys": keys.iter().map(|k| serde_json::json!({
            "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.r#use,
        })).collect::<Vec<_>>()
    })))
}
