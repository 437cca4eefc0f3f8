//! A whole stack per test: a fresh database, identity, accounts-contacts, pipeline and the gateway on
//! free ports.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crm_kit::{Cache, Config, Db, admin};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery staple";

fn env_or(k: &str, default: &str) -> String {
    std::env::var(k)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn init_tracing() {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber_init();
    }
}

fn tracing_subscriber_init() -> Option<()> {
    // Logs go through the kit's subscriber, the same as in production.
    let cfg = Config::from_map(&HashMap::from([(
        "CRM_LOG_FORMAT".to_owned(),
        "pretty".to_owned(),
    )]))
    .ok()?;
    std::mem::forget(crm_kit::telemetry::init("test", &cfg).ok()?);
    Some(())
}

/// Options of a test stack.
pub struct Options {
    pub redis_url: String,
    pub extra_env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            extra_env: vec![],
        }
    }
}

pub struct TestStack {
    pub base: String,
    pub root: String,
    pub http: Client,
    /// The runtime pool, kept open for the life of the stack.
    pub _db: Db,
    admin_url: String,
    cancel: CancellationToken,
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.cancel.cancel();
        let url = self.admin_url.clone();
        // On a thread of its own (the test's runtime is shutting down), and waited for, so the
        // database is gone before the test binary exits.
        let dropped = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Err(e) = admin::drop_database(&url).await {
                        eprintln!("cannot drop test database: {e}");
                    }
                });
            }
        });
        let _ = dropped.join();
    }
}

pub async fn spawn() -> TestStack {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(opts: Options) -> TestStack {
    init_tracing();
    let name = format!("gateway_it_{}", Uuid::new_v4().simple());
    let base_admin = env_or(
        "CRM_DATABASE_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let admin_url = admin::with_database(&base_admin, &name).expect("admin url");
    crm_migrations::migrate_all(&admin_url, "crm_app")
        .await
        .expect("migrate");
    let mut runtime = url::Url::parse(&admin_url).expect("url");
    runtime.set_username("crm_app").expect("user");
    runtime.set_password(None).expect("password");

    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), runtime.to_string()),
        ("CRM_DATABASE_ADMIN_URL".into(), admin_url.clone()),
        ("REDIS_URL".into(), opts.redis_url.clone()),
        ("CRM_IDENTITY_GRPC_PORT".into(), "0".into()),
        ("CRM_IDENTITY_HTTP_PORT".into(), "0".into()),
        ("CRM_GATEWAY_HTTP_PORT".into(), "0".into()),
        // The test client plays a load balancer, so each stack has its own client address
        // and login throttling by address never spills from one test (or run) into another.
        ("CRM_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
    ]);
    for (k, v) in &opts.extra_env {
        env.insert((*k).to_owned(), v.clone());
    }
    let config = Config::from_map(&env).expect("config");
    let db = Db::connect(config.database_url.expose_secret(), 5)
        .await
        .expect("db");
    db.check_runtime_role().await.expect("runtime role");
    let cache = Cache::connect(&opts.redis_url).await.expect("redis");
    let cancel = CancellationToken::new();

    let identity = crm_identity::Application::build(
        &config,
        crm_identity::Deps {
            db: db.clone(),
            cache: cache.clone(),
            bus: None,
        },
    )
    .await
    .expect("identity");
    let identity_addr: SocketAddr = identity.grpc_addr().expect("addr");
    tokio::spawn(identity.run_until_stopped(cancel.clone()));

    env.insert("CRM_IDENTITY_URL".into(), format!("http://{identity_addr}"));
    env.insert("CRM_ACCOUNTS_CONTACTS_GRPC_PORT".into(), "0".into());
    env.insert("CRM_ACCOUNTS_CONTACTS_HTTP_PORT".into(), "0".into());
    let config = Config::from_map(&env).expect("config");
    let accounts = crm_accounts_contacts::Application::build(
        &config,
        crm_accounts_contacts::Deps {
            db: db.clone(),
            bus: None,
        },
    )
    .await
    .expect("accounts-contacts");
    env.insert(
        "CRM_ACCOUNTS_CONTACTS_URL".into(),
        format!("http://{}", accounts.grpc_addr().expect("addr")),
    );
    tokio::spawn(accounts.run_until_stopped(cancel.clone()));
    env.insert("CRM_PIPELINE_GRPC_PORT".into(), "0".into());
    env.insert("CRM_PIPELINE_HTTP_PORT".into(), "0".into());
    let config = Config::from_map(&env).expect("config");
    let pipeline = crm_pipeline::Application::build(
        &config,
        &crm_pipeline::Settings::from_map(&env).expect("pipeline settings"),
        crm_pipeline::Deps {
            db: db.clone(),
            bus: None,
        },
    )
    .await
    .expect("pipeline");
    env.insert(
        "CRM_PIPELINE_URL".into(),
        format!("http://{}", pipeline.grpc_addr().expect("addr")),
    );
    tokio::spawn(pipeline.run_until_stopped(cancel.clone()));
    env.insert("CRM_ACTIVITY_TIMELINE_GRPC_PORT".into(), "0".into());
    env.insert("CRM_ACTIVITY_TIMELINE_HTTP_PORT".into(), "0".into());
    let config = Config::from_map(&env).expect("config");
    let timeline = crm_activity_timeline::Application::build(
        &config,
        &crm_activity_timeline::Settings::from_map(&env).expect("timeline settings"),
        crm_activity_timeline::Deps {
            db: db.clone(),
            bus: None,
        },
    )
    .await
    .expect("activity-timeline");
    env.insert(
        "CRM_ACTIVITY_TIMELINE_URL".into(),
        format!("http://{}", timeline.grpc_addr().expect("addr")),
    );
    tokio::spawn(timeline.run_until_stopped(cancel.clone()));
    let settings =
        crm_gateway::GatewaySettings::from_map(&env, &config.identity_url).expect("settings");
    let gateway = crm_gateway::Application::build(&config, settings, cache)
        .await
        .expect("gateway");
    let addr = gateway.addr().expect("addr");
    tokio::spawn(gateway.run_until_stopped(cancel.clone()));

    TestStack {
        base: format!("http://{addr}/api/v1"),
        root: format!("http://{addr}"),
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(forwarded_for())
            .build()
            .expect("client"),
        _db: db,
        admin_url,
        cancel,
    }
}

