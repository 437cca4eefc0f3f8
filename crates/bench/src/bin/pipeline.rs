//! The pipeline service under a large tenant: the pipeline report (all close dates, one
//! quarter, one owner) and stage moves through the in-process gateway, each beside the same
//! SQL run directly on the service's pool, alternating call by call in the same run.
//!
//! `cargo run -p crm-bench --release --bin pipeline`

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{Datelike, NaiveDate, Utc};
use clap::Parser;
use crm_bench::{
    Samples, Scratch, Summary, machine_line, ms, ratio,
    stack::{Services, Stack},
};
use crm_kit::{Db, TenantId, access::Reach};
use crm_pipeline::{
    rules::{self, StageKind},
    service,
    store::{self, Kind, OppRow, Set},
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The services' own default pool size (CRM_DB_MAX_CONNECTIONS).
const DEFAULT_POOL: u32 = 10;
const PASSWORD: &str = "correct horse battery staple";
/// Far above anything the run can reach, so the limits count but never refuse.
/// What the seeded opportunities are about; their names are one of these and a number.
const DEAL_KINDS: &str = "'New business','Renewal','Expansion','Upsell','Pilot','Services','Support contract','Migration'";
const LOST_REASONS: &str =
    "'price','competitor','no budget','timing','no decision','went silent','product fit'";
/// A version 7 UUID (as the service makes) from the timestamp `c` and random bits `h`.
const V7: &str = "(lpad(to_hex(floor(extract(epoch FROM c) * 1000)::bigint), 12, '0') || '7' \
    || substr(h, 1, 3) || substr('89ab', 1 + floor(random() * 4)::int, 1) || substr(h, 4, 15))::uuid";

#[derive(Parser, Debug)]
#[command(
    about = "The pipeline report and stage moves through the gateway beside the same SQL, over one large tenant"
)]
struct Args {
    /// Opportunities seeded into the tenant.
    #[arg(long, default_value_t = 500_000)]
    opportunities: u64,
    /// Accounts created through the gateway; the opportunities belong to them.
    #[arg(long, default_value_t = 20)]
    accounts: usize,
    /// Sales reps created through the gateway; the opportunities are theirs.
    #[arg(long, default_value_t = 8)]
    owners: usize,
    /// Measured calls per report query and path.
    #[arg(long, default_value_t = 200)]
    reports: usize,
    /// Measured stage moves per path (each opportunity moves once).
    #[arg(long, default_value_t = 1000)]
    moves: usize,
    /// Unmeasured calls per query and path before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Also prints `EXPLAIN (ANALYZE, BUFFERS)` of each report statement, as the service runs it.
    #[arg(long)]
    explain: bool,
}

fn sql(s: &str) -> Statement {
    Statement::from_string(DbBackend::Postgres, s.to_owned())
}

fn stmt<I: IntoIterator<Item = Value>>(s: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, s, values)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(args.owners > 0, "--owners must be at least 1");
    anyhow::ensure!(args.reports > 0, "--reports must be at least 1");
    let scratch = Scratch::create("pipeline").await?;
    let cancel = CancellationToken::new();
    let result = tokio::select! {
        r = run(&scratch, &args, &cancel) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cancel.cancel();
    // The services close their pools before the database goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    scratch.cleanup().await;
    result
}

/// The tenant's admin as the gateway knows them.
struct Session {
    http: reqwest::Client,
    base: String,
    slug: String,
    email: String,
    token: String,
}

impl Session {
    /// A fresh access token, so long phases outlive the token's lifetime.
    async fn relogin(&mut self) -> anyhow::Result<()> {
        let b: Json = self
            .http
            .post(format!("{}/auth/login", self.base))
            .json(&json!({"tenantSlug": self.slug, "email": self.email, "password": PASSWORD}))
            .send()
            .await?
            .error_for_status()
            .context("POST /auth/login")?
            .json()
            .await?;
        self.token = b["accessToken"].as_str().context("token")?.to_owned();
        Ok(())
    }

