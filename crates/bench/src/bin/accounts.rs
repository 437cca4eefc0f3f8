//! The accounts-contacts service under a large tenant: list page 1, a page deep in the
//! list, get by id and `q`, each through the in-process gateway and as the same SQL run
//! directly on the same pool, at the same concurrency and in alternating rounds.
//!
//! `seed` loads a persistent database once (1,000,000 contacts and 100,000 accounts in one
//! tenant, ten smaller tenants beside it); `run` measures against it; `drop` removes it.
//!
//! ```sh
//! cargo run -p crm-bench --release --bin accounts -- seed
//! cargo run -p crm-bench --release --bin accounts -- run
//! ```

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use crm_accounts_contacts::{
    access::Reach,
    custom::{Definition, FieldType},
    filter::Schema,
    service::{ListArgs, like_pattern, list_fingerprint, list_page_token, list_query},
    store::{self, CONTACT},
};
use crm_bench::{
    RUNTIME_ROLE, Samples, Summary, machine_line, ms,
    names::{CULTURES, FREE_MAIL, INDUSTRIES, SECTORS, STEMS, SUFFIXES, TITLES, TLDS, list},
    rate, ratio,
};
use crm_kit::{Cache, Config, Db, TenantId, admin, paging::PageTokens};
use crm_proto::{
    accounts::{self as acpb, accounts_service_client::AccountsServiceClient},
    identity as idpb,
};
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value,
};
use secrecy::ExposeSecret as _;
use serde_json::{Value as Json, json};
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
const BIG_SLUG: &str = "bench-big";
/// The order the gateway asks for on `sort=created_at&order=desc`.
const ORDER_BY: &str = "create_time desc";
const LIST_QUERY: &str = "limit=50&sort=created_at&order=desc";
/// The custom field every contact of a seeded tenant may carry (a number), and its sort.
const CUSTOM_KEY: &str = "score";
const ORDER_BY_CUSTOM: &str = "custom.score desc";
const LIST_QUERY_CUSTOM: &str = "limit=50&sort=custom.score&order=desc";
/// A score that a few contacts have (scores are spread over 100,000): the filter's value.
const CUSTOM_FILTER_VALUE: i64 = 12345;
const PAGE: u64 = 50;

#[derive(Parser, Debug)]
#[command(
    about = "Accounts and contacts lists, get and q: through the gateway beside the same SQL"
)]
struct Cli {
    /// The benchmark database (kept between runs).
    #[arg(long, global = true, default_value = "bench_accounts")]
    database: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates, migrates and loads the database; does nothing when it is already loaded.
    Seed(SeedArgs),
    /// Measures against the loaded database.
    Run(RunArgs),
    /// Drops the database.
    Drop,
}

#[derive(clap::Args, Debug)]
struct SeedArgs {
    /// Contacts of the big tenant.
    #[arg(long, default_value_t = 1_000_000)]
    contacts: u64,
    /// Accounts of the big tenant.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Smaller tenants beside the big one.
    #[arg(long, default_value_t = 10)]
    small_tenants: u32,
    /// Contacts of each smaller tenant.
    #[arg(long, default_value_t = 10_000)]
    small_contacts: u64,
    /// Accounts of each smaller tenant.
    #[arg(long, default_value_t = 1_000)]
    small_accounts: u64,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 100_000)]
    chunk: u64,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Concurrent clients on each path.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds; each measures every query on both paths, and who goes first alternates.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Calls per query, path and round.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Unmeasured calls per query and path before the first round.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Time limit of each measured phase, in seconds.
    #[arg(long, default_value_t = 20)]
    max_secs: u64,
    /// The row (in created_at desc order) the deep page starts after.
    #[arg(long, default_value_t = 500_000)]
    deep_offset: u64,
    /// A selective `q`: matches a few hundred contacts of the big tenant.
    #[arg(long, default_value = "sigur")]
    q: String,
    /// A less selective `q`, reported separately; empty skips it.
    #[arg(long, default_value = "mart")]
    q_broad: String,
    /// Runtime pool size (CRM_DB_MAX_CONNECTIONS); the services' default when absent.
    #[arg(long)]
    pool: Option<u32>,
    /// Also writes the figures as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Superuser and runtime-role URLs of the benchmark database.
struct Urls {
    admin: String,
    runtime: String,
    redis: String,
}

impl Urls {
    fn new(database: &str) -> anyhow::Result<Self> {
        let base = env_or(
            "CRM_DATABASE_ADMIN_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let admin = admin::with_database(&base, database)?;
        let mut runtime = url::Url::parse(&admin).context("admin url")?;
        runtime
            .set_username(RUNTIME_ROLE)
            .map_err(|()| anyhow::anyhow!("cannot set the runtime role in {admin}"))?;
        runtime
            .set_password(None)
            .map_err(|()| anyhow::anyhow!("cannot clear the password in {admin}"))?;
        Ok(Self {
            admin,
            runtime: runtime.to_string(),
            redis: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
        })
    }

    fn vars(&self) -> HashMap<String, String> {
        HashMap::from([
            ("DATABASE_URL".to_owned(), self.runtime.clone()),
            ("CRM_DATABASE_ADMIN_URL".to_owned(), self.admin.clone()),
            ("REDIS_URL".to_owned(), self.redis.clone()),
            ("CRM_IDENTITY_GRPC_PORT".to_owned(), "0".to_owned()),
            ("CRM_IDENTITY_HTTP_PORT".to_owned(), "0".to_owned()),
            ("CRM_ACCOUNTS_CONTACTS_GRPC_PORT".to_owned(), "0".to_owned()),
            ("CRM_ACCOUNTS_CONTACTS_HTTP_PORT".to_owned(), "0".to_owned()),
            ("CRM_GATEWAY_HTTP_PORT".to_owned(), "0".to_owned()),
            ("CRM_RATE_LIMIT_PER_CLIENT".to_owned(), NO_LIMIT.to_owned()),
            ("CRM_RATE_LIMIT_PER_TENANT".to_owned(), NO_LIMIT.to_owned()),
            ("CRM_RATE_LIMIT_ANONYMOUS".to_owned(), NO_LIMIT.to_owned()),
        ])
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let cli = Cli::parse();
    let urls = Urls::new(&cli.database)?;
    let work = async {
        match &cli.command {
            Command::Seed(a) => seed(&urls, a).await,
            Command::Run(a) => run(&urls, a).await,
            Command::Drop => {
                admin::drop_database(&urls.admin).await?;
                println!("dropped database {}", cli.database);
                Ok(())
            }
        }
    };
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    }
}

fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

async fn admin_conn(urls: &Urls) -> anyhow::Result<DatabaseConnection> {
    Database::connect(&urls.admin)
        .await
        .context("connecting as the superuser: is PostgreSQL running?")
}

// ---- seed ---------------------------------------------------------------------------------

/// A tenant of the benchmark: its slug, users and the rows it should hold.
struct TenantPlan {
    slug: String,
    name: String,
    /// Users besides the admin: (local part, name, role).
    users: Vec<(String, String, &'static str)>,
    contacts: u64,
    accounts: u64,
}

fn admin_email(slug: &str) -> String {
    format!("admin@{slug}.example")
}

fn plans(a: &SeedArgs) -> Vec<TenantPlan> {
    let mut out = vec![TenantPlan {
        slug: BIG_SLUG.into(),
        name: "Bench Big Corp".into(),
        users: std::iter::once(("manager".into(), "Morgan Manager".into(), "sales_manager"))
            .chain((1..=8).map(|i| (format!("rep{i}"), format!("Sales Rep {i}"), "sales_rep")))
            .collect(),
        contacts: a.contacts,
        accounts: a.accounts,
    }];
    for i in 1..=a.small_tenants {
        out.push(TenantPlan {
            slug: format!("bench-small-{i:02}"),
            name: format!("Bench Small {i:02}"),
            users: (1..=2)
                .map(|j| (format!("rep{j}"), format!("Sales Rep {j}"), "sales_rep"))
                .collect(),
            contacts: a.small_contacts,
            accounts: a.small_accounts,
        });
    }
    out
}

async fn seed(urls: &Urls, a: &SeedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.chunk > 0, "--chunk must be at least 1");
    let started = Instant::now();
    admin::ensure_database(&urls.admin)
        .await
        .context("cannot create the benchmark database: is PostgreSQL running?")?;
    crm_migrations::migrate_all(&urls.admin, RUNTIME_ROLE)
        .await
        .context("migrating the benchmark database")?;
    let adm = admin_conn(urls).await?;
    let plans = plans(a);

