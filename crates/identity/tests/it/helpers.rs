//! A fresh identity service per test: its own database, its own bus prefix, ports picked by
//! the OS, and whatever it leaves in Redis and RabbitMQ removed when the test ends.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, Once},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use crm_bus::{BusConfig, Probe};
use crm_identity::keys::{KeyStore, SigningKey};
use crm_kit::{ApiError, Cache, Config, Db, admin};
use crm_proto::identity::{self as pb, identity_service_client::IdentityServiceClient};
use lapin::{
    Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeleteOptions},
};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value,
};
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, transport::Channel as GrpcChannel};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

/// The login role the service runs as.
pub const RUNTIME_ROLE: &str = "crm_app";
/// Every password the tests set: long enough for the policy.
pub const PASSWORD: &str = "correct horse battery staple";
/// How long a test waits for something that happens in the background.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub type Client = IdentityServiceClient<GrpcChannel>;

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn admin_base_url() -> String {
    env_or(
        "CRM_DATABASE_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/",
    )
}

fn redis_url() -> String {
    env_or("REDIS_URL", "redis://127.0.0.1:6379")
}

fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,h2=warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// `url` with another user and no password (local trust authentication).
pub fn as_user(url: &str, user: &str) -> String {
    let mut u = url::Url::parse(url).expect("database url parses");
    u.set_username(user).expect("url takes a user");
    u.set_password(None).expect("url takes no password");
    u.to_string()
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A unique tenant slug.
pub fn unique_slug() -> String {
    format!("t-{}", &Uuid::new_v4().simple().to_string()[..16])
}

/// How a test's service is set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Publish events to RabbitMQ under a fresh prefix.
    pub bus: bool,
    /// Run the migrations as a dedicated non-superuser owner role (the production set-up)
    /// instead of the superuser.
    pub owner_role: bool,
}

/// A running identity service with its own database.
pub struct TestApp {
    pub client: Client,
    pub grpc_addr: SocketAddr,
    /// `http://127.0.0.1:<port>` of the operations endpoints.
    pub http: String,
    /// The runtime pool (role `crm_app`), as the service uses it.
    pub db: Db,
    /// A superuser connection to the test database, to look behind the service's back.
    pub admin: DatabaseConnection,
    pub bus: Option<BusConfig>,
    pub config: Config,
    admin_url: String,
    cancel: CancellationToken,
    cleanup: Mutex<Cleanup>,
}

#[derive(Default)]
struct Cleanup {
    tenants: Vec<String>,
    throttle_keys: Vec<String>,
    queues: Vec<String>,
    roles: Vec<String>,
}

/// A service without a bus: events stay in the outbox.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// A service whose outbox relay publishes to RabbitMQ under a fresh prefix.
pub async fn spawn_app_with_bus() -> TestApp {
    spawn_app_with(Options {
        bus: true,
        ..Options::default()
    })
    .await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    init_tracing();
    let name = format!("identity_it_{}", Uuid::new_v4().simple());
    let admin_url = admin::with_database(&admin_base_url(), &name).expect("admin url");
    let mut roles = Vec::new();
    let migrate_url = if options.owner_role {
        let owner = format!("identity_it_owner_{}", Uuid::new_v4().simple());
        let maintenance = Database::connect(
            admin::with_database(&admin_base_url(), "postgres").expect("maintenance url"),
        )
        .await
        .expect("connect as superuser");
        maintenance
            .execute_unprepared(&format!(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
                quote_ident(&owner)
            ))
            .await
            .expect("create owner role");
        roles.push(owner.clone());
        maintenance
            .execute_unprepared(&format!(
                "CREATE DATABASE {} OWNER {}",
                quote_ident(&name),
                quote_ident(&owner)
            ))
            .await
            .expect("create database owned by the owner role");
        // Roles are cluster-wide; creating them needs a superuser, owning a schema does not.
        crm_migrations::ensure_roles(&maintenance, RUNTIME_ROLE)
            .await
            .expect("runtime roles");
        maintenance.close().await.expect("close maintenance");
        as_user(&admin_url, &owner)
    } else {
        admin_url.clone()
    };
    crm_migrations::migrate_all(&migrate_url, RUNTIME_ROLE)
        .await
        .expect("migrate the test database");

    let mut admin_opts = ConnectOptions::new(admin_url.clone());
    admin_opts
        .max_connections(2)
        .min_connections(0)
        .sqlx_logging(false);
    let admin = Database::connect(admin_opts)
        .await
        .expect("connect as superuser");

    let database_url = as_user(&admin_url, RUNTIME_ROLE);
    let db = Db::connect(&database_url, 4)
        .await
        .expect("connect as runtime role");
    db.check_runtime_role()
        .await
        .expect("runtime role is fit to serve");
    let cache = Cache::connect(&redis_url())
        .await
        .expect("connect to redis");
    let bus = options
        .bus
        .then(|| BusConfig::new(amqp_url(), format!("t{}.", Uuid::new_v4().simple())));

    let mut vars = HashMap::from([
        ("DATABASE_URL".to_owned(), database_url),
        ("CRM_DATABASE_ADMIN_URL".to_owned(), migrate_url),
        ("CRM_DB_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
        ("REDIS_URL".to_owned(), redis_url()),
        ("AMQP_URL".to_owned(), amqp_url()),
    ]);
    if let Some(b) = &bus {
        vars.insert("CRM_BUS_PREFIX".to_owned(), b.prefix.clone());
    }
    let mut config = Config::from_map(&vars).expect("test configuration is valid");
    config.set_ports("identity", 0, 0);

    let app = crm_identity::Application::build(
        &config,
        crm_identity::Deps {
            db: db.clone(),
            cache,
            bus: bus.clone(),
        },
    )
    .await
    .expect("build the identity service");
    let grpc_addr = app.grpc_addr().expect("grpc address");
    let http_addr = app.http_addr().expect("http address");
    let cancel = CancellationToken::new();
    let run = app.run_until_stopped(cancel.clone());
    tokio::spawn(async move {
        if let Err(e) = run.await {
            tracing::error!(error = %e, "identity service stopped with an error");
        }
    });
    let client = connect(grpc_addr).await;
    TestApp {
        client,
        grpc_addr,
        http: format!("http://{http_addr}"),
        db,
        admin,
        bus,
        config,
        admin_url,
        cancel,
        cleanup: Mutex::new(Cleanup {
            roles,
            ..Cleanup::default()
        }),
    }
}

/// A gRPC channel to `addr` on a connection of its own.
pub async fn channel(addr: SocketAddr) -> GrpcChannel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect to the grpc port")
}

