//! SSRF defence: endpoint URLs are checked when saved, and every address a host resolves to
//! is checked when a delivery is made; connections go only to checked addresses.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, LazyLock},
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// Ranges never delivered to unless an allow-list names them: this host, private networks,
/// link-local (cloud metadata), CGNAT, multicast, documentation, IPv4-mapped and other
/// special-purpose IPv6 ranges.
static REFUSED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "::/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
});

/// Decides which addresses deliveries may reach.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Arc<Vec<IpNet>>,
}

impl AddressPolicy {
    /// A policy whose allow-list opens exceptions to the refused ranges.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }

    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        !REFUSED.iter().any(|n| n.contains(&ip))
    }

    /// Checks an endpoint URL as saved: https (http only when allowed), a host, no
    /// credentials, and an address literal only if it is permitted.
    pub fn check_url(&self, raw: &str, allow_http: bool) -> Result<Url, String> {
        if raw.len() > 2048 {
            return Err("must be at most 2048 characters".into());
        }
        let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err("must use https".into()),
            other => return Err(format!("must use https, not {other}")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain credentials".into());
        }
        match url.host() {
            None => return Err("must name a host".into()),
            Some(url::Host::Ipv4(ip)) if !self.permits(ip.into()) => {
                return Err("must not point to a private or reserved address".into());
            }
            Some(url::Host::Ipv6(ip)) if !self.permits(ip.into()) => {
                return Err("must not point to a private or reserved address".into());
            }
            _ => {}
        }
        Ok(url)
    }
}

/// The resolver of the delivery client: resolves, refuses the whole name if any address is
/// not permitted (a name that also points inside is not trusted), and hands the connector
/// only the checked addresses.
#[derive(Clone, Debug)]
pub struct CheckedResolver {
    pub policy: AddressPolicy,
}

/// A host that resolves to an address deliveries may not reach.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to a refused address")]
pub struct RefusedAddress(pub String);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !policy.permits(a.ip())) {
                return Err(
                    Box::new(RefusedAddress(host)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_special_ranges_unless_allowed() {
        let p = AddressPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(p.permits(ip.parse().unwrap()), "{ip} must be permitted");
        }
        let open = AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(open.permits("127.0.0.1".parse().unwrap()));
        assert!(!open.permits("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn checks_urls() {
        let p = AddressPolicy::default();
        assert!(p.check_url("https://example.com/hook", false).is_ok());
        assert!(p.check_url("http://example.com/hook", false).is_err());
        assert!(p.check_url("http://example.com/hook", true).is_ok());
        assert!(p.check_url("ftp://example.com", true).is_err());
        assert!(p.check_url("not a url", true).is_err());
        assert!(p.check_url("https://user:pw@example.com", false).is_err());
        assert!(
            p.check_url("https://169.254.169.254/latest/meta-data", false)
                .is_err()
        );
        assert!(p.check_url("https://[::1]/", false).is_err());
    }
}
