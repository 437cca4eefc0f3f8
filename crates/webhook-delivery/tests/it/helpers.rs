//! A whole stack per test: a fresh database, a bus prefix of its own, identity, the webhook
//! service and the gateway on free ports, and a real local HTTP receiver.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use crm_bus::BusConfig;
use crm_kit::{Cache, Config, Db, admin};
use crm_webhook_delivery::{WebhookSettings, crypto::SecretCipher, worker::Worker};
use reqwest::{Client, RequestBuilder, Response as HttpResponse};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinHandle};
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
        let cfg = Config::from_map(&HashMap::from([(
            "CRM_LOG_FORMAT".to_owned(),
            "pretty".to_owned(),
        )]));
        if let Ok(cfg) = cfg
            && let Ok(t) = crm_kit::telemetry::init("test", &cfg)
        {
            std::mem::forget(t);
        }
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// A local HTTP server that answers each path with a scripted sequence of status codes:
/// `/s/<name>/<code>,<code>,...` answers the n-th request with the n-th code (the last one
/// repeats); code 0 never answers; code 1 answers 200 once the test opens the gate; 3xx
/// redirects to `/s/<name>-target/200`.
#[derive(Clone)]
pub struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    /// Requests whose handler has started but not returned (hanging ones).
    pending: Arc<Mutex<HashMap<String, i64>>>,
    /// Closed until [`Receiver::open_gate`]: code 1 waits for it.
    gate: Arc<Semaphore>,
    pub addr: Option<SocketAddr>,
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            hits: Arc::default(),
            counts: Arc::default(),
            pending: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            addr: None,
        }
    }
}

struct Pending(Arc<Mutex<HashMap<String, i64>>>, String);

