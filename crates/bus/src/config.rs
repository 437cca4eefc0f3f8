use std::fmt;

/// Where the bus lives and how this deployment names its exchanges and queues.
#[derive(Clone)]
pub struct BusConfig {
    /// `amqp://user:password@host:port/vhost`.
    pub amqp_url: String,
    /// Prepended to every exchange and queue name, so tests and parallel
    /// environments sharing one broker never see each other.
    pub prefix: String,
}

impl BusConfig {
    /// A configuration for `amqp_url` with names prefixed by `prefix`.
    pub fn new(amqp_url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            amqp_url: amqp_url.into(),
            prefix: prefix.into(),
        }
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
        f.debug_struct("BusConfig")
            .field("amqp_url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .finish()
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
}
