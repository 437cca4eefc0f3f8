//! Webhook settings from the environment, validated with messages that name the variable.

use std::{collections::HashMap, time::Duration};

use crm_kit::config::{ConfigError, Environment};
use ipnet::IpNet;

/// What the webhook service adds to the shared configuration.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Delay before each retry; a delivery fails for good after the last one.
    pub retry_schedule: Vec<Duration>,
    /// The least wait after a timeout or a 429.
    pub throttle_min: Duration,
    /// The most a Retry-After header may postpone the next try.
    pub retry_after_max: Duration,
    /// How long one try may take.
    pub request_timeout: Duration,
    /// An endpoint failing for this long without a success is disabled.
    pub disable_after: Duration,
    /// How long deliveries, with their payloads and attempts, are kept.
    pub retention: Duration,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap: Duration,
    /// Address ranges delivered to although they are private or special.
    pub allow_nets: Vec<IpNet>,
    /// Whether `http://` endpoint URLs are accepted (never in production).
    pub allow_http: bool,
    /// Tries in flight at once, across endpoints.
    pub concurrency: usize,
    /// Tries in flight at once for one endpoint.
    pub per_endpoint_concurrency: usize,
    /// How often the worker looks for due deliveries when nothing wakes it.
    pub poll_interval: Duration,
    /// How long a stopping worker lets tries in flight finish before it hands them back.
    pub drain_timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_schedule: [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            throttle_min: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(86_400),
            request_timeout: Duration::from_secs(30),
            disable_after: Duration::from_secs(5 * 86_400),
            retention: Duration::from_secs(90 * 86_400),
            rotation_overlap: Duration::from_secs(86_400),
            allow_nets: Vec::new(),
            allow_http: false,
            concurrency: 64,
            per_endpoint_concurrency: 4,
            poll_interval: Duration::from_millis(1000),
            // Inside the chart's 30-second termination grace period, with time left to record
            // the tries and hand back the rest.
            drain_timeout: Duration::from_secs(20),
        }
    }
}

