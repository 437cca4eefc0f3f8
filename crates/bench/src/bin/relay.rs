//! Outbox relay throughput with publisher confirms, beside a bare lapin publish loop of the
//! same messages to the same exchange, confirmed in windows of the relay's batch size.
//!
//! `cargo run -p crm-bench --release --bin relay`

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use crm_bench::{RUNTIME_ROLE, Samples, Scratch, machine_line, ms, rate, ratio};
use crm_bus::{Event, Relay, outbox};
use crm_kit::{Db, TenantId, admin};
use futures::future::join_all;
use lapin::{
    BasicProperties, Channel, Confirmation, ExchangeKind,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions, QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement, TransactionTrait};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SCHEMA: &str = "bench";
/// A second, identical outbox for the SQL-only diagnostic, so both start from a fresh table.
const SQL_SCHEMA: &str = "bench_sql";

#[derive(Parser, Debug)]
#[command(about = "Outbox relay throughput beside a bare confirmed publish loop")]
struct Args {
    /// Events in the outbox (and messages in each bare loop).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Rows the relay claims per batch; the bare loop confirms in windows of the same size.
    #[arg(long, default_value_t = 256)]
    batch: u32,
    /// Tenants the events are spread over.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Events appended per tenant transaction while filling the outbox.
    #[arg(long, default_value_t = 1_000)]
    insert_batch: usize,
    /// Time limit of each measured phase, in seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
}

/// One message as the relay would publish it.
struct Message {
    routing_key: ShortString,
    body: Vec<u8>,
    event: Event,
}

