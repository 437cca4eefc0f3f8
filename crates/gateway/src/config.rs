//! Gateway settings from the environment, validated with messages that name the variable.

use std::{collections::HashMap, time::Duration};

use crm_kit::TenantId;

/// A fixed-window request quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub requests: u64,
    pub window: Duration,
}

/// Everything the gateway adds to the shared configuration.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// Per tenant, across all its users and clients.
    pub tenant_quota: Quota,
    /// Per user or API client.
    pub client_quota: Quota,
    /// Per client address on the routes that need no token (sign-up, login, token).
    pub anonymous_quota: Quota,
    pub body_limit: usize,
    pub request_timeout: Duration,
    /// Allowed CORS origins; `*` allows any; empty disables CORS.
    pub cors_origins: Vec<String>,
    /// Load balancers whose X-Forwarded-For is believed, to find the client's address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Backend cells by name; `default` always exists.
    pub cells: HashMap<String, CellUrls>,
    /// Tenants served by a cell other than `default`.
    pub tenant_cells: HashMap<TenantId, String>,
}

/// Where one cell's services listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellUrls {
    pub identity: String,
    /// The accounts-contacts service (`crm.accounts.v1.AccountsService`).
    pub accounts: String,
    /// The webhook-delivery service (`CRM_WEBHOOK_DELIVERY_URL`, `CRM_CELL_<NAME>_WEBHOOK_DELIVERY_URL`).
    pub webhooks: String,
    /// The search service (`crm.search.v1.SearchService`).
    pub search: String,
    /// The pipeline service (`CRM_PIPELINE_URL`, `CRM_CELL_<NAME>_PIPELINE_URL`).
    pub pipeline: String,
    /// The activity and timeline service (`crm.timeline.v1.TimelineService`;
    /// `CRM_ACTIVITY_TIMELINE_URL`, `CRM_CELL_<NAME>_ACTIVITY_TIMELINE_URL`).
    pub timeline: String,
}

/// Where the default cell's accounts service listens unless `CRM_ACCOUNTS_CONTACTS_URL` says otherwise.
pub const DEFAULT_ACCOUNTS_URL: &str = "http://127.0.0.1:50052";

/// Where the default cell's webhook-delivery service listens unless `CRM_WEBHOOK_DELIVERY_URL` says otherwise.
pub const DEFAULT_WEBHOOKS_URL: &str = "http://127.0.0.1:50056";
/// Where the default cell's search service listens unless `CRM_SEARCH_URL` says otherwise.
pub const DEFAULT_SEARCH_URL: &str = "http://127.0.0.1:50055";
/// Where the default cell's pipeline service listens unless `CRM_PIPELINE_URL` says otherwise.
pub const DEFAULT_PIPELINE_URL: &str = "http://127.0.0.1:50053";
/// Where the default cell's activity and timeline service listens unless `CRM_ACTIVITY_TIMELINE_URL` says otherwise.
pub const DEFAULT_TIMELINE_URL: &str = "http://127.0.0.1:50054";

fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl GatewaySettings {
    /// Reads the process environment; `identity_url` is the default cell's identity.
    pub fn from_env(identity_url: &str) -> Result<Self, crm_kit::config::ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_map(&vars, identity_url)
    }

    /// Reads settings from a map; `CRM_ACCOUNTS_CONTACTS_URL` (default
    /// `http://127.0.0.1:50052`) is the default cell's accounts service.
    pub fn from_map(
        vars: &HashMap<String, String>,
        identity_url: &str,
    ) -> Result<Self, crm_kit::config::ConfigError> {
        let mut errors = Vec::new();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut num = |k: &str, default: u64, min: u64, max: u64| match get(k) {
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
        let window = Duration::from_secs(num("CRM_RATE_LIMIT_WINDOW_SECS", 10, 1, 3600));
        let tenant_quota = Quota {
            requests: num("CRM_RATE_LIMIT_PER_TENANT", 1900, 1, 10_000_000),
            window,
        };
        let client_quota = Quota {
            requests: num("CRM_RATE_LIMIT_PER_CLIENT", 190, 1, 10_000_000),
            window,
        };
        let anonymous_quota = Quota {
            requests: num("CRM_RATE_LIMIT_ANONYMOUS", 60, 1, 10_000_000),
            window,
        };
        let body_limit = num("CRM_BODY_LIMIT_BYTES", 1024 * 1024, 1024, 100 * 1024 * 1024) as usize;
        let request_timeout = Duration::from_secs(num("CRM_REQUEST_TIMEOUT_SECS", 30, 1, 600));
        let cors_origins: Vec<String> = get("CRM_CORS_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for o in &cors_origins {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                errors.push(format!(
                    "CRM_CORS_ORIGINS: {o:?} is not an origin such as https://app.example.com"
                ));
            }
        }
        let mut trusted_proxies = Vec::new();
        for p in get("CRM_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let net = p
                .parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => errors.push(format!(
                    "CRM_TRUSTED_PROXIES: {p:?} is not an IP address or CIDR range"
                )),
            }
        }
        let accounts =
            get("CRM_ACCOUNTS_CONTACTS_URL").unwrap_or_else(|| DEFAULT_ACCOUNTS_URL.to_owned());
        if !is_http_url(&accounts) {
            errors.push(format!(
                "CRM_ACCOUNTS_CONTACTS_URL: not an http(s) URL: {accounts:?}"
            ));
        }
        let webhooks =
            get("CRM_WEBHOOK_DELIVERY_URL").unwrap_or_else(|| DEFAULT_WEBHOOKS_URL.to_owned());
        if !is_http_url(&webhooks) {
            errors.push(format!(
                "CRM_WEBHOOK_DELIVERY_URL: not an http(s) URL: {webhooks:?}"
            ));
        }
        let search = get("CRM_SEARCH_URL").unwrap_or_else(|| DEFAULT_SEARCH_URL.to_owned());
        if !is_http_url(&search) {
            errors.push(format!("CRM_SEARCH_URL: not an http(s) URL: {search:?}"));
        }
        let pipeline = get("CRM_PIPELINE_URL").unwrap_or_else(|| DEFAULT_PIPELINE_URL.to_owned());
        if !is_http_url(&pipeline) {
            errors.push(format!(
                "CRM_PIPELINE_URL: not an http(s) URL: {pipeline:?}"
            ));
        }
        let timeline =
            get("CRM_ACTIVITY_TIMELINE_URL").unwrap_or_else(|| DEFAULT_TIMELINE_URL.to_owned());
        if !is_http_url(&timeline) {
            errors.push(format!(
                "CRM_ACTIVITY_TIMELINE_URL: not an http(s) URL: {timeline:?}"
            ));
        }
        let mut cells = HashMap::new();
        cells.insert(
            "default".to_owned(),
            CellUrls {
                identity: identity_url.to_owned(),
                accounts,
                webhooks,
                search,
                pipeline,
                timeline,
            },
        );
        let mut tenant_cells = HashMap::new();
        if let Some(map) = get("CRM_TENANT_CELLS") {
            for pair in map.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let Some((tenant, cell)) = pair.split_once('=') else {
                    errors.push(format!("CRM_TENANT_CELLS: {pair:?} is not tenant_id=cell"));
                    continue;
                };
                let Ok(tenant) = tenant.trim().parse::<TenantId>() else {
                    errors.push(format!("CRM_TENANT_CELLS: {tenant:?} is not a tenant id"));
                    continue;
                };
                let cell = cell.trim().to_owned();
                if !cells.contains_key(&cell) {
                    let prefix = format!("CRM_CELL_{}", cell.to_uppercase().replace('-', "_"));
                    let mut url = |service: &str| {
                        let var = format!("{prefix}_{service}_URL");
                        match get(&var) {
                            Some(url) if is_http_url(&url) => Some(url),
                            Some(url) => {
                                errors.push(format!("{var}: not an http(s) URL: {url:?}"));
                                None
                            }
                            None => {
                                errors.push(format!(
                                    "{var}: required because CRM_TENANT_CELLS names cell {cell:?}"
                                ));
                                None
                            }
                        }
                    };
                    if let (
                        Some(identity),
                        Some(accounts),
                        Some(webhooks),
                        Some(search),
                        Some(pipeline),
                        Some(timeline),
                    ) = (
                        url("IDENTITY"),
                        url("ACCOUNTS_CONTACTS"),
                        url("WEBHOOK_DELIVERY"),
                        url("SEARCH"),
                        url("PIPELINE"),
                        url("ACTIVITY_TIMELINE"),
                    ) {
                        cells.insert(
                            cell.clone(),
                            CellUrls {
                                identity,
                                accounts,
                                webhooks,
                                search,
                                pipeline,
                                timeline,
                            },
                        );
                    }
                }
                tenant_cells.insert(tenant, cell);
            }
        }
        if !errors.is_empty() {
            return Err(crm_kit::config::ConfigError(errors));
        }
        Ok(Self {
            tenant_quota,
            client_quota,
            anonymous_quota,
            body_limit,
            request_timeout,
            cors_origins,
            trusted_proxies,
            cells,
            tenant_cells,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_cells() {
        let s = GatewaySettings::from_map(&HashMap::new(), "http://id:1").unwrap();
        assert_eq!(s.client_quota.requests, 190);
        assert_eq!(s.client_quota.window, Duration::from_secs(10));
        let t = TenantId::new();
        let vars: HashMap<String, String> = [
            ("CRM_TENANT_CELLS".to_owned(), format!("{t}=big")),
            (
                "CRM_CELL_BIG_IDENTITY_URL".to_owned(),
                "http://big:50051".to_owned(),
            ),
            (
                "CRM_CELL_BIG_ACCOUNTS_CONTACTS_URL".to_owned(),
                "http://big:50052".to_owned(),
            ),
            (
                "CRM_CELL_BIG_WEBHOOK_DELIVERY_URL".to_owned(),
                "http://big:50056".to_owned(),
            ),
            (
                "CRM_CELL_BIG_SEARCH_URL".to_owned(),
                "http://big:50055".to_owned(),
            ),
            (
                "CRM_CELL_BIG_PIPELINE_URL".to_owned(),
                "http://big:50053".to_owned(),
            ),
            (
                "CRM_CELL_BIG_ACTIVITY_TIMELINE_URL".to_owned(),
                "http://big:50054".to_owned(),
            ),
        ]
        .into();
        let s = GatewaySettings::from_map(&vars, "http://id:1").unwrap();
        assert_eq!(s.tenant_cells[&t], "big");
        assert_eq!(s.cells["big"].identity, "http://big:50051");
        assert_eq!(s.cells["big"].accounts, "http://big:50052");
        assert_eq!(s.cells["big"].webhooks, "http://big:50056");
        assert_eq!(s.cells["default"].webhooks, DEFAULT_WEBHOOKS_URL);
        assert_eq!(s.cells["big"].search, "http://big:50055");
        assert_eq!(s.cells["big"].pipeline, "http://big:50053");
        assert_eq!(s.cells["default"].pipeline, DEFAULT_PIPELINE_URL);
        assert_eq!(s.cells["big"].timeline, "http://big:50054");
        assert_eq!(s.cells["default"].timeline, DEFAULT_TIMELINE_URL);
        let vars: HashMap<String, String> =
            [("CRM_TENANT_CELLS".to_owned(), format!("{t}=nowhere"))].into();
        let err = GatewaySettings::from_map(&vars, "http://id:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRM_CELL_NOWHERE_IDENTITY_URL"), "{err}");
        assert!(
            err.contains("CRM_CELL_NOWHERE_ACCOUNTS_CONTACTS_URL"),
            "{err}"
        );
        assert!(err.contains("CRM_CELL_NOWHERE_SEARCH_URL"), "{err}");
        assert!(
            err.contains("CRM_CELL_NOWHERE_ACTIVITY_TIMELINE_URL"),
            "{err}"
        );
    }

    #[test]
    fn accounts_url() {
        let s = GatewaySettings::from_map(&HashMap::new(), "http://id:1").unwrap();
        assert_eq!(s.cells["default"].accounts, DEFAULT_ACCOUNTS_URL);
        let vars: HashMap<String, String> = [(
            "CRM_ACCOUNTS_CONTACTS_URL".to_owned(),
            "http://acc:7".to_owned(),
        )]
        .into();
        let s = GatewaySettings::from_map(&vars, "http://id:1").unwrap();
        assert_eq!(s.cells["default"].accounts, "http://acc:7");
        let vars: HashMap<String, String> =
            [("CRM_ACCOUNTS_CONTACTS_URL".to_owned(), "acc:7".to_owned())].into();
        let err = GatewaySettings::from_map(&vars, "http://id:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRM_ACCOUNTS_CONTACTS_URL"), "{err}");
    }
}
