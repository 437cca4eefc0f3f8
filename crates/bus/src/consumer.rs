//! The consumer runner: a service's durable queue, retry tiers and dead letters,
//! with each event handled once per service inside a tenant transaction, on RabbitMQ
//! or on the in-process broker.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use anyhow::Context as _;
use async_trait::async_trait;
use crm_kit::db::{Db, TenantTx};
use futures::{FutureExt as _, StreamExt as _};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ExchangeKind,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument as _;

use crate::{
    BusConfig, BusError, Event, InProcessBroker,
    amqp::{self, Backoff},
    inprocess,
    outbox::quote_ident,
    trace,
};

/// The header that counts how many retry tiers a message has been through.
pub const ATTEMPTS_HEADER: &str = "x-crm-attempts";

/// Reacts to events inside the tenant transaction that also records them as processed.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Applies `event`; its effects commit only together with the processed marker.
    async fn handle(&self, tx: &TenantTx, event: &Event) -> Result<(), HandlerError>;
}

/// Why a handler failed, which decides what happens to the message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying later (a dependency is down, a lock timed out): goes through the retry tiers.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Retrying cannot help (the event makes no sense to this service): straight to dead letters.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl From<DbErr> for HandlerError {
    fn from(e: DbErr) -> Self {
        Self::Transient(e.into())
    }
}

impl From<BusError> for HandlerError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::TenantMismatch { .. } | BusError::InvalidEvent(_) => {
                Self::Permanent(e.into())
            }
            _ => Self::Transient(e.into()),
        }
    }
}

/// Tuning of a consumer.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Unacknowledged messages RabbitMQ may push ahead of handling (the in-process broker
    /// hands them over as handler slots free up).
    pub prefetch: u16,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Redeliveries (crashes, lost connections) before the broker dead-letters a message.
    pub delivery_limit: u32,
    /// Delay of each retry tier; a message that fails every tier is dead-lettered.
    pub retry_delays: Vec<Duration>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            prefetch: 32,
            concurrency: 8,
            delivery_limit: 10,
            retry_delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
        }
    }
}

/// Names of one service's queues.
#[derive(Clone, Debug)]
struct Topology {
    queue: String,
    dead_letter_exchange: String,
    dead_letter_queue: String,
    retry_queues: Vec<String>,
}

impl Topology {
    fn new(cfg: &BusConfig, service: &str, tiers: usize) -> Self {
        let queue = format!("{}{service}", cfg.prefix);
        Self {
            dead_letter_exchange: cfg.dead_letter_exchange(),
            dead_letter_queue: format!("{queue}.dlq"),
            retry_queues: (1..=tiers).map(|n| format!("{queue}.retry.{n}")).collect(),
            queue,
        }
    }

    /// Every queue of the topology.
    fn queues(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.queue)
            .chain(std::iter::once(&self.dead_letter_queue))
            .chain(&self.retry_queues)
    }
}

/// Deletes what consumers of `services` declared under `cfg`'s prefix (each queue, its
/// dead-letter and retry queues) and the prefix's exchanges: what a test or benchmark with
/// a prefix of its own leaves on the broker, which keeps every quorum queue until deleted.
/// Best effort, and bounded in time: a broker that is down or stalled is left as it is.
pub async fn delete_topology(cfg: &BusConfig, services: &[&str]) {
    let tiers = ConsumerOptions::default().retry_delays.len();
    let work = async {
        let conn = crate::amqp::connect(cfg, "cleanup").await?;
        let ch = conn.create_channel().await?;
        for service in services {
            for queue in Topology::new(cfg, service, tiers).queues() {
                ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        for exchange in [cfg.exchange(), cfg.dead_letter_exchange()] {
            ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = conn.close(200, "cleanup".into()).await;
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(60), work).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = format!("{error:#}"), "bus cleanup incomplete"),
        Err(_) => tracing::warn!("bus cleanup timed out"),
    }
}

/// Consumes one service's queue until cancelled, surviving broker restarts.
pub struct Consumer {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    schema: String,
    cfg: BusConfig,
    service: String,
    bindings: Vec<String>,
    handler: Arc<dyn Handler>,
    opts: ConsumerOptions,
    topology: Topology,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("service", &self.inner.service)
            .field("queue", &self.inner.topology.queue)
            .field("bindings", &self.inner.bindings)
            .field("opts", &self.inner.opts)
            .finish()
    }
}

/// What became of a delivery that parsed.
enum Outcome {
    Handled,
    Duplicate,
}