    /// POSTs a body and returns the answer's body; anything but 2xx is an error.
    async fn post(&self, path: &str, body: Json) -> anyhow::Result<Json> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let b: Json = res.json().await.unwrap_or(Json::Null);
        anyhow::ensure!(status.is_success(), "POST {path} answered {status}: {b}");
        Ok(b)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Json> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = res.status();
        let b: Json = res.json().await.unwrap_or(Json::Null);
        anyhow::ensure!(status.is_success(), "GET {path} answered {status}: {b}");
        Ok(b)
    }
}

/// The default sales pipeline's stage keys by kind.
struct Stages {
    pipeline: Uuid,
    open: Vec<String>,
    won: String,
    lost: String,
}

async fn run(scratch: &Scratch, args: &Args, cancel: &CancellationToken) -> anyhow::Result<()> {
    scratch.migrate().await?;
    // The pipeline service runs without a bus, as the accounts benchmark runs its service:
    // the outbox still records every event (both paths write it), nothing relays it.
    let Stack { base, db } = scratch
        .stack(Services::default(), DEFAULT_POOL, cancel)
        .await?;

    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(120))
        .build()
        .context("building an HTTP client")?;
    let slug = format!("b-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let email = "admin@bench.test".to_owned();
    let signed: Json = http
        .post(format!("{base}/auth/signup"))
        .json(&json!({"tenantName": "Bench", "tenantSlug": slug, "email": email, "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()
        .context("POST /auth/signup")?
        .json()
        .await?;
    let tenant: TenantId = signed["tenant"]["id"]
        .as_str()
        .context("tenant")?
        .parse()
        .map_err(|_| anyhow::anyhow!("tenant id"))?;
    let admin = Uuid::parse_str(signed["user"]["id"].as_str().context("user")?)?;
    let mut session = Session {
        http,
        base,
        slug,
        email,
        token: signed["accessToken"].as_str().context("token")?.to_owned(),
    };

    // ---- the tenant: reps, accounts, the default sales pipeline, a first deal per account --
    let mut owners = Vec::with_capacity(args.owners);
    for i in 1..=args.owners {
        let u = session
            .post(
                "/users",
                json!({"email": format!("rep{i}@bench.test"), "name": format!("Sales Rep {i}"), "role": "sales_rep"}),
            )
            .await?;
        owners.push(Uuid::parse_str(u["id"].as_str().context("user id")?)?);
    }
    let stages = sales_pipeline(&session).await?;
    let mut account_ids = Vec::with_capacity(args.accounts);
    for i in 1..=args.accounts {
        let a = session
            .post(
                "/accounts",
                json!({"name": format!("Bench Account {i:03}"), "industry": "Software"}),
            )
            .await?;
        let id = Uuid::parse_str(a["id"].as_str().context("account id")?)?;
        // Through the service, so it checks the account and remembers its name.
        session
            .post(
                "/opportunities",
                json!({
                    "accountId": id, "name": format!("First deal {i}"), "amountCents": 1_000_000,
                    "currency": "USD", "closeDate": (Utc::now().date_naive() + chrono::Days::new(30)).to_string(),
                    "ownerUserId": owners[i % owners.len()],
                }),
            )
            .await?;
        account_ids.push(id);
    }

    println!("{}", machine_line());
    println!();
    let owner_conn = Database::connect(&scratch.admin_url)
        .await
        .context("connecting as the superuser")?;
    let seeded = seed(
        &owner_conn,
        args.opportunities,
        tenant,
        &stages,
        &owners,
        &account_ids,
    )
    .await?;
    println!(
        "seeded {} opportunities and {} stage history rows in {:.1} s (insert {:.1} s, \
         indexes {:.1} s, VACUUM (ANALYZE) {:.1} s)",
        seeded.opportunities,
        seeded.history,
        seeded.total.as_secs_f64(),
        seeded.insert.as_secs_f64(),
        seeded.indexes.as_secs_f64(),
        seeded.vacuum.as_secs_f64()
    );
    println!();

    // ---- the report ------------------------------------------------------------------------
    let (first, last) = close_range(&owner_conn, tenant).await?;
    let today = Utc::now().date_naive();
    let quarter_from = NaiveDate::from_ymd_opt(today.year(), (today.month0() / 3) * 3 + 1, 1)
        .context("quarter start")?;
    let quarter_to = quarter_from
        .checked_add_months(chrono::Months::new(3))
        .and_then(|d| d.pred_opt())
        .context("quarter end")?;
    let queries = [
        ReportQuery {
            label: "all close dates".into(),
            from: first,
            to: last,
            owner: None,
        },
        ReportQuery {
            label: format!("this quarter ({quarter_from} to {quarter_to})"),
            from: quarter_from,
            to: quarter_to,
            owner: None,
        },
        ReportQuery {
            label: "all close dates, one owner".into(),
            from: first,
            to: last,
            owner: Some(owners[0]),
        },
    ];
    let mut report_rows = Vec::new();
    for q in &queries {
        let rows = check_report(&session, &db, tenant, stages.pipeline, q).await?;
        report_rows.push(rows);
    }
    if args.explain {
        for q in &queries {
            explain(&db, tenant, stages.pipeline, q).await?;
        }
    }
    let mut report_samples = Vec::new();
    for q in &queries {
        session.relogin().await?;
        let url = format!("{}{}", session.base, q.path(stages.pipeline));
        for _ in 0..args.warmup {
            report_gateway(&session, &url).await?;
            report_direct(&db, tenant, stages.pipeline, q).await?;
        }
        let (mut g, mut d) = (Samples::default(), Samples::default());
        for i in 0..args.reports {
            // Alternate who goes first, so each path as often follows the other.
            if i % 2 == 0 {
                g.record(report_gateway(&session, &url).await?, 1);
                d.record(report_direct(&db, tenant, stages.pipeline, q).await?, 1);
            } else {
                d.record(report_direct(&db, tenant, stages.pipeline, q).await?, 1);
                g.record(report_gateway(&session, &url).await?, 1);
            }
        }
        report_samples.push((g.summary(), d.summary()));
    }
    println!(
        "### Pipeline report over {} live opportunities ({} calls per query and path, alternating)",
        seeded.live, args.reports
    );
    println!();
    println!("| report | rows in range | path | calls | p50 ms | p95 ms | p99 ms | p95 ÷ direct |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    for ((q, rows), (g, d)) in queries.iter().zip(&report_rows).zip(&report_samples) {
        row(&q.label, &rows.to_string(), "baseline: direct SQL", d, d);
        row(&q.label, &rows.to_string(), "gateway", g, d);
    }
    println!();
    let worst = report_samples
        .iter()
        .map(|(g, d)| g.p95.as_secs_f64() / d.p95.as_secs_f64().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    println!(
        "report p95 gateway ÷ direct: {} (target at most 2: {})",
        report_samples
            .iter()
            .map(|(g, d)| ratio(g.p95.as_secs_f64(), d.p95.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        if worst <= 2.0 { "met" } else { "MISSED" }
    );
    println!();

    // ---- stage moves -----------------------------------------------------------------------
    if args.moves > 0 {
        let picked = move_candidates(&db, tenant, &stages, args.moves + args.warmup).await?;
        anyhow::ensure!(
            picked.len() >= 2 * (args.moves + args.warmup),
            "only {} opportunities in open stages, {} needed",
            picked.len(),
            2 * (args.moves + args.warmup)
        );
        session.relogin().await?;
        let moves_started = Utc::now();
        let (mut g, mut d) = (Samples::default(), Samples::default());
        for (i, pair) in picked.chunks_exact(2).enumerate() {
            let gw = move_gateway(&session, &pair[0]);
            let direct = move_direct(&db, tenant, admin, &pair[1]);
            let (tg, td) = if i % 2 == 0 {
                let tg = gw.await?;
                (tg, direct.await?)
            } else {
                let td = direct.await?;
                (gw.await?, td)
            };
            if i >= args.warmup {
                g.record(tg, 1);
                d.record(td, 1);
            }
        }
        check_moves(&owner_conn, tenant, &picked, moves_started).await?;
        let (g, d) = (g.summary(), d.summary());
        println!(
            "### Stage moves between open stages ({} per path, each opportunity once, alternating)",
            g.samples
        );
        println!();
        println!("| move | path | calls | p50 ms | p95 ms | p99 ms | p95 ÷ direct |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        for (path, s) in [("baseline: direct SQL", &d), ("gateway", &g)] {
            println!(
                "| `POST /opportunities/{{id}}/stage` | {path} | {} | {} | {} | {} | {} |",
                s.samples,
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                ratio(s.p95.as_secs_f64(), d.p95.as_secs_f64())
            );
        }
        println!();
        println!(
            "stage move p95 gateway ÷ direct: {}",
            ratio(g.p95.as_secs_f64(), d.p95.as_secs_f64())
        );
    }
    owner_conn.close().await?;
    Ok(())
}

fn row(label: &str, rows: &str, path: &str, s: &Summary, base: &Summary) {
    println!(
        "| {label} | {rows} | {path} | {} | {} | {} | {} | {} |",
        s.samples,
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        ratio(s.p95.as_secs_f64(), base.p95.as_secs_f64())
    );
}

/// The default deal pipeline and its stages, as `GET /pipelines` shows them.
async fn sales_pipeline(session: &Session) -> anyhow::Result<Stages> {
    let list = session.get("/pipelines?objectType=deal").await?;
    let p = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|p| p["isDefault"] == true))
        .context("no default deal pipeline")?;
    let mut out = Stages {
        pipeline: Uuid::parse_str(p["id"].as_str().context("pipeline id")?)?,
        open: vec![],
        won: String::new(),
        lost: String::new(),
    };
    for s in p["stages"].as_array().context("stages")? {
        if s["retired"] == true {
            continue;
        }
        let key = s["key"].as_str().context("stage key")?.to_owned();
        match s["kind"].as_str() {
            Some("open") if s["requiredFields"].as_array().is_none_or(Vec::is_empty) => {
                out.open.push(key)
            }
            Some("won") if out.won.is_empty() => out.won = key,
            Some("lost") if out.lost.is_empty() => out.lost = key,
            _ => {}
        }
    }
    anyhow::ensure!(
        out.open.len() >= 2 && !out.won.is_empty() && !out.lost.is_empty(),
        "the default pipeline lacks two open stages, a won and a lost one: {p}"
    );
    Ok(out)
}

/// What the load took.
struct Seeded {
    opportunities: u64,
    live: i64,
    history: u64,
    insert: Duration,
    indexes: Duration,
    vacuum: Duration,
    total: Duration,
}

fn uuid_array(ids: &[Uuid]) -> String {
    let items: Vec<String> = ids.iter().map(|u| format!("'{u}'")).collect();
    format!("(ARRAY[{}]::uuid[])", items.join(","))
}

fn text_array(items: &[String]) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    format!("(ARRAY[{}]::text[])", items.join(","))
}

/// Loads `n` opportunities as the superuser in one transaction, as if made over two years:
/// created evenly over the last 730 days (ids are version 7 UUIDs of that time), closing 1 to
/// 26 weeks after creation; past close dates are mostly won or lost (10% still open), future
/// ones open, early stages more often; USD, EUR and GBP, amounts 500 to 250,500 skewed low
/// (3% of open ones without an amount), random accounts and owners, 1% soft-deleted. Each
/// gets the stage history the service would have written: its creation in the first open
/// stage and, unless still there, one move to its stage. The secondary indexes are dropped
/// and rebuilt from their own definitions around the load, then `VACUUM (ANALYZE)` runs.
async fn seed(
    conn: &DatabaseConnection,
    n: u64,
    tenant: TenantId,
    stages: &Stages,
    owners: &[Uuid],
    accounts: &[Uuid],
) -> anyhow::Result<Seeded> {
    use sea_orm::TransactionTrait as _;
    let started = Instant::now();
    let tx = conn.begin().await?;
    tx.execute_unprepared(
        "SET LOCAL synchronous_commit = off; SET LOCAL maintenance_work_mem = '512MB'",
    )
    .await?;
    let indexes: Vec<(String, String)> = tx
        .query_all_raw(sql(
            "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def \
             FROM pg_index i \
             WHERE i.indrelid IN ('pipeline.opportunities'::regclass, 'pipeline.stage_history'::regclass) \
               AND NOT i.indisprimary AND NOT i.indisunique",
        ))
        .await?
        .iter()
        .map(|r| Ok((r.try_get("", "name")?, r.try_get("", "def")?)))
        .collect::<Result<_, sea_orm::DbErr>>()?;
    for (name, _) in &indexes {
        tx.execute_unprepared(&format!("DROP INDEX {name}")).await?;
    }
    let span = 730.0 * 86_400.0;
    let start = Utc::now().timestamp() as f64 - span;
    let step = span / n.max(1) as f64;
    let first_open = &stages.open[0];
    tx.execute_unprepared(&format!(
        "WITH s AS (SELECT n, to_timestamp({start} + (n - 1) * {step} + random() * {step} * 0.9) AS c, \
                md5(random()::text) AS h, random() AS ra, random() AS rn, random() AS ro, \
                random() AS rk, random() AS rd, random() AS rs, random() AS rs2, random() AS rc, \
                random() AS rr, random() AS re, random() AS rx, random() AS rq \
              FROM generate_series(1, {n}) AS n), \
         x AS (SELECT s.*, (c AT TIME ZONE 'UTC')::date + (7 + floor(rd * 176))::int AS close, \
                {open}[1 + floor(power(rs2, 1.4) * {n_open})::int] AS open_stage \
              FROM s), \
         y AS (SELECT x.*, CASE WHEN close < current_date AND rs < 0.45 THEN '{won}' \
                  WHEN close < current_date AND rs < 0.9 THEN '{lost}' ELSE open_stage END AS stage, \
                {owners}[1 + floor(ro * {n_owners})::int] AS owner \
              FROM x), \
         z AS (SELECT y.*, CASE WHEN stage IN ('{won}', '{lost}') THEN (close::timestamp AT TIME ZONE 'UTC') + interval '17 hours' \
                  WHEN stage = '{first_open}' THEN c ELSE c + (now() - c) * re END AS entered \
              FROM y) \
         INSERT INTO pipeline.opportunities (tenant_id, id, account_id, name, amount_cents, currency, \
             pipeline_id, stage, stage_entered_at, close_date, lost_reason, won_at, owner_user_id, version, \
             created_at, updated_at, created_by, updated_by, deleted_at, deleted_by) \
         SELECT '{tenant}'::uuid, {V7}, {accounts}[1 + floor(ra * {n_accounts})::int], \
             (ARRAY[{DEAL_KINDS}])[1 + floor(rk * 8)::int] || ' ' || n, \
             CASE WHEN stage IN ('{won}', '{lost}') OR rn >= 0.03 THEN (500 + floor(power(rq, 3) * 250000)::bigint) * 100 END, \
             CASE WHEN stage IN ('{won}', '{lost}') OR rn >= 0.03 THEN CASE WHEN rc < 0.55 THEN 'USD' WHEN rc < 0.85 THEN 'EUR' ELSE 'GBP' END END, \
             '{pipeline}'::uuid, stage, entered, close, \
             CASE WHEN stage = '{lost}' THEN (ARRAY[{LOST_REASONS}])[1 + floor(rr * 7)::int] END, \
             CASE WHEN stage = '{won}' THEN entered END, owner, \
             CASE WHEN stage = '{first_open}' THEN 1 ELSE 2 END + CASE WHEN rx < 0.01 THEN 1 ELSE 0 END, \
             c, entered, owner, owner, \
             CASE WHEN rx < 0.01 THEN entered END, CASE WHEN rx < 0.01 THEN owner END \
         FROM z",
        open = text_array(&stages.open),
        n_open = stages.open.len(),
        won = stages.won,
        lost = stages.lost,
        owners = uuid_array(owners),
        n_owners = owners.len(),
        accounts = uuid_array(accounts),
        n_accounts = accounts.len(),
        pipeline = stages.pipeline,
    ))
    .await
    .context("loading the opportunities")?;
    // The seeded rows are those without history yet (the first deals have theirs).
    tx.execute_unprepared(&format!(
        "CREATE TEMP TABLE bench_new ON COMMIT DROP AS \
           SELECT o.* FROM pipeline.opportunities o WHERE o.tenant_id = '{tenant}' \
           AND NOT EXISTS (SELECT 1 FROM pipeline.stage_history h \
             WHERE h.tenant_id = o.tenant_id AND h.entity_id = o.id)"
    ))
    .await?;
    let history = tx
        .execute_unprepared(&format!(
            "INSERT INTO pipeline.stage_history (tenant_id, id, entity_type, entity_id, pipeline_id, \
                 from_stage, to_stage, actor_id, moved_at, seconds_in_previous) \
             SELECT tenant_id, {V7}, 'opportunity', id, pipeline_id, NULL, '{first_open}', created_by, c, 0 \
             FROM (SELECT b.*, b.created_at AS c, md5(random()::text) AS h FROM bench_new b) s \
             UNION ALL \
             SELECT tenant_id, {V7}, 'opportunity', id, pipeline_id, '{first_open}', stage, owner_user_id, c, \
                 greatest(0, extract(epoch FROM c - created_at))::bigint \
             FROM (SELECT b.*, b.stage_entered_at AS c, md5(random()::text) AS h FROM bench_new b \
                   WHERE b.stage <> '{first_open}') m"
        ))
        .await
        .context("loading the stage history")?
        .rows_affected();
    let insert = started.elapsed();
    let t = Instant::now();
    for (name, def) in &indexes {
        tx.execute_unprepared(def)
            .await
            .with_context(|| format!("rebuilding {name}"))?;
    }
    let indexes = t.elapsed();
    tx.commit().await?;
    let t = Instant::now();
    conn.execute_unprepared("VACUUM (ANALYZE) pipeline.opportunities, pipeline.stage_history")
        .await?;
    let vacuum = t.elapsed();
    let live: i64 = conn
        .query_one_raw(stmt(
            "SELECT count(*) AS n FROM pipeline.opportunities WHERE tenant_id = $1 AND deleted_at IS NULL",
            [tenant.uuid().into()],
        ))
        .await?
        .context("count")?
        .try_get("", "n")?;
    Ok(Seeded {
        opportunities: n,
        live,
        history,
        insert,
        indexes,
        vacuum,
        total: started.elapsed(),
    })
}

/// The first and last close date of the tenant's opportunities.
async fn close_range(
    conn: &DatabaseConnection,
    tenant: TenantId,
) -> anyhow::Result<(NaiveDate, NaiveDate)> {
    let r = conn
        .query_one_raw(stmt(
            "SELECT min(close_date) AS a, max(close_date) AS b FROM pipeline.opportunities WHERE tenant_id = $1",
            [tenant.uuid().into()],
        ))
        .await?
        .context("close range")?;
    Ok((r.try_get("", "a")?, r.try_get("", "b")?))
}

/// One report request.
struct ReportQuery {
    label: String,
    from: NaiveDate,
    to: NaiveDate,
    owner: Option<Uuid>,
}

impl ReportQuery {
    /// The gateway path, after `/api/v1`.
    fn path(&self, pipeline: Uuid) -> String {
        let mut path = format!(
            "/reports/pipeline?pipelineId={pipeline}&from={}&to={}",
            self.from, self.to
        );
        if let Some(o) = self.owner {
            path.push_str(&format!("&ownerUserId={o}"));
        }
        path
    }
}

async fn report_gateway(session: &Session, url: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    session
        .http
        .get(url)
        .bearer_auth(&session.token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(t.elapsed())
}

/// The statement the service runs for the report, in a tenant transaction on its pool.
async fn report_direct(
    db: &Db,
    tenant: TenantId,
    pipeline: Uuid,
    q: &ReportQuery,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let tx = db.tenant_tx(tenant).await?;
    store::report(&tx, pipeline, q.from, q.to, q.owner, &Reach::All).await?;
    tx.commit().await?;
    Ok(t.elapsed())
}

/// Fails unless the gateway's report counts what the direct SQL groups; the rows in range.
async fn check_report(
    session: &Session,
    db: &Db,
    tenant: TenantId,
    pipeline: Uuid,
    q: &ReportQuery,
) -> anyhow::Result<i64> {
    let r = session.get(&q.path(pipeline)).await?;
    let gateway: i64 = r["stages"]
        .as_array()
        .context("stages")?
        .iter()
        .filter_map(|s| s["count"].as_i64())
        .sum();
    let tx = db.tenant_tx(tenant).await?;
    let groups = store::report(&tx, pipeline, q.from, q.to, q.owner, &Reach::All).await?;
    tx.commit().await?;
    let direct: i64 = groups.iter().map(|g| g.n).sum();
    anyhow::ensure!(
        direct > 0 && gateway == direct,
        "{}: the gateway's report counts {gateway} opportunities, the direct SQL {direct}",
        q.label
    );
    Ok(direct)
}

/// Prints the plan of the report statement as the runtime role runs it.
async fn explain(db: &Db, tenant: TenantId, pipeline: Uuid, q: &ReportQuery) -> anyhow::Result<()> {
    let s = store::report_statement(tenant.uuid(), pipeline, q.from, q.to, q.owner, &Reach::All);
    let s = Statement {
        sql: format!("EXPLAIN (ANALYZE, BUFFERS) {}", s.sql),
        ..s
    };
    let tx = db.tenant_tx(tenant).await?;
    let rows = tx.conn().query_all_raw(s).await?;
    tx.commit().await?;
    println!("#### Plan: {}", q.label);
    println!();
    println!("```");
    for r in rows {
        println!("{}", r.try_get::<String>("", "QUERY PLAN")?);
    }
    println!("```");
    println!();
    Ok(())
}

/// A seeded opportunity in an open stage, and where it moves.
struct Candidate {
    id: Uuid,
    version: i64,
    to: String,
}

/// Live opportunities in open stages in no useful order, each with the next open stage.
async fn move_candidates(
    db: &Db,
    tenant: TenantId,
    stages: &Stages,
    pairs: usize,
) -> anyhow::Result<Vec<Candidate>> {
    let tx = db.tenant_tx(tenant).await?;
    let rows = tx
        .conn()
        .query_all_raw(stmt(
            "SELECT id, stage, version FROM pipeline.opportunities \
             WHERE tenant_id = $1 AND deleted_at IS NULL AND stage = ANY($2) \
             ORDER BY md5(id::text) LIMIT $3",
            [
                tenant.uuid().into(),
                stages.open.clone().into(),
                (2 * pairs as i64).into(),
            ],
        ))
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            let stage: String = r.try_get("", "stage")?;
            let k = stages.open.iter().position(|s| *s == stage).unwrap_or(0);
            Ok(Candidate {
                id: r.try_get("", "id")?,
                version: r.try_get("", "version")?,
                to: stages.open[(k + 1) % stages.open.len()].clone(),
            })
        })
        .collect()
}

async fn move_gateway(session: &Session, c: &Candidate) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let res = session
        .http
        .post(format!("{}/opportunities/{}/stage", session.base, c.id))
        .bearer_auth(&session.token)
        .header("If-Match", format!("\"{}\"", c.version))
        .json(&json!({"stage": c.to}))
        .send()
        .await?;
    let status = res.status();
    let body = res.bytes().await?;
    let took = t.elapsed();
    anyhow::ensure!(
        status.is_success(),
        "POST /opportunities/{}/stage answered {status}: {}",
        c.id,
        String::from_utf8_lossy(&body)
    );
    Ok(took)
}

/// What the service does for a move, minus gRPC, HTTP and permissions: lock and read the
/// opportunity, check its version, read its pipeline, check the transition rules, write the
/// stage, record the move, read the row back and append `opportunity.stage_changed` to the
/// outbox, in one tenant transaction with the service's own store functions.
async fn move_direct(
    db: &Db,
    tenant: TenantId,
    actor: Uuid,
    c: &Candidate,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let tx = db.tenant_tx(tenant).await?;
    let current: OppRow = store::fetch(&tx, Kind::Opportunity, c.id, false, true)
        .await?
        .context("opportunity vanished")?;
    anyhow::ensure!(current.version == c.version, "the opportunity changed");
    let p = store::pipeline(&tx, current.pipeline_id)
        .await?
        .context("pipeline missing")?;
    let def = p.def();
    let has = |f: &str| match f {
        "amountCents" => current.amount_cents.is_some(),
        "currency" => current.currency.is_some(),
        "closeDate" => current.close_date.is_some(),
        "lostReason" => current.lost_reason.is_some(),
        "ownerUserId" => current.owner_user_id.is_some(),
        _ => true,
    };
    let moves = rules::check(
        &def,
        &rules::Move {
            from: &current.stage,
            to: &c.to,
            manager: true,
            has: &has,
        },
    )
    .map_err(|e| anyhow::anyhow!("the rules refuse the move: {e:?}"))?;
    anyhow::ensure!(moves, "the opportunity is already in {}", c.to);
    let kind = def.stage(&c.to).map(|s| s.kind).unwrap_or(StageKind::Open);
    let now = Utc::now();
    store::update(
        &tx,
        Kind::Opportunity,
        c.id,
        vec![
            Set::new("stage", c.to.clone()),
            Set::new("stage_entered_at", now),
            Set::new("won_at", (kind == StageKind::Won).then_some(now)),
        ],
        actor,
    )
    .await?;
    let seconds = (now - current.stage_entered_at).num_seconds().max(0);
    store::record_move(
        &tx,
        Kind::Opportunity,
        c.id,
        p.id,
        Some(&current.stage),
        &c.to,
        Some(actor),
        now,
        seconds,
    )
    .await?;
    let after: OppRow = store::fetch(&tx, Kind::Opportunity, c.id, false, false)
        .await?
        .context("opportunity vanished")?;
    service::emit(
        &tx,
        Some(actor),
        "opportunity.stage_changed",
        c.id,
        Some(json!({"stage": current.stage, "pipelineId": p.id, "version": current.version})),
        Some(json!({
            "stage": c.to, "pipelineId": p.id, "accountId": after.account_id,
            "secondsInPreviousStage": seconds, "version": after.version,
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(t.elapsed())
}

/// Fails unless every picked opportunity is in its new stage, one version on, with the move
/// in its history and its event in the outbox.
async fn check_moves(
    conn: &DatabaseConnection,
    tenant: TenantId,
    picked: &[Candidate],
    since: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = picked.iter().map(|c| c.id).collect();
    let r = conn
        .query_one_raw(stmt(
            "SELECT \
               (SELECT count(*) FROM pipeline.opportunities o \
                  JOIN unnest($2::uuid[], $3::text[], $4::bigint[]) AS p(id, stage, version) \
                  ON o.id = p.id AND o.stage = p.stage AND o.version = p.version + 1 \
                WHERE o.tenant_id = $1) AS moved, \
               (SELECT count(*) FROM pipeline.stage_history h \
                WHERE h.tenant_id = $1 AND h.entity_type = 'opportunity' AND h.entity_id = ANY($2) \
                  AND h.moved_at >= $5) AS recorded, \
               (SELECT count(*) FROM pipeline.outbox e \
                WHERE e.tenant_id = $1 AND e.event_type = 'opportunity.stage_changed' \
                  AND e.subject = ANY($6)) AS events",
            [
                tenant.uuid().into(),
                ids.clone().into(),
                picked
                    .iter()
                    .map(|c| c.to.clone())
                    .collect::<Vec<_>>()
                    .into(),
                picked.iter().map(|c| c.version).collect::<Vec<_>>().into(),
                since.into(),
                ids.iter().map(Uuid::to_string).collect::<Vec<_>>().into(),
            ],
        ))
        .await?
        .context("counts")?;
    let (moved, recorded, events): (i64, i64, i64) = (
        r.try_get("", "moved")?,
        r.try_get("", "recorded")?,
        r.try_get("", "events")?,
    );
    let n = picked.len() as i64;
    anyhow::ensure!(
        moved == n && recorded == n && events == n,
        "of {n} moves, {moved} opportunities moved, {recorded} history rows and {events} events written"
    );
    Ok(())
}
