//! Timelines: event-to-timeline lag under a steady stream of changes (real envelopes written
//! to an outbox, published by the relay through RabbitMQ, applied by the timeline consumer),
//! and page reads of a record with many entries through the gateway beside the same SQL run
//! directly, in the same run.
//!
//! `cargo run -p crm-bench --release --bin timeline`

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use crm_bench::{
    Samples, Scratch, machine_line, ms, rate, ratio,
    stack::{Services, SignedUp, Stack},
};
use crm_bus::Event;
use crm_kit::access::Reach;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery staple";

#[derive(Parser, Debug)]
#[command(about = "Event-to-timeline lag, and timeline pages through the gateway beside SQL")]
struct Args {
    /// Changes per second of the steady stream.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds the stream runs.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Entries of the record whose pages are read.
    #[arg(long, default_value_t = 100_000)]
    entries: u64,
    /// Page reads per path.
    #[arg(long, default_value_t = 2000)]
    reads: usize,
    /// Page size.
    #[arg(long, default_value_t = 50)]
    limit: u64,
}

fn sql(s: &str) -> Statement {
    Statement::from_string(DbBackend::Postgres, s.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    let scratch = Scratch::create("timeline").await?;
    let result = run(&scratch, &args).await;
    scratch.cleanup().await;
    result
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    scratch.migrate().await?;
    let cancel = CancellationToken::new();
    // Timeline reads ask pipeline whether the caller may read the record; pipeline checks
    // accounts against accounts-contacts.
    let with = Services {
        timeline: true,
        ..Services::default()
    };
    let stack = scratch.stack(with, 20, &cancel).await?;
    let http = reqwest::Client::new();
    let SignedUp {
        token,
        tenant,
        admin,
    } = stack.signup(&http, PASSWORD).await?;
    let Stack { base, db } = stack;

    println!("{}", machine_line());
    println!();

    // ---- lag under a steady stream ------------------------------------------------------------
    let leads: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let tick = Duration::from_millis(10);
    let per_tick = (args.rate / 100).max(1);
    let total = per_tick * 100 * args.secs;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        ticker.tick().await;
        let tx = db.tenant_tx(tenant).await?;
        for _ in 0..per_tick {
            let lead = leads[(sent % leads.len() as u64) as usize];
            let e = Event::new(
                "pipeline",
                "lead.updated",
                tenant,
                Some(admin),
                "lead",
                lead,
                Some(json!({"status": "new", "version": sent})),
                Some(json!({"status": "working", "version": sent + 1})),
            );
            crm_bus::outbox::append(&tx, crm_activity_timeline::store::SCHEMA, &e).await?;
            sent += 1;
        }
        tx.commit().await?;
    }
    let publish_wall = started.elapsed();
    let owner = Database::connect(&scratch.admin_url).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = owner
            .query_one_raw(sql(&format!(
                "SELECT count(*) AS n FROM timeline.entries WHERE tenant_id = '{tenant}'"
            )))
            .await?
            .context("count")?;
        let n: i64 = row.try_get("", "n")?;
        if n as u64 >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lag = owner
        .query_one_raw(sql(&format!(
            "SELECT count(*) AS n, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - occurred_at)) AS p50, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - occurred_at)) AS p95, \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM created_at - occurred_at)) AS p99 \
             FROM timeline.entries WHERE tenant_id = '{tenant}'"
        )))
        .await?
        .context("lag")?;
    let n: i64 = lag.try_get("", "n")?;
    let secs = |k: &str| -> anyhow::Result<Duration> {
        let v: f64 = lag.try_get("", k)?;
        Ok(Duration::from_secs_f64(v.max(0.0)))
    };
    println!("### Event-to-timeline lag");
    println!();
    println!("| changes | offered rate (/s) | applied | p50 (ms) | p95 (ms) | p99 (ms) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {total} | {} | {n} | {} | {} | {} |",
        rate(total as f64 / publish_wall.as_secs_f64()),
        ms(secs("p50")?),
        ms(secs("p95")?),
        ms(secs("p99")?)
    );
    println!();

    // ---- pages of a record with many entries ----------------------------------------------------
    let lead: Value = http
        .post(format!("{base}/leads"))
        .bearer_auth(&token)
        .json(&json!({"firstName": "Grace", "lastName": "Hopper", "status": "new"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let lead = Uuid::parse_str(lead["id"].as_str().context("lead id")?)?;
    owner
        .execute_raw(sql(&format!(
            "INSERT INTO timeline.entries (tenant_id, id, record_type, record_id, event_id, event_type, \
             entity_type, entity_id, action, actor_id, before, after, occurred_at) \
             SELECT '{tenant}', gen_random_uuid(), 'lead', '{lead}', gen_random_uuid(), 'lead.updated', 'lead', \
             '{lead}', 'updated', '{admin}', jsonb_build_object('status', 'new', 'version', i), \
             jsonb_build_object('status', 'working', 'version', i + 1), \
             now() - make_interval(secs => i) FROM generate_series(1, {}) AS i",
            args.entries
        )))
        .await?;
    owner.execute_raw(sql("ANALYZE timeline.entries")).await?;
    let path = format!("{base}/leads/{lead}/timeline?limit={}", args.limit);
    // Cursors of pages spread over the whole timeline, from one walk through the gateway.
    let mut cursors: Vec<Option<String>> = vec![None];
    let mut positions: Vec<Option<(chrono::DateTime<chrono::Utc>, Uuid)>> = vec![None];
    let mut next: Option<String> = None;
    let pages = args.entries / args.limit;
    let stride = (pages / 20).max(1);
    for page in 0..pages {
        let url = match &next {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.clone(),
        };
        let b: Value = http
            .get(url)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        next = b["nextCursor"].as_str().map(str::to_owned);
        if page % stride == stride - 1
            && let (Some(c), Some(last)) = (&next, b["items"].as_array().and_then(|a| a.last()))
        {
            let id = Uuid::parse_str(last["id"].as_str().context("id")?)?;
            // The gateway shows milliseconds; the SQL path resumes from the exact row.
            let exact = owner
                .query_one_raw(sql(&format!(
                    "SELECT occurred_at FROM timeline.entries WHERE tenant_id = '{tenant}' AND id = '{id}'"
                )))
                .await?
                .context("entry")?;
            let exact: chrono::DateTime<chrono::Utc> = exact.try_get("", "occurred_at")?;
            cursors.push(Some(c.clone()));
            positions.push(Some((exact, id)));
        }
        if next.is_none() {
            break;
        }
    }
    let mut gateway_samples = Samples::default();
    let mut sql_samples = Samples::default();
    for round in 0..2 {
        for i in 0..args.reads / 2 {
            let k = i % cursors.len();
            let run_gateway = async {
                let url = match &cursors[k] {
                    Some(c) => format!("{path}&cursor={c}"),
                    None => path.clone(),
                };
                let t = Instant::now();
                http.get(url)
                    .bearer_auth(&token)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                anyhow::Ok(t.elapsed())
            };
            let run_sql = async {
                let t = Instant::now();
                let tx = db.tenant_tx(tenant).await?;
                crm_activity_timeline::store::timeline(
                    &tx,
                    "lead",
                    lead,
                    Some(&Reach::All),
                    positions[k],
                    args.limit + 1,
                )
                .await?;
                tx.commit().await?;
                anyhow::Ok(t.elapsed())
            };
            // Alternate who goes first.
            if (i + round) % 2 == 0 {
                gateway_samples.record(run_gateway.await?, 1);
                sql_samples.record(run_sql.await?, 1);
            } else {
                sql_samples.record(run_sql.await?, 1);
                gateway_samples.record(run_gateway.await?, 1);
            }
        }
    }
    let g = gateway_samples.summary();
    let d = sql_samples.summary();
    println!(
        "### Timeline pages of a record with {} entries ({} per page, {} positions)",
        args.entries,
        args.limit,
        cursors.len()
    );
    println!();
    println!("| path | reads | p50 (ms) | p95 (ms) | p99 (ms) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| gateway `GET /leads/{{id}}/timeline` | {} | {} | {} | {} |",
        g.samples,
        ms(g.p50),
        ms(g.p95),
        ms(g.p99)
    );
    println!(
        "| same SQL, direct | {} | {} | {} | {} |",
        d.samples,
        ms(d.p50),
        ms(d.p95),
        ms(d.p99)
    );
    println!();
    println!(
        "p95 gateway / direct: {} (target at most 2)",
        ratio(g.p95.as_secs_f64(), d.p95.as_secs_f64())
    );
    owner.close().await?;
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}