    // Tenants and users, through identity as a sign-up would make them.
    let vars = urls.vars();
    let config = Config::from_map(&vars)?;
    let db = Db::connect(&urls.runtime, 4)
        .await
        .context("connecting as the runtime role")?;
    db.check_runtime_role().await?;
    let cache = Cache::connect(&urls.redis)
        .await
        .context("connecting to Redis: is it running?")?;
    let identity = crm_identity::Application::build(
        &config,
        crm_identity::Deps {
            db,
            cache,
            bus: None,
        },
    )
    .await
    .context("building the identity service")?;
    let mut tenants = Vec::new();
    for p in &plans {
        let id = ensure_tenant(identity.identity(), &adm, p).await?;
        let owners = user_ids(&adm, id).await?;
        tenants.push((p, id, owners));
    }
    drop(identity);

    let mut todo = Vec::new();
    for (p, id, owners) in &tenants {
        let (contacts, accounts) = counts(&adm, *id).await?;
        if contacts == p.contacts && accounts == p.accounts && has_custom_field(&adm, *id).await? {
            continue;
        }
        if contacts + accounts > 0 {
            println!(
                "{}: holds {contacts} contacts and {accounts} accounts, not {} and {}: reloading it",
                p.slug, p.contacts, p.accounts
            );
        }
        todo.push((*p, *id, owners.clone()));
    }
    if todo.is_empty() {
        println!(
            "already seeded: {} tenants ({} with {} contacts and {} accounts); nothing to do ({:.1} s)",
            plans.len(),
            BIG_SLUG,
            a.contacts,
            a.accounts,
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    // One transaction: an interrupted load leaves the tables as they were. The secondary
    // indexes are dropped and rebuilt around the load (the same definitions, read back
    // from the catalog), which is several times faster than maintaining them row by row.
    let tx = adm.begin().await?;
    tx.execute_unprepared(
        "SET LOCAL synchronous_commit = off; SET LOCAL maintenance_work_mem = '1GB'",
    )
    .await?;
    let indexes: Vec<(String, String)> = tx
        .query_all_raw(stmt(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def \
             FROM pg_index i \
             WHERE i.indrelid IN ('accounts.accounts'::regclass, 'accounts.contacts'::regclass) \
               AND NOT i.indisprimary AND NOT i.indisunique",
            [],
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get("", "name")?, r.try_get("", "def")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    for (name, _) in &indexes {
        tx.execute_unprepared(&format!("DROP INDEX {name}")).await?;
    }
    // A contact's custom-field sort rows are written once per field below, set-based, when
    // the field is defined after the load, rather than by the insert trigger row by row.
    tx.execute_unprepared("ALTER TABLE accounts.contacts DISABLE TRIGGER custom_sort_insert")
        .await?;
    let data = SeedData::new();
    let now = chrono::Utc::now().timestamp() as f64;
    let start = now - 3.0 * 365.25 * 86_400.0;
    for (p, id, owners) in &todo {
        let t = Instant::now();
        for table in [
            "accounts.custom_fields",
            "accounts.account_contacts",
            "accounts.contacts",
            "accounts.accounts",
        ] {
            tx.execute_raw(stmt(
                &format!("DELETE FROM {table} WHERE tenant_id = $1"),
                [(*id).into()],
            ))
            .await?;
        }
        let mut lo = 1;
        while lo <= p.accounts {
            let hi = (lo + a.chunk - 1).min(p.accounts);
            tx.execute_unprepared(&data.accounts_sql(*id, owners, lo, hi, p.accounts, start))
                .await
                .with_context(|| format!("{}: accounts {lo}..{hi}", p.slug))?;
            if p.accounts > a.chunk {
                println!("{}: accounts {hi}/{}", p.slug, p.accounts);
            }
            lo = hi + 1;
        }
        tx.execute_unprepared(&format!(
            "DROP TABLE IF EXISTS bench_acc; \
             CREATE TEMP TABLE bench_acc ON COMMIT DROP AS \
             SELECT row_number() OVER (ORDER BY created_at, id)::int AS n, id, \
                    substring(website FROM '^https://www\\.(.*)$') AS dom \
             FROM accounts.accounts WHERE tenant_id = '{id}'; \
             ALTER TABLE bench_acc ADD PRIMARY KEY (n); ANALYZE bench_acc"
        ))
        .await?;
        let mut lo = 1;
        while lo <= p.contacts {
            let hi = (lo + a.chunk - 1).min(p.contacts);
            tx.execute_unprepared(
                &data.contacts_sql(*id, owners, lo, hi, p.contacts, p.accounts, start),
            )
            .await
            .with_context(|| format!("{}: contacts {lo}..{hi}", p.slug))?;
            if p.contacts > a.chunk {
                println!(
                    "{}: contacts {hi}/{} ({:.0} s)",
                    p.slug,
                    p.contacts,
                    t.elapsed().as_secs_f64()
                );
            }
            lo = hi + 1;
        }
        // Defining the field writes every contact's sort row (the definition's trigger).
        tx.execute_raw(stmt(
            "INSERT INTO accounts.custom_fields (tenant_id, id, object_type, key, label, type) \
             VALUES ($1, $2, 'contact', $3, 'Score', 'number')",
            [(*id).into(), Uuid::now_v7().into(), CUSTOM_KEY.into()],
        ))
        .await
        .with_context(|| format!("{}: defining custom.{CUSTOM_KEY}", p.slug))?;
        println!(
            "{}: {} contacts, {} accounts, {} users loaded in {:.1} s",
            p.slug,
            p.contacts,
            p.accounts,
            owners.len(),
            t.elapsed().as_secs_f64()
        );
    }
    for (name, def) in &indexes {
        let t = Instant::now();
        tx.execute_unprepared(def)
            .await
            .with_context(|| format!("rebuilding {name}"))?;
        println!("index {name} rebuilt in {:.1} s", t.elapsed().as_secs_f64());
    }
    tx.execute_unprepared("ALTER TABLE accounts.contacts ENABLE TRIGGER custom_sort_insert")
        .await?;
    tx.commit().await?;
    let t = Instant::now();
    adm.execute_unprepared(
        "VACUUM (ANALYZE) accounts.accounts, accounts.contacts, accounts.custom_sort",
    )
    .await?;
    println!("VACUUM (ANALYZE) in {:.1} s", t.elapsed().as_secs_f64());
    println!(
        "seeded {} tenants in {:.1} s",
        todo.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Signs the tenant up through identity, with its users; an existing one is looked up.
async fn ensure_tenant(
    identity: &crm_identity::Identity,
    adm: &DatabaseConnection,
    p: &TenantPlan,
) -> anyhow::Result<Uuid> {
    let signed = identity
        .sign_up(idpb::SignUpRequest {
            tenant_name: p.name.clone(),
            tenant_slug: p.slug.clone(),
            email: admin_email(&p.slug),
            password: PASSWORD.into(),
            name: "Bench Admin".into(),
        })
        .await;
    match signed {
        Ok(s) => {
            let token = s.tokens.map(|t| t.access_token).unwrap_or_default();
            let caller = identity
                .verifier()
                .verify(&token)
                .await
                .map_err(|e| anyhow::anyhow!("{}: sign-up token: {e}", p.slug))?;
            for (local, name, role) in &p.users {
                identity
                    .create_user(
                        &caller,
                        idpb::CreateUserRequest {
                            email: format!("{local}@{}.example", p.slug),
                            name: name.clone(),
                            role: (*role).into(),
                            password: PASSWORD.into(),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: user {local}: {e}", p.slug))?;
            }
            println!("{}: signed up with {} users", p.slug, p.users.len() + 1);
            Ok(caller.tenant.uuid())
        }
        Err(e) if e.code == crm_kit::ErrorCode::Conflict => tenant_id(adm, &p.slug).await,
        Err(e) => anyhow::bail!("{}: cannot sign up: {e}", p.slug),
    }
}

async fn tenant_id(adm: &DatabaseConnection, slug: &str) -> anyhow::Result<Uuid> {
    adm.query_one_raw(stmt(
        "SELECT id FROM identity.tenants WHERE slug = $1",
        [slug.into()],
    ))
    .await?
    .with_context(|| format!("no tenant {slug}: run `seed` first"))?
    .try_get("", "id")
    .map_err(Into::into)
}

async fn user_ids(adm: &DatabaseConnection, tenant: Uuid) -> anyhow::Result<Vec<Uuid>> {
    adm.query_all_raw(stmt(
        "SELECT id FROM identity.users WHERE tenant_id = $1 ORDER BY created_at, id",
        [tenant.into()],
    ))
    .await?
    .iter()
    .map(|r| r.try_get("", "id").map_err(Into::into))
    .collect()
}

async fn counts(adm: &DatabaseConnection, tenant: Uuid) -> anyhow::Result<(u64, u64)> {
    let r = adm
        .query_one_raw(stmt(
            "SELECT (SELECT count(*) FROM accounts.contacts WHERE tenant_id = $1) AS c, \
                    (SELECT count(*) FROM accounts.accounts WHERE tenant_id = $1) AS a",
            [tenant.into()],
        ))
        .await?
        .context("no counts")?;
    Ok((
        r.try_get::<i64>("", "c")? as u64,
        r.try_get::<i64>("", "a")? as u64,
    ))
}

/// Whether the tenant's contacts have the custom field the sorted pages use.
async fn has_custom_field(adm: &DatabaseConnection, tenant: Uuid) -> anyhow::Result<bool> {
    Ok(adm
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM accounts.custom_fields \
             WHERE tenant_id = $1 AND object_type = 'contact' AND key = $2",
            [tenant.into(), CUSTOM_KEY.into()],
        ))
        .await?
        .is_some())
}

/// A SQL uuid[] of the users, in parentheses so it can be subscripted.
fn owners_array(owners: &[Uuid]) -> String {
    let items: Vec<String> = owners.iter().map(|u| format!("'{u}'")).collect();
    format!("(ARRAY[{}]::uuid[])", items.join(","))
}

/// A SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A SQL text[] of the comma-separated entries, each "shown|ascii" with ascii derived when
/// absent (lower case, letters and digits only).
fn names_array(entries: &[&str]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| {
            let (shown, ascii) = match e.split_once('|') {
                Some((s, a)) => (s.to_owned(), a.to_owned()),
                None => (
                    (*e).to_owned(),
                    e.chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>()
                        .to_lowercase(),
                ),
            };
            lit(&format!("{shown}|{ascii}"))
        })
        .collect();
    format!("ARRAY[{}]::text[]", items.join(","))
}

fn int_array(v: &[usize]) -> String {
    format!(
        "ARRAY[{}]::int[]",
        v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
    )
}

/// The SQL constants the loading statements pick from.
struct SeedData {
    /// `WITH d AS (...)`: the arrays, as one row.
    contacts_cte: String,
    accounts_cte: String,
}

/// A version 7 UUID (as the service makes) from the timestamp `c` and random bits.
const V7: &str = "(lpad(to_hex(floor(extract(epoch FROM c) * 1000)::bigint), 12, '0') || '7' \
    || substr(h, 1, 3) || substr('89ab', 1 + floor(random() * 4)::int, 1) || substr(h, 4, 15))::uuid";

impl SeedData {
    fn new() -> Self {
        let (mut first, mut last) = (Vec::new(), Vec::new());
        let (mut fo, mut fl, mut lo, mut ll) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let total: u32 = CULTURES.iter().map(|c| c.weight).sum();
        let (mut bounds, mut acc) = (Vec::new(), 0u32);
        let mut codes = Vec::new();
        for c in CULTURES {
            bounds.push(format!("{:.6}", f64::from(acc) / f64::from(total)));
            acc += c.weight;
            fo.push(first.len() + 1);
            let f = list(c.first);
            fl.push(f.len());
            first.extend(f);
            lo.push(last.len() + 1);
            let l = list(c.last);
            ll.push(l.len());
            last.extend(l);
            codes.push(lit(c.calling_code));
        }
        let texts = |csv: &str| {
            format!(
                "ARRAY[{}]::text[]",
                list(csv).into_iter().map(lit).collect::<Vec<_>>().join(",")
            )
        };
        let contacts_cte = format!(
            "d AS (SELECT {fnames} AS fn, {fo} AS fo, {fl} AS fl, {lnames} AS ln, {lo} AS lo, \
             {ll} AS ll, ARRAY[{bounds}]::float8[] AS cw, ARRAY[{codes}]::text[] AS cc, \
             {titles} AS titles, {free} AS free)",
            fnames = names_array(&first),
            fo = int_array(&fo),
            fl = int_array(&fl),
            lnames = names_array(&last),
            lo = int_array(&lo),
            ll = int_array(&ll),
            bounds = bounds.join(","),
            codes = codes.join(","),
            titles = texts(TITLES),
            free = texts(FREE_MAIL),
        );
        let accounts_cte = format!(
            "d AS (SELECT {stems} AS stems, {sectors} AS sectors, {suffixes} AS suffixes, \
             {tlds} AS tlds, {industries} AS industries)",
            stems = names_array(&list(STEMS)),
            sectors = texts(SECTORS),
            suffixes = texts(SUFFIXES),
            tlds = texts(TLDS),
            industries = texts(INDUSTRIES),
        );
        Self {
            contacts_cte,
            accounts_cte,
        }
    }

    /// Accounts `lo..=hi` of `total`, created evenly over the three years from `start`
    /// (Unix seconds), each at its own time.
    fn accounts_sql(
        &self,
        tenant: Uuid,
        owners: &[Uuid],
        lo: u64,
        hi: u64,
        total: u64,
        start: f64,
    ) -> String {
        let step = 3.0 * 365.25 * 86_400.0 / total as f64;
        format!(
            "WITH {cte}, \
             s AS (SELECT n, to_timestamp({start} + (n - 1) * {step} + random() * {step} * 0.9) AS c, \
                     md5(random()::text) AS h, random() AS ru, random() AS ru2, random() AS rs, \
                     random() AS rk, random() AS rx, random() AS rw, random() AS rt, random() AS ri, \
                     random() AS ri2, random() AS ro \
                   FROM generate_series({lo}, {hi}) AS n), \
             x AS (SELECT s.*, d.stems[1 + floor(rs * array_length(d.stems, 1))::int] AS stem, \
                     d.sectors[1 + floor(rk * array_length(d.sectors, 1))::int] AS sector, \
                     {owners}[1 + floor(ro * {n_owners})::int] AS owner \
                   FROM s CROSS JOIN d) \
             INSERT INTO accounts.accounts (tenant_id, id, name, website, industry, owner_user_id, \
                 custom, version, created_at, updated_at, created_by, updated_by) \
             SELECT '{tenant}'::uuid, {V7}, \
                 split_part(stem, '|', 1) || ' ' || sector || ' ' \
                   || d.suffixes[1 + floor(rx * array_length(d.suffixes, 1))::int], \
                 CASE WHEN rw < 0.85 THEN 'https://www.' || split_part(stem, '|', 2) || '-' \
                   || lower(sector) || '-' || n || d.tlds[1 + floor(rt * array_length(d.tlds, 1))::int] END, \
                 CASE WHEN ri < 0.9 THEN d.industries[1 + floor(ri2 * array_length(d.industries, 1))::int] END, \
                 owner, '{{}}'::jsonb, 1, c, \
                 CASE WHEN ru < 0.5 THEN c ELSE c + (now() - c) * ru2 END, owner, owner \
             FROM x CROSS JOIN d",
            cte = self.accounts_cte,
            n_owners = owners.len(),
            owners = owners_array(owners),
        )
    }

    /// Contacts `lo..=hi` of `total`; about 80% have a random account of the tenant
    /// (`bench_acc` numbers them 1..=`accounts`), most have an e-mail address derived from
    /// their name, at the account's domain or a mail provider; 90% have a custom score, a
    /// random integer below 100,000.
    #[allow(clippy::too_many_arguments)]
    fn contacts_sql(
        &self,
        tenant: Uuid,
        owners: &[Uuid],
        lo: u64,
        hi: u64,
        total: u64,
        accounts: u64,
        start: f64,
    ) -> String {
        let step = 3.0 * 365.25 * 86_400.0 / total as f64;
        format!(
            "WITH {cte}, \
             s AS (SELECT n, to_timestamp({start} + (n - 1) * {step} + random() * {step} * 0.9) AS c, \
                     md5(random()::text) AS h, width_bucket(random(), d.cw) AS k, random() AS rf, \
                     random() AS rl, random() AS ra, random() AS ra2, random() AS ru, random() AS ru2, \
                     random() AS rm, random() AS rfmt, random() AS rd, random() AS rd2, random() AS rp, \
                     random() AS rp2, random() AS rp3, random() AS rt, random() AS rt2, random() AS ro, \
                     random() AS rs, random() AS rs2 \
                   FROM generate_series({lo}, {hi}) AS n CROSS JOIN d), \
             x AS (SELECT s.*, d.fn[d.fo[k] + floor(rf * d.fl[k])::int] AS f, \
                     d.ln[d.lo[k] + floor(rl * d.ll[k])::int] AS l, \
                     CASE WHEN ra < 0.8 AND {accounts} > 0 THEN 1 + floor(ra2 * {accounts})::int END AS an, \
                     CASE WHEN rp < 0.88 THEN '+' || d.cc[k] || ' ' || lpad(floor(rp2 * 1000)::int::text, 3, '0') \
                       || ' ' || lpad(floor(rp3 * 10000000)::int::text, 7, '0') END AS phone, \
                     {owners}[1 + floor(ro * {n_owners})::int] AS owner \
                   FROM s CROSS JOIN d) \
             INSERT INTO accounts.contacts (tenant_id, id, first_name, last_name, email, phone, \
                 phone_e164, title, account_id, owner_user_id, custom, version, created_at, \
                 updated_at, created_by, updated_by) \
             SELECT '{tenant}'::uuid, {V7}, split_part(f, '|', 1), split_part(l, '|', 1), \
                 CASE WHEN rm < 0.95 THEN \
                   CASE WHEN rfmt < 0.6 THEN split_part(f, '|', 2) || '.' || split_part(l, '|', 2) \
                        ELSE left(split_part(f, '|', 2), 1) || split_part(l, '|', 2) END \
                   || x.n || '@' || CASE WHEN a.dom IS NOT NULL AND rd < 0.7 THEN a.dom \
                        ELSE d.free[1 + floor(rd2 * array_length(d.free, 1))::int] END END, \
                 phone, '+' || regexp_replace(phone, '[^0-9]', '', 'g'), \
                 CASE WHEN rt < 0.85 THEN d.titles[1 + floor(rt2 * array_length(d.titles, 1))::int] END, \
                 a.id, owner, \
                 CASE WHEN rs < 0.9 THEN jsonb_build_object('{CUSTOM_KEY}', floor(rs2 * 100000)::int) \
                   ELSE '{{}}'::jsonb END, 1, c, \
                 CASE WHEN ru < 0.6 THEN c ELSE c + (now() - c) * ru2 END, owner, owner \
             FROM x CROSS JOIN d LEFT JOIN bench_acc a ON a.n = x.an",
            cte = self.contacts_cte,
            n_owners = owners.len(),
            owners = owners_array(owners),
        )
    }
}

// ---- run ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Path {
    Direct,
    Gateway,
    /// The service's gRPC method, called the way the gateway calls it: where the time goes.
    Grpc,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "baseline: direct SQL",
            Path::Gateway => "gateway",
            Path::Grpc => "diagnostic: gRPC to the service",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Gateway => "gateway",
            Path::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Page1,
    Deep,
    Get,
    Q,
    QBroad,
    CustomPage1,
    CustomDeep,
    CustomFilter,
}

impl Kind {
    fn label(self, plan: &Plan) -> String {
        match self {
            Kind::Page1 => "list page 1".into(),
            Kind::Deep => format!("list page after row {}", plan.deep_offset),
            Kind::Get => "get by id".into(),
            Kind::Q => format!("`q={}` ({} matches)", plan.q, plan.q_matches),
            Kind::QBroad => format!("`q={}` ({} matches)", plan.q_broad, plan.q_broad_matches),
            Kind::CustomPage1 => format!("list page 1 by `custom.{CUSTOM_KEY}`"),
            Kind::CustomDeep => format!(
                "page after row {} by `custom.{CUSTOM_KEY}`",
                plan.deep_offset
            ),
            Kind::CustomFilter => {
                format!(
                    "filter `{}` ({} matches)",
                    plan.custom_filter, plan.filter_matches
                )
            }
        }
    }

    /// The paths measured: the `q` phases are SQL-bound, so they skip the diagnostic.
    fn paths(self) -> &'static [Path] {
        match self {
            Kind::Q | Kind::QBroad => &[Path::Direct, Path::Gateway],
            _ => &[Path::Direct, Path::Gateway, Path::Grpc],
        }
    }

    fn key(self) -> &'static str {
        match self {
            Kind::Page1 => "page1",
            Kind::Deep => "deep",
            Kind::Get => "get",
            Kind::Q => "q",
            Kind::QBroad => "q_broad",
            Kind::CustomPage1 => "custom_page1",
            Kind::CustomDeep => "custom_deep",
            Kind::CustomFilter => "custom_filter",
        }
    }
}

/// What a list call sends: its order and partial text, and where it starts: after a
/// position (direct SQL), a page token (gRPC) or in its URL (REST).
struct ListCall<'a> {
    order_by: &'static str,
    filter: &'a str,
    query: &'a str,
    after: Option<(Option<String>, Uuid)>,
    token: &'a str,
    url: &'a str,
}

/// What every call needs: the tenant, the deep cursor, ids and terms, the URLs.
struct Plan {
    tenant: TenantId,
    deep_offset: u64,
    deep_after: (String, Uuid),
    deep_token: String,
    q: String,
    q_matches: i64,
    q_broad: String,
    q_broad_matches: i64,
    ids: Vec<Uuid>,
    url_page1: String,
    url_deep: String,
    url_q: String,
    url_q_broad: String,
    url_gets: Vec<String>,
    /// The deep page sorted by the custom field: its position, token and URLs.
    custom_after: (String, Uuid),
    custom_token: String,
    url_custom_page1: String,
    url_custom_deep: String,
    /// The selective filter on the custom field, its URL and how many contacts it holds for.
    custom_filter: String,
    url_custom_filter: String,
    filter_matches: i64,
}

impl Plan {
    /// The list a kind calls; none for a get.
    fn list(&self, kind: Kind) -> Option<ListCall<'_>> {
        let first = |order_by, query, url| ListCall {
            order_by,
            filter: "",
            query,
            after: None,
            token: "",
            url,
        };
        Some(match kind {
            Kind::Get => return None,
            Kind::Page1 => first(ORDER_BY, "", &self.url_page1),
            Kind::Q => first(ORDER_BY, &self.q, &self.url_q),
            Kind::QBroad => first(ORDER_BY, &self.q_broad, &self.url_q_broad),
            Kind::CustomPage1 => first(ORDER_BY_CUSTOM, "", &self.url_custom_page1),
            Kind::CustomFilter => ListCall {
                filter: &self.custom_filter,
                ..first(ORDER_BY, "", &self.url_custom_filter)
            },
            Kind::Deep => ListCall {
                order_by: ORDER_BY,
                filter: "",
                query: "",
                after: Some((Some(self.deep_after.0.clone()), self.deep_after.1)),
                token: &self.deep_token,
                url: &self.url_deep,
            },
            Kind::CustomDeep => ListCall {
                order_by: ORDER_BY_CUSTOM,
                filter: "",
                query: "",
                after: Some((Some(self.custom_after.0.clone()), self.custom_after.1)),
                token: &self.custom_token,
                url: &self.url_custom_deep,
            },
        })
    }
}

fn never_hidden(_: &str) -> bool {
    false
}

/// The page the service would read, run directly: same query builder, same statement,
/// same pool, in a tenant transaction. Returns the ids of the rows.
async fn direct_list(db: &Db, tenant: TenantId, list: ListCall<'_>) -> anyhow::Result<Vec<Uuid>> {
    let query = list.query;
    let custom = [Definition {
        key: CUSTOM_KEY.into(),
        field_type: FieldType::Number,
        options: Vec::new(),
        required: false,
    }];
    // The service reads the definitions only for a list that names a custom field.
    let schema = Schema {
        fields: CONTACT.filters,
        custom: if list.order_by.starts_with("custom.") || list.filter.contains("custom.") {
            &custom
        } else {
            &[]
        },
        hidden: &never_hidden,
        custom_index: Some(store::custom_index(&CONTACT)),
    };
    let tx = db.tenant_tx(tenant).await?;
    let matches = if query.is_empty() {
        None
    } else {
        store::text_matches(&tx, &CONTACT, &like_pattern(query)).await?
    };
    let q = list_query(
        &CONTACT,
        &schema,
        &Reach::All,
        ListArgs {
            page_size: PAGE as i32,
            page_token: "",
            filter: list.filter,
            order_by: list.order_by,
            query,
        },
        tenant,
        list.after,
        PAGE + 1,
        matches.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("list_query: {e}"))?;
    let rows = tx
        .conn()
        .query_all_raw(store::list_statement(&CONTACT, tenant.uuid(), &q))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| r.try_get::<Uuid>("", "id").map_err(Into::into))
        .collect()
}

