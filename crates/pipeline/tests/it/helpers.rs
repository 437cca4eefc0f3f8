//! A whole stack per test: a fresh database, a unique bus prefix, identity, accounts-contacts
//! (publishing its events), pipeline (consuming them) and the gateway on free ports; tests
//! speak REST to the gateway as a partner would.

use std::{collections::HashMap, time::Duration};

use crm_bus::BusConfig;
use crm_kit::{Cache, Config, Db, admin};
use reqwest::{Client, RequestBuilder, Response};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
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
    /// The owner connection, for looking at what services wrote (the outbox).
    pub admin: DatabaseConnection,
    /// The runtime pool (row-level security applies).
    pub db: Db,
    admin_url: String,
    bus: BusConfig,
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
                    // Services are cancelled; give their pools a moment to close.
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

/// Removes the test's queues (pipeline's) and exchanges.
async fn delete_bus(bus: &BusConfig) {
    crm_bus::consumer::delete_topology(bus, &["pipeline"]).await;
}

pub async fn spawn() -> TestStack {
    init_tracing();
    let name = format!("pipeline_it_{}", Uuid::new_v4().simple());
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
        ("CRM_GATEWAY_HTTP_PORT".into(), "0".into()),
        ("CRM_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        // Tests create many users and records quickly.
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
    let bus = BusConfig::new(
        env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        format!("it{}.", &Uuid::new_v4().simple().to_string()[..12]),
    );

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
    let identity_url = format!("http://{}", identity.grpc_addr().expect("addr"));
    tokio::spawn(identity.run_until_stopped(cancel.clone()));
    env.insert("CRM_IDENTITY_URL".into(), identity_url);
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
    let accounts_url = format!("http://{}", accounts.grpc_addr().expect("addr"));
    env.insert("CRM_ACCOUNTS_CONTACTS_URL".into(), accounts_url.clone());
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
    let pipeline_url = format!("http://{}", pipeline.grpc_addr().expect("addr"));
    env.insert("CRM_PIPELINE_URL".into(), pipeline_url);
    tokio::spawn(pipeline.run_until_stopped(cancel.clone()));

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
        admin_url,
        bus,
        cancel,
    }
}

/// A user of a tenant, logged in.
#[derive(Clone)]
pub struct User {
    pub id: String,
    pub token: String,
    pub tenant_slug: String,
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
            id: b["user"]["id"].as_str().expect("id").to_owned(),
            token: b["accessToken"].as_str().expect("token").to_owned(),
            tenant_slug: slug,
        }
    }

    /// Creates a user with a role in the admin's tenant and logs them in.
    pub async fn user(&self, admin: &User, role: &str) -> User {
        let email = format!("{}@acme.test", &Uuid::new_v4().simple().to_string()[..10]);
        let res = self
            .post(
                admin,
                "/users",
                json!({"email": email, "name": "Someone", "role": role, "password": PASSWORD}),
            )
            .send()
            .await
            .expect("create user");
        assert_eq!(res.status(), 201, "create user");
        let u: Value = res.json().await.expect("json");
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
            id: u["id"].as_str().expect("id").to_owned(),
            token: t["accessToken"].as_str().expect("token").to_owned(),
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

    /// Every page of a list, following nextCursor.
    pub async fn all(&self, u: &User, path_and_query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        loop {
            let mut url = path_and_query.to_owned();
            if let Some(c) = &cursor {
                url.push_str(&format!("{sep}cursor={c}"));
            }
            let res = self.get(u, &url).send().await.expect("list");
            assert_eq!(res.status(), 200, "list {url}");
            let b: Value = res.json().await.expect("json");
            out.extend(b["items"].as_array().cloned().unwrap_or_default());
            match b["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    /// The outbox rows of the pipeline schema, oldest first: (type, payload).
    pub async fn events(&self) -> Vec<(String, Value)> {
        let rows = self
            .admin
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT event_type, payload FROM pipeline.outbox ORDER BY created_at, id",
            ))
            .await
            .expect("outbox");
        rows.iter()
            .map(|r| {
                (
                    r.try_get::<String>("", "event_type").expect("type"),
                    r.try_get::<Value>("", "payload").expect("payload"),
                )
            })
            .collect()
    }
}

/// Asserts a problem+json answer with this status and code, and returns its body.
pub async fn problem(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let b: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "status: {b}");
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct}"
    );
    assert_eq!(b["code"], code, "{b}");
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

/// A string field of a JSON body.
pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_owned()
}

impl TestStack {
    /// Creates an account in accounts-contacts and returns its id.
    pub async fn account(&self, u: &User, name: &str) -> String {
        s(
            &self.create(u, "/accounts", json!({"name": name})).await,
            "id",
        )
    }

    /// The tenant's default pipeline of an object type.
    pub async fn default_pipeline(&self, u: &User, object_type: &str) -> Value {
        let res = self
            .get(u, &format!("/pipelines?objectType={object_type}"))
            .send()
            .await
            .expect("pipelines");
        assert_eq!(res.status(), 200);
        let b: Value = res.json().await.expect("json");
        b["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|p| p["isDefault"] == true)
            .cloned()
            .expect("default pipeline")
    }

    /// Creates an opportunity on a new account of `u` and returns it.
    pub async fn opportunity(&self, u: &User, body: Value) -> Value {
        self.create(u, "/opportunities", body).await
    }

    /// Moves an opportunity's stage.
    pub async fn move_stage(&self, u: &User, id: &str, body: Value) -> Response {
        self.post(u, &format!("/opportunities/{id}/stage"), body)
            .send()
            .await
            .expect("move")
    }

    /// Waits until `probe` answers something, polling; panics after a generous while.
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        for _ in 0..300 {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} never happened");
    }
}
