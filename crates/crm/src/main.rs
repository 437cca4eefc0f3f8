//! The `crm` command: `crm up` runs every service in one process, each on its own port as it
//! would be deployed; `crm migrate` creates the database and migrates every schema;
//! `crm rotate-signing-key` rotates the token signing key; `crm search reindex|check-drift`
//! rebuild or check a tenant's search index.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use crm_bus::{BusConfig, InProcessBroker};
use crm_kit::{Cache, Config, Db, server};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "crm", version, about = "Multi-tenant CRM platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this process (creates and migrates the database first).
    Up {
        /// Also create a demo tenant and print how to log in.
        #[arg(long)]
        demo: bool,
        /// Use an in-process cache and an in-process event bus instead of Redis and RabbitMQ:
        /// only PostgreSQL is needed.
        #[arg(long)]
        embedded: bool,
    },
    /// Create the database if missing and run every migration.
    Migrate,
    /// Make a new token signing key current; the previous one stays published until rotated again.
    RotateSigningKey,
    /// Operate the search index of one tenant through the running search service.
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
}

#[derive(Subcommand)]
enum SearchCommand {
    /// Rebuild the tenant's index from the owning services, in place: searches keep
    /// answering throughout, and documents the sources no longer have are removed.
    Reindex {
        #[command(flatten)]
        target: SearchTarget,
        /// Record types to rebuild (comma list; default every indexed type).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
    },
    /// Compare the tenant's index with the owning services (counts per type); the result
    /// is also the `crm_search_drift` gauge on the search service's /metrics.
    CheckDrift {
        #[command(flatten)]
        target: SearchTarget,
    },
}

#[derive(clap::Args)]
struct SearchTarget {
    /// The tenant; must be the tenant of the token (the token decides).
    #[arg(long)]
    tenant: Option<String>,
    /// An access token of an admin user or API client of the tenant (read access with scope
    /// all to every record type, no hidden field).
    #[arg(long, env = "CRM_REINDEX_TOKEN", hide_env_values = true)]
    token: String,
    /// The search service's gRPC address.
    #[arg(long, env = "CRM_SEARCH_URL", default_value = "http://127.0.0.1:50055")]
    search_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::from_env()?;
    let _telemetry = crm_kit::telemetry::init("crm", &config)?;
    match cli.command {
        Command::Migrate => migrate(&config).await,
        Command::RotateSigningKey => {
            migrate(&config).await?;
            let db = runtime_db(&config).await?;
            let keys = crm_identity::keys::KeyStore::new(
                db,
                secrecy::SecretBox::new(Box::new(*config.key_encryption_key.expose_secret())),
            );
            let kid = keys.rotate().await?;
            println!("new signing key: {kid}");
            Ok(())
        }
        Command::Up { demo, embedded } => up(config, demo, embedded).await,
        Command::Search { command } => search_command(command).await,
    }
}

/// The tenant (`tid`) of an access token, read without verifying it: the search service
/// verifies the token; this only catches a token of the wrong tenant early.
fn token_tenant(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["tid"].as_str().map(str::to_owned)
}