async fn direct_get(db: &Db, tenant: TenantId, id: Uuid) -> anyhow::Result<()> {
    let tx = db.tenant_tx(tenant).await?;
    let r = store::fetch(&tx, &CONTACT, id, false, false).await?;
    tx.commit().await?;
    anyhow::ensure!(r.is_some(), "contact {id} not found");
    Ok(())
}

/// A GET through the gateway; the body when it answered 200.
async fn gateway_get(http: &reqwest::Client, url: &str, auth: &str) -> anyhow::Result<Json> {
    let res = http
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = res.status();
    let body = res.bytes().await.context("reading the body")?;
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "GET {url} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).context("the body is not JSON")
}

fn item_ids(body: &Json) -> anyhow::Result<Vec<Uuid>> {
    body["items"]
        .as_array()
        .context("no items in the page")?
        .iter()
        .map(|i| {
            i["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .context("an item without an id")
        })
        .collect()
}

/// One call of `kind` on `path`; `i` picks the id of a get.
async fn call(
    path: Path,
    kind: Kind,
    i: usize,
    ctx: &RunCtx,
    http: &reqwest::Client,
    auth: &str,
    bearer: &MetadataValue<Ascii>,
) -> anyhow::Result<()> {
    let (plan, db) = (&ctx.plan, &ctx.db);
    match path {
        Path::Grpc => {
            let mut client = ctx.grpc.clone();
            if kind == Kind::Get {
                let mut req = tonic::Request::new(acpb::GetContactRequest {
                    id: plan.ids[i % plan.ids.len()].to_string(),
                });
                req.metadata_mut().insert("authorization", bearer.clone());
                let r = client.get_contact(req).await.context("GetContact")?;
                anyhow::ensure!(r.get_ref().contact.is_some(), "GetContact returned nothing");
            } else if let Some(list) = plan.list(kind) {
                let mut req = tonic::Request::new(acpb::ListContactsRequest {
                    page_size: PAGE as i32,
                    page_token: list.token.into(),
                    filter: list.filter.into(),
                    order_by: list.order_by.into(),
                    query: list.query.into(),
                });
                req.metadata_mut().insert("authorization", bearer.clone());
                let r = client.list_contacts(req).await.context("ListContacts")?;
                anyhow::ensure!(!r.get_ref().contacts.is_empty(), "an empty page");
            }
        }
        Path::Direct => match plan.list(kind) {
            Some(list) => {
                let rows = direct_list(db, plan.tenant, list).await?;
                anyhow::ensure!(!rows.is_empty(), "an empty page");
            }
            None => return direct_get(db, plan.tenant, plan.ids[i % plan.ids.len()]).await,
        },
        Path::Gateway => {
            let url = match plan.list(kind) {
                Some(list) => list.url,
                None => &plan.url_gets[i % plan.url_gets.len()],
            };
            let res = http
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = res.status();
            let body = res.bytes().await.context("reading the body")?;
            anyhow::ensure!(
                status == reqwest::StatusCode::OK && body.len() > 2,
                "GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

/// Runs `concurrency` clients until `calls` calls are done or `limit` has passed.
async fn drive(
    path: Path,
    kind: Kind,
    calls: usize,
    limit: Duration,
    ctx: &Arc<RunCtx>,
) -> anyhow::Result<Samples> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for client in ctx.clients.clone() {
        let next = next.clone();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let auth = ctx.auth.lock().map(|a| a.clone()).unwrap_or_default();
            let bearer: MetadataValue<Ascii> =
                auth.parse().context("the token is not a header value")?;
            let mut s = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls || Instant::now() >= deadline {
                    return Ok::<_, anyhow::Error>(s);
                }
                let t = Instant::now();
                call(path, kind, i, &ctx, &client, &auth, &bearer).await?;
                s.record(t.elapsed(), 1);
            }
        });
    }
    let mut all = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        all.merge(joined.context("worker panicked")??);
    }
    all.add_wall(start.elapsed());
    Ok(all)
}