impl Message {
    /// The relay's properties: content type, persistent, id, type, tenant header, source, time.
    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            "tenantid".into(),
            AMQPValue::LongString(LongString::from(
                self.event.tenantid.to_string().into_bytes(),
            )),
        );
        let mut props = BasicProperties::default()
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2)
            .with_message_id(self.event.id.to_string().into())
            .with_type(self.routing_key.clone())
            .with_headers(headers)
            .with_app_id(self.event.source.as_str().into());
        if let Ok(ts) = u64::try_from(self.event.time.timestamp()) {
            props = props.with_timestamp(ts);
        }
        props
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    crm_bench::init_tracing();
    let args = Args::parse();
    anyhow::ensure!(args.tenants > 0, "--tenants must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let scratch = Scratch::create("relay").await?;
    let outcome = tokio::select! {
        r = run(&scratch, &args) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    scratch.cleanup().await;
    outcome
}

async fn run(scratch: &Scratch, args: &Args) -> anyhow::Result<()> {
    // The outbox as in a service schema: owned by the admin, appended to by the runtime role.
    let admin_conn = Database::connect(scratch.admin_url.as_str())
        .await
        .context("connecting as admin")?;
    admin::ensure_runtime_role(&admin_conn, RUNTIME_ROLE).await?;
    for schema in [SCHEMA, SQL_SCHEMA] {
        admin_conn
            .execute_unprepared(&outbox::ddl(schema, RUNTIME_ROLE))
            .await
            .with_context(|| format!("creating the outbox in {schema}"))?;
    }
    admin_conn.close().await?;
    let db = scratch.runtime_db(8).await?;

    // A queue bound to every routing key, so each message is routed and persisted.
    let (conn, channel) = scratch.amqp("bench").await?;
    let exchange = scratch.bus.exchange();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring the events exchange")?;
    let queue = scratch.queue("bench.sink");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .context("declaring the sink queue")?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("binding the sink queue")?;

    let mut relay = Relay::new(db.clone(), SCHEMA, scratch.bus.clone()).with_batch_size(args.batch);
    // Connects to the broker on an empty outbox, so the timed loop does not pay for it.
    let warm = relay.run_once().await.context("warming the relay up")?;
    anyhow::ensure!(warm == 0, "the outbox was not empty");

    let messages = self::messages(args)?;
    let mean_size = messages.iter().map(|m| m.body.len()).sum::<usize>() / messages.len().max(1);
    let limit = Duration::from_secs(args.max_secs);

    // Bare loops before and after the relay: the baseline is their mean, drift shows as a gap.
    let bare_before = bare_publish(scratch, &exchange, &messages, args.batch, limit).await?;
    drain_check(&channel, &queue, messages.len()).await?;

    let filled = Instant::now();
    fill_outbox(&db, SCHEMA, &messages, args.insert_batch).await?;
    let fill_secs = filled.elapsed().as_secs_f64();

    let relayed = relay_until_empty(&mut relay, limit).await?;
    drain_check(&channel, &queue, messages.len()).await?;

    // The relay as services run it (`Relay::run`), which marks one batch while it claims and
    // publishes the next; timed until every row is marked published.
    // New events: ids are unique, so the first round's cannot be appended again.
    fill_outbox(&db, SCHEMA, &self::messages(args)?, args.insert_batch).await?;
    let running = running_relay_until_empty(scratch, &db, args.batch, limit).await?;
    drain_check(&channel, &queue, messages.len()).await?;

    let bare_after = bare_publish(scratch, &exchange, &messages, args.batch, limit).await?;
    drain_check(&channel, &queue, messages.len()).await?;

    // The relay's own statements without the broker: what each batch spends in PostgreSQL.
    fill_outbox(&db, SQL_SCHEMA, &messages, args.insert_batch).await?;
    let sql_phases = claim_and_mark_until_empty(&db, args.batch, limit).await?;

    // A cancelled run flushes nothing (the outbox is empty) and closes the relay's connection.
    relay.run(cancelled()).await.context("stopping the relay")?;
    let _ = conn.close(200, "bench done".into()).await;

    let before = bare_before.summary();
    let after = bare_after.summary();
    let relay_sum = relayed.summary();
    let sql = sql_phases.whole.summary();
    let baseline = (before.per_sec + after.per_sec) / 2.0;
    println!("{}", machine_line());
    println!(
        "{} events of {mean_size} bytes on average over {} tenants; batch {} rows; outbox filled at {} rows/s",
        messages.len(),
        args.tenants,
        args.batch,
        rate(messages.len() as f64 / fill_secs),
    );
    println!();
    println!(
        "| path | events | events/s | batch p50 ms | batch p95 ms | batch p99 ms | ÷ bare (mean) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, s) in [
        ("baseline: bare confirmed publish, before", before),
        (
            "`Relay::run_once` until empty (one batch at a time)",
            relay_sum,
        ),
        (
            "`Relay::run` until all marked (as services run it)",
            running.summary(),
        ),
        ("baseline: bare confirmed publish, after", after),
        (
            "diagnostic: the relay's claim + mark SQL alone, no broker",
            sql,
        ),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            s.items,
            rate(s.per_sec),
            ms(s.p50),
            ms(s.p95),
            ms(s.p99),
            ratio(s.per_sec, baseline),
        );
    }
    let r = if baseline > 0.0 {
        relay_sum.per_sec / baseline
    } else {
        0.0
    };
    println!();
    println!(
        "relay ÷ bare publish = {r:.3} (target ≥ 0.70: {})",
        if r >= 0.7 { "met" } else { "missed" }
    );
    let bare_p50 = (before.p50 + after.p50) / 2;
    println!(
        "batch p50: relay {} ms; bare window {} ms + claim/mark SQL {} ms = {} ms",
        ms(relay_sum.p50),
        ms(bare_p50),
        ms(sql.p50),
        ms(bare_p50 + sql.p50),
    );
    println!(
        "claim/mark SQL per batch, p50: claim and decode {} ms, mark {} ms, commit {} ms",
        ms(sql_phases.claim.summary().p50),
        ms(sql_phases.mark.summary().p50),
        ms(sql_phases.commit.summary().p50),
    );
    Ok(())
}

fn cancelled() -> CancellationToken {
    let token = CancellationToken::new();
    token.cancel();
    token
}

