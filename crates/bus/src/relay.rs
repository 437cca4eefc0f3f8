//! The outbox relay: publishes committed outbox rows to the events exchange, on RabbitMQ
//! or on the in-process broker.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use crm_kit::db::Db;
use futures::{FutureExt as _, future::join_all};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{FieldTable, ShortString},
};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, QueryResult, Statement, TransactionTrait,
};
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    BusConfig, InProcessBroker,
    amqp::{self, Backoff},
    inprocess,
    outbox::{notify_channel, quote_ident},
};

const DEFAULT_BATCH_SIZE: u32 = 256;
/// Backs up LISTEN/NOTIFY: notifications are lost while the listener reconnects.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A batch holds row locks while it waits for the broker; never wait forever.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown may spend publishing what is already committed.
const FLUSH_BUDGET: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "application/cloudevents+json";
const PERSISTENT: u8 = 2;

/// Publishes the outbox of one service schema to the events exchange.
pub struct Relay {
    db: Db,
    schema: String,
    cfg: BusConfig,
    batch_size: u32,
    link: Option<Link>,
}

struct Link {
    connection: Connection,
    channel: Channel,
}

/// Where a batch is published: the transport-specific half of the relay.
enum Publisher {
    /// A confirm-mode channel.
    Amqp(Channel),
    InProcess(InProcessBroker),
}

/// A claimed row ready to go out.
struct Outgoing<'a> {
    row: &'a Claimed,
    routing_key: ShortString,
    body: Vec<u8>,
}

/// One claimed outbox row.
struct Claimed {
    id: Uuid,
    tenant_id: Uuid,
    event_type: String,
    /// The envelope exactly as stored; published as is, never decoded and re-encoded.
    body: String,
    traceparent: Option<String>,
    source: Option<String>,
    created_at: DateTime<Utc>,
}

impl Claimed {
    fn from_row(row: &QueryResult) -> Result<Self, sea_orm::DbErr> {
        Ok(Self {
            id: row.try_get("", "id")?,
            tenant_id: row.try_get("", "tenant_id")?,
            event_type: row.try_get("", "event_type")?,
            body: row.try_get("", "body")?,
            traceparent: row.try_get("", "traceparent")?,
            source: row.try_get("", "source")?,
            created_at: row.try_get("", "created_at")?,
        })
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("schema", &self.schema)
            .field("cfg", &self.cfg)
            .field("batch_size", &self.batch_size)
            .field("connected", &self.link.is_some())
            .finish()
    }
}

impl Relay {
    /// A relay for the outbox of `schema`; it connects to RabbitMQ on first use, or publishes
    /// to the in-process broker when `cfg` names one.
    pub fn new(db: Db, schema: &str, cfg: BusConfig) -> Self {
        Self {
            db,
            schema: schema.to_owned(),
            cfg,
            batch_size: DEFAULT_BATCH_SIZE,
            link: None,
        }
    }

