//! Webhook delivery throughput to a local receiver that answers 200 at once, beside a plain
//! HTTP load loop (reqwest, no signing, no database) against the same receiver in the same
//! run; then delivery latency from an event's commit to the receiver, through the whole
//! path: outbox, relay, RabbitMQ, the fan-out consumer, the worker.
//!
//! `cargo run -p crm-bench --release --bin webhooks`

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Router, body::Bytes, extract::State, routing::post};
use clap::Parser;
use crm_bench::{RUNTIME_ROLE, Samples, Scratch, machine_line, ms, rate, ratio};
use crm_bus::{Event, Relay, outbox};
use crm_kit::{Config, TenantId, admin};
use crm_webhook_delivery::{
    Application, Deps, WebhookSettings, crypto::SecretCipher, fanout, store, worker::Worker,
};
use sea_orm::{ConnectionTrait, Database};
use secrecy::ExposeSecret;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The outbox the latency phase's events come from, as another service's would.
const SOURCE_SCHEMA: &str = "bench_source";

#[derive(Parser, Debug)]
#[command(
    about = "Webhook deliveries per second beside a plain HTTP loop; event-to-receiver latency"
)]
struct Args {
    /// Deliveries in the throughput phase (and requests in the plain loop).
    #[arg(long, default_value_t = 5_000)]
    deliveries: usize,
    /// Endpoints the deliveries are spread over (each allows `per_endpoint` in flight).
    #[arg(long, default_value_t = 16)]
    endpoints: usize,
    /// Attempts in flight at once (the worker's CRM_WEBHOOK_CONCURRENCY, the plain loop's tasks).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Attempts in flight per endpoint.
    #[arg(long, default_value_t = 4)]
    per_endpoint: usize,
    /// Events in the latency phase.
    #[arg(long, default_value_t = 300)]
    events: usize,
    /// Events per second in the latency phase.
    #[arg(long, default_value_t = 50)]
    event_rate: u64,
    /// Time limit of each measured phase, in seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
}

#[derive(Clone, Default)]
struct Receiver {
    count: Arc<AtomicU64>,
    /// Arrival of each event id (latency phase only).
    arrivals: Arc<Mutex<Option<HashMap<String, Instant>>>>,
}

