//! Connection and header plumbing shared by the relay and the consumers.

use std::time::Duration;

use anyhow::Context as _;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::ExchangeDeclareOptions,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::BusConfig;

/// How long to wait for the broker to accept a TCP connection and the AMQP handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries before a connection that keeps timing out is an error. A broker that refuses
/// (stopped) fails at once; one that stalls (a busy node, slow disk) gets more time.
const CONNECT_TRIES: u32 = 3;

/// Opens a connection named `{prefix}{role}`, so operators can tell who is connected.
pub(crate) async fn connect(cfg: &BusConfig, role: &str) -> anyhow::Result<Connection> {
    let name = format!("{}{role}", cfg.prefix);
    for attempt in 1..=CONNECT_TRIES {
        let props = ConnectionProperties::default().with_connection_name(name.clone().into());
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&cfg.amqp_url, props)).await
        {
            Ok(connected) => {
                return connected.with_context(|| format!("connecting to {}", cfg.redacted_url()));
            }
            Err(_) if attempt < CONNECT_TRIES => tracing::warn!(
                url = %cfg.redacted_url(),
                attempt,
                "the broker did not answer in {CONNECT_TIMEOUT:?}; trying again"
            ),
            Err(_) => {}
        }
    }
    anyhow::bail!(
        "timed out connecting to {} ({CONNECT_TRIES} tries of {CONNECT_TIMEOUT:?})",
        cfg.redacted_url()
    )
}

/// Declares the durable topic exchange events are published to.
pub(crate) async fn declare_events_exchange(
    channel: &Channel,
    cfg: &BusConfig,
) -> anyhow::Result<()> {
    channel
        .exchange_declare(
            short(&cfg.exchange())?,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {}", cfg.exchange()))
}

/// An AMQP short string (names, routing keys), refusing what would not fit.
pub(crate) fn short(s: &str) -> anyhow::Result<ShortString> {
    ShortString::try_new(s).map_err(|_| anyhow::anyhow!("{s:?} is longer than 255 bytes"))
}

pub(crate) fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A string header, whichever string encoding the publisher chose.
pub(crate) fn header_str(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header, whichever integer width the publisher chose.
pub(crate) fn header_int(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match headers?.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    current: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            current: min,
            min,
            max,
        }
    }

    /// The delay to wait now; the next one doubles, up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 200);
    }

    #[test]
    fn reads_headers_of_any_width() {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::LongInt(3));
        t.insert("b".into(), AMQPValue::LongLongInt(4));
        t.insert("s".into(), long_string("x"));
        assert_eq!(header_int(Some(&t), "a"), Some(3));
        assert_eq!(header_int(Some(&t), "b"), Some(4));
        assert_eq!(header_int(Some(&t), "s"), None);
        assert_eq!(header_str(Some(&t), "s").as_deref(), Some("x"));
        assert_eq!(header_str(None, "s"), None);
    }
}