impl WebhookSettings {
    /// Reads the process environment.
    pub fn from_env(env: Environment) -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_map(&vars, env)
    }

    /// Reads settings from a map (tests pass their own).
    pub fn from_map(vars: &HashMap<String, String>, env: Environment) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let d = Self::default();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let secs =
            |errors: &mut Vec<String>, k: &str, default: Duration, min: f64, max: f64| match get(k)
            {
                None => default,
                Some(v) => match v.parse::<f64>() {
                    Ok(n) if n.is_finite() && (min..=max).contains(&n) => {
                        Duration::from_secs_f64(n)
                    }
                    _ => {
                        errors.push(format!(
                            "{k}: must be a number of seconds between {min} and {max}, got {v:?}"
                        ));
                        default
                    }
                },
            };
        let count = |errors: &mut Vec<String>, k: &str, default: usize, max: usize| match get(k) {
            None => default,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => n,
                _ => {
                    errors.push(format!(
                        "{k}: must be an integer between 1 and {max}, got {v:?}"
                    ));
                    default
                }
            },
        };
        let retry_schedule = match get("CRM_WEBHOOK_RETRY_SCHEDULE_SECS") {
            None => d.retry_schedule.clone(),
            Some(v) => {
                let parsed: Result<Vec<Duration>, _> = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|n| n.is_finite() && (0.0..=7.0 * 86_400.0).contains(n))
                            .map(Duration::from_secs_f64)
                            .ok_or(())
                    })
                    .collect();
                match parsed {
                    Ok(s) if !s.is_empty() && s.len() <= 50 => s,
                    _ => {
                        errors.push(format!(
                            "CRM_WEBHOOK_RETRY_SCHEDULE_SECS: must be a comma list of 1 to 50 delays in seconds (each at most 7 days), got {v:?}"
                        ));
                        d.retry_schedule.clone()
                    }
                }
            }
        };
        let throttle_min = secs(
            &mut errors,
            "CRM_WEBHOOK_THROTTLE_MIN_SECS",
            d.throttle_min,
            0.0,
            86_400.0,
        );
        let retry_after_max = secs(
            &mut errors,
            "CRM_WEBHOOK_RETRY_AFTER_MAX_SECS",
            d.retry_after_max,
            0.0,
            7.0 * 86_400.0,
        );
        let request_timeout = secs(
            &mut errors,
            "CRM_WEBHOOK_TIMEOUT_SECS",
            d.request_timeout,
            0.1,
            300.0,
        );
        let disable_after = secs(
            &mut errors,
            "CRM_WEBHOOK_DISABLE_AFTER_SECS",
            d.disable_after,
            0.0,
            365.0 * 86_400.0,
        );
        let retention = Duration::from_secs(
            count(&mut errors, "CRM_WEBHOOK_RETENTION_DAYS", 90, 3650) as u64 * 86_400,
        );
        let rotation_overlap = secs(
            &mut errors,
            "CRM_WEBHOOK_ROTATION_OVERLAP_SECS",
            d.rotation_overlap,
            0.0,
            30.0 * 86_400.0,
        );
        let mut allow_nets = Vec::new();
        for p in get("CRM_WEBHOOK_ALLOW_NETS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let net = p
                .parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
            match net {
                Ok(n) => allow_nets.push(n),
                Err(_) => errors.push(format!(
                    "CRM_WEBHOOK_ALLOW_NETS: {p:?} is not an IP address or CIDR range"
                )),
            }
        }
        let allow_http = match get("CRM_WEBHOOK_ALLOW_HTTP").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                errors.push(format!(
                    "CRM_WEBHOOK_ALLOW_HTTP: must be true or false, got {other:?}"
                ));
                false
            }
        };
        if allow_http && env == Environment::Production {
            errors.push("CRM_WEBHOOK_ALLOW_HTTP: http endpoints are refused in production".into());
        }
        let concurrency = count(
            &mut errors,
            "CRM_WEBHOOK_CONCURRENCY",
            d.concurrency,
            10_000,
        );
        let per_endpoint_concurrency = count(
            &mut errors,
            "CRM_WEBHOOK_PER_ENDPOINT_CONCURRENCY",
            d.per_endpoint_concurrency,
            1000,
        );
        let poll_interval = secs(
            &mut errors,
            "CRM_WEBHOOK_POLL_SECS",
            d.poll_interval,
            0.01,
            60.0,
        );
        let drain_timeout = secs(
            &mut errors,
            "CRM_WEBHOOK_DRAIN_SECS",
            d.drain_timeout,
            0.0,
            600.0,
        );
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Self {
            retry_schedule,
            throttle_min,
            retry_after_max,
            request_timeout,
            disable_after,
            retention,
            rotation_overlap,
            allow_nets,
            allow_http,
            concurrency,
            per_endpoint_concurrency,
            poll_interval,
            drain_timeout,
        })
    }

    /// How long a claimed delivery stays leased: a worker that dies mid-try loses it to
    /// another worker once this has passed. A worker claims ahead, so a delivery may wait
    /// for a slot behind tries of its endpoint before its own try: one try per round held.
    pub fn lease(&self) -> Duration {
        self.request_timeout * crate::worker::ROUNDS_HELD + Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_follow_the_schedule_of_the_spec() {
        let s = WebhookSettings::from_map(&HashMap::new(), Environment::Development).unwrap();
        assert_eq!(s.retry_schedule.len(), 7);
        assert_eq!(s.retry_schedule[1], Duration::from_secs(300));
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert!(!s.allow_http);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = WebhookSettings::from_map(
            &map(&[
                ("CRM_WEBHOOK_RETRY_SCHEDULE_SECS", "5,x"),
                ("CRM_WEBHOOK_ALLOW_NETS", "not-a-net"),
                ("CRM_WEBHOOK_ALLOW_HTTP", "true"),
            ]),
            Environment::Production,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CRM_WEBHOOK_RETRY_SCHEDULE_SECS"), "{err}");
        assert!(err.contains("CRM_WEBHOOK_ALLOW_NETS"), "{err}");
        assert!(err.contains("CRM_WEBHOOK_ALLOW_HTTP"), "{err}");
        let ok = WebhookSettings::from_map(
            &map(&[
                ("CRM_WEBHOOK_RETRY_SCHEDULE_SECS", "0.2, 0.5"),
                ("CRM_WEBHOOK_ALLOW_NETS", "127.0.0.1/32,::1"),
            ]),
            Environment::Development,
        )
        .unwrap();
        assert_eq!(
            ok.retry_schedule,
            [Duration::from_millis(200), Duration::from_millis(500)]
        );
        assert_eq!(ok.allow_nets.len(), 2);
    }
}
