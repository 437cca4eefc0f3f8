//! A whole stack per test: a fresh database, a unique bus prefix, identity, accounts-contacts
//! and pipeline (publishing their outboxes), activity-timeline (publishing its outbox and consuming every
//! event) and the gateway on free ports; tests speak REST to the gateway as a partner would.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crm_bus::{BusConfig, ConsumerOptions, Event};
use crm_kit::{Cache, Config, Db, TenantId, admin};
use reqwest::{Client, RequestBuilder, Response};
use sea_orm::{Database, DatabaseConnection};
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
    if std::env::var("TEST_LOG").is_ok()
        && let Ok(cfg) = Config::from_map(&HashMap::from([(
            "CRM_LOG_FORMAT".to_owned(),
            "pretty".to_owned(),
        )]))
        && let Ok(t) = crm_kit::telemetry::init("test", &cfg)
    {
        std::mem::forget(t);
    }
}

pub struct TestStack {
    pub base: String,
    pub http: Client,
    /// The owner connection (bypasses row-level security).
    pub admin: DatabaseConnection,
    /// The runtime pool (row-level security and the runtime grants apply).
    pub db: Db,
    pub bus: BusConfig,
    admin_url: String,
    cancel: CancellationToken,
}

impl Drop for TestStack {
    fn drop(&mut self) {
        self.cancel.cancel();
        let url = self.admin_url.clone();
        let bus = self.bus.clone();
        let dropped = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    // Services are cancelled; give their pools and consumers a moment to close.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    delete_bus(&bus).await;
                    if let Err(e) = admin::drop_database(&url).await {
                        eprintln!("cannot drop test database: {e}");
                    }
                });
            }
        });
        let _ = dropped.join();
    }
}

/// Removes the test's queues (the timeline consumer's and pipeline's) and exchanges.
async fn delete_bus(bus: &BusConfig) {
    crm_bus::consumer::delete_topology(bus, &["activity-timeline", "pipeline"]).await;
}

pub async fn spawn() -> TestStack {
    init_tracing();
    let name = format!("timeline_it_{}", Uuid::new_v4().simple());
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
    let redis_url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let bus = BusConfig::new(
        env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        format!("t{}.", Uuid::new_v4().simple()),
    );

    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), runtime.to_string()),
        ("CRM_DATABASE_ADMIN_URL".into(), admin_url.clone()),
        ("REDIS_URL".into(), redis_url.clone()),
        ("CRM_IDENTITY_GRPC_PORT".into(), "0".into()),
        ("CRM_IDENTITY_HTTP_PORT".into(), "0".into()),
        ("CRM_ACCOUNTS_CONTACTS_GRPC_PORT".into(), "0".into()),
        ("CRM_ACCOUNTS_CONTACTS_HTTP_PORT".into(), "0".into()),
        ("CRM_PIPELINE_GRPC_PORT".into(), "0".into()),
        ("CRM_PIPELINE_HTTP_PORT".into(), "0".into()),
        ("CRM_ACTIVITY_TIMELINE_GRPC_PORT".into(), "0".into()),
        ("CRM_ACTIVITY_TIMELINE_HTTP_PORT".into(), "0".into()),
        ("CRM_GATEWAY_HTTP_PORT".into(), "0".into()),
        ("CRM_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        ("CRM_RATE_LIMIT_PER_TENANT".into(), "100000".into()),
        ("CRM_RATE_LIMIT_PER_CLIENT".into(), "100000".into()),
    ]);
    let config = Config::from_map(&env).expect("config");
    let db = Db::connect(config.database_url.expose_secret(), 10)
        .await
        .expect("db");
    db.check_runtime_role().await.expect("runtime role");
    let cache = Cache::connect(&redis_url).await.expect("redis");
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
    env.insert(
        "CRM_IDENTITY_URL".into(),
        format!("http://{}", identity.grpc_addr().expect("addr")),
    );
    tokio::spawn(identity.run_until_stopped(cancel.clone()));
    let config = Config::from_map(&env).expect("config");

    let accounts = crm_accounts_contacts::Application::build(
        &config,
        crm_accounts_contacts::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await
    .expect("accounts");
    env.insert(
        "CRM_ACCOUNTS_CONTACTS_URL".into(),
        format!("http://{}", accounts.grpc_addr().expect("addr")),
    );
    tokio::spawn(accounts.run_until_stopped(cancel.clone()));

    let pipeline = crm_pipeline::Application::build(
        &config,
        &crm_pipeline::Settings::from_map(&env).expect("settings"),
        crm_pipeline::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await
    .expect("pipeline");
    env.insert(
        "CRM_PIPELINE_URL".into(),
        format!("http://{}", pipeline.grpc_addr().expect("addr")),
    );
    tokio::spawn(pipeline.run_until_stopped(cancel.clone()));

    let mut settings = crm_activity_timeline::Settings::from_map(&env).expect("settings");
    settings.consumer = ConsumerOptions {
        retry_delays: vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(300),
        ],
        ..ConsumerOptions::default()
    };
    let timeline = crm_activity_timeline::Application::build(
        &config,
        &settings,
        crm_activity_timeline::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await
    .expect("timeline");
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

    let b = Uuid::new_v4().into_bytes();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-forwarded-for",
        format!("198.{}.{}.{}", 18 + (b[0] & 1), b[1], b[2])
            .parse()
            .expect("header"),
    );
    TestStack {
        base: format!("http://{addr}/api/v1"),
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .expect("client"),
        admin: Database::connect(&admin_url)
            .await
            .expect("admin connection"),
        db,
        bus,
        admin_url,
        cancel,
    }
}