/// Shared by the clients of a phase.
struct RunCtx {
    plan: Plan,
    db: Db,
    /// One keep-alive HTTP/1.1 connection per client.
    clients: Vec<reqwest::Client>,
    /// One HTTP/2 connection, as the gateway has.
    grpc: AccountsServiceClient<Channel>,
    auth: std::sync::Mutex<Arc<str>>,
}

async fn run(urls: &Urls, args: &RunArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(!args.q.trim().is_empty(), "--q must not be empty");
    let adm = admin_conn(urls).await.context("run `seed` first")?;
    let tenant = TenantId::from(tenant_id(&adm, BIG_SLUG).await?);
    let admin_user: Uuid = adm
        .query_one_raw(stmt(
            "SELECT id FROM identity.users WHERE tenant_id = $1 AND email = $2",
            [tenant.uuid().into(), admin_email(BIG_SLUG).into()],
        ))
        .await?
        .context("the big tenant has no admin: run `seed` again")?
        .try_get("", "id")?;
    let (contacts, accounts) = counts(&adm, tenant.uuid()).await?;
    anyhow::ensure!(
        contacts > args.deep_offset + PAGE,
        "{BIG_SLUG} holds {contacts} contacts, too few for a page after row {}",
        args.deep_offset
    );
    adm.close().await?;

    let mut vars = urls.vars();
    if let Some(n) = args.pool {
        vars.insert("CRM_DB_MAX_CONNECTIONS".into(), n.to_string());
    }
    let config = Config::from_map(&vars)?;
    let db = Db::connect(&urls.runtime, config.db_max_connections)
        .await
        .context("connecting as the runtime role")?;
    db.check_runtime_role().await?;
    let cache = Cache::connect(&urls.redis)
        .await
        .context("connecting to Redis: is it running?")?;
    let cancel = CancellationToken::new();
    let mut servers = JoinSet::new();
    let started = unix_secs();

    let outcome = async {
        let identity = crm_identity::Application::build(
            &config,
            crm_identity::Deps {
                db: db.clone(),
                cache: cache.clone(),
                bus: None,
            },
        )
        .await
        .context("building the identity service")?;
        let identity_url = format!("http://{}", identity.grpc_addr()?);
        servers.spawn(identity.run_until_stopped(cancel.clone()));
        vars.insert("CRM_IDENTITY_URL".into(), identity_url);
        let config = Config::from_map(&vars)?;
        let accounts_app = crm_accounts_contacts::Application::build(
            &config,
            crm_accounts_contacts::Deps {
                db: db.clone(),
                bus: None,
            },
        )
        .await
        .context("building the accounts-contacts service")?;
        let accounts_url = format!("http://{}", accounts_app.grpc_addr()?);
        let grpc = AccountsServiceClient::new(
            Endpoint::from_shared(accounts_url.clone())?
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(30))
                .tcp_nodelay(true)
                .connect_lazy(),
        );
        servers.spawn(accounts_app.run_until_stopped(cancel.clone()));
        vars.insert("CRM_ACCOUNTS_CONTACTS_URL".into(), accounts_url.clone());
        let mut settings = crm_gateway::GatewaySettings::from_map(&vars, &config.identity_url)?;
        if let Some(cell) = settings.cells.get_mut("default") {
            cell.accounts = accounts_url;
        }
        let gateway = crm_gateway::Application::build(&config, settings, cache.clone())
            .await
            .context("building the gateway")?;
        let base = format!("http://{}/api/v1", gateway.addr()?);
        servers.spawn(gateway.run_until_stopped(cancel.clone()));

        let pages = PageTokens::derive(config.key_encryption_key.expose_secret());
        let plan = prepare(args, &db, tenant, &pages, &base).await?;
        let mut clients = Vec::with_capacity(args.concurrency);
        for _ in 0..args.concurrency {
            clients.push(
                reqwest::Client::builder()
                    .http1_only()
                    .pool_max_idle_per_host(1)
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .build()
                    .context("building an HTTP client")?,
            );
        }
        let auth = login(&clients[0], &base).await?;
        let ctx = Arc::new(RunCtx {
            plan,
            db: db.clone(),
            clients,
            grpc,
            auth: std::sync::Mutex::new(auth),
        });
        check(&ctx, &base).await?;
        measure(
            args,
            &ctx,
            &base,
            contacts,
            accounts,
            config.db_max_connections,
        )
        .await
    }
    .await;

    forget_tenant(&cache, tenant, admin_user, started).await;
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