async fn receive(State(r): State<Receiver>, body: Bytes) -> &'static str {
    let at = Instant::now();
    r.count.fetch_add(1, Ordering::Relaxed);
    let mut arrivals = r.arrivals.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = arrivals.as_mut()
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        && let Some(id) = v["data"]["eventId"].as_str()
    {
        map.entry(id.to_owned()).or_insert(at);
    }
    "ok"
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    anyhow::ensure!(
        args.endpoints > 0 && args.concurrency > 0,
        "endpoints and concurrency must be at least 1"
    );
    let scratch = Scratch::create("webhooks").await?;
    let outcome = tokio::select! {
        r = run(&scratch, &args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.cleanup().await;
    outcome
}

async fn wait_for(count: &AtomicU64, target: u64, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while count.load(Ordering::Relaxed) < target {
        anyhow::ensure!(
            started.elapsed() < limit,
            "gave up after {limit:?}: {} of {target}",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(started.elapsed())
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let admin_conn = Database::connect(scratch.admin_url.as_str())
        .await
        .context("connecting as admin")?;
    admin::ensure_runtime_role(&admin_conn, RUNTIME_ROLE).await?;
    admin_conn
        .execute_unprepared(&outbox::ddl(SOURCE_SCHEMA, RUNTIME_ROLE))
        .await
        .context("creating the source outbox")?;
    admin_conn.close().await?;
    let db = scratch.runtime_db(20).await?;
    scratch.consumer("webhook-delivery");

    // The receiver: 200 at once.
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    {
        let app = Router::new()
            .route("/r/{n}", post(receive))
            .with_state(receiver.clone());
        let cancel = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        });
    }

    let env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), scratch.runtime_url.clone()),
        ("CRM_WEBHOOK_DELIVERY_GRPC_PORT".into(), "0".into()),
        ("CRM_WEBHOOK_DELIVERY_HTTP_PORT".into(), "0".into()),
        ("CRM_IDENTITY_URL".into(), "http://127.0.0.1:1".into()),
        ("CRM_WEBHOOK_ALLOW_HTTP".into(), "true".into()),
        ("CRM_WEBHOOK_ALLOW_NETS".into(), "127.0.0.1/32".into()),
        (
            "CRM_WEBHOOK_CONCURRENCY".into(),
            args.concurrency.to_string(),
        ),
        (
            "CRM_WEBHOOK_PER_ENDPOINT_CONCURRENCY".into(),
            args.per_endpoint.to_string(),
        ),
        ("CRM_WEBHOOK_POLL_SECS".into(), "0.05".into()),
    ]);
    let config = Config::from_map(&env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings =
        WebhookSettings::from_map(&env, config.env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let kek = *config.key_encryption_key.expose_secret();
    let cipher = SecretCipher::derive(&kek);

    // One tenant, `endpoints` endpoints on the receiver, subscribed to contact.created.
    let tenant = TenantId::new();
    let mut endpoints = Vec::new();
    {
        let tx = db.tenant_tx(tenant).await?;
        for n in 0..args.endpoints {
            let id = Uuid::now_v7();
            let sealed = cipher.seal(id, &crm_webhook_delivery::crypto::new_key());
            store::insert_endpoint(
                &tx,
                store::NewEndpoint {
                    id,
                    url: &format!("http://{addr}/r/{n}"),
                    description: "bench",
                    event_types: &["contact.created".to_owned()],
                    enabled: true,
                    secret_enc: sealed.ciphertext,
                    secret_nonce: sealed.nonce,
                    created_by: None,
                },
            )
            .await?;
            endpoints.push(id);
        }
        tx.commit().await?;
    }
    let sample = Event::new(
        "bench",
        "contact.created",
        tenant,
        None,
        "contact",
        Uuid::now_v7(),
        None,
        Some(
            json!({"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com", "ownerUserId": Uuid::now_v7()}),
        ),
    );
    let body = fanout::payload(&sample)?;
    let limit = Duration::from_secs(args.max_secs);

    // Throughput: the deliveries wait in PostgreSQL; a worker starts and sends them all.
    {
        let tx = db.tenant_tx(tenant).await?;
        for i in 0..args.deliveries {
            store::insert_delivery(
                &tx,
                endpoints[i % endpoints.len()],
                Uuid::now_v7(),
                "contact.created",
                &body,
            )
            .await?;
        }
        tx.commit().await?;
    }
    // Warm the plain client and the receiver.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    for n in 0..args.concurrency {
        plain
            .post(format!("http://{addr}/r/{}", n % args.endpoints))
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
    }
    receiver.count.store(0, Ordering::Relaxed);

    let worker_cancel = cancel.child_token();
    let started = Instant::now();
    tokio::spawn(
        Worker::new(db.clone(), Arc::new(settings.clone()), cipher.clone())?
            .run(worker_cancel.clone()),
    );
    wait_for(&receiver.count, args.deliveries as u64, limit).await?;
    let worker_wall = started.elapsed();
    // Every delivery is also recorded as succeeded before the worker is done with it.
    let settled = wait_settled(&db, tenant, args.deliveries, limit).await?;
    worker_cancel.cancel();
    let worker_rate = args.deliveries as f64 / worker_wall.as_secs_f64();
    let settled_rate = args.deliveries as f64 / (worker_wall + settled).as_secs_f64();

    // Baseline: the same receiver, the same bodies, `concurrency` tasks of a plain client.
    receiver.count.store(0, Ordering::Relaxed);
    let per_task = args.deliveries.div_ceil(args.concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let client = plain.clone();
        let url = format!("http://{addr}/r/{}", t % args.endpoints);
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?
                    .error_for_status()?;
            }
            Ok::<_, reqwest::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let plain_wall = started.elapsed();
    let plain_rate = (per_task * args.concurrency) as f64 / plain_wall.as_secs_f64();

    // Latency: events committed to another service's outbox at a steady rate, through the
    // relay, RabbitMQ, the consumer's fan-out and the worker, to the receiver.
    *receiver.arrivals.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
    let mut app = Application::build(
        &config,
        settings.clone(),
        Deps {
            db: db.clone(),
            bus: Some(scratch.bus.clone()),
        },
    )
    .await?;
    drop(app.take_worker());
    let app_cancel = cancel.child_token();
    tokio::spawn(app.run_until_stopped(app_cancel.clone()));
    tokio::spawn(Worker::new(db.clone(), Arc::new(settings), cipher)?.run(app_cancel.clone()));
    tokio::spawn(
        Relay::new(db.clone(), SOURCE_SCHEMA, scratch.bus.clone()).run(app_cancel.clone()),
    );
    // Only the first endpoint listens to the latency events: one delivery per event.
    {
        let tx = db.tenant_tx(tenant).await?;
        for id in &endpoints[1..] {
            store::update_endpoint(
                &tx,
                *id,
                store::EndpointChange {
                    url: format!("http://{addr}/r/off"),
                    description: "bench".into(),
                    event_types: vec![],
                    enabled: false,
                    disabled_reason: "manual".into(),
                    reset_failing: false,
                },
            )
            .await?;
        }
        tx.commit().await?;
    }
    receiver.count.store(0, Ordering::Relaxed);
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let gap = Duration::from_micros(1_000_000 / args.event_rate.max(1));
    let mut tick = tokio::time::interval(gap);
    for _ in 0..args.events {
        tick.tick().await;
        let event = Event::new(
            "bench",
            "contact.created",
            tenant,
            None,
            "contact",
            Uuid::now_v7(),
            None,
            Some(json!({"firstName": "Ada", "lastName": "Lovelace"})),
        );
        let tx = db.tenant_tx(tenant).await?;
        outbox::append(&tx, SOURCE_SCHEMA, &event).await?;
        tx.commit().await?;
        committed.insert(event.id.to_string(), Instant::now());
    }
    wait_for(&receiver.count, args.events as u64, limit).await?;
    app_cancel.cancel();
    let arrivals = receiver
        .arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    let mut latency = Samples::default();
    for (id, at) in &committed {
        if let Some(arrived) = arrivals.get(id) {
            latency.record(arrived.saturating_duration_since(*at), 1);
        }
    }
    let lat = latency.summary();
    cancel.cancel();

    println!("{}", machine_line());
    println!(
        "{} deliveries of {} bytes over {} endpoints; {} in flight at most ({} per endpoint)",
        args.deliveries,
        body.len(),
        args.endpoints,
        args.concurrency,
        args.per_endpoint
    );
    println!();
    println!("| path | requests | per s | ÷ plain loop |");
    println!("|---|---:|---:|---:|");
    println!(
        "| plain HTTP loop (reqwest, {} tasks) | {} | {} | 1.00 |",
        args.concurrency,
        per_task * args.concurrency,
        rate(plain_rate)
    );
    println!(
        "| webhook worker: received by the receiver | {} | {} | **{}** |",
        args.deliveries,
        rate(worker_rate),
        ratio(worker_rate, plain_rate)
    );
    println!(
        "| webhook worker: recorded as succeeded | {} | {} | {} |",
        args.deliveries,
        rate(settled_rate),
        ratio(settled_rate, plain_rate)
    );
    println!();
    println!("| latency, event commit → receiver | events | p50 ms | p95 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| outbox → relay → RabbitMQ → fan-out → worker → receiver at {}/s | {} | {} | {} | {} |",
        args.event_rate,
        lat.samples,
        ms(lat.p50),
        ms(lat.p95),
        ms(lat.p99)
    );
    Ok(())
}

/// Waits until every delivery of the tenant is recorded as succeeded; the time since now.
async fn wait_settled(
    db: &crm_kit::Db,
    tenant: TenantId,
    total: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let tx = db.tenant_tx(tenant).await?;
        let row = tx
            .conn()
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT count(*) AS n FROM webhooks.deliveries WHERE tenant_id = $1 AND status = 'succeeded'",
                [tenant.uuid().into()],
            ))
            .await?;
        tx.commit().await?;
        let n: i64 = row.map(|r| r.try_get("", "n")).transpose()?.unwrap_or(0);
        if n as usize >= total {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "gave up waiting for {total} settled deliveries ({n})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