impl Consumer {
    /// A consumer of `service`'s queue bound to `bindings` (topic patterns such as `user.*`),
    /// recording processed events in `schema`.processed_events.
    pub fn new(
        db: Db,
        schema: &str,
        cfg: BusConfig,
        service: &str,
        bindings: Vec<String>,
        handler: Arc<dyn Handler>,
        opts: ConsumerOptions,
    ) -> Self {
        let topology = Topology::new(&cfg, service, opts.retry_delays.len());
        Self {
            inner: Arc::new(Inner {
                db,
                schema: schema.to_owned(),
                cfg,
                service: service.to_owned(),
                bindings,
                handler,
                opts,
                topology,
            }),
        }
    }

    /// The name of the service's main queue.
    pub fn queue(&self) -> &str {
        &self.inner.topology.queue
    }

    /// The name of the service's dead-letter queue.
    pub fn dead_letter_queue(&self) -> &str {
        &self.inner.topology.dead_letter_queue
    }

    /// Declares the exchanges, queues and bindings once, so events published from now on
    /// are kept for this service even before it starts consuming.
    pub async fn declare(&self) -> anyhow::Result<()> {
        if let Some(broker) = self.inner.cfg.in_process_broker() {
            self.inner.declare_in_process(broker);
            return Ok(());
        }
        let connection = amqp::connect(&self.inner.cfg, &self.connection_name()).await?;
        let channel = connection.create_channel().await?;
        self.inner.declare_topology(&channel).await?;
        connection.close(200, "declared".into()).await?;
        Ok(())
    }

    /// Consumes until `cancel` fires, then lets in-flight handlers finish and returns.
    ///
    /// A lost connection is re-established with backoff; it never ends the loop.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let service = self.inner.service.clone();
        tracing::info!(%service, queue = %self.inner.topology.queue, "consumer started");
        while !cancel.is_cancelled() {
            match self.session(&cancel, &mut backoff).await {
                Ok(()) => break,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        %service,
                        error = format!("{error:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "consumer lost its broker connection; reconnecting"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.cancelled() => {}
                    }
                }
            }
        }
        tracing::info!(%service, "consumer stopped");
        Ok(())
    }

    fn connection_name(&self) -> String {
        format!("consumer-{}", self.inner.service)
    }

    /// One connection's worth of consuming; `Ok` only when cancelled.
    async fn session(
        &self,
        cancel: &CancellationToken,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let mut source = match inner.cfg.in_process_broker() {
            Some(broker) => Source::InProcess {
                queue: inner.declare_in_process(broker),
                broker: broker.clone(),
            },
            None => Source::Amqp(Box::new(
                AmqpSession::open(inner, &self.connection_name()).await?,
            )),
        };
        backoff.reset();
        tracing::info!(service = %inner.service, queue = %inner.topology.queue, "consumer connected");

        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(inner.opts.concurrency.max(1)));
        let ended: anyhow::Result<()> = loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => break Ok(()),
                next = source.next() => next,
            };
            let delivery = match next {
                Ok(delivery) => delivery,
                Err(error) => break Err(error),
            };
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit,
                // Unsettled, the delivery returns to the queue (for AMQP, when the channel closes).
                _ = cancel.cancelled() => break Ok(()),
            };
            let Ok(permit) = permit else {
                break Err(anyhow::anyhow!("handler slots closed"));
            };
            let inner = Arc::clone(inner);
            tracker.spawn(async move {
                inner.on_delivery(delivery).await;
                drop(permit);
            });
        };

        if ended.is_ok() {
            source.stop_consuming().await;
        }
        tracker.close();
        tracker.wait().await;
        source.close().await;
        ended
    }
}

/// Where a session takes its deliveries from: the transport-specific half of consuming.
enum Source {
    Amqp(Box<AmqpSession>),
    InProcess {
        broker: InProcessBroker,
        queue: Arc<inprocess::Queue>,
    },
}

struct AmqpSession {
    connection: Connection,
    channel: Channel,
    /// Retries are published on their own channel: confirms and consuming do not mix well.
    retry_channel: Channel,
    tag: ShortString,
    deliveries: lapin::Consumer,
}

