//! Temporary diagnostic.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crm_bench::Scratch;
use crm_identity::{Application, Deps};
use crm_kit::{Cache, Config};
use crm_proto::identity::{
    LoginRequest, SignUpRequest, identity_service_client::IdentityServiceClient,
    identity_service_server::IdentityServiceServer,
};
use secrecy::ExposeSecret as _;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = Scratch::create("probe").await?;
    let r = run(&scratch).await;
    scratch.cleanup().await;
    r
}

async fn run(scratch: &Scratch) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let vars = HashMap::from([
        ("DATABASE_URL".to_owned(), scratch.runtime_url.clone()),
        ("REDIS_URL".to_owned(), scratch.redis_url.clone()),
    ]);
    let mut config = Config::from_map(&vars)?;
    config.set_ports("identity", 0, 0);
    let db = scratch.runtime_db(10).await?;
    let cache = Cache::connect(config.redis_url.expose_secret()).await?;
    let app = Application::build(
        &config,
        Deps {
            db,
            cache,
            bus: None,
        },
    )
    .await?;
    let identity = app.identity().clone();
    let resp = identity
        .sign_up(SignUpRequest {
            tenant_name: "x".into(),
            tenant_slug: "probe".into(),
            email: "a@b.example".into(),
            password: "correct horse battery".into(),
            name: "".into(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let _ = resp;
    for nodelay in [false, true, false, true] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(nodelay));
        let cancel = tokio_util::sync::CancellationToken::new();
        let c2 = cancel.clone();
        let svc = IdentityServiceServer::new(identity.clone());
        let h = tokio::spawn(async move {
            Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, c2.cancelled_owned())
                .await
        });
        let mut client = IdentityServiceClient::new(
            Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
        let mut v = Vec::new();
        for _ in 0..40 {
            let t = Instant::now();
            client
                .login(LoginRequest {
                    tenant_slug: "probe".into(),
                    email: "a@b.example".into(),
                    password: "correct horse battery".into(),
                    client_address: String::new(),
                })
                .await
                .context("login")?;
            v.push(t.elapsed());
        }
        v.sort();
        println!("server nodelay={nodelay}: p50 {:?} p90 {:?}", v[20], v[36]);
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
    }
    Ok(())
}
