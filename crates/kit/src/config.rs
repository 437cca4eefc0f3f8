//! Configuration from the environment: defaults that work against the local services,
//! validated once at start-up with messages that name the variable.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// A development-only key-encryption key, refused in production.
const DEV_KEY_ENCRYPTION_KEY: &str = "Y3JtLWRldmVsb3BtZW50LWtleS1ub3QtZm9yLXByb2Q=";

/// Where the process runs: development allows the built-in dev key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Every setting the services share.
#[derive(Debug)]
pub struct Config {
    pub env: Environment,
    /// Runtime role: owns nothing, cannot bypass row-level security.
    pub database_url: SecretString,
    /// Owner role: creates the database and runs migrations.
    pub database_admin_url: SecretString,
    pub db_max_connections: u32,
    pub amqp_url: SecretString,
    pub redis_url: SecretString,
    /// Prefix of every exchange and queue name, to share one broker.
    pub bus_prefix: String,
    pub bind_host: IpAddr,
    /// How services reach identity's gRPC API.
    pub identity_url: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_idle_ttl: Duration,
    pub refresh_absolute_ttl: Duration,
    /// 32 bytes that encrypt signing keys at rest.
    pub key_encryption_key: SecretBox<[u8; 32]>,
    pub otlp_endpoint: Option<String>,
    pub log_format: LogFormat,
    ports: HashMap<String, u16>,
}

/// Start-up configuration errors, each naming its variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.join("\n"))]
pub struct ConfigError(pub Vec<String>);