async fn search_command(command: SearchCommand) -> anyhow::Result<()> {
    use crm_proto::search::{self as pb, search_service_client::SearchServiceClient};
    let target = match &command {
        SearchCommand::Reindex { target, .. } | SearchCommand::CheckDrift { target } => target,
    };
    let tid = token_tenant(&target.token)
        .context("--token (CRM_REINDEX_TOKEN) is not an access token")?;
    if let Some(t) = &target.tenant
        && t != &tid
    {
        bail!("--tenant {t} is not the tenant of the token ({tid})");
    }
    let channel = tonic::transport::Endpoint::from_shared(target.search_url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the search service at {}", target.search_url))?;
    let mut client = SearchServiceClient::new(channel);
    fn request<T>(token: &str, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = format!("Bearer {token}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }
    match &command {
        SearchCommand::Reindex { types, .. } => {
            let r = client
                .reindex(request(
                    &target.token,
                    pb::ReindexRequest {
                        types: types.clone(),
                    },
                ))
                .await
                .map_err(|s| anyhow::anyhow!("reindex failed: {}", s.message()))?
                .into_inner();
            for c in r.counts {
                println!("tenant {tid}: {} {} documents", c.count, c.r#type);
            }
        }
        SearchCommand::CheckDrift { .. } => {
            let r = client
                .check_drift(request(&target.token, pb::CheckDriftRequest {}))
                .await
                .map_err(|s| anyhow::anyhow!("drift check failed: {}", s.message()))?
                .into_inner();
            for d in r.drifts {
                let state = if d.indexed == d.source {
                    "in sync"
                } else {
                    "DRIFT"
                };
                println!(
                    "tenant {tid}: {}: index {} source {} ({state})",
                    d.r#type, d.indexed, d.source
                );
            }
        }
    }
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let admin = config.database_admin_url.expose_secret();
    let role = crm_kit::admin::user_name(config.database_url.expose_secret())?;
    crm_migrations::migrate_all(admin, &role).await.with_context(|| {
        "cannot migrate the database: is PostgreSQL running and CRM_DATABASE_ADMIN_URL right?"
    })?;
    tracing::info!("database migrated");
    Ok(())
}

async fn runtime_db(config: &Config) -> anyhow::Result<Db> {
    let db = Db::connect(
        config.database_url.expose_secret(),
        config.db_max_connections,
    )
    .await
    .context("cannot connect to PostgreSQL as the runtime role (DATABASE_URL)")?;
    db.check_runtime_role().await?;
    Ok(db)
}

async fn up(mut config: Config, demo: bool, embedded: bool) -> anyhow::Result<()> {
    migrate(&config).await?;
    let db = runtime_db(&config).await?;
    let (cache, bus) = if embedded {
        // One broker for the process: every service's relay and consumers get a clone of
        // this configuration, so they share its exchange and queues.
        let bus = BusConfig::in_process(InProcessBroker::new(), config.bus_prefix.clone());
        println!(
            "embedded mode: in-process cache; events flow in-process from each service's outbox to its consumers (no Redis or RabbitMQ needed)"
        );
        (Cache::memory(), bus)
    } else {
        let cache = match tokio::time::timeout(
            Duration::from_secs(5),
            Cache::connect(config.redis_url.expose_secret()),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => bail!(
                "cannot reach Redis ({e}); set REDIS_URL to a running Redis, or run `crm up --embedded`"
            ),
            Err(_) => bail!(
                "cannot reach Redis (timed out); set REDIS_URL to a running Redis, or run `crm up --embedded`"
            ),
        };
        let bus = BusConfig::new(config.amqp_url.expose_secret(), config.bus_prefix.clone());
        let probe = tokio::time::timeout(Duration::from_secs(5), async {
            let c = lapin_probe(&bus.amqp_url).await;
            c.map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r);
        if let Err(e) = probe {
            bail!(
                "cannot reach RabbitMQ ({e}); set AMQP_URL to a running RabbitMQ, or run `crm up --embedded`"
            );
        }
        (cache, bus)
    };

    let identity = crm_identity::Application::build(
        &config,
        crm_identity::Deps {
            db: db.clone(),
            cache: cache.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await?;
    println!(
        "identity: gRPC http://{}  HTTP http://{} (/livez /readyz /metrics /.well-known/jwks.json)",
        identity.grpc_addr()?,
        identity.http_addr()?
    );
    let demo_admin = if demo {
        seed_demo(identity.identity()).await?
    } else {
        None
    };
    // In one process the services reach each other where they actually listen.
    config.identity_url = local_url(identity.grpc_addr()?);
    let accounts = crm_accounts_contacts::Application::build(
        &config,
        crm_accounts_contacts::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await?;
    println!(
        "accounts-contacts: gRPC http://{}  HTTP http://{} (/livez /readyz /metrics)",
        accounts.grpc_addr()?,
        accounts.http_addr()?
    );
    let mut pipeline_settings = crm_pipeline::Settings::from_env()?;
    pipeline_settings.accounts_url = local_url(accounts.grpc_addr()?);
    let pipeline = crm_pipeline::Application::build(
        &config,
        &pipeline_settings,
        crm_pipeline::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await?;
    println!(
        "pipeline: gRPC http://{}  HTTP http://{} (/livez /readyz /metrics)",
        pipeline.grpc_addr()?,
        pipeline.http_addr()?
    );
    let mut search_settings = crm_search::app::Settings::from_env()?;
    search_settings.accounts_url = local_url(accounts.grpc_addr()?);
    search_settings.pipeline_url = local_url(pipeline.grpc_addr()?);
    let search = crm_search::Application::build(
        &config,
        &search_settings,
        crm_search::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await?;
    println!(
        "search: gRPC http://{}  HTTP http://{} (/livez /readyz /metrics)",
        search.grpc_addr()?,
        search.http_addr()?
    );
    let mut timeline_settings = crm_activity_timeline::Settings::from_env()?;
    timeline_settings.accounts_url = local_url(accounts.grpc_addr()?);
    timeline_settings.pipeline_url = local_url(pipeline.grpc_addr()?);
    let timeline = crm_activity_timeline::Application::build(
        &config,
        &timeline_settings,
        crm_activity_timeline::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await?;
    println!(
        "activity-timeline: gRPC http://{}  HTTP http://{} (/livez /readyz /metrics)",
        timeline.grpc_addr()?,
        timeline.http_addr()?
    );
    let mut settings = crm_gateway::GatewaySettings::from_env(&config.identity_url)?;
    if let Some(cell) = settings.cells.get_mut("default") {
        cell.accounts = local_url(accounts.grpc_addr()?);
        cell.search = local_url(search.grpc_addr()?);
        cell.pipeline = local_url(pipeline.grpc_addr()?);
        cell.timeline = local_url(timeline.grpc_addr()?);
    }
    let webhooks = crm_webhook_delivery::Application::build(
        &config,
        crm_webhook_delivery::WebhookSettings::from_env(config.env)?,
        crm_webhook_delivery::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await?;
    println!(
        "webhook-delivery: gRPC http://{}  HTTP http://{} (/livez /readyz /metrics)",
        webhooks.grpc_addr()?,
        webhooks.http_addr()?
    );
    if let Some(cell) = settings.cells.get_mut("default") {
        cell.webhooks = local_url(webhooks.grpc_addr()?);
    }
    let gateway = crm_gateway::Application::build(&config, settings, cache.clone()).await?;
    let gateway_addr = gateway.addr()?;
    let cancel = CancellationToken::new();
    server::cancel_on_signals(cancel.clone());
    let accounts_service = accounts.accounts().clone();
    let pipeline_service = pipeline.pipelines().clone();
    let timeline_service = timeline.timeline().clone();
    let services = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let (i, a, w, s, p, t, g) = tokio::join!(
                identity.run_until_stopped(cancel.clone()),
                accounts.run_until_stopped(cancel.clone()),
                webhooks.run_until_stopped(cancel.clone()),
                search.run_until_stopped(cancel.clone()),
                pipeline.run_until_stopped(cancel.clone()),
                timeline.run_until_stopped(cancel.clone()),
                gateway.run_until_stopped(cancel.clone())
            );
            i.and(a).and(w).and(s).and(p).and(t).and(g)
        }
    });
    if let Some(admin) = demo_admin {
        let accounts = seed_demo_records(&accounts_service, &timeline_service, &admin).await?;
        seed_demo_pipeline(&pipeline_service, &admin, &accounts).await?;
    }
    println!("gateway: http://{gateway_addr}/api/v1 (docs: http://{gateway_addr}/api/v1/docs)");
    if demo {
        println!(
            "demo: tenant {DEMO_SLUG:?}, users admin@, manager@, rep@, support@, viewer@demo.example, password {DEMO_PASSWORD:?}\n\
             log in:\n  curl -s http://{gateway_addr}/api/v1/auth/login -H 'content-type: application/json' \\\n    \
             -d '{{\"tenantSlug\":\"{DEMO_SLUG}\",\"email\":\"admin@demo.example\",\"password\":\"{DEMO_PASSWORD}\"}}'"
        );
    }
    println!("crm is up; Ctrl-C stops it");
    services.await?
}

/// The URL a service in this process is reached at.
fn local_url(mut addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

async fn lapin_probe(url: &str) -> anyhow::Result<()> {
    crm_kit::server::Readiness {
        amqp_url: Some(url.to_owned().into()),
        ..Default::default()
    }
    .check()
    .await
    .into_iter()
    .next()
    .map_or(Ok(()), |e| Err(anyhow::anyhow!(e)))
}

const DEMO_SLUG: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password-2026";

/// Creates the demo tenant's users; returns its admin when the tenant is new.
async fn seed_demo(
    identity: &crm_identity::Identity,
) -> anyhow::Result<Option<(crm_kit::Caller, String)>> {
    use crm_proto::identity as pb;
    let signed = identity
        .sign_up(pb::SignUpRequest {
            tenant_name: "Demo Company".into(),
            tenant_slug: DEMO_SLUG.into(),
            email: "admin@demo.example".into(),
            password: DEMO_PASSWORD.into(),
            name: "Demo Admin".into(),
        })
        .await;
    match signed {
        Ok(s) => {
            let token = s.tokens.map(|t| t.access_token).unwrap_or_default();
            let caller = identity
                .verifier()
                .verify(&token)
                .await
                .map_err(|e| anyhow::anyhow!("demo token: {e}"))?;
            let mut rep = String::new();
            for (email, name, role) in [
                ("manager@demo.example", "Morgan Manager", "sales_manager"),
                ("rep@demo.example", "Riley Rep", "sales_rep"),
                ("support@demo.example", "Sam Support", "support_agent"),
                ("viewer@demo.example", "Vic Viewer", "read_only"),
            ] {
                let user = identity
                    .create_user(
                        &caller,
                        pb::CreateUserRequest {
                            email: email.into(),
                            name: name.into(),
                            role: role.into(),
                            password: DEMO_PASSWORD.into(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("demo user {email}: {e}"))?;
                if role == "sales_rep" {
                    rep = user.id;
                }
            }
            println!("demo tenant created");
            Ok(Some((caller, rep)))
        }
        Err(e) if e.code == crm_kit::ErrorCode::Conflict => {
            println!("demo tenant already exists");
            Ok(None)
        }
        Err(e) => bail!("cannot create the demo tenant: {e}"),
    }
}

/// A few accounts and contacts for the demo tenant, some owned by the sales rep, with a
/// few activities logged about them; returns the accounts' ids.
async fn seed_demo_records(
    accounts: &crm_accounts_contacts::Accounts,
    timeline: &crm_activity_timeline::Timeline,
    (admin, rep): &(crm_kit::Caller, String),
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    use crm_proto::accounts as pb;
    let records = [
        (
            "Northwind Traders",
            "northwind.example",
            "Wholesale",
            "Nancy",
            "Davolio",
            "nancy@northwind.example",
            "+1 206 555 0101",
        ),
        (
            "Contoso Pharmaceuticals",
            "contoso.example",
            "Healthcare",
            "Анна",
            "Иванова",
            "anna@contoso.example",
            "+44 20 7946 0958",
        ),
        (
            "Fabrikam Robotics",
            "fabrikam.example",
            "Manufacturing",
            "健",
            "佐藤",
            "ken.sato@fabrikam.example",
            "+81 3 1234 5678",
        ),
        (
            "Tailspin Toys",
            "tailspin.example",
            "Retail",
            "María",
            "García",
            "maria@tailspin.example",
            "+34 912 345 678",
        ),
    ];
    for (i, (name, website, industry, first, last, email, phone)) in records.into_iter().enumerate()
    {
        let owner = if i % 2 == 0 {
            rep.clone()
        } else {
            admin.subject.to_string()
        };
        let account = accounts
            .create_account(
                admin,
                pb::CreateAccountRequest {
                    name: name.into(),
                    website: website.into(),
                    industry: industry.into(),
                    owner_user_id: owner.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo account {name}: {e}"))?;
        ids.push(account.id.clone());
        let contact = accounts
            .create_contact(
                admin,
                pb::CreateContactRequest {
                    first_name: first.into(),
                    last_name: last.into(),
                    email: email.into(),
                    phone: phone.into(),
                    account_id: account.id.clone(),
                    owner_user_id: owner,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo contact {email}: {e}"))?;
        let (subject_type, subject_id, activity_type, body) = match i % 3 {
            0 => (
                "contact",
                contact.id,
                "call",
                format!("Intro call with {first} {last}"),
            ),
            1 => (
                "account",
                account.id,
                "meeting",
                format!("Quarterly review at {name}"),
            ),
            _ => (
                "contact",
                contact.id,
                "task",
                format!("Send {first} the proposal"),
            ),
        };
        timeline
            .create_activity(
                admin,
                crm_proto::timeline::CreateActivityRequest {
                    subject_type: subject_type.into(),
                    subject_id,
                    activity_type: activity_type.into(),
                    body,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo activity about {name}: {e}"))?;
    }
    println!("demo accounts, contacts and activities created");
    Ok(ids)
}

/// A few opportunities, tickets and leads for the demo tenant.
async fn seed_demo_pipeline(
    pipeline: &crm_pipeline::Pipelines,
    (admin, rep): &(crm_kit::Caller, String),
    accounts: &[String],
) -> anyhow::Result<()> {
    use crm_proto::pipeline as pb;
    let deals = [
        (
            "Northwind renewal",
            4_500_000,
            "USD",
            "proposal",
            "2027-03-31",
        ),
        (
            "Contoso expansion",
            12_000_000,
            "GBP",
            "negotiation",
            "2027-02-28",
        ),
        ("Fabrikam pilot", 800_000, "JPY", "closed_won", "2026-11-15"),
        (
            "Tailspin rollout",
            2_500_000,
            "EUR",
            "qualification",
            "2027-05-31",
        ),
    ];
    for (i, (name, amount, currency, stage, close)) in deals.into_iter().enumerate() {
        let Some(account) = accounts.get(i) else {
            break;
        };
        pipeline
            .create_opportunity(
                admin,
                pb::CreateOpportunityRequest {
                    account_id: account.clone(),
                    name: name.into(),
                    amount_cents: Some(amount),
                    currency: currency.into(),
                    stage: stage.into(),
                    close_date: close.into(),
                    owner_user_id: if i % 2 == 0 {
                        rep.clone()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo opportunity {name}: {e}"))?;
    }
    for (subject, priority) in [
        ("Cannot export invoices", "high"),
        ("Password reset e-mail not arriving", "urgent"),
    ] {
        pipeline
            .create_ticket(
                admin,
                pb::CreateTicketRequest {
                    subject: subject.into(),
                    priority: priority.into(),
                    account_id: accounts.first().cloned().unwrap_or_default(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo ticket {subject}: {e}"))?;
    }
    for (first, last, company) in [
        ("Grace", "Hopper", "Cobol Systems"),
        ("Alan", "Turing", "Enigma Labs"),
    ] {
        pipeline
            .create_lead(
                admin,
                pb::CreateLeadRequest {
                    first_name: first.into(),
                    last_name: last.into(),
                    company: company.into(),
                    source: "demo".into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("demo lead {last}: {e}"))?;
    }
    println!("demo opportunities, tickets and leads created");
    Ok(())
}