impl Drop for Pending {
    fn drop(&mut self) {
        *self
            .0
            .lock()
            .expect("lock")
            .entry(self.1.clone())
            .or_default() -= 1;
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path((name, script)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/s/{name}/{script}");
    r.hits.lock().expect("lock").push(Hit {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
    });
    let n = {
        let mut counts = r.counts.lock().expect("lock");
        let c = counts.entry(path.clone()).or_default();
        *c += 1;
        *c
    };
    let codes: Vec<u16> = script.split(',').filter_map(|c| c.parse().ok()).collect();
    let code = codes.get(n - 1).or(codes.last()).copied().unwrap_or(200);
    *r.pending
        .lock()
        .expect("lock")
        .entry(path.clone())
        .or_default() += 1;
    let _pending = Pending(r.pending.clone(), path);
    if code == 0 {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if code == 1 {
        let _open = r.gate.acquire().await;
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    if status.is_redirection() {
        return (
            status,
            [("location", format!("/s/{name}-target/200"))],
            "moved",
        )
            .into_response();
    }
    (status, format!("answer {code} to request {n}")).into_response()
}

impl Receiver {
    async fn start(cancel: CancellationToken) -> Self {
        let mut r = Receiver::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        r.addr = Some(listener.local_addr().expect("addr"));
        let app = Router::new()
            .route("/s/{name}/{script}", post(receive))
            .with_state(r.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { cancel.cancelled().await })
                .await
        });
        r
    }

    /// The URL of a scripted path.
    pub fn url(&self, name: &str, script: &str) -> String {
        format!("http://{}/s/{name}/{script}", self.addr.expect("started"))
    }

    /// Every request to paths starting with `/s/<name>/`.
    pub fn hits(&self, name: &str) -> Vec<Hit> {
        let prefix = format!("/s/{name}/");
        self.hits
            .lock()
            .expect("lock")
            .iter()
            .filter(|h| h.path.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// Lets every request waiting at a gate (code 1) answer 200, now and from now on.
    pub fn open_gate(&self) {
        self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Requests to `/s/<name>/` still waiting for their answer.
    pub fn hanging(&self, name: &str) -> i64 {
        let prefix = format!("/s/{name}/");
        self.pending
            .lock()
            .expect("lock")
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| *v)
            .sum()
    }
}

#[derive(Default)]
pub struct Options {
    pub extra_env: Vec<(&'static str, String)>,
}

pub struct TestStack {
    pub base: String,
    pub http: Client,
    pub receiver: Receiver,
    pub db: Db,
    pub admin_url: String,
    settings: WebhookSettings,
    kek: [u8; 32],
    bus: BusConfig,
    worker: Mutex<Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>>,
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
                    crm_bus::consumer::delete_topology(&bus, &["webhook-delivery"]).await;
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
    let id = Uuid::new_v4().simple().to_string();
    let name = format!("webhooks_it_{id}");
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
    let amqp_url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let prefix = format!("wh-it-{}.", &id[..12]);

    let mut env: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), runtime.to_string()),
        ("CRM_DATABASE_ADMIN_URL".into(), admin_url.clone()),
        ("REDIS_URL".into(), redis_url.clone()),
        ("AMQP_URL".into(), amqp_url.clone()),
        ("CRM_BUS_PREFIX".into(), prefix.clone()),
        ("CRM_IDENTITY_GRPC_PORT".into(), "0".into()),
        ("CRM_IDENTITY_HTTP_PORT".into(), "0".into()),
        ("CRM_WEBHOOK_DELIVERY_GRPC_PORT".into(), "0".into()),
        ("CRM_WEBHOOK_DELIVERY_HTTP_PORT".into(), "0".into()),
        ("CRM_GATEWAY_HTTP_PORT".into(), "0".into()),
        ("CRM_TRUSTED_PROXIES".into(), "127.0.0.1".into()),
        // Shrunk so a whole retry schedule fits in a test.
        (
            "CRM_WEBHOOK_RETRY_SCHEDULE_SECS".into(),
            "0.2,0.2,0.2".into(),
        ),
        ("CRM_WEBHOOK_THROTTLE_MIN_SECS".into(), "0.5".into()),
        ("CRM_WEBHOOK_TIMEOUT_SECS".into(), "2".into()),
        ("CRM_WEBHOOK_POLL_SECS".into(), "0.1".into()),
        ("CRM_WEBHOOK_PER_ENDPOINT_CONCURRENCY".into(), "2".into()),
        // The receiver listens on loopback: the allow-list opens it, http is allowed.
        ("CRM_WEBHOOK_ALLOW_NETS".into(), "127.0.0.1/32".into()),
        ("CRM_WEBHOOK_ALLOW_HTTP".into(), "true".into()),
    ]);
    for (k, v) in &opts.extra_env {
        env.insert((*k).to_owned(), v.clone());
    }
    let config = Config::from_map(&env).expect("config");
    let db = Db::connect(config.database_url.expose_secret(), 10)
        .await
        .expect("db");
    db.check_runtime_role().await.expect("runtime role");
    let cache = Cache::connect(&redis_url).await.expect("redis");
    let bus = BusConfig::new(amqp_url, prefix);
    let cancel = CancellationToken::new();
    let receiver = Receiver::start(cancel.clone()).await;

    let identity = crm_identity::Application::build(
        &config,
        crm_identity::Deps {
            db: db.clone(),
            cache: cache.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await
    .expect("identity");
    let identity_addr = identity.grpc_addr().expect("addr");
    tokio::spawn(identity.run_until_stopped(cancel.clone()));
    env.insert("CRM_IDENTITY_URL".into(), format!("http://{identity_addr}"));
    let config = Config::from_map(&env).expect("config");

    let settings = WebhookSettings::from_map(&env, config.env).expect("webhook settings");
    let mut webhooks = crm_webhook_delivery::Application::build(
        &config,
        settings.clone(),
        crm_webhook_delivery::Deps {
            db: db.clone(),
            bus: Some(bus.clone()),
        },
    )
    .await
    .expect("webhooks");
    let webhooks_addr = webhooks.grpc_addr().expect("addr");
    let worker = webhooks.take_worker().expect("worker");
    let worker_cancel = cancel.child_token();
    let worker_task = tokio::spawn(worker.run(worker_cancel.clone()));
    tokio::spawn(webhooks.run_until_stopped(cancel.clone()));

    env.insert(
        "CRM_WEBHOOK_DELIVERY_URL".into(),
        format!("http://{webhooks_addr}"),
    );
    let settings_gw =
        crm_gateway::GatewaySettings::from_map(&env, &config.identity_url).expect("settings");
    let gateway = crm_gateway::Application::build(&config, settings_gw, cache)
        .await
        .expect("gateway");
    let addr = gateway.addr().expect("addr");
    tokio::spawn(gateway.run_until_stopped(cancel.clone()));

    TestStack {
        base: format!("http://{addr}/api/v1"),
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(forwarded_for())
            .build()
            .expect("client"),
        receiver,
        db,
        admin_url,
        settings,
        kek: *config.key_encryption_key.expose_secret(),
        bus,
        worker: Mutex::new(Some((worker_cancel, worker_task))),
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
    pub token: String,
}

impl TestStack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the delivery worker where it is, tries in flight included, as a crash would:
    /// nothing is recorded or handed back.
    pub async fn kill_worker(&self) {
        let worker = self.worker.lock().expect("lock").take();
        if let Some((_, task)) = worker {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops the delivery worker as a deploy does and waits until it has drained.
    pub async fn stop_worker(&self) {
        let worker = self.worker.lock().expect("lock").take();
        if let Some((cancel, task)) = worker {
            cancel.cancel();
            task.await.expect("worker task").expect("worker");
        }
    }

    /// Starts a new delivery worker on the same database.
    pub fn restart_worker(&self) {
        self.restart_worker_with(self.settings.clone());
    }

    /// Starts a new delivery worker with other settings.
    pub fn restart_worker_with(&self, settings: WebhookSettings) {
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(self.new_worker(settings).run(cancel.clone()));
        *self.worker.lock().expect("lock") = Some((cancel, task));
    }

    /// Starts another delivery worker beside the current one; it stops with the stack.
    pub fn another_worker(&self) {
        let worker = self.new_worker(self.settings.clone());
        tokio::spawn(worker.run(self.cancel.child_token()));
    }

    fn new_worker(&self, settings: WebhookSettings) -> Worker {
        Worker::new(
            self.db.clone(),
            Arc::new(settings),
            SecretCipher::derive(&self.kek),
        )
        .expect("worker")
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
        assert_eq!(res.status().as_u16(), 201, "signup");
        let b: Value = res.json().await.expect("json");
        Tenant {
            token: b["accessToken"].as_str().expect("token").to_owned(),
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

    pub fn delete(&self, t: &Tenant, path: &str) -> RequestBuilder {
        self.http.delete(self.url(path)).bearer_auth(&t.token)
    }

    /// Creates an endpoint; returns (id, secret).
    pub async fn endpoint(&self, t: &Tenant, url: &str, types: &[&str]) -> (String, String) {
        let res = self
            .post(
                t,
                "/webhooks/endpoints",
                json!({"url": url, "eventTypes": types}),
            )
            .send()
            .await
            .expect("create endpoint");
        assert_eq!(res.status().as_u16(), 201, "create endpoint");
        let b: Value = res.json().await.expect("json");
        (
            b["id"].as_str().expect("id").to_owned(),
            b["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// Creates a team: identity publishes `team.created`.
    pub async fn team(&self, t: &Tenant, name: &str) {
        let res = self
            .post(t, "/teams", json!({"name": name}))
            .send()
            .await
            .expect("create team");
        assert_eq!(res.status().as_u16(), 201, "create team");
    }

    /// An endpoint at the receiver's gated path (`gated`), and a team whose `team.created`
    /// try to it hangs at the gate; returns the endpoint's id.
    pub async fn try_held_at_gate(&self, t: &Tenant, team: &str) -> String {
        let (endpoint, _) = self
            .endpoint(t, &self.receiver.url("gated", "1"), &["team.created"])
            .await;
        self.team(t, team).await;
        eventually("the try is in flight", || async {
            (self.receiver.hanging("gated") == 1).then_some(())
        })
        .await;
        endpoint
    }

    pub async fn deliveries(&self, t: &Tenant, endpoint: &str) -> Vec<Value> {
        let res = self
            .get(t, &format!("/webhooks/endpoints/{endpoint}/deliveries"))
            .send()
            .await
            .expect("deliveries");
        assert_eq!(res.status().as_u16(), 200, "deliveries");
        let b: Value = res.json().await.expect("json");
        b["items"].as_array().cloned().unwrap_or_default()
    }
}

/// The number in column `n` of the one row `sql` returns.
pub async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    sea_orm::ConnectionTrait::query_one_raw(
        db,
        sea_orm::Statement::from_string(sea_orm::DatabaseBackend::Postgres, sql),
    )
    .await
    .expect("count")
    .expect("a row")
    .try_get::<i64>("", "n")
    .expect("n")
}

/// Polls `f` every 100 ms until it gives a value; fails after 30 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting: {what}");
}

/// Asserts a problem+json answer with this status and code, and returns its body.
pub async fn problem(res: HttpResponse, status: u16, code: &str) -> Value {
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
    let b: Value = res.json().await.expect("problem body");
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