/// Events shaped like a contact update, spread round-robin over the tenants.
fn messages(args: &Args) -> anyhow::Result<Vec<Message>> {
    let tenants: Vec<TenantId> = (0..args.tenants).map(|_| TenantId::new()).collect();
    (0..args.events)
        .map(|i| {
            let tenant = tenants[i % tenants.len()];
            let contact = Uuid::now_v7();
            let before = json!({
                "id": contact, "firstName": "Ada", "lastName": "Lovelace",
                "email": format!("ada{i}@example.com"), "phone": "+44 20 7946 0000",
                "title": "Analyst", "accountId": Uuid::now_v7(), "ownerId": Uuid::now_v7(),
                "tags": ["prospect", "newsletter"], "version": 3,
            });
            let mut after = before.clone();
            after["title"] = json!("Head of Analysis");
            after["version"] = json!(4);
            let event = Event::new(
                "accounts-contacts",
                "contact.updated",
                tenant,
                Some(Uuid::now_v7()),
                "contact",
                contact,
                Some(before),
                Some(after),
            );
            let body = serde_json::to_vec(&event).context("serializing an event")?;
            Ok(Message {
                routing_key: ShortString::from(event.event_type.as_str()),
                body,
                event,
            })
        })
        .collect()
}

/// Appends every event to the outbox of `schema` in its tenant's transactions, `per_tx` at a time.
async fn fill_outbox(
    db: &Db,
    schema: &str,
    messages: &[Message],
    per_tx: usize,
) -> anyhow::Result<()> {
    let mut by_tenant: std::collections::BTreeMap<TenantId, Vec<&Event>> = Default::default();
    for m in messages {
        by_tenant
            .entry(m.event.tenantid)
            .or_default()
            .push(&m.event);
    }
    for (tenant, events) in by_tenant {
        for chunk in events.chunks(per_tx.max(1)) {
            let tx = db.tenant_tx(tenant).await.context("tenant transaction")?;
            for event in chunk {
                outbox::append(&tx, schema, event)
                    .await
                    .context("appending to the outbox")?;
            }
            tx.commit().await.context("committing outbox rows")?;
        }
    }
    Ok(())
}

/// Runs the relay as a service does and times it until no row is left unpublished.
async fn running_relay_until_empty(
    scratch: &Scratch,
    db: &crm_kit::Db,
    batch: u32,
    limit: Duration,
) -> anyhow::Result<Samples> {
    use sea_orm::ConnectionTrait;
    let admin = sea_orm::Database::connect(scratch.admin_url.as_str())
        .await
        .context("connecting as admin")?;
    let count = format!("SELECT count(*) AS n FROM {SCHEMA}.outbox WHERE published_at IS NULL");
    let total: i64 = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            count.clone(),
        ))
        .await?
        .context("counting")?
        .try_get("", "n")?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let relay = Relay::new(db.clone(), SCHEMA, scratch.bus.clone()).with_batch_size(batch);
    let start = Instant::now();
    let task = tokio::spawn(relay.run(cancel.clone()));
    loop {
        let left: i64 = admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                count.clone(),
            ))
            .await?
            .context("counting")?
            .try_get("", "n")?;
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < limit,
            "the running relay did not drain within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = start.elapsed();
    cancel.cancel();
    task.await.context("relay task")?.context("relay run")?;
    let _ = admin.close().await;
    let mut s = Samples::default();
    // One sample: the whole drain; its percentiles are the wall time, not per batch.
    s.record(wall, total as u64);
    s.add_wall(wall);
    Ok(s)
}

/// Times `run_once` calls until the outbox is empty.
async fn relay_until_empty(relay: &mut Relay, limit: Duration) -> anyhow::Result<Samples> {
    let mut s = Samples::default();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let n = relay.run_once().await.context("relay batch")?;
        if n == 0 {
            break;
        }
        s.record(t.elapsed(), n as u64);
        anyhow::ensure!(
            start.elapsed() < limit,
            "the relay did not drain within {limit:?}"
        );
    }
    s.add_wall(start.elapsed());
    Ok(s)
}

/// Per-batch timings of the relay's statements run alone.
#[derive(Default)]
struct SqlPhases {
    whole: Samples,
    /// The claim, with the rows decoded as the relay decodes them.
    claim: Samples,
    mark: Samples,
    commit: Samples,
}