impl AmqpSession {
    async fn open(inner: &Inner, connection_name: &str) -> anyhow::Result<Self> {
        let connection = amqp::connect(&inner.cfg, connection_name).await?;
        let channel = connection
            .create_channel()
            .await
            .context("opening consumer channel")?;
        inner.declare_topology(&channel).await?;
        channel
            .basic_qos(inner.opts.prefetch, BasicQosOptions::default())
            .await
            .context("setting prefetch")?;
        let retry_channel = connection
            .create_channel()
            .await
            .context("opening retry channel")?;
        retry_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        let tag = amqp::short(&format!(
            "{}-{}",
            inner.topology.queue,
            uuid::Uuid::new_v4().simple()
        ))?;
        let deliveries = channel
            .basic_consume(
                amqp::short(&inner.topology.queue)?,
                tag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting to consume")?;
        Ok(Self {
            connection,
            channel,
            retry_channel,
            tag,
            deliveries,
        })
    }
}

impl Source {
    /// The next delivery; an error means the connection is lost. Cancel-safe.
    async fn next(&mut self) -> anyhow::Result<Delivery> {
        match self {
            Source::Amqp(session) => match session.deliveries.next().await {
                Some(Ok(delivery)) => Ok(Delivery::Amqp {
                    delivery: Box::new(delivery),
                    retry_channel: session.retry_channel.clone(),
                }),
                Some(Err(error)) => Err(anyhow::Error::new(error).context("consuming")),
                None => Err(anyhow::anyhow!("the broker cancelled the consumer")),
            },
            Source::InProcess { broker, queue } => broker
                .receive(queue)
                .await
                .map(Delivery::InProcess)
                .ok_or_else(|| anyhow::anyhow!("the in-process queue closed")),
        }
    }

    /// Asks for no more deliveries.
    async fn stop_consuming(&self) {
        if let Source::Amqp(session) = self
            && let Err(error) = session
                .channel
                .basic_cancel(session.tag.clone(), BasicCancelOptions::default())
                .await
        {
            tracing::debug!(%error, "cancelling consumer");
        }
    }

    async fn close(self) {
        if let Source::Amqp(session) = self
            && session.connection.status().connected()
            && let Err(error) = session
                .connection
                .close(200, "consumer stopped".into())
                .await
        {
            tracing::debug!(%error, "closing consumer connection");
        }
    }
}

/// A message taken from the service's queue, settled the way its transport settles messages.
enum Delivery {
    Amqp {
        delivery: Box<lapin::message::Delivery>,
        retry_channel: Channel,
    },
    InProcess(inprocess::Delivery),
}

impl Delivery {
    fn body(&self) -> &[u8] {
        match self {
            Delivery::Amqp { delivery, .. } => &delivery.data,
            Delivery::InProcess(d) => &d.message().body,
        }
    }

    fn routing_key(&self) -> &str {
        match self {
            Delivery::Amqp { delivery, .. } => delivery.routing_key.as_str(),
            Delivery::InProcess(d) => &d.message().routing_key,
        }
    }

    /// How many retry tiers the message has been through.
    fn attempts(&self) -> usize {
        match self {
            Delivery::Amqp { delivery, .. } => {
                amqp::header_int(delivery.properties.headers().as_ref(), ATTEMPTS_HEADER)
                    .unwrap_or(0)
                    .max(0) as usize
            }
            Delivery::InProcess(d) => d.message().attempts,
        }
    }

    fn traceparent(&self) -> Option<String> {
        match self {
            Delivery::Amqp { delivery, .. } => {
                amqp::header_str(delivery.properties.headers().as_ref(), "traceparent")
            }
            Delivery::InProcess(d) => d.message().traceparent.clone(),
        }
    }

    async fn ack(self) {
        match self {
            Delivery::Amqp { delivery, .. } => amqp_ack(&delivery).await,
            Delivery::InProcess(d) => d.ack(),
        }
    }

    /// Sends the message to retry tier `attempts` (AMQP queue `queue`, or a `delay` timer
    /// in-process); false when that failed and the message went back to its queue instead.
    async fn retry(self, queue: &str, delay: Duration, attempts: usize) -> bool {
        match self {
            Delivery::Amqp {
                delivery,
                retry_channel,
            } => amqp_retry(&retry_channel, &delivery, queue, attempts).await,
            Delivery::InProcess(d) => {
                d.retry(delay);
                true
            }
        }
    }

    /// Moves the message to the dead letters; false when the broker did not take it.
    async fn dead_letter(self, reason: &'static str) -> bool {
        match self {
            Delivery::Amqp { delivery, .. } => {
                match delivery.reject(BasicRejectOptions { requeue: false }).await {
                    Ok(_) => true,
                    // The broker redelivers it once the channel is back.
                    Err(error) => {
                        tracing::warn!(%error, "cannot dead-letter event");
                        false
                    }
                }
            }
            Delivery::InProcess(d) => {
                d.dead_letter(reason);
                true
            }
        }
    }
}

impl Inner {
    /// Declares the service's queue and bindings on the in-process broker.
    fn declare_in_process(&self, broker: &InProcessBroker) -> Arc<inprocess::Queue> {
        broker.declare_queue(
            &self.cfg.exchange(),
            &self.topology.queue,
            &self.topology.dead_letter_queue,
            self.opts.delivery_limit,
            &self.bindings,
        )
    }