/// Default ports of each service as deployed: (gRPC, HTTP).
pub const DEFAULT_PORTS: &[(&str, u16, u16)] = &[
    ("identity", 50051, 9101),
    ("accounts-contacts", 50052, 9102),
    ("pipeline", 50053, 9103),
    ("activity-timeline", 50054, 9104),
    ("search", 50055, 9105),
    ("webhook-delivery", 50056, 9106),
    ("gateway", 0, 8080),
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_map(&vars)
    }

    /// Reads settings from a map (tests pass their own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let env = match get("CRM_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                errors.push(format!(
                    "CRM_ENV: must be development or production, got {other:?}"
                ));
                Environment::Development
            }
        };
        let url = |errors: &mut Vec<String>, k: &str, default: &str, schemes: &[&str]| {
            let v = get(k).unwrap_or_else(|| default.to_owned());
            match url::Url::parse(&v) {
                Ok(u) if schemes.contains(&u.scheme()) => {}
                Ok(u) => errors.push(format!(
                    "{k}: scheme must be one of {schemes:?}, got {:?}",
                    u.scheme()
                )),
                Err(e) => errors.push(format!("{k}: not a valid URL: {e}")),
            }
            SecretString::from(v)
        };
        let database_url = url(
            &mut errors,
            "DATABASE_URL",
            "postgres://crm_app@127.0.0.1:5432/crm",
            &["postgres", "postgresql"],
        );
        let database_admin_url = url(
            &mut errors,
            "CRM_DATABASE_ADMIN_URL",
            "postgres://postgres@127.0.0.1:5432/crm",
            &["postgres", "postgresql"],
        );
        let amqp_url = url(
            &mut errors,
            "AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            &["amqp", "amqps"],
        );
        let redis_url = url(
            &mut errors,
            "REDIS_URL",
            "redis://127.0.0.1:6379",
            &["redis", "rediss"],
        );
        let identity_url = url(
            &mut errors,
            "CRM_IDENTITY_URL",
            "http://127.0.0.1:50051",
            &["http", "https"],
        )
        .expose_secret()
        .to_owned();
        let number =
            |errors: &mut Vec<String>, k: &str, default: u64, min: u64, max: u64| match get(k) {
                None => default,
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        errors.push(format!(
                            "{k}: must be an integer between {min} and {max}, got {v:?}"
                        ));
                        default
                    }
                },
            };
        let db_max_connections = number(&mut errors, "CRM_DB_MAX_CONNECTIONS", 10, 1, 1000) as u32;
        let access_token_ttl = Duration::from_secs(number(
            &mut errors,
            "CRM_ACCESS_TOKEN_TTL_SECS",
            900,
            30,
            900,
        ));
        let refresh_idle_ttl = Duration::from_secs(number(
            &mut errors,
            "CRM_REFRESH_IDLE_TTL_SECS",
            14 * 86_400,
            60,
            365 * 86_400,
        ));
        let refresh_absolute_ttl = Duration::from_secs(number(
            &mut errors,
            "CRM_REFRESH_ABSOLUTE_TTL_SECS",
            90 * 86_400,
            60,
            3 * 365 * 86_400,
        ));
        if refresh_absolute_ttl < refresh_idle_ttl {
            errors.push(
                "CRM_REFRESH_ABSOLUTE_TTL_SECS: must not be shorter than CRM_REFRESH_IDLE_TTL_SECS"
                    .into(),
            );
        }
        let bind_host = match get("CRM_BIND_HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v.parse().unwrap_or_else(|_| {
                errors.push(format!("CRM_BIND_HOST: not an IP address: {v:?}"));
                IpAddr::from([127, 0, 0, 1])
            }),
        };
        let kek_text = match (get("CRM_KEY_ENCRYPTION_KEY"), env) {
            (Some(v), _) => v,
            (None, Environment::Development) => DEV_KEY_ENCRYPTION_KEY.to_owned(),
            (None, Environment::Production) => {
                errors.push("CRM_KEY_ENCRYPTION_KEY: required in production (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)".into());
                DEV_KEY_ENCRYPTION_KEY.to_owned()
            }
        };
        if env == Environment::Production && kek_text == DEV_KEY_ENCRYPTION_KEY {
            errors.push(
                "CRM_KEY_ENCRYPTION_KEY: the development key is refused in production".into(),
            );
        }
        let mut kek = [0u8; 32];
        match STANDARD.decode(&kek_text) {
            Ok(bytes) if bytes.len() == 32 => kek.copy_from_slice(&bytes),
            Ok(bytes) => errors.push(format!(
                "CRM_KEY_ENCRYPTION_KEY: must decode to 32 bytes, got {}",
                bytes.len()
            )),
            Err(_) => errors.push("CRM_KEY_ENCRYPTION_KEY: not valid base64".into()),
        }
        let log_format = match get("CRM_LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                errors.push(format!(
                    "CRM_LOG_FORMAT: must be json or pretty, got {other:?}"
                ));
                LogFormat::Json
            }
        };
        let bus_prefix = get("CRM_BUS_PREFIX").unwrap_or_default();
        if !bus_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            errors
                .push("CRM_BUS_PREFIX: only letters, digits, '.', '_' and '-' are allowed".into());
        }
        let mut ports = HashMap::new();
        for (svc, grpc, http) in DEFAULT_PORTS {
            let var = svc.to_uppercase().replace('-', "_");
            for (kind, default) in [("GRPC", *grpc), ("HTTP", *http)] {
                let k = format!("CRM_{var}_{kind}_PORT");
                let p = number(&mut errors, &k, u64::from(default), 0, 65535) as u16;
                ports.insert(format!("{svc}/{kind}"), p);
            }
        }
        let jwt_issuer = get("CRM_JWT_ISSUER").unwrap_or_else(|| "crm-identity".into());
        let jwt_audience = get("CRM_JWT_AUDIENCE").unwrap_or_else(|| "crm-api".into());
        let otlp_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Self {
            env,
            database_url,
            database_admin_url,
            db_max_connections,
            amqp_url,
            redis_url,
            bus_prefix,
            bind_host,
            identity_url,
            jwt_issuer,
            jwt_audience,
            access_token_ttl,
            refresh_idle_ttl,
            refresh_absolute_ttl,
            key_encryption_key: SecretBox::new(Box::new(kek)),
            otlp_endpoint,
            log_format,
            ports,
        })
    }

    /// The gRPC port of a service (0 = any free port).
    pub fn grpc_port(&self, service: &str) -> u16 {
        self.ports
            .get(&format!("{service}/GRPC"))
            .copied()
            .unwrap_or(0)
    }

    /// The HTTP port of a service (0 = any free port).
    pub fn http_port(&self, service: &str) -> u16 {
        self.ports
            .get(&format!("{service}/HTTP"))
            .copied()
            .unwrap_or(0)
    }

    /// Overrides a service's ports (tests bind port 0).
    pub fn set_ports(&mut self, service: &str, grpc: u16, http: u16) {
        self.ports.insert(format!("{service}/GRPC"), grpc);
        self.ports.insert(format!("{service}/HTTP"), http);
    }
}

/// The gRPC address of another service from `var`, or `default` when unset or empty;
/// anything but an http(s) URL is an error naming the variable.
pub fn service_url(
    vars: &HashMap<String, String>,
    var: &str,
    default: &str,
) -> anyhow::Result<String> {
    let url = vars
        .get(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned());
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("{var}: not an http(s) URL: {url:?}");
    }
    Ok(url)
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
    fn defaults_work_locally() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(c.grpc_port("identity"), 50051);
        assert_eq!(c.http_port("gateway"), 8080);
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
    }

    #[test]
    fn errors_name_the_variable() {
        let err = Config::from_map(&map(&[
            ("DATABASE_URL", "mysql://x"),
            ("CRM_ACCESS_TOKEN_TTL_SECS", "3600"),
            ("CRM_IDENTITY_GRPC_PORT", "port"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(err.contains("CRM_ACCESS_TOKEN_TTL_SECS"), "{err}");
        assert!(err.contains("CRM_IDENTITY_GRPC_PORT"), "{err}");
    }

    #[test]
    fn production_needs_a_real_key() {
        let err = Config::from_map(&map(&[("CRM_ENV", "production")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRM_KEY_ENCRYPTION_KEY"), "{err}");
        let key = STANDARD.encode([7u8; 32]);
        let ok = Config::from_map(&map(&[
            ("CRM_ENV", "production"),
            ("CRM_KEY_ENCRYPTION_KEY", &key),
        ]));
        assert!(ok.is_ok());
    }
}