/// Logs the big tenant's admin in over REST; the bearer header value.
async fn login(http: &reqwest::Client, base: &str) -> anyhow::Result<Arc<str>> {
    let res = http
        .post(format!("{base}/auth/login"))
        .json(&json!({
            "tenantSlug": BIG_SLUG,
            "email": admin_email(BIG_SLUG),
            "password": PASSWORD,
        }))
        .send()
        .await
        .context("POST /auth/login")?;
    let status = res.status();
    let body: Json = res.json().await.context("login body")?;
    anyhow::ensure!(status == 200, "login answered {status}: {body}");
    let token = body["accessToken"]
        .as_str()
        .context("login returned no accessToken")?;
    Ok(format!("Bearer {token}").into())
}

/// The deep cursor, the ids to get, the terms' match counts and the URLs.
async fn prepare(
    args: &RunArgs,
    db: &Db,
    tenant: TenantId,
    pages: &PageTokens,
    base: &str,
) -> anyhow::Result<Plan> {
    // Setup only: the row the deep page starts after, its sort key as the service selects
    // it ((t.created_at)::text, in this pool's session time zone).
    let tx = db.tenant_tx(tenant).await?;
    let row = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT (created_at)::text AS k, id FROM accounts.contacts \
             WHERE tenant_id = $1 AND deleted_at IS NULL \
             ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
            [tenant.uuid().into(), (args.deep_offset as i64).into()],
        ))
        .await?
        .context("no row at the deep offset")?;
    let deep_after: (String, Uuid) = (row.try_get("", "k")?, row.try_get("", "id")?);
    // The same row offset in the custom field's order, its sort key as the service reads it.
    let row = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT s.v AS k, s.record_id AS id FROM accounts.custom_sort s \
             JOIN accounts.contacts t ON t.tenant_id = s.tenant_id AND t.id = s.record_id \
             WHERE s.tenant_id = $1 AND s.object_type = 'contact' AND s.key = $2 \
               AND t.deleted_at IS NULL \
             ORDER BY s.v DESC, s.record_id DESC OFFSET $3 LIMIT 1",
            [
                tenant.uuid().into(),
                CUSTOM_KEY.into(),
                (args.deep_offset as i64).into(),
            ],
        ))
        .await?
        .context("no row at the deep offset of the custom sort: run `seed` again")?;
    let custom_after: (String, Uuid) = (row.try_get("", "k")?, row.try_get("", "id")?);
    let custom_filter = format!("custom.{CUSTOM_KEY} = {CUSTOM_FILTER_VALUE}");
    let filter_matches: i64 = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT count(*) AS n FROM accounts.contacts \
             WHERE tenant_id = $1 AND deleted_at IS NULL AND custom @> $2",
            [
                tenant.uuid().into(),
                json!({ CUSTOM_KEY: CUSTOM_FILTER_VALUE }).into(),
            ],
        ))
        .await?
        .context("no count")?
        .try_get("", "n")?;
    anyhow::ensure!(filter_matches > 0, "no contact matches `{custom_filter}`");
    // The same 10,000 ids every run, spread over the whole table, in no useful order.
    let ids: Vec<Uuid> = tx
        .conn()
        .query_all_raw(stmt(
            "SELECT id FROM accounts.contacts WHERE tenant_id = $1 AND deleted_at IS NULL \
             ORDER BY md5(id::text) LIMIT 10000",
            [tenant.uuid().into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get("", "id"))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!ids.is_empty(), "no contacts to get");
    let mut matches = Vec::new();
    for term in [&args.q, &args.q_broad] {
        let n: i64 = if term.trim().is_empty() {
            0
        } else {
            tx.conn()
                .query_one_raw(stmt(
                    "SELECT count(*) AS n FROM accounts.contacts \
                     WHERE tenant_id = $1 AND deleted_at IS NULL AND search ILIKE $2",
                    [tenant.uuid().into(), format!("%{}%", term.trim()).into()],
                ))
                .await?
                .context("no count")?
                .try_get("", "n")?
        };
        matches.push(n);
    }
    tx.commit().await?;

    let fingerprint = list_fingerprint("contact", "", ORDER_BY, "");
    let token = list_page_token(
        pages,
        tenant,
        &fingerprint,
        Some(deep_after.0.clone()),
        deep_after.1,
    )
    .map_err(|e| anyhow::anyhow!("page token: {e}"))?;
    let custom_token = list_page_token(
        pages,
        tenant,
        &list_fingerprint("contact", "", ORDER_BY_CUSTOM, ""),
        Some(custom_after.0.clone()),
        custom_after.1,
    )
    .map_err(|e| anyhow::anyhow!("page token: {e}"))?;
    let enc = |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    Ok(Plan {
        tenant,
        deep_offset: args.deep_offset,
        url_page1: format!("{base}/contacts?{LIST_QUERY}"),
        url_deep: format!("{base}/contacts?{LIST_QUERY}&cursor={}", enc(&token)),
        url_q: format!("{base}/contacts?q={}&{LIST_QUERY}", enc(args.q.trim())),
        url_q_broad: format!(
            "{base}/contacts?q={}&{LIST_QUERY}",
            enc(args.q_broad.trim())
        ),
        url_gets: ids
            .iter()
            .map(|id| format!("{base}/contacts/{id}"))
            .collect(),
        url_custom_page1: format!("{base}/contacts?{LIST_QUERY_CUSTOM}"),
        url_custom_deep: format!(
            "{base}/contacts?{LIST_QUERY_CUSTOM}&cursor={}",
            enc(&custom_token)
        ),
        url_custom_filter: format!(
            "{base}/contacts?filter={}&{LIST_QUERY}",
            enc(&custom_filter)
        ),
        custom_filter,
        filter_matches,
        custom_after,
        custom_token,
        deep_after,
        deep_token: token,
        q: args.q.trim().to_owned(),
        q_matches: matches[0],
        q_broad: args.q_broad.trim().to_owned(),
        q_broad_matches: matches[1],
        ids,
    })
}