    /// Declares everything this consumer relies on; safe to repeat on every connect.
    async fn declare_topology(&self, channel: &Channel) -> anyhow::Result<()> {
        let t = &self.topology;
        amqp::declare_events_exchange(channel, &self.cfg).await?;
        channel
            .exchange_declare(
                amqp::short(&t.dead_letter_exchange)?,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring exchange {}", t.dead_letter_exchange))?;

        let mut args = quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.opts.delivery_limit).unwrap_or(i32::MAX)),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            amqp::long_string(&t.dead_letter_exchange),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            amqp::long_string(&t.dead_letter_queue),
        );
        // At-least-once dead-lettering keeps a rejected message until the dead-letter
        // queue has confirmed it; it requires reject-publish overflow.
        args.insert(
            "x-dead-letter-strategy".into(),
            amqp::long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), amqp::long_string("reject-publish"));
        declare_queue(channel, &t.queue, args).await?;
        for pattern in &self.bindings {
            channel
                .queue_bind(
                    amqp::short(&t.queue)?,
                    amqp::short(&self.cfg.exchange())?,
                    amqp::short(pattern)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding {} to {pattern}", t.queue))?;
        }

        declare_queue(channel, &t.dead_letter_queue, quorum_args()).await?;
        channel
            .queue_bind(
                amqp::short(&t.dead_letter_queue)?,
                amqp::short(&t.dead_letter_exchange)?,
                amqp::short(&t.dead_letter_queue)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding {}", t.dead_letter_queue))?;

        for (name, delay) in t.retry_queues.iter().zip(&self.opts.retry_delays) {
            let mut args = quorum_args();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            // Expired messages go back to the main queue through the default exchange.
            args.insert("x-dead-letter-exchange".into(), amqp::long_string(""));
            args.insert(
                "x-dead-letter-routing-key".into(),
                amqp::long_string(&t.queue),
            );
            args.insert(
                "x-dead-letter-strategy".into(),
                amqp::long_string("at-least-once"),
            );
            args.insert("x-overflow".into(), amqp::long_string("reject-publish"));
            declare_queue(channel, name, args).await?;
        }
        Ok(())
    }

    async fn on_delivery(&self, delivery: Delivery) {
        let attempts = delivery.attempts();
        let header_traceparent = delivery.traceparent();

        let event: Event = match serde_json::from_slice(delivery.body()) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(
                    service = %self.service,
                    routing_key = %delivery.routing_key(),
                    %error,
                    "unparseable event; dead-lettering"
                );
                self.dead_letter(delivery, "unparseable").await;
                return;
            }
        };

        let span = tracing::info_span!(
            "handle_event",
            otel.kind = "consumer",
            service = %self.service,
            event_id = %event.id,
            event_type = %event.event_type,
            tenant_id = %event.tenantid,
            attempt = attempts,
        );
        let traceparent = header_traceparent.or_else(|| event.traceparent.clone());
        trace::set_remote_parent(&span, traceparent.as_deref());

        async {
            match self.process(&event).await {
                Ok(outcome) => {
                    let outcome = match outcome {
                        Outcome::Handled => "handled",
                        Outcome::Duplicate => {
                            tracing::debug!("event already processed");
                            "duplicate"
                        }
                    };
                    metrics::counter!(
                        "crm_consumer_handled_total",
                        "service" => self.service.clone(),
                        "outcome" => outcome
                    )
                    .increment(1);
                    delivery.ack().await;
                }
                Err(HandlerError::Permanent(error)) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "event handling failed permanently; dead-lettering"
                    );
                    self.dead_letter(delivery, "permanent").await;
                }
                Err(HandlerError::Transient(error)) => {
                    if attempts < self.topology.retry_queues.len() {
                        tracing::info!(
                            error = format!("{error:#}"),
                            "event handling failed; retrying later"
                        );
                        self.retry(delivery, attempts).await;
                    } else {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "event handling failed on every retry; dead-lettering"
                        );
                        self.dead_letter(delivery, "exhausted").await;
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Runs the handler once per event: the processed marker and the effects commit together.
    async fn process(&self, event: &Event) -> Result<Outcome, HandlerError> {
        let tx = self.db.tenant_tx(event.tenantid).await?;
        let inserted = tx
            .conn()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "INSERT INTO {}.processed_events (consumer, event_id, tenant_id) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    quote_ident(&self.schema)
                ),
                [
                    self.service.clone().into(),
                    event.id.into(),
                    event.tenantid.uuid().into(),
                ],
            ))
            .await?
            .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Outcome::Duplicate);
        }
        let result = AssertUnwindSafe(self.handler.handle(&tx, event))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::Transient(anyhow::anyhow!("handler panicked"))));
        match result {
            Ok(()) => {
                tx.commit().await?;
                Ok(Outcome::Handled)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rolling back failed handler");
                }
                Err(error)
            }
        }
    }

    /// Sends the message through retry tier `attempts`.
    async fn retry(&self, delivery: Delivery, attempts: usize) {
        let queue = &self.topology.retry_queues[attempts];
        let delay = self.opts.retry_delays[attempts];
        if delivery.retry(queue, delay, attempts).await {
            metrics::counter!("crm_consumer_retries_total", "service" => self.service.clone())
                .increment(1);
        }
    }

    async fn dead_letter(&self, delivery: Delivery, reason: &'static str) {
        if delivery.dead_letter(reason).await {
            metrics::counter!(
                "crm_consumer_dead_lettered_total",
                "service" => self.service.clone(),
                "reason" => reason
            )
            .increment(1);
        }
    }
}