async fn connect(addr: SocketAddr) -> Client {
    IdentityServiceClient::new(channel(addr).await)
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("token is ascii"),
    );
    req
}

/// The error of a call that must fail with `code`, read back as the gateway would.
#[track_caller]
pub fn refused<T: std::fmt::Debug>(res: Result<Response<T>, Status>, code: Code) -> ApiError {
    match res {
        Ok(r) => panic!("expected {code:?}, got {:?}", r.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            ApiError::from_status(&s)
        }
    }
}

/// The field names of a validation error.
pub fn fields(e: &ApiError) -> Vec<&str> {
    e.fields.iter().map(|f| f.field.as_str()).collect()
}

/// A tenant created through sign-up, with its first user (an admin).
#[derive(Clone, Debug)]
pub struct SignedUp {
    pub tenant: pb::Tenant,
    pub user: pb::User,
    pub tokens: pb::TokenPair,
    pub email: String,
}

impl SignedUp {
    /// The admin's access token.
    pub fn token(&self) -> &str {
        &self.tokens.access_token
    }

    pub fn slug(&self) -> &str {
        &self.tenant.slug
    }

    pub fn tenant_id(&self) -> Uuid {
        Uuid::parse_str(&self.tenant.id).expect("tenant id is a uuid")
    }
}

impl TestApp {
    /// A client on the shared connection.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client on a connection of its own.
    pub async fn new_client(&self) -> Client {
        connect(self.grpc_addr).await
    }

    /// Signs up a tenant with a unique slug.
    pub async fn sign_up(&self) -> SignedUp {
        let slug = unique_slug();
        let email = format!("admin@{slug}.example.com");
        let r = self
            .client()
            .sign_up(pb::SignUpRequest {
                tenant_name: format!("Tenant {slug}"),
                tenant_slug: slug.clone(),
                email: email.clone(),
                password: PASSWORD.into(),
                name: "Ada Admin".into(),
            })
            .await
            .expect("sign up")
            .into_inner();
        let tenant = r.tenant.expect("tenant");
        self.cleanup
            .lock()
            .expect("cleanup list")
            .tenants
            .push(tenant.id.clone());
        SignedUp {
            tenant,
            user: r.user.expect("user"),
            tokens: r.tokens.expect("tokens"),
            email,
        }
    }

