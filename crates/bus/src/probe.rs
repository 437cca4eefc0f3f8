//! A queue bound to the events exchange, for looking at what is published: tests use it, and so
//! can an operator's tool. Each probe has its own queue and connection.

use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use uuid::Uuid;

use crate::BusConfig;

/// A durable queue bound to the events exchange with one routing pattern.
pub struct Probe {
    _conn: Connection,
    channel: Channel,
    queue: String,
}

impl Probe {
    /// Declares the exchange (if missing) and a fresh queue `{prefix}probe.<id>` bound with
    /// `pattern`. The queue outlives the probe: delete it by [`Probe::queue`] when done.
    pub async fn bind(cfg: &BusConfig, pattern: &str) -> anyhow::Result<Self> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{}probe", cfg.prefix).into());
        let conn = Connection::connect(&cfg.amqp_url, props)
            .await
            .context("connecting the probe to RabbitMQ")?;
        let channel = conn.create_channel().await.context("probe channel")?;
        channel
            .exchange_declare(
                cfg.exchange().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("declaring the events exchange")?;
        let queue = format!("{}probe.{}", cfg.prefix, Uuid::new_v4().simple());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .context("declaring the probe queue")?;
        channel
            .queue_bind(
                queue.as_str().into(),
                cfg.exchange().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("binding the probe queue")?;
        Ok(Self {
            _conn: conn,
            channel,
            queue,
        })
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next message, waiting up to `within`; None when nothing came.
    pub async fn next(&self, within: Duration) -> anyhow::Result<Option<Delivery>> {
        let deadline = Instant::now() + within;
        loop {
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .context("basic.get on the probe queue")?;
            if let Some(message) = got {
                return Ok(Some(message.delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
