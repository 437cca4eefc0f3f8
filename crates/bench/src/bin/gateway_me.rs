//! `GET /api/v1/me` through the in-process gateway, beside the same `GetMe` call made
//! directly to identity over gRPC, at the same concurrency and in alternating rounds.
//!
//! `cargo run -p crm-bench --release --bin gateway_me`

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Parser;
use crm_bench::{Samples, Scratch, machine_line, ms, rate, ratio};
use crm_kit::{Cache, Config};
use crm_proto::identity::{
    GetMeRequest, SignUpRequest, identity_service_client::IdentityServiceClient,
};
use secrecy::ExposeSecret as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";
/// Far above anything the run can reach, so the limits count but never refuse.
const NO_LIMIT: &str = "10000000";

#[derive(Parser, Debug)]
#[command(about = "GET /api/v1/me through the gateway beside GetMe over gRPC to identity")]
struct Args {
    /// Concurrent clients: keep-alive HTTP/1.1 connections, and gRPC tasks.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// gRPC tasks per channel (HTTP/2 connection) on the direct path.
    #[arg(long, default_value_t = 8)]
    tasks_per_channel: usize,
    /// Rounds; each round measures both paths, and who goes first alternates.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Requests per path and round.
    #[arg(long, default_value_t = 6000)]
    requests: usize,
    /// Unmeasured requests per path before the first round.
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Time limit of each measured phase, in seconds.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    Gateway,
}

impl Path {
    const ALL: [Path; 2] = [Path::Direct, Path::Gateway];

    fn label(self) -> &'static str {
        match self {
            Path::Direct => "baseline: `GetMe` over gRPC to identity",
            Path::Gateway => "`GET /api/v1/me` through the gateway",
        }
    }
}

/// One client's handle on a path.
enum Worker {
    Direct(IdentityServiceClient<Channel>, MetadataValue<Ascii>),
    Gateway(reqwest::Client, Arc<str>, Arc<str>),
}

impl Worker {
    async fn call(&mut self) -> anyhow::Result<()> {
        match self {
            Worker::Direct(client, bearer) => {
                let mut req = tonic::Request::new(GetMeRequest {});
                req.metadata_mut().insert("authorization", bearer.clone());
                let me = client.get_me(req).await.context("GetMe")?.into_inner();
                anyhow::ensure!(me.user.is_some(), "GetMe returned no user");
            }
            Worker::Gateway(http, url, auth) => {
                let res = http
                    .get(&**url)
                    .header("authorization", &**auth)
                    .send()
                    .await
                    .context("GET /api/v1/me")?;
                let status = res.status();
                let body = res.bytes().await.context("reading /me")?;
                anyhow::ensure!(
                    status == reqwest::StatusCode::OK,
                    "GET /api/v1/me answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Ok(())
    }
}

/// What the run signed up, for the calls and for the cleanup of its Redis keys.
struct Tenant {
    id: String,
    user_id: String,
    access_token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(
        args.tasks_per_channel > 0,
        "--tasks-per-channel must be at least 1"
    );
    let scratch = Scratch::create("gateway_me").await?;
    let outcome = tokio::select! {
        r = run(&scratch, &args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.cleanup().await;
    outcome
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let mut vars = HashMap::from([
        ("DATABASE_URL".to_owned(), scratch.runtime_url.clone()),
        (
            "CRM_DATABASE_ADMIN_URL".to_owned(),
            scratch.admin_url.clone(),
        ),
        ("REDIS_URL".to_owned(), scratch.redis_url.clone()),
        ("CRM_IDENTITY_GRPC_PORT".to_owned(), "0".to_owned()),
        ("CRM_IDENTITY_HTTP_PORT".to_owned(), "0".to_owned()),
        ("CRM_GATEWAY_HTTP_PORT".to_owned(), "0".to_owned()),
        ("CRM_RATE_LIMIT_PER_CLIENT".to_owned(), NO_LIMIT.to_owned()),
        ("CRM_RATE_LIMIT_PER_TENANT".to_owned(), NO_LIMIT.to_owned()),
    ]);
    let config = Config::from_map(&vars)?;
    let db = scratch.runtime_db(config.db_max_connections).await?;
    let cache = Cache::connect(config.redis_url.expose_secret())
        .await
        .context("connecting to Redis: is it running?")?;
    let cancel = CancellationToken::new();
    let mut servers = JoinSet::new();

    let outcome = async {
        let identity = crm_identity::Application::build(
            &config,
            crm_identity::Deps {
                db,
                cache: cache.clone(),
                bus: None,
            },
        )
        .await
        .context("building the identity service")?;
        let identity_addr = identity.grpc_addr()?;
        servers.spawn(identity.run_until_stopped(cancel.clone()));

        vars.insert(
            "CRM_IDENTITY_URL".to_owned(),
            format!("http://{identity_addr}"),
        );
        let config = Config::from_map(&vars)?;
        let settings = crm_gateway::GatewaySettings::from_map(&vars, &config.identity_url)?;
        let gateway = crm_gateway::Application::build(&config, settings, cache.clone())
            .await
            .context("building the gateway")?;
        let gateway_addr = gateway.addr()?;
        servers.spawn(gateway.run_until_stopped(cancel.clone()));

        let tenant = sign_up(identity_addr).await?;
        let started = unix_secs();
        let measured = measure_all(args, identity_addr, gateway_addr, &tenant).await;
        forget_tenant(&cache, &tenant, started).await;
        measured
    }
    .await;

    cancel.cancel();
    let stop = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(joined) = servers.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: a service stopped with an error: {e:#}"),
                Err(e) => eprintln!("warning: a service task failed: {e}"),
            }
        }
    })
    .await;
    if stop.is_err() {
        eprintln!("warning: the services did not stop within 10 s");
        servers.abort_all();
    }
    outcome
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true))
}

