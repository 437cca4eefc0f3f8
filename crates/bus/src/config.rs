use std::fmt;

use crate::InProcessBroker;

/// Where the bus lives and how this deployment names its exchanges and queues.
///
/// The bus is RabbitMQ at `amqp_url` ([`BusConfig::new`]) or a broker inside this process
/// ([`BusConfig::in_process`]); relays and consumers behave the same on either.
#[derive(Clone)]
pub struct BusConfig {
    /// `amqp://user:password@host:port/vhost`; empty and unused when the bus is in-process.
    pub amqp_url: String,
    /// Prepended to every exchange and queue name, so tests and parallel
    /// environments sharing one broker never see each other.
    pub prefix: String,
    in_process: Option<InProcessBroker>,
}

impl BusConfig {
    /// A configuration for the RabbitMQ at `amqp_url` with names prefixed by `prefix`.
    pub fn new(amqp_url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            prefix: prefix.into(),
            in_process: None,
        }
    }

    /// A bus inside this process: events travel through `broker` instead of RabbitMQ.
    ///
    /// Relays and consumers configured with clones of `broker` share its exchanges and queues.
    pub fn in_process(broker: InProcessBroker, prefix: impl Into<String>) -> Self {
        Self {
            amqp_url: String::new(),
            prefix: prefix.into(),
            in_process: Some(broker),
        }
    }

    /// The in-process broker, when the bus is one; `None` when it is RabbitMQ.
    pub fn in_process_broker(&self) -> Option<&InProcessBroker> {
        self.in_process.as_ref()
    }

    /// The topic exchange every domain event is published to.
    pub fn exchange(&self) -> String {
        format!("{}crm.events", self.prefix)
    }

    /// The direct exchange that routes dead letters to each service's dead-letter queue.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}crm.dlx", self.prefix)
    }

    /// The AMQP URL with its password hidden, for logs.
    pub(crate) fn redacted_url(&self) -> String {
        redact(&self.amqp_url)
    }
}

impl Default for BusConfig {
    /// The local broker of a development machine, no prefix.
    fn default() -> Self {
        Self::new("amqp://guest:guest@127.0.0.1:5672/%2f", "")
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BusConfig");
        match &self.in_process {
            Some(broker) => d.field("in_process", broker),
            None => d.field("amqp_url", &self.redacted_url()),
        };
        d.field("prefix", &self.prefix).finish()
    }
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let cfg = BusConfig::new("amqp://localhost", "t1.");
        assert_eq!(cfg.exchange(), "t1.crm.events");
        assert_eq!(cfg.dead_letter_exchange(), "t1.crm.dlx");
    }

    #[test]
    fn debug_hides_the_password() {
        let cfg = BusConfig::new("amqp://guest:s3cret@host:5672/%2f", "");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqp://guest:***@host:5672/%2f"), "{shown}");
        assert_eq!(redact("amqp://host/%2f"), "amqp://host/%2f");
    }

    #[test]
    fn in_process_bus_needs_no_url() {
        let cfg = BusConfig::in_process(InProcessBroker::new(), "t1.");
        assert!(cfg.in_process_broker().is_some());
        assert!(BusConfig::default().in_process_broker().is_none());
        assert_eq!(cfg.exchange(), "t1.crm.events");
        let shown = format!("{cfg:?}");
        assert!(shown.contains("in_process"), "{shown}");
        assert!(!shown.contains("amqp_url"), "{shown}");
    }
}
