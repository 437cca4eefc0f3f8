//! Logins over gRPC against an in-process identity service, beside the raw Argon2id
//! verification that dominates them, at the same concurrency.
//!
//! `cargo run -p crm-bench --release --bin logins`

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use crm_bench::{Samples, Scratch, machine_line, ms, rate, ratio};
use crm_identity::{Application, Deps, Identity, passwords::Passwords};
use crm_kit::{Cache, Config};
use crm_proto::identity::{
    CreateUserRequest, GetJwksRequest, LoginRequest, SignUpRequest,
    identity_service_client::IdentityServiceClient,
};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Parser, Debug)]
#[command(about = "Login over gRPC beside the raw Argon2id verify, at the same concurrency")]
struct Args {
    /// Users in the tenant; logins go round them.
    #[arg(long, default_value_t = 16)]
    users: usize,
    /// Calls per path and concurrency level.
    #[arg(long, default_value_t = 300)]
    logins: usize,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Time limit of each measured phase, in seconds.
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Verify,
    InProcess,
    Grpc,
}

impl Path {
    const ALL: [Path; 3] = [Path::Verify, Path::InProcess, Path::Grpc];

    fn label(self) -> &'static str {
        match self {
            Path::Verify => "baseline: `Passwords::verify`",
            Path::InProcess => "`Identity::login`, in process",
            Path::Grpc => "`Login` over gRPC",
        }
    }
}

/// What the measured calls go to.
struct Targets {
    identity: Identity,
    grpc: Endpoint,
    passwords: Passwords,
    stored: Arc<String>,
    slug: String,
    emails: Arc<Vec<String>>,
}

/// One client's handle on a path.
enum Worker {
    Verify(Passwords, Arc<String>),
    InProcess(Identity),
    Grpc(IdentityServiceClient<Channel>),
}

impl Worker {
    async fn call(&mut self, slug: &str, email: &str) -> anyhow::Result<()> {
        let request = || LoginRequest {
            tenant_slug: slug.to_owned(),
            email: email.to_owned(),
            password: PASSWORD.into(),
            client_address: String::new(),
        };
        match self {
            Worker::Verify(passwords, stored) => {
                let verified = passwords
                    .verify(&SecretString::from(PASSWORD), Some(stored))
                    .await?;
                anyhow::ensure!(verified.ok, "the baseline password does not verify");
            }
            Worker::InProcess(identity) => {
                identity
                    .login(request())
                    .await
                    .with_context(|| format!("login of {email}"))?;
            }
            Worker::Grpc(client) => {
                let tokens = client
                    .login(request())
                    .await
                    .with_context(|| format!("login of {email}"))?
                    .into_inner()
                    .tokens;
                anyhow::ensure!(tokens.is_some(), "login of {email} returned no tokens");
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    let scratch = Scratch::create("logins").await?;
    let outcome = tokio::select! {
        r = run(&scratch, &args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.cleanup().await;
    outcome
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let vars = HashMap::from([
        ("DATABASE_URL".to_owned(), scratch.runtime_url.clone()),
        (
            "CRM_DATABASE_ADMIN_URL".to_owned(),
            scratch.admin_url.clone(),
        ),
        ("AMQP_URL".to_owned(), scratch.bus.amqp_url.clone()),
        ("REDIS_URL".to_owned(), scratch.redis_url.clone()),
        ("CRM_BUS_PREFIX".to_owned(), scratch.bus.prefix.clone()),
    ]);
    let mut config = Config::from_map(&vars)?;
    config.set_ports("identity", 0, 0);
    let db = scratch.runtime_db(config.db_max_connections).await?;
    let cache = Cache::connect(config.redis_url.expose_secret())
        .await
        .context("connecting to Redis: is it running?")?;
    let app = Application::build(
        &config,
        Deps {
            db,
            cache,
            bus: Some(scratch.bus.clone()),
        },
    )
    .await
    .context("building the identity service")?;
    let addr = app.grpc_addr()?;
    let identity = app.identity().clone();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(cancel.clone()));

    let outcome = measure_all(identity, addr, args).await;
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("warning: identity stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("warning: the identity task failed: {e}"),
        Err(_) => eprintln!("warning: identity did not stop within 10 s"),
    }
    outcome
}

fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30)))
}