    /// Creates a user as `token`'s caller; no password means no Argon2 hashing.
    pub async fn create_user(
        &self,
        token: &str,
        email: &str,
        role: &str,
        password: Option<&str>,
    ) -> pb::User {
        self.client()
            .create_user(authed(
                token,
                pb::CreateUserRequest {
                    email: email.into(),
                    name: format!("User {email}"),
                    role: role.into(),
                    password: password.unwrap_or_default().into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create user")
            .into_inner()
            .user
            .expect("user")
    }

    /// Logs in; the throttle state this leaves in Redis is removed with the app.
    pub async fn login(
        &self,
        slug: &str,
        email: &str,
        password: &str,
    ) -> Result<pb::TokenPair, Status> {
        let account = URL_SAFE_NO_PAD.encode(Sha256::digest(
            format!(
                "{}\0{}",
                slug.trim().to_lowercase(),
                email.trim().to_lowercase()
            )
            .as_bytes(),
        ));
        {
            let mut c = self.cleanup.lock().expect("cleanup list");
            c.throttle_keys
                .push(format!("throttle:fail:acct:{account}"));
            c.throttle_keys
                .push(format!("throttle:block:acct:{account}"));
        }
        self.client()
            .login(pb::LoginRequest {
                tenant_slug: slug.into(),
                email: email.into(),
                password: password.into(),
                client_address: String::new(),
            })
            .await
            .map(|r| r.into_inner().tokens.expect("tokens"))
    }

    /// The key the service signs access tokens with, read from its key store.
    pub async fn signing_key(&self) -> SigningKey {
        KeyStore::new(
            self.db.clone(),
            SecretBox::new(Box::new(*self.config.key_encryption_key.expose_secret())),
        )
        .current()
        .await
        .expect("current signing key")
    }

    /// The superuser URL of the test database.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Drops a cluster-wide role the test created, after the database is gone.
    pub fn drop_role_later(&self, role: &str) {
        self.cleanup
            .lock()
            .expect("cleanup list")
            .roles
            .push(role.to_owned());
    }

    /// One number from a query run as superuser (sees every tenant's rows).
    pub async fn admin_count(&self, sql: &str, values: Vec<Value>) -> i64 {
        self.admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .expect("one row")
            .try_get_by_index::<i64>(0)
            .expect("a bigint")
    }

    /// A queue bound to the events exchange with `pattern`, deleted with the app.
    pub async fn probe(&self, pattern: &str) -> Probe {
        let bus = self.bus.as_ref().expect("the app was spawned with a bus");
        let probe = Probe::bind(bus, pattern).await.expect("probe queue");
        self.cleanup
            .lock()
            .expect("cleanup list")
            .queues
            .push(probe.queue().to_owned());
        probe
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
        let admin_url = self.admin_url.clone();
        let bus = self.bus.clone();
        let c = std::mem::take(&mut *self.cleanup.lock().unwrap_or_else(|e| e.into_inner()));
        // Async clean-up cannot run inside Drop on the test's runtime; a scratch runtime can.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = redis::Client::open(redis_url())
                    && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                {
                    let mut keys = c.throttle_keys.clone();
                    for tenant in &c.tenants {
                        keys.extend(scan(&mut conn, &format!("perm:*{tenant}*")).await);
                    }
                    if !keys.is_empty() {
                        let _: Result<(), _> =
                            redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
                    }
                }
                if let Some(bus) = &bus
                    && let Ok(conn) =
                        Connection::connect(&bus.amqp_url, ConnectionProperties::default()).await
                    && let Ok(channel) = conn.create_channel().await
                {
                    for queue in &c.queues {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for exchange in [bus.exchange(), bus.dead_letter_exchange()] {
                        let _ = channel
                            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                    let _ = conn.close(200, "test done".into()).await;
                }
                let _ = admin::drop_database(&admin_url).await;
                if !c.roles.is_empty()
                    && let Ok(maintenance) = Database::connect(
                        admin::with_database(&admin_base_url(), "postgres")
                            .unwrap_or_else(|_| admin_base_url()),
                    )
                    .await
                {
                    for role in &c.roles {
                        let _ = maintenance
                            .execute_unprepared(&format!(
                                "DROP ROLE IF EXISTS {}",
                                quote_ident(role)
                            ))
                            .await;
                    }
                    let _ = maintenance.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn scan(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
        else {
            return found;
        };
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// The next event as JSON, with its routing key; fails the test after [`PATIENCE`].
pub async fn next_event(probe: &Probe) -> (String, serde_json::Value) {
    let d = probe
        .next(PATIENCE)
        .await
        .expect("probe")
        .expect("an event within the bounded wait");
    let body = serde_json::from_slice(&d.data).expect("event body is json");
    (d.routing_key.as_str().to_owned(), body)
}

/// `GET {base}{path}` over a plain HTTP/1.0 connection: (status, body).
pub async fn http_get(base: &str, path: &str) -> (u16, String) {
    let host = base.strip_prefix("http://").expect("an http:// base url");
    let fetch = async {
        let mut stream = TcpStream::connect(host)
            .await
            .expect("connect to http port");
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .expect("send request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read response");
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, fetch)
        .await
        .expect("http response within the bounded wait");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, body.to_owned())
}