async fn sign_up(identity: SocketAddr) -> anyhow::Result<Tenant> {
    let mut client = IdentityServiceClient::new(
        endpoint(identity)?
            .connect()
            .await
            .context("connecting to identity")?,
    );
    let slug = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let r = client
        .sign_up(SignUpRequest {
            tenant_name: "Benchmark Ltd".into(),
            tenant_slug: slug,
            email: "admin@bench.example".into(),
            password: PASSWORD.into(),
            name: "Bench Admin".into(),
        })
        .await
        .context("signing up")?
        .into_inner();
    Ok(Tenant {
        id: r.tenant.context("sign-up returned no tenant")?.id,
        user_id: r.user.context("sign-up returned no user")?.id,
        access_token: r.tokens.context("sign-up returned no tokens")?.access_token,
    })
}

/// Deletes the Redis keys this tenant left: rate-limit windows and cached permissions.
async fn forget_tenant(cache: &Cache, tenant: &Tenant, started: u64) {
    let (t, u) = (&tenant.id, &tenant.user_id);
    let window = 10; // CRM_RATE_LIMIT_WINDOW_SECS, left at its default.
    let mut keys = Vec::new();
    for slot in started / window..=unix_secs() / window + 1 {
        keys.push(format!("rl:tenant:{t}:{slot}"));
        keys.push(format!("rl:client:{t}:{u}:{slot}"));
    }
    let generation = cache
        .get(&format!("perm:gen:{t}"))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "0".into());
    keys.push(format!("perm:{t}:{generation}:{u}"));
    keys.push(format!("perm:gen:{t}"));
    if let Err(e) = cache.del(&keys).await {
        eprintln!("warning: cannot delete the tenant's Redis keys: {e}");
    }
}

