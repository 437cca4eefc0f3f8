//! Start-up: build the service from configuration, bind its ports, run until cancelled.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crm_bus::{BusConfig, Relay};
use crm_kit::{
    Config, Db, TokenVerifier,
    auth::{AuthLayer, GrpcJwksSource},
    paging::PageTokens,
    server::{self, Readiness},
};
use crm_proto::{
    accounts::accounts_service_server::AccountsServiceServer,
    identity::identity_service_client::IdentityServiceClient,
};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{access::Permissions, service::Accounts, store};

/// What the service runs on: shared with other services when they run in one process.
#[derive(Clone)]
pub struct Deps {
    pub db: Db,
    /// RabbitMQ or an in-process broker; None runs without publishing events (the outbox
    /// still records them).
    pub bus: Option<BusConfig>,
}

/// A built, bound, not yet running accounts and contacts service.
pub struct Application {
    accounts: Accounts,
    verifier: Arc<TokenVerifier>,
    deps: Deps,
    readiness: Readiness,
    grpc: TcpListener,
    http: TcpListener,
}

impl Application {
    /// Builds the service and binds its ports (port 0 in the config picks free ones).
    pub async fn build(config: &Config, deps: Deps) -> anyhow::Result<Self> {
        let verifier = Arc::new(TokenVerifier::new(
            Arc::new(GrpcJwksSource::new(&config.identity_url)?),
            &config.jwt_issuer,
            &config.jwt_audience,
        ));
        let channel = tonic::transport::Endpoint::from_shared(config.identity_url.clone())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect_lazy();
        let accounts = Accounts::new(
            deps.db.clone(),
            Permissions::new(IdentityServiceClient::new(channel)),
            PageTokens::derive(config.key_encryption_key.expose_secret()),
        )?;
        let grpc = server::bind(SocketAddr::new(
            config.bind_host,
            config.grpc_port("accounts-contacts"),
        ))
        .await?;
        let http = server::bind(SocketAddr::new(
            config.bind_host,
            config.http_port("accounts-contacts"),
        ))
        .await?;
        let readiness = Readiness {
            db: Some(deps.db.clone()),
            amqp_url: deps
                .bus
                .as_ref()
                .filter(|b| b.in_process_broker().is_none())
                .map(|b| b.amqp_url.clone().into()),
            cache: None,
        };
        Ok(Self {
            accounts,
            verifier,
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
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Serves gRPC, HTTP and the outbox relay until `cancel` fires.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let auth = AuthLayer::new(self.verifier.clone(), &[]);
        let routes = tonic::service::Routes::new(AccountsServiceServer::new(self.accounts.clone()));
        let grpc = server::serve_grpc(
            routes,
            &["crm.accounts.v1.AccountsService"],
            auth,
            self.grpc,
            cancel.clone(),
        );
        let http = server::serve_http(
            server::ops_router(self.readiness),
            self.http,
            cancel.clone(),
        );
        let relay = async {
            match self.deps.bus {
                Some(bus) => {
                    Relay::new(self.deps.db.clone(), store::SCHEMA, bus)
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