/// A user of a tenant, logged in.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub token: String,
    pub tenant_id: String,
    pub tenant_slug: String,
}

impl User {
    pub fn tenant(&self) -> TenantId {
        self.tenant_id.parse().expect("tenant id")
    }

    pub fn uuid(&self) -> Uuid {
        Uuid::parse_str(&self.id).expect("user id")
    }
}

impl TestStack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A new tenant; its first user is an admin.
    pub async fn signup(&self) -> User {
        let slug = format!("t-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let res = self
            .http
            .post(self.url("/auth/signup"))
            .json(&json!({"tenantName": "Acme", "tenantSlug": slug, "email": "admin@acme.test", "password": PASSWORD}))
            .send()
            .await
            .expect("signup");
        assert_eq!(res.status(), 201, "signup");
        let b: Value = res.json().await.expect("json");
        User {
            id: s(&b["user"], "id"),
            token: s(&b, "accessToken"),
            tenant_id: s(&b["tenant"], "id"),
            tenant_slug: slug,
        }
    }

    /// Creates a user with a role in the admin's tenant and logs them in.
    pub async fn user(&self, admin: &User, role: &str) -> User {
        let email = format!("{}@acme.test", &Uuid::new_v4().simple().to_string()[..10]);
        let u = self
            .create(
                admin,
                "/users",
                json!({"email": email, "name": "Someone", "role": role, "password": PASSWORD}),
            )
            .await;
        let res = self
            .http
            .post(self.url("/auth/login"))
            .json(&json!({"tenantSlug": admin.tenant_slug, "email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 200, "login");
        let t: Value = res.json().await.expect("json");
        User {
            id: s(&u, "id"),
            token: s(&t, "accessToken"),
            tenant_id: admin.tenant_id.clone(),
            tenant_slug: admin.tenant_slug.clone(),
        }
    }

    pub fn get(&self, u: &User, path: &str) -> RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&u.token)
    }

    pub fn post(&self, u: &User, path: &str, body: Value) -> RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&u.token)
            .json(&body)
    }

    pub fn patch(&self, u: &User, path: &str, body: Value) -> RequestBuilder {
        self.http
            .patch(self.url(path))
            .bearer_auth(&u.token)
            .json(&body)
    }

    pub fn delete(&self, u: &User, path: &str) -> RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&u.token)
    }

    /// Creates a record and returns its body.
    pub async fn create(&self, u: &User, path: &str, body: Value) -> Value {
        let res = self.post(u, path, body).send().await.expect("create");
        let status = res.status();
        let b: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "create {path}: {b}");
        b
    }

    /// A GET answered 200, as JSON.
    pub async fn get_json(&self, u: &User, path: &str) -> Value {
        let res = self.get(u, path).send().await.expect("get");
        let status = res.status();
        let b: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "GET {path}: {b}");
        b
    }

    /// Every entry of a timeline (all pages, small pages to cross page boundaries).
    pub async fn timeline(&self, u: &User, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{path}?limit=2");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let b = self.get_json(u, &url).await;
            out.extend(b["items"].as_array().cloned().unwrap_or_default());
            match b["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// Reads a timeline until `check` holds (events arrive asynchronously; a record known
    /// only from its events is not found until its first event arrives).
    pub async fn timeline_until(
        &self,
        u: &User,
        path: &str,
        what: &str,
        check: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.get(u, path).send().await.expect("get").status();
            if status == 404 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let entries = self.timeline(u, path).await;
            if check(&entries) {
                return entries;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {path}: {entries:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Publishes an envelope on the test's exchange, as a service's relay would.
    pub async fn publish(&self, event: &Event) {
        use lapin::{BasicProperties, Connection, ConnectionProperties, options::*};
        let conn = Connection::connect(&self.bus.amqp_url, ConnectionProperties::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let body = serde_json::to_vec(event).expect("json");
        ch.basic_publish(
            self.bus.exchange().as_str().into(),
            event.event_type.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default()
                .with_content_type("application/cloudevents+json".into())
                .with_message_id(event.id.to_string().into())
                .with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
        let _ = conn.close(200, "published".into()).await;
    }
}

/// An event of a record type served by another service, as its outbox would carry it.
pub fn event(
    u: &User,
    event_type: &str,
    id: Uuid,
    before: Option<Value>,
    after: Option<Value>,
) -> Event {
    let entity = event_type.split('.').next().expect("entity");
    Event::new(
        "pipeline",
        event_type,
        u.tenant(),
        Some(u.uuid()),
        entity,
        id,
        before,
        after,
    )
}

/// Asserts a problem+json answer with this status and code, and returns its body.
pub async fn problem(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let b: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "status: {b}");
    assert_eq!(b["code"], code, "{b}");
    b
}

/// Asserts a problem+json 400 naming `field`.
pub async fn bad_request(res: Response, field: &str) {
    let b = problem(res, 400, "VALIDATION_FAILED").await;
    let fields: Vec<&str> = b["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert!(fields.contains(&field), "{field} not in {b}");
}

/// A string field of a JSON body.
pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_owned()
}

/// The actions of timeline entries, newest first, as `entityType.action`.
pub fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| format!("{}.{}", s(e, "entityType"), s(e, "action")))
        .collect()
}