    /// How many rows one batch claims (default 256).
    pub fn with_batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = batch_size.clamp(1, i32::MAX as u32);
        self
    }

    /// Publishes until `cancel` fires, then (on RabbitMQ) flushes what is committed and returns.
    ///
    /// Broker and database failures are logged and retried with backoff; they never end the loop.
    /// Holds one connection of the pool for LISTEN while it runs.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut listener: Option<PgListener> = None;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        tracing::info!(
            schema = %self.schema,
            exchange = %self.cfg.exchange(),
            in_process = self.cfg.in_process_broker().is_some(),
            "outbox relay started"
        );
        // While one batch's mark and commit run, the next batch is claimed (SKIP LOCKED passes
        // over the rows still held) and published, so the database and the broker work at once.
        let mut pending = None;
        while !cancel.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            match self.claim_and_publish().await {
                Ok(Some(batch)) => {
                    backoff.reset();
                    let full = batch.was_full(self.batch_size);
                    settle(&mut pending, &self.schema).await;
                    pending = Some(tokio::spawn(batch.mark()));
                    if !full {
                        settle(&mut pending, &self.schema).await;
                        wait_for_work(&mut listener, &cancel).await;
                    }
                }
                Ok(None) => {
                    backoff.reset();
                    settle(&mut pending, &self.schema).await;
                    wait_for_work(&mut listener, &cancel).await;
                }
                Err(error) => {
                    settle(&mut pending, &self.schema).await;
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        schema = %self.schema,
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "outbox relay batch failed"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
            }
        }
        settle(&mut pending, &self.schema).await;
        // An in-process broker stops with this process: what it took now would vanish with
        // its queues, so committed rows stay unpublished for the next start to publish.
        if self.cfg.in_process_broker().is_none() {
            self.flush().await;
        }
        self.disconnect().await;
        tracing::info!(schema = %self.schema, "outbox relay stopped");
        Ok(())
    }

    /// Claims, publishes and marks one batch; returns how many events were published.
    pub async fn run_once(&mut self) -> anyhow::Result<usize> {
        match self.claim_and_publish().await? {
            Some(batch) => batch.mark().await,
            None => Ok(0),
        }
    }

    /// Publishes one batch and rolls the claim back as if the relay died before marking it.
    #[doc(hidden)]
    pub async fn publish_without_marking_for_test(&mut self) -> anyhow::Result<usize> {
        match self.claim_and_publish().await? {
            Some(batch) => {
                let n = batch.published.len();
                rollback(batch.tx).await;
                Ok(n)
            }
            None => Ok(0),
        }
    }

    /// Claims a batch in a transaction and publishes it; the caller marks it (or not).
    async fn claim_and_publish(&mut self) -> anyhow::Result<Option<PublishedBatch>> {
        let publisher = self.publisher().await?;
        let tx = self
            .db
            .conn()
            .begin()
            .await
            .context("beginning outbox transaction")?;
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "SELECT id, tenant_id, event_type, payload::text AS body, \
                     payload->>'traceparent' AS traceparent, payload->>'source' AS source, \
                     created_at FROM {}.outbox_claim($1)",
                    quote_ident(&self.schema)
                ),
                [(self.batch_size as i32).into()],
            ))
            .await
            .context("claiming outbox rows")?;
        if rows.is_empty() {
            tx.commit().await.context("ending empty claim")?;
            return Ok(None);
        }
        let claimed = rows
            .iter()
            .map(Claimed::from_row)
            .collect::<Result<Vec<_>, _>>()
            .context("reading claimed outbox rows")?;

        match self.publish(&publisher, &claimed).await {
            Ok(published) => Ok(Some(PublishedBatch {
                tx,
                schema: self.schema.clone(),
                claimed: claimed.len(),
                lags: claimed
                    .iter()
                    .filter(|r| published.contains(&r.id))
                    .map(|r| r.created_at)
                    .collect(),
                published,
            })),
            Err(error) => {
                // The claim ends with the transaction, so the rows stay unpublished and
                // go out with a later batch; the broker link is suspect, start afresh.
                rollback(tx).await;
                self.link = None;
                self.record_failure(&claimed).await;
                Err(error)
            }
        }
    }

    /// Publishes every row; returns the ids the broker accepted.
    async fn publish(
        &self,
        publisher: &Publisher,
        claimed: &[Claimed],
    ) -> anyhow::Result<Vec<Uuid>> {
        let mut outgoing = Vec::with_capacity(claimed.len());
        for row in claimed {
            let Ok(routing_key) = ShortString::try_new(row.event_type.as_str()) else {
                // Left unpublished for an operator to look at; it must not block the rest.
                tracing::error!(
                    schema = %self.schema,
                    event_id = %row.id,
                    event_type = %row.event_type,
                    "outbox row cannot be published"
                );
                continue;
            };
            let body = row.body.as_bytes().to_vec();
            outgoing.push(Outgoing {
                row,
                routing_key,
                body,
            });
        }

        let delivered = match publisher {
            Publisher::Amqp(channel) => self.publish_amqp(channel, outgoing).await?,
            Publisher::InProcess(broker) => {
                let exchange = self.cfg.exchange();
                outgoing
                    .into_iter()
                    .map(|out| {
                        let message = inprocess::Message::new(
                            out.routing_key.as_str(),
                            out.body,
                            traceparent(out.row).map(str::to_owned),
                        );
                        (out.row, broker.publish(&exchange, &message) > 0)
                    })
                    .collect()
            }
        };

        let mut published = Vec::with_capacity(delivered.len());
        for (row, routed) in delivered {
            if !routed {
                // Nothing is bound for this type yet; later consumers start from their
                // own queue, so holding the row back would only stall the outbox.
                tracing::debug!(
                    schema = %self.schema,
                    event_id = %row.id,
                    event_type = %row.event_type,
                    "event published but no queue is bound for it"
                );
                metrics::counter!("crm_outbox_unroutable_total", "schema" => self.schema.clone())
                    .increment(1);
            }
            published.push(row.id);
        }
        Ok(published)
    }

    /// Publishes with publisher confirms; returns each row the broker accepted and whether a
    /// queue was bound for it.
    async fn publish_amqp<'a>(
        &self,
        channel: &Channel,
        outgoing: Vec<Outgoing<'a>>,
    ) -> anyhow::Result<Vec<(&'a Claimed, bool)>> {
        let exchange = amqp::short(&self.cfg.exchange())?;
        let mut pending = Vec::with_capacity(outgoing.len());
        for out in outgoing {
            let properties = message_properties(out.row, &out.routing_key);
            let confirm = channel
                .basic_publish(
                    exchange.clone(),
                    out.routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &out.body,
                    properties,
                )
                .await
                .with_context(|| format!("publishing event {}", out.row.id))?;
            pending.push((out.row, confirm));
        }

        let confirmations = tokio::time::timeout(
            CONFIRM_TIMEOUT,
            join_all(
                pending
                    .into_iter()
                    .map(|(row, confirm)| confirm.map(move |c| (row, c))),
            ),
        )
        .await
        .context("timed out waiting for publisher confirms")?;

        let mut accepted = Vec::with_capacity(confirmations.len());
        for (row, confirmation) in confirmations {
            match confirmation.with_context(|| format!("confirming event {}", row.id))? {
                Confirmation::Ack(None) => accepted.push((row, true)),
                Confirmation::Ack(Some(_returned)) => accepted.push((row, false)),
                Confirmation::Nack(_) => anyhow::bail!("broker refused event {}", row.id),
                Confirmation::NotRequested => {
                    anyhow::bail!("publisher confirms are not enabled on the relay channel")
                }
            }
        }
        Ok(accepted)
    }

    /// The in-process broker, or the confirm-mode channel to RabbitMQ.
    async fn publisher(&mut self) -> anyhow::Result<Publisher> {
        match self.cfg.in_process_broker() {
            Some(broker) => Ok(Publisher::InProcess(broker.clone())),
            None => self.channel().await.map(Publisher::Amqp),
        }
    }

    /// The confirm-mode channel, reconnecting when the previous one is gone.
    async fn channel(&mut self) -> anyhow::Result<Channel> {
        if let Some(link) = &self.link {
            if link.connection.status().connected() && link.channel.status().connected() {
                return Ok(link.channel.clone());
            }
            tracing::info!(schema = %self.schema, "relay broker connection lost; reconnecting");
        }
        self.link = None;
        let connection = amqp::connect(&self.cfg, &format!("relay-{}", self.schema)).await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening relay channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        amqp::declare_events_exchange(&channel, &self.cfg).await?;
        tracing::info!(schema = %self.schema, "relay connected to broker");
        self.link = Some(Link {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    async fn listen(&self) -> Option<PgListener> {
        let channel = notify_channel(&self.schema);
        let result = async {
            let mut listener = PgListener::connect_with(self.db.pg_pool()).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match result {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(schema = %self.schema, %error, "cannot listen for outbox notifications; polling");
                None
            }
        }
    }

    async fn flush(&mut self) {
        let deadline = Instant::now() + FLUSH_BUDGET;
        while Instant::now() < deadline {
            match tokio::time::timeout_at(deadline.into(), self.run_once()).await {
                Ok(Ok(n)) if n == self.batch_size as usize => continue,
                Ok(Ok(_)) => return,
                Ok(Err(error)) => {
                    tracing::warn!(schema = %self.schema, error = format!("{error:#}"), "outbox flush failed");
                    return;
                }
                Err(_) => break,
            }
        }
        tracing::warn!(schema = %self.schema, "outbox flush ran out of time; the next relay publishes the rest");
    }

    async fn disconnect(&mut self) {
        if let Some(link) = self.link.take()
            && let Err(error) = link.connection.close(200, "relay stopped".into()).await
        {
            tracing::debug!(%error, "closing relay connection");
        }
    }

    /// Counts a failed attempt on each row, in its own transaction since the claim was rolled back.
    async fn record_failure(&self, claimed: &[Claimed]) {
        let ids: Vec<Uuid> = claimed.iter().map(|r| r.id).collect();
        let result = self
            .db
            .conn()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "SELECT {}.outbox_record_failure($1)",
                    quote_ident(&self.schema)
                ),
                [ids.into()],
            ))
            .await;
        if let Err(error) = result {
            tracing::warn!(schema = %self.schema, %error, "cannot record outbox publish failure");
        }
    }
}