/// Fails loudly unless both paths answer, non-empty, and the gateway's pages are the rows
/// the direct SQL reads.
async fn check(ctx: &RunCtx, base: &str) -> anyhow::Result<()> {
    let plan = &ctx.plan;
    let http = &ctx.clients[0];
    let auth = ctx.auth.lock().map(|a| a.clone()).unwrap_or_default();
    for kind in [
        Kind::Page1,
        Kind::Deep,
        Kind::Q,
        Kind::QBroad,
        Kind::CustomPage1,
        Kind::CustomDeep,
        Kind::CustomFilter,
    ] {
        let Some(list) = plan.list(kind) else {
            continue;
        };
        if kind == Kind::QBroad && list.query.is_empty() {
            continue;
        }
        let gw = item_ids(&gateway_get(http, list.url, &auth).await?)?;
        let direct = direct_list(&ctx.db, plan.tenant, list).await?;
        anyhow::ensure!(
            !gw.is_empty() && !direct.is_empty(),
            "{}: an empty page (gateway {}, direct {})",
            kind.label(plan),
            gw.len(),
            direct.len()
        );
        let n = gw.len().min(PAGE as usize);
        anyhow::ensure!(
            gw[..n] == direct[..n.min(direct.len())],
            "{}: the gateway's page differs from the direct SQL's",
            kind.label(plan)
        );
    }
    let id = plan.ids[0];
    let body = gateway_get(http, &format!("{base}/contacts/{id}"), &auth).await?;
    anyhow::ensure!(
        body["id"].as_str() == Some(id.to_string().as_str()),
        "GET /contacts/{id} returned {body}"
    );
    direct_get(&ctx.db, plan.tenant, id).await?;
    Ok(())
}