async fn measure_all(identity: Identity, addr: SocketAddr, args: &Args) -> anyhow::Result<()> {
    let grpc = endpoint(addr)?;
    let (slug, emails) = tenant_with_users(&grpc, args.users).await?;
    // The same hasher the service builds: one permit per core.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let passwords = Passwords::new(cores)?;
    let stored = passwords
        .hash(&SecretString::from(PASSWORD))
        .await
        .context("hashing the baseline password")?;
    let targets = Targets {
        identity,
        grpc,
        passwords,
        stored: Arc::new(stored),
        slug,
        emails: Arc::new(emails),
    };

    let floor = grpc_floor(&targets.grpc).await?.summary();
    let limit = Duration::from_secs(args.max_secs);
    let mut rows = Vec::new();
    for (level, &clients) in args.clients.iter().enumerate() {
        let clients = clients.max(1);
        let mut by_path = vec![Samples::default(); Path::ALL.len()];
        for i in 0..Path::ALL.len() {
            // Rotate who goes first so no path always runs right after another.
            let path = Path::ALL[(level + i) % Path::ALL.len()];
            let workers = workers(&targets, path, clients).await?;
            by_path[path as usize] = drive(&targets, workers, args.logins, limit)
                .await
                .with_context(|| format!("{} with {clients} clients", path.label()))?;
        }
        rows.push((clients, by_path));
    }

    println!("{}", machine_line());
    println!(
        "argon2id m={} KiB, t={}, p={}; {cores} hashes at once (one per core); {} users in the tenant",
        crm_identity::passwords::MEMORY_KIB,
        crm_identity::passwords::ITERATIONS,
        crm_identity::passwords::LANES,
        targets.emails.len()
    );
    println!(
        "gRPC floor (`GetJwks`, one client, {} calls): p50 {} ms, p95 {} ms, p99 {} ms",
        floor.samples,
        ms(floor.p50),
        ms(floor.p95),
        ms(floor.p99)
    );
    println!();
    println!("| clients | path | calls | per s | p50 ms | p95 ms | p99 ms | per s ÷ baseline |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for (clients, by_path) in rows {
        let base = by_path[Path::Verify as usize].summary();
        for path in Path::ALL {
            let s = by_path[path as usize].summary();
            println!(
                "| {clients} | {} | {} | {} | {} | {} | {} | {} |",
                path.label(),
                s.samples,
                rate(s.per_sec),
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                ratio(s.per_sec, base.per_sec),
            );
        }
    }
    Ok(())
}

/// Signs up a tenant whose admin then creates the other users; returns the slug and e-mails.
async fn tenant_with_users(
    endpoint: &Endpoint,
    users: usize,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut client =
        IdentityServiceClient::new(endpoint.connect().await.context("connecting to identity")?);
    let slug = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let admin = "admin@bench.example".to_owned();
    let signed_up = client
        .sign_up(SignUpRequest {
            tenant_name: "Benchmark Ltd".into(),
            tenant_slug: slug.clone(),
            email: admin.clone(),
            password: PASSWORD.into(),
            name: "Bench Admin".into(),
        })
        .await
        .context("signing up")?
        .into_inner();
    let token = signed_up
        .tokens
        .context("sign-up returned no tokens")?
        .access_token;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .context("access token is not a header value")?;
    let mut emails = vec![admin];
    for i in 1..users {
        let email = format!("user{i}@bench.example");
        let mut req = tonic::Request::new(CreateUserRequest {
            email: email.clone(),
            name: format!("User {i}"),
            role: "sales_rep".into(),
            password: PASSWORD.into(),
            ..CreateUserRequest::default()
        });
        req.metadata_mut().insert("authorization", bearer.clone());
        client
            .create_user(req)
            .await
            .with_context(|| format!("creating {email}"))?;
        emails.push(email);
    }
    Ok((slug, emails))
}

/// The cheapest public call, to see what the transport alone costs per call.
async fn grpc_floor(endpoint: &Endpoint) -> anyhow::Result<Samples> {
    let mut client =
        IdentityServiceClient::new(endpoint.connect().await.context("connecting to identity")?);
    let mut s = Samples::default();
    let start = Instant::now();
    for _ in 0..200 {
        let t = Instant::now();
        client
            .get_jwks(GetJwksRequest {})
            .await
            .context("GetJwks")?;
        s.record(t.elapsed(), 1);
    }
    s.add_wall(start.elapsed());
    Ok(s)
}

/// One worker per client; gRPC clients each get their own connection, made before the clock starts.
async fn workers(t: &Targets, path: Path, clients: usize) -> anyhow::Result<Vec<Worker>> {
    let mut out = Vec::with_capacity(clients);
    for _ in 0..clients {
        out.push(match path {
            Path::Verify => Worker::Verify(t.passwords.clone(), t.stored.clone()),
            Path::InProcess => Worker::InProcess(t.identity.clone()),
            Path::Grpc => Worker::Grpc(IdentityServiceClient::new(
                t.grpc.connect().await.context("connecting to identity")?,
            )),
        });
    }
    Ok(out)
}

/// Runs the workers concurrently until `calls` calls are done or `limit` has passed.
async fn drive(
    t: &Targets,
    workers: Vec<Worker>,
    calls: usize,
    limit: Duration,
) -> anyhow::Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for mut worker in workers {
        let next = next.clone();
        let emails = t.emails.clone();
        let slug = t.slug.clone();
        tasks.spawn(async move {
            let mut s = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(s);
                }
                let t = Instant::now();
                worker.call(&slug, &emails[i % emails.len()]).await?;
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