/// Waits for an outbox notification, the poll interval, or cancellation.
async fn wait_for_work(listener: &mut Option<PgListener>, cancel: &CancellationToken) {
    let poll = tokio::time::sleep(POLL_INTERVAL);
    match listener {
        Some(l) => {
            tokio::select! {
                received = l.recv() => match received {
                    // One batch serves every notification already queued.
                    Ok(_) => while let Some(Ok(Some(_))) = l.try_recv().now_or_never() {},
                    Err(error) => {
                        tracing::warn!(%error, "outbox listener failed; polling");
                        *listener = None;
                    }
                },
                _ = poll => {}
                _ = cancel.cancelled() => {}
            }
        }
        None => {
            tokio::select! {
                _ = poll => {}
                _ = cancel.cancelled() => {}
            }
        }
    }
}

fn traceparent(row: &Claimed) -> Option<&str> {
    row.traceparent.as_deref()
}

fn message_properties(row: &Claimed, routing_key: &ShortString) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "tenantid".into(),
        amqp::long_string(&row.tenant_id.to_string()),
    );
    if let Some(traceparent) = traceparent(row) {
        headers.insert("traceparent".into(), amqp::long_string(traceparent));
    }
    let mut properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_message_id(row.id.to_string().into())
        .with_type(routing_key.clone())
        .with_headers(headers);
    if let Some(source) = row.source.as_deref()
        && let Ok(app_id) = ShortString::try_new(source)
    {
        properties = properties.with_app_id(app_id);
    }
    if let Ok(ts) = u64::try_from(row.created_at.timestamp()) {
        properties = properties.with_timestamp(ts);
    }
    properties
}