/// Figures of one query on one path.
fn figures(s: &Summary) -> Json {
    json!({
        "calls": s.samples,
        "per_sec": s.per_sec,
        "p50_ms": s.p50.as_secs_f64() * 1e3,
        "p95_ms": s.p95.as_secs_f64() * 1e3,
        "p99_ms": s.p99.as_secs_f64() * 1e3,
    })
}

async fn measure(
    args: &RunArgs,
    ctx: &Arc<RunCtx>,
    base: &str,
    contacts: u64,
    accounts: u64,
    pool: u32,
) -> anyhow::Result<()> {
    let plan = &ctx.plan;
    let mut kinds = vec![Kind::Page1, Kind::Deep, Kind::Get, Kind::Q];
    if !plan.q_broad.is_empty() {
        kinds.push(Kind::QBroad);
    }
    kinds.extend([Kind::CustomPage1, Kind::CustomDeep, Kind::CustomFilter]);
    let limit = Duration::from_secs(args.max_secs);
    for &kind in &kinds {
        for &path in kind.paths() {
            drive(path, kind, args.warmup, limit, ctx)
                .await
                .with_context(|| format!("warming up {} {}", kind.label(plan), path.label()))?;
        }
    }
    let mut samples: HashMap<(usize, Path), Samples> = HashMap::new();
    for round in 0..args.rounds {
        // A fresh token each round, so long runs outlive the access token's lifetime.
        let auth = login(&ctx.clients[0], base).await?;
        if let Ok(mut a) = ctx.auth.lock() {
            *a = auth;
        }
        for (k, &kind) in kinds.iter().enumerate() {
            let paths = kind.paths();
            for i in 0..paths.len() {
                // Rotate who goes first, so no path always runs right after another.
                let path = paths[(round + k + i) % paths.len()];
                let s = drive(path, kind, args.calls, limit, ctx)
                    .await
                    .with_context(|| {
                        format!("round {}: {} {}", round + 1, kind.label(plan), path.label())
                    })?;
                samples.entry((k, path)).or_default().merge(s);
            }
        }
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }

    let sum = |k: usize, p: Path| {
        samples
            .get(&(k, p))
            .map(Samples::summary)
            .unwrap_or_else(|| Samples::default().summary())
    };
    let mut out = String::new();
    writeln!(out, "{}", machine_line())?;
    writeln!(
        out,
        "{BIG_SLUG}: {contacts} contacts, {accounts} accounts; {} concurrent clients per path \
         (gateway: one keep-alive HTTP/1.1 connection each; direct: tasks on the services' pool \
         of {pool}; gRPC: one HTTP/2 channel, as the gateway's); {} rounds of up to {} calls \
         or {} s per query and path",
        args.concurrency, args.rounds, args.calls, args.max_secs
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| query | path | calls | ops/s | p50 ms | p95 ms | p99 ms | ops/s ÷ direct | p95 ÷ direct |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut report = serde_json::Map::new();
    for (k, &kind) in kinds.iter().enumerate() {
        let d = sum(k, Path::Direct);
        let mut entry = serde_json::Map::new();
        for &path in kind.paths() {
            let s = sum(k, path);
            entry.insert(path.key().into(), figures(&s));
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                kind.label(plan),
                path.label(),
                s.samples,
                rate(s.per_sec),
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                ratio(s.per_sec, d.per_sec),
                ratio(s.p95.as_secs_f64(), d.p95.as_secs_f64()),
            )?;
        }
        let g = sum(k, Path::Gateway);
        entry.insert("label".into(), kind.label(plan).into());
        entry.insert("per_sec_ratio".into(), (g.per_sec / d.per_sec).into());
        entry.insert(
            "p95_ratio".into(),
            (g.p95.as_secs_f64() / d.p95.as_secs_f64()).into(),
        );
        report.insert(kind.key().into(), Json::Object(entry));
    }
    let p95 = |k: usize, p: Path| sum(k, p).p95.as_secs_f64();
    let deep_gw = p95(1, Path::Gateway) / p95(0, Path::Gateway);
    let deep_direct = p95(1, Path::Direct) / p95(0, Path::Direct);
    let list_tp = sum(0, Path::Gateway).per_sec / sum(0, Path::Direct).per_sec;
    let q_p95 = p95(3, Path::Gateway) / p95(3, Path::Direct);
    let at = |kind: Kind| kinds.iter().position(|&k| k == kind).unwrap_or(0);
    let (c1, cd) = (at(Kind::CustomPage1), at(Kind::CustomDeep));
    let custom_gw = p95(cd, Path::Gateway) / p95(c1, Path::Gateway);
    let custom_direct = p95(cd, Path::Direct) / p95(c1, Path::Direct);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    writeln!(out)?;
    writeln!(
        out,
        "deep page p95 ÷ page 1 p95: gateway {deep_gw:.2}, direct {deep_direct:.2} (target ≤ 1.5: {})",
        verdict(deep_gw <= 1.5)
    )?;
    writeln!(
        out,
        "by `custom.{CUSTOM_KEY}`: deep page p95 ÷ page 1 p95: gateway {custom_gw:.2}, direct {custom_direct:.2} (target ≤ 1.5: {})",
        verdict(custom_gw <= 1.5)
    )?;
    writeln!(
        out,
        "gateway list throughput ÷ direct (page 1): {list_tp:.2} (target ≥ 0.3: {})",
        verdict(list_tp >= 0.3)
    )?;
    writeln!(
        out,
        "`q={}` gateway p95 ÷ direct p95: {q_p95:.2} (target ≤ 2: {})",
        plan.q,
        verdict(q_p95 <= 2.0)
    )?;
    print!("{out}");
    if let Some(path) = &args.json {
        report.insert("deep_p95_over_page1_gateway".into(), deep_gw.into());
        report.insert("deep_p95_over_page1_direct".into(), deep_direct.into());
        report.insert(
            "custom_deep_p95_over_page1_gateway".into(),
            custom_gw.into(),
        );
        report.insert(
            "custom_deep_p95_over_page1_direct".into(),
            custom_direct.into(),
        );
        report.insert("machine".into(), machine_line().into());
        std::fs::write(path, serde_json::to_string_pretty(&Json::Object(report))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Deletes the Redis keys the run left: rate-limit windows and cached permissions.
async fn forget_tenant(cache: &Cache, tenant: TenantId, user: Uuid, started: u64) {
    let window = 10; // CRM_RATE_LIMIT_WINDOW_SECS, left at its default.
    let mut keys = Vec::new();
    for slot in started / window..=unix_secs() / window + 1 {
        keys.push(format!("rl:tenant:{tenant}:{slot}"));
        keys.push(format!("rl:client:{tenant}:{user}:{slot}"));
    }
    let generation = cache
        .get(&format!("perm:gen:{tenant}"))
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| "0".into());
    keys.push(format!("perm:{tenant}:{generation}:{user}"));
    if let Err(e) = cache.del(&keys).await {
        eprintln!("warning: cannot delete the run's Redis keys: {e}");
    }
}