/// Claims and marks batches as the relay does, in one transaction each, with no publishing between.
async fn claim_and_mark_until_empty(
    db: &Db,
    batch: u32,
    limit: Duration,
) -> anyhow::Result<SqlPhases> {
    // The relay's claim, as `crm_bus::relay` issues it: the envelope is read as text.
    let claim = format!(
        "SELECT id, tenant_id, event_type, payload::text AS body, \
         payload->>'traceparent' AS traceparent, payload->>'source' AS source, \
         created_at FROM \"{SQL_SCHEMA}\".outbox_claim($1)"
    );
    let mark = format!("SELECT \"{SQL_SCHEMA}\".outbox_mark_published($1)");
    let mut p = SqlPhases::default();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let tx = db.conn().begin().await.context("beginning a claim")?;
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                claim.as_str(),
                [(batch as i32).into()],
            ))
            .await
            .context("claiming")?;
        if rows.is_empty() {
            tx.commit().await.context("ending an empty claim")?;
            break;
        }
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("", "id")?;
            let _: Uuid = row.try_get("", "tenant_id")?;
            let _: String = row.try_get("", "event_type")?;
            let _: String = row.try_get("", "body")?;
            let _: Option<String> = row.try_get("", "traceparent")?;
            let _: Option<String> = row.try_get("", "source")?;
            let _: chrono::DateTime<chrono::Utc> = row.try_get("", "created_at")?;
            ids.push(id);
        }
        let n = ids.len() as u64;
        let claimed = Instant::now();
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            mark.as_str(),
            [ids.into()],
        ))
        .await
        .context("marking")?;
        let marked = Instant::now();
        tx.commit().await.context("committing a claim")?;
        let done = Instant::now();
        p.claim.record(claimed - t, n);
        p.mark.record(marked - claimed, n);
        p.commit.record(done - marked, n);
        p.whole.record(done - t, n);
        anyhow::ensure!(
            start.elapsed() < limit,
            "the SQL loop did not drain within {limit:?}"
        );
    }
    p.whole.add_wall(start.elapsed());
    Ok(p)
}

/// Publishes every message on a fresh confirm-mode channel, awaiting confirms per window.
async fn bare_publish(
    scratch: &Scratch,
    exchange: &str,
    messages: &[Message],
    window: u32,
    limit: Duration,
) -> anyhow::Result<Samples> {
    let (conn, channel) = scratch.amqp("bare").await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("enabling publisher confirms")?;
    let exchange = ShortString::from(exchange);
    let mut s = Samples::default();
    let start = Instant::now();
    for chunk in messages.chunks(window as usize) {
        let t = Instant::now();
        let mut pending = Vec::with_capacity(chunk.len());
        for m in chunk {
            let confirm = channel
                .basic_publish(
                    exchange.clone(),
                    m.routing_key.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &m.body,
                    m.properties(),
                )
                .await
                .context("publishing")?;
            pending.push(confirm);
        }
        for confirmation in join_all(pending).await {
            match confirmation.context("awaiting a confirm")? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => anyhow::bail!("a message was not routed"),
                Confirmation::Nack(_) => anyhow::bail!("the broker refused a message"),
                Confirmation::NotRequested => anyhow::bail!("confirms are not enabled"),
            }
        }
        s.record(t.elapsed(), chunk.len() as u64);
        anyhow::ensure!(
            start.elapsed() < limit,
            "the bare loop did not finish within {limit:?}"
        );
    }
    s.add_wall(start.elapsed());
    let _ = conn.close(200, "bare loop done".into()).await;
    Ok(s)
}

/// Checks that every message reached the queue, then empties it for the next phase.
async fn drain_check(channel: &Channel, queue: &str, expected: usize) -> anyhow::Result<()> {
    let ready = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("inspecting the sink queue")?
        .message_count();
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .context("purging the sink queue")?;
    anyhow::ensure!(
        ready as usize == expected,
        "the sink queue held {ready} messages, expected {expected}"
    );
    Ok(())
}