/// A published batch whose rows are still claimed by its open transaction.
struct PublishedBatch {
    tx: DatabaseTransaction,
    schema: String,
    claimed: usize,
    published: Vec<Uuid>,
    lags: Vec<DateTime<Utc>>,
}

impl PublishedBatch {
    /// Marks the rows published and commits; returns how many were published.
    async fn mark(self) -> anyhow::Result<usize> {
        mark_published(&self.tx, &self.schema, &self.published).await?;
        self.tx
            .commit()
            .await
            .context("committing published outbox rows")?;
        let now = Utc::now();
        for created in &self.lags {
            let lag = (now - *created).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("crm_outbox_lag_seconds", "schema" => self.schema.clone())
                .record(lag);
        }
        metrics::counter!("crm_outbox_published_total", "schema" => self.schema.clone())
            .increment(self.published.len() as u64);
        tracing::debug!(schema = %self.schema, count = self.published.len(), "outbox batch published");
        Ok(self.published.len())
    }

    /// Whether the claim came back full (more rows are probably waiting).
    fn was_full(&self, batch_size: u32) -> bool {
        self.claimed >= batch_size as usize
    }
}

/// Waits for the previous batch's mark; its failure only means its rows go out again later.
async fn settle(
    pending: &mut Option<tokio::task::JoinHandle<anyhow::Result<usize>>>,
    schema: &str,
) {
    if let Some(handle) = pending.take() {
        match handle.await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(
                schema = %schema,
                error = format!("{error:#}"),
                "marking a published batch failed; its events will be published again"
            ),
            Err(error) => tracing::warn!(schema = %schema, %error, "marking task failed"),
        }
    }
}

async fn mark_published(
    tx: &DatabaseTransaction,
    schema: &str,
    ids: &[Uuid],
) -> anyhow::Result<()> {
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("SELECT {}.outbox_mark_published($1)", quote_ident(schema)),
        [ids.to_vec().into()],
    ))
    .await
    .context("marking outbox rows published")?;
    Ok(())
}

async fn rollback(tx: DatabaseTransaction) {
    if let Err(error) = tx.rollback().await {
        tracing::warn!(%error, "rolling back outbox claim");
    }
}