/// An X-Forwarded-For naming a random documentation-range address for this stack.
fn forwarded_for() -> reqwest::header::HeaderMap {
    let b = Uuid::new_v4().into_bytes();
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        format!("198.{}.{}.{}", 18 + (b[0] & 1), b[1], b[2])
            .parse()
            .expect("header value"),
    );
    h
}

/// A signed-up tenant's admin.
pub struct Tenant {
    pub slug: String,
    pub user_id: String,
    pub token: String,
    pub refresh: String,
}

impl TestStack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn signup(&self) -> Tenant {
        let slug = format!("t-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let res = self
            .http
            .post(self.url("/auth/signup"))
            .json(&json!({"tenantName": "Acme", "tenantSlug": slug, "email": "admin@acme.test", "password": PASSWORD, "name": "Ada"}))
            .send()
            .await
            .expect("signup");
        assert_eq!(res.status(), StatusCode::CREATED, "signup");
        let b: Value = res.json().await.expect("json");
        Tenant {
            slug,
            user_id: b["user"]["id"].as_str().expect("user id").to_owned(),
            token: b["accessToken"].as_str().expect("token").to_owned(),
            refresh: b["refreshToken"].as_str().expect("refresh").to_owned(),
        }
    }

    pub fn get(&self, t: &Tenant, path: &str) -> RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&t.token)
    }

    pub fn post(&self, t: &Tenant, path: &str, body: Value) -> RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&t.token)
            .json(&body)
    }

    pub fn patch(&self, t: &Tenant, path: &str, body: Value) -> RequestBuilder {
        self.http
            .patch(self.url(path))
            .bearer_auth(&t.token)
            .json(&body)
    }
}

/// Asserts a problem+json answer with this status and code, and returns its body.
pub async fn problem(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct}"
    );
    let rid = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let b: Value = res.json().await.expect("problem body");
    assert_eq!(b["code"], code, "{b}");
    assert_eq!(b["status"], status, "{b}");
    assert_eq!(
        b["requestId"].as_str(),
        rid.as_deref(),
        "requestId matches X-Request-Id"
    );
    b
}

/// The field names of a problem's errors.
pub fn fields(p: &Value) -> Vec<String> {
    p["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