async fn amqp_ack(delivery: &lapin::message::Delivery) {
    // A lost ack means a redelivery, which the processed marker turns into a no-op.
    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
        tracing::warn!(%error, "cannot acknowledge event");
    }
}

/// Publishes a copy to the retry queue and acknowledges the original once the copy is safe;
/// false when the copy failed and the original was requeued.
async fn amqp_retry(
    retry_channel: &Channel,
    delivery: &lapin::message::Delivery,
    queue: &str,
    attempts: usize,
) -> bool {
    // The copy is a new message to the broker; its delivery count starts afresh.
    let mut headers: FieldTable = delivery
        .properties
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter(|(k, _)| k.as_str() != "x-delivery-count")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into()
        })
        .unwrap_or_default();
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongInt(i32::try_from(attempts + 1).unwrap_or(i32::MAX)),
    );
    let properties: BasicProperties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2);
    let published = async {
        let confirm = retry_channel
            .basic_publish(
                "".into(),
                amqp::short(queue)?,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => anyhow::bail!("retry queue {queue} does not exist"),
            Confirmation::Nack(_) => anyhow::bail!("broker refused the retry copy"),
            Confirmation::NotRequested => anyhow::bail!("retry channel is not in confirm mode"),
        }
    }
    .await;
    match published {
        Ok(()) => {
            amqp_ack(delivery).await;
            true
        }
        Err(error) => {
            // Requeueing counts against the delivery limit, so this cannot loop forever.
            tracing::warn!(error = format!("{error:#}"), retry_queue = %queue, "cannot schedule retry; requeueing");
            if let Err(error) = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
            {
                tracing::warn!(%error, "cannot requeue event");
            }
            false
        }
    }
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), amqp::long_string("quorum"));
    args
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> anyhow::Result<()> {
    channel
        .queue_declare(amqp::short(name)?, QueueDeclareOptions::durable(), args)
        .await
        .with_context(|| format!("declaring queue {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix_and_service() {
        let cfg = BusConfig::new("amqp://localhost", "t1.");
        let t = Topology::new(&cfg, "search", 3);
        assert_eq!(t.queue, "t1.search");
        assert_eq!(t.dead_letter_exchange, "t1.crm.dlx");
        assert_eq!(t.dead_letter_queue, "t1.search.dlq");
        assert_eq!(
            t.retry_queues,
            [
                "t1.search.retry.1",
                "t1.search.retry.2",
                "t1.search.retry.3"
            ]
        );
    }

    #[test]
    fn bus_errors_map_to_retry_decisions() {
        let mismatch = BusError::TenantMismatch {
            event: crm_kit::ids::TenantId::new(),
            tx: crm_kit::ids::TenantId::new(),
        };
        assert!(matches!(
            HandlerError::from(mismatch),
            HandlerError::Permanent(_)
        ));
        assert!(matches!(
            HandlerError::from(DbErr::Custom("down".into())),
            HandlerError::Transient(_)
        ));
    }
}
