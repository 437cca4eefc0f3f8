//! Start-up: build the service from configuration, bind its ports, run until cancelled.

use std::{net::SocketAddr, sync::Arc};

use crm_bus::{BusConfig, Consumer, ConsumerOptions, Relay};
use crm_kit::{
    Config, Db, TokenVerifier,
    auth::{AuthLayer, GrpcJwksSource},
    config::Environment,
    paging::PageTokens,
    server::{self, Readiness},
};
use crm_proto::webhooks::webhook_service_server::WebhookServiceServer;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::WebhookSettings,
    crypto::SecretCipher,
    fanout::FanOut,
    service::{self, Webhooks},
    store::SCHEMA,
    worker::Worker,
};

/// The name of the service: its ports, its queue.
pub const SERVICE: &str = "webhook-delivery";

/// Calls that need no access token: inbound webhooks authenticate by their signature.
pub const PUBLIC_METHODS: &[&str] = &["/crm.webhooks.v1.WebhookService/ReceiveInbound"];

/// What the service runs on: shared with other services when they run in one process.
#[derive(Clone)]
pub struct Deps {
    pub db: Db,
    /// RabbitMQ or an in-process broker; None runs without consuming or publishing events
    /// (the outbox still records them).
    pub bus: Option<BusConfig>,
}

/// A built, bound, not yet running webhook service.
pub struct Application {
    webhooks: Webhooks,
    worker: Option<Worker>,
    consumer: Option<Consumer>,
    verifier: Arc<TokenVerifier>,
    deps: Deps,
    readiness: Readiness,
    grpc: TcpListener,
    http: TcpListener,
}

impl Application {
    /// Builds the service, declares its queue (so no event published from now on is missed)
    /// and binds its ports (port 0 in the config picks free ones).
    pub async fn build(
        config: &Config,
        settings: WebhookSettings,
        deps: Deps,
    ) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let kek = config.key_encryption_key.expose_secret();
        let cipher = SecretCipher::derive(kek);
        let webhooks = Webhooks::new(
            deps.db.clone(),
            settings.clone(),
            cipher.clone(),
            PageTokens::derive(kek),
            service::permissions(&config.identity_url)?,
            config.env == Environment::Production,
        );
        let worker = Worker::new(deps.db.clone(), settings, cipher)?;
        let verifier = Arc::new(TokenVerifier::new(
            Arc::new(GrpcJwksSource::new(&config.identity_url)?),
            &config.jwt_issuer,
            &config.jwt_audience,
        ));
        let consumer = match &deps.bus {
            Some(bus) => {
                let consumer = Consumer::new(
                    deps.db.clone(),
                    SCHEMA,
                    bus.clone(),
                    SERVICE,
                    vec!["#".into()],
                    Arc::new(FanOut),
                    ConsumerOptions::default(),
                );
                consumer.declare().await?;
                Some(consumer)
            }
            None => None,
        };
        let grpc =
            server::bind(SocketAddr::new(config.bind_host, config.grpc_port(SERVICE))).await?;
        let http =
            server::bind(SocketAddr::new(config.bind_host, config.http_port(SERVICE))).await?;
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
            webhooks,
            worker: Some(worker),
            consumer,
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

    /// Takes the delivery worker out, to run it on its own (tests stop and restart it);
    /// `run_until_stopped` then runs everything else.
    pub fn take_worker(&mut self) -> Option<Worker> {
        self.worker.take()
    }

    /// Serves gRPC and HTTP, consumes events, relays the outbox and sends webhooks until
    /// `cancel` fires.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let auth = AuthLayer::new(self.verifier.clone(), PUBLIC_METHODS);
        let routes = tonic::service::Routes::new(WebhookServiceServer::new(self.webhooks.clone()));
        let grpc = server::serve_grpc(
            routes,
            &["crm.webhooks.v1.WebhookService"],
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
                    Relay::new(self.deps.db.clone(), SCHEMA, bus.clone())
                        .run(cancel.clone())
                        .await
                }
                None => Ok(()),
            }
        };
        let consumer = async {
            match self.consumer {
                Some(c) => c.run(cancel.clone()).await,
                None => Ok(()),
            }
        };
        let worker = async {
            match self.worker {
                Some(w) => w.run(cancel.clone()).await,
                None => Ok(()),
            }
        };
        let (g, h, r, c, w) = tokio::join!(grpc, http, relay, consumer, worker);
        g?;
        h?;
        r?;
        c?;
        w?;
        Ok(())
    }
}
