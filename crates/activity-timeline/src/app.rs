//! Start-up: build the service from configuration, bind its ports, run until cancelled.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use crm_bus::{BusConfig, Consumer, ConsumerOptions, Relay};
use crm_kit::{
    Config, Db, TokenVerifier,
    access::Permissions,
    auth::{AuthLayer, GrpcJwksSource},
    paging::PageTokens,
    server::{self, Readiness},
};
use crm_proto::{
    accounts::accounts_service_client::AccountsServiceClient,
    identity::identity_service_client::IdentityServiceClient,
    pipeline::pipeline_service_client::PipelineServiceClient,
    timeline::timeline_service_server::TimelineServiceServer,
};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    consumer::{self, TimelineHandler},
    service::Timeline,
    store,
    subjects::Subjects,
};

/// Where accounts-contacts listens unless `CRM_ACCOUNTS_CONTACTS_URL` says otherwise.
pub const DEFAULT_ACCOUNTS_URL: &str = "http://127.0.0.1:50052";
/// Where pipeline listens unless `CRM_PIPELINE_URL` says otherwise.
pub const DEFAULT_PIPELINE_URL: &str = "http://127.0.0.1:50053";

/// Settings of this service beyond the shared [`Config`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// accounts-contacts, which answers whether an account or contact may be read.
    pub accounts_url: String,
    /// pipeline, which answers whether an opportunity, lead or ticket may be read.
    pub pipeline_url: String,
    /// Tuning of the event consumer.
    pub consumer: ConsumerOptions,
}

impl Settings {
    /// Reads `CRM_ACCOUNTS_CONTACTS_URL` and `CRM_PIPELINE_URL` from the environment.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads settings from a map (tests pass their own).
    pub fn from_map(vars: &HashMap<String, String>) -> anyhow::Result<Self> {
        use crm_kit::config::service_url;
        Ok(Self {
            accounts_url: service_url(vars, "CRM_ACCOUNTS_CONTACTS_URL", DEFAULT_ACCOUNTS_URL)?,
            pipeline_url: service_url(vars, "CRM_PIPELINE_URL", DEFAULT_PIPELINE_URL)?,
            consumer: ConsumerOptions::default(),
        })
    }
}

/// What the service runs on: shared with other services when they run in one process.
#[derive(Clone)]
pub struct Deps {
    pub db: Db,
    /// RabbitMQ or an in-process broker; None runs without consuming or publishing events
    /// (the outbox still records them).
    pub bus: Option<BusConfig>,
}

/// A built, bound, not yet running activity and timeline service.
pub struct Application {
    timeline: Timeline,
    verifier: Arc<TokenVerifier>,
    deps: Deps,
    consumer: Option<Consumer>,
    readiness: Readiness,
    grpc: TcpListener,
    http: TcpListener,
}

fn channel(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Application {
    /// Builds the service, declares its queue (so no event is missed before it runs) and
    /// binds its ports (port 0 in the config picks free ones).
    pub async fn build(config: &Config, settings: &Settings, deps: Deps) -> anyhow::Result<Self> {
        let verifier = Arc::new(TokenVerifier::new(
            Arc::new(GrpcJwksSource::new(&config.identity_url)?),
            &config.jwt_issuer,
            &config.jwt_audience,
        ));
        let timeline = Timeline::new(
            deps.db.clone(),
            Permissions::new(IdentityServiceClient::new(channel(&config.identity_url)?)),
            PageTokens::derive(config.key_encryption_key.expose_secret()),
            Subjects::new(
                AccountsServiceClient::new(channel(&settings.accounts_url)?),
                PipelineServiceClient::new(channel(&settings.pipeline_url)?),
            ),
        );
        let consumer = match &deps.bus {
            Some(bus) => {
                let c = Consumer::new(
                    deps.db.clone(),
                    store::SCHEMA,
                    bus.clone(),
                    consumer::SERVICE,
                    consumer::bindings(),
                    Arc::new(TimelineHandler),
                    settings.consumer.clone(),
                );
                c.declare().await?;
                Some(c)
            }
            None => None,
        };
        let grpc = server::bind(SocketAddr::new(
            config.bind_host,
            config.grpc_port("activity-timeline"),
        ))
        .await?;
        let http = server::bind(SocketAddr::new(
            config.bind_host,
            config.http_port("activity-timeline"),
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
            timeline,
            verifier,
            deps,
            consumer,
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
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Serves gRPC, HTTP, the outbox relay and the event consumer until `cancel` fires.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let auth = AuthLayer::new(self.verifier.clone(), &[]);
        let routes = tonic::service::Routes::new(TimelineServiceServer::new(self.timeline.clone()));
        let grpc = server::serve_grpc(
            routes,
            &["crm.timeline.v1.TimelineService"],
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
            match &self.deps.bus {
                Some(bus) => {
                    Relay::new(self.deps.db.clone(), store::SCHEMA, bus.clone())
                        .run(cancel.clone())
                        .await
                }
                None => Ok(()),
            }
        };
        let consume = async {
            match self.consumer {
                Some(c) => c.run(cancel.clone()).await,
                None => Ok(()),
            }
        };
        let (g, h, r, c) = tokio::join!(grpc, http, relay, consume);
        g?;
        h?;
        r?;
        c?;
        Ok(())
    }
}