async fn measure_all(
    args: &Args,
    identity: SocketAddr,
    gateway: SocketAddr,
    tenant: &Tenant,
) -> anyhow::Result<()> {
    let limit = Duration::from_secs(args.max_secs);
    for path in Path::ALL {
        let workers = workers(args, path, identity, gateway, tenant).await?;
        drive(workers, args.warmup, limit)
            .await
            .with_context(|| format!("warming up {}", path.label()))?;
    }
    let mut by_path = vec![Samples::default(); Path::ALL.len()];
    let mut round_ratios = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds {
        let mut this_round = [0.0; 2];
        for i in 0..Path::ALL.len() {
            // Alternate who goes first, so neither always runs right after the other.
            let path = Path::ALL[(round + i) % Path::ALL.len()];
            let workers = workers(args, path, identity, gateway, tenant).await?;
            let s = drive(workers, args.requests, limit)
                .await
                .with_context(|| format!("round {}: {}", round + 1, path.label()))?;
            this_round[path as usize] = s.summary().per_sec;
            by_path[path as usize].merge(s);
        }
        round_ratios.push(this_round[Path::Gateway as usize] / this_round[Path::Direct as usize]);
    }

    let channels = args.connections.div_ceil(args.tasks_per_channel);
    println!("{}", machine_line());
    println!(
        "{} concurrent clients; gateway: one keep-alive HTTP/1.1 connection per client; \
         direct: {channels} gRPC channel(s), {} tasks per channel; {} rounds of up to {} \
         requests per path",
        args.connections,
        args.tasks_per_channel.min(args.connections),
        args.rounds,
        args.requests
    );
    println!(
        "gateway ÷ direct per round: {}",
        round_ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "| path | requests | per s | p50 ms | p95 ms | p99 ms | per s ÷ baseline | p50 ÷ baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let base = by_path[Path::Direct as usize].summary();
    for path in Path::ALL {
        let s = by_path[path as usize].summary();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            path.label(),
            s.samples,
            rate(s.per_sec),
            ms(s.p50),
            ms(s.p95),
            ms(s.p99),
            ratio(s.per_sec, base.per_sec),
            ratio(s.p50.as_secs_f64(), base.p50.as_secs_f64()),
        );
    }
    Ok(())
}

/// One worker per client, each connected (and checked with one call) before the clock starts.
async fn workers(
    args: &Args,
    path: Path,
    identity: SocketAddr,
    gateway: SocketAddr,
    tenant: &Tenant,
) -> anyhow::Result<Vec<Worker>> {
    let mut out = Vec::with_capacity(args.connections);
    match path {
        Path::Direct => {
            let bearer: MetadataValue<Ascii> = format!("Bearer {}", tenant.access_token)
                .parse()
                .context("access token is not a header value")?;
            let endpoint = endpoint(identity)?;
            let mut channel = None;
            for i in 0..args.connections {
                if i % args.tasks_per_channel == 0 {
                    channel = Some(endpoint.connect().await.context("connecting to identity")?);
                }
                let channel = channel.clone().context("no channel")?;
                out.push(Worker::Direct(
                    IdentityServiceClient::new(channel),
                    bearer.clone(),
                ));
            }
        }
        Path::Gateway => {
            let url: Arc<str> = format!("http://{gateway}/api/v1/me").into();
            let auth: Arc<str> = format!("Bearer {}", tenant.access_token).into();
            for _ in 0..args.connections {
                let http = reqwest::Client::builder()
                    .http1_only()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .context("building an HTTP client")?;
                out.push(Worker::Gateway(http, url.clone(), auth.clone()));
            }
        }
    }
    for worker in &mut out {
        worker.call().await.context("first call")?;
    }
    Ok(out)
}

/// Runs the workers concurrently until `calls` calls are done or `limit` has passed.
async fn drive(workers: Vec<Worker>, calls: usize, limit: Duration) -> anyhow::Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for mut worker in workers {
        let next = next.clone();
        tasks.spawn(async move {
            let mut s = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(s);
                }
                let t = Instant::now();
                worker.call().await?;
                s.record(t.elapsed(), 1);
            }
        });
    }
    let mut all = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        all.merge(joined.context("worker panicked")??);
    }
    // Workers record no wall time of their own: the phase's throughput is over real time.
    all.add_wall(start.elapsed());
    Ok(all)
}
