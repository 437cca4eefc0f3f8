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
    /// Logins per concurrency level (and as many raw verifications).
    #[arg(long, default_value_t = 300)]
    logins: usize,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Time limit of each measured phase, in seconds.
    #[arg(long, default_value_t = 60)]
    max_secs: u64,
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
    let cancel = CancellationToken::new();
    let identity = app.identity().clone();
    let server = tokio::spawn(app.run_until_stopped(cancel.clone()));

    let outcome = measure_all(addr, &identity, args).await;
    cancel.cancel();
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("warning: identity stopped with an error: {e:#}"),
        Ok(Err(e)) => eprintln!("warning: identity task failed: {e}"),
        Err(_) => eprintln!("warning: identity did not stop within 10 s"),
    }
    outcome
}

async fn measure_all(addr: SocketAddr, identity: &Identity, args: &Args) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let (slug, emails) = tenant_with_users(&endpoint, args.users).await?;

    // The same hasher the service builds: one permit per core.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let passwords = Passwords::new(cores)?;
    let stored = passwords
        .hash(&SecretString::from(PASSWORD))
        .await
        .context("hashing the baseline password")?;

    let floor = grpc_floor(&endpoint).await?.summary();
    let mut rows = Vec::new();
    for &clients in &args.clients {
        let clients = clients.max(1);
        let deadline = Duration::from_secs(args.max_secs);
        let logins = drive_logins(&endpoint, &slug, &emails, clients, args.logins, deadline)
            .await
            .with_context(|| format!("logins with {clients} clients"))?;
        let direct = drive_direct(identity, &slug, &emails, clients, args.logins, deadline)
            .await
            .with_context(|| format!("in-process logins with {clients} tasks"))?;
        let verify = drive_verify(&passwords, &stored, clients, args.logins, deadline)
            .await
            .with_context(|| format!("raw verify with {clients} tasks"))?;
        rows.push((clients, logins, direct, verify));
    }

    println!("{}", machine_line());
    println!(
        "argon2id m={} KiB, t={}, p={}; {cores} hashes at once (one per core); {} users",
        crm_identity::passwords::MEMORY_KIB,
        crm_identity::passwords::ITERATIONS,
        crm_identity::passwords::LANES,
        emails.len()
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
    for (clients, logins, direct, verify) in rows {
        let v = verify.summary();
        let d = direct.summary();
        println!(
            "| {clients} | `Identity::login` in process | {} | {} | {} | {} | {} | {} |",
            d.samples,
            rate(d.per_sec),
            ms(d.p50),
            ms(d.p95),
            ms(d.p99),
            ratio(d.per_sec, v.per_sec),
        );
        let l = logins.summary();
        println!(
            "| {clients} | baseline: `Passwords::verify` | {} | {} | {} | {} | {} | 1.00 |",
            v.samples,
            rate(v.per_sec),
            ms(v.p50),
            ms(v.p95),
            ms(v.p99),
        );
        println!(
            "| {clients} | `Login` over gRPC | {} | {} | {} | {} | {} | {} |",
            l.samples,
            rate(l.per_sec),
            ms(l.p50),
            ms(l.p95),
            ms(l.p99),
            ratio(l.per_sec, v.per_sec),
        );
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

async fn drive_logins(
    endpoint: &Endpoint,
    slug: &str,
    emails: &[String],
    clients: usize,
    logins: usize,
    limit: Duration,
) -> anyhow::Result<Samples> {
    // Connect every client before the clock starts.
    let mut channels: Vec<Channel> = Vec::with_capacity(clients);
    for _ in 0..clients {
        channels.push(endpoint.connect().await.context("connecting to identity")?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let emails = Arc::new(emails.to_vec());
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for channel in channels {
        let next = next.clone();
        let emails = emails.clone();
        let slug = slug.to_owned();
        tasks.spawn(async move {
            let mut client = IdentityServiceClient::new(channel);
            let mut s = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= logins || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(s);
                }
                let email = &emails[i % emails.len()];
                let t = Instant::now();
                let resp = client
                    .login(LoginRequest {
                        tenant_slug: slug.clone(),
                        email: email.clone(),
                        password: PASSWORD.into(),
                        client_address: String::new(),
                    })
                    .await
                    .with_context(|| format!("login of {email}"))?;
                s.record(t.elapsed(), 1);
                anyhow::ensure!(
                    resp.into_inner().tokens.is_some(),
                    "login of {email} returned no tokens"
                );
            }
        });
    }
    collect(tasks, start).await
}

async fn drive_direct(
    identity: &Identity,
    slug: &str,
    emails: &[String],
    tasks_n: usize,
    logins: usize,
    limit: Duration,
) -> anyhow::Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let emails = Arc::new(emails.to_vec());
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for _ in 0..tasks_n {
        let next = next.clone();
        let emails = emails.clone();
        let slug = slug.to_owned();
        let identity = identity.clone();
        tasks.spawn(async move {
            let mut s = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= logins || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(s);
                }
                let email = &emails[i % emails.len()];
                let t = Instant::now();
                identity
                    .login(LoginRequest {
                        tenant_slug: slug.clone(),
                        email: email.clone(),
                        password: PASSWORD.into(),
                        client_address: String::new(),
                    })
                    .await
                    .with_context(|| format!("login of {email}"))?;
                s.record(t.elapsed(), 1);
            }
        });
    }
    collect(tasks, start).await
}

async fn drive_verify(
    passwords: &Passwords,
    stored: &str,
    tasks_n: usize,
    calls: usize,
    limit: Duration,
) -> anyhow::Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let stored = Arc::new(stored.to_owned());
    let password = SecretString::from(PASSWORD);
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for _ in 0..tasks_n {
        let next = next.clone();
        let stored = stored.clone();
        let passwords = passwords.clone();
        let password = password.clone();
        tasks.spawn(async move {
            let mut s = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(s);
                }
                let t = Instant::now();
                let verified = passwords.verify(&password, Some(&stored)).await?;
                s.record(t.elapsed(), 1);
                anyhow::ensure!(verified.ok, "the baseline password does not verify");
            }
        });
    }
    collect(tasks, start).await
}

/// Merges the workers' samples; the wall time runs from `start` to the last worker's end.
async fn collect(
    mut tasks: JoinSet<anyhow::Result<Samples>>,
    start: Instant,
) -> anyhow::Result<Samples> {
    let mut all = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        all.merge(joined.context("worker panicked")??);
    }
    // Workers record no wall time of their own: the phase's throughput is over real time.
    all.add_wall(start.elapsed());
    Ok(all)
}
