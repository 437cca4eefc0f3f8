//! A fresh database and bus prefix per test, and probes to watch what the broker sees.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use crm_bus::{
    BusConfig, Consumer, ConsumerOptions, Event, Handler, HandlerError, Probe, Relay, outbox,
};
use crm_kit::{
    admin,
    db::{Db, TenantTx},
    ids::TenantId,
};
use lapin::{
    Channel, Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::json;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};
use uuid::Uuid;

pub const SCHEMA: &str = "bus_test";
pub const RUNTIME_ROLE: &str = "crm_app";

/// Spans get OpenTelemetry contexts so trace propagation can be observed; logs only with TEST_LOG.
pub fn init_tracing() {
    static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("crm-bus-tests"));
        let fmt = std::env::var_os("TEST_LOG").map(|_| {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(filter)
        });
        let _ = tracing_subscriber::registry()
            .with(otel)
            .with(fmt)
            .try_init();
        provider
    });
}

pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn admin_base_url() -> String {
    std::env::var("CRM_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// One test's world: its own database, its own bus prefix; removed on drop.
pub struct TestEnv {
    pub db: Db,
    pub admin: DatabaseConnection,
    pub bus: BusConfig,
    admin_url: String,
    queues: Mutex<Vec<String>>,
    roles: Mutex<Vec<String>>,
}

impl TestEnv {
    pub async fn new() -> Self {
        init_tracing();
        let name = format!("bus_it_{}", Uuid::new_v4().simple());
        let admin_url = admin::with_database(&admin_base_url(), &name).expect("admin url");
        admin::ensure_database(&admin_url)
            .await
            .expect("create test database");
        let admin = Database::connect(admin_url.as_str())
            .await
            .expect("connect as admin");
        admin::ensure_runtime_role(&admin, RUNTIME_ROLE)
            .await
            .expect("runtime role");
        admin
            .execute_unprepared(&outbox::ddl(SCHEMA, RUNTIME_ROLE))
            .await
            .expect("outbox ddl");
        admin
            .execute_unprepared(&format!(
                "CREATE TABLE {SCHEMA}.effects (tenant_id uuid NOT NULL, event_id uuid NOT NULL);
                 ALTER TABLE {SCHEMA}.effects ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE {SCHEMA}.effects FORCE ROW LEVEL SECURITY;
                 CREATE POLICY effects_tenant ON {SCHEMA}.effects TO {RUNTIME_ROLE}
                   USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
                   WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
                 GRANT SELECT, INSERT ON {SCHEMA}.effects TO {RUNTIME_ROLE};"
            ))
            .await
            .expect("effects table");

        let mut app_url = url::Url::parse(&admin_url).expect("admin url parses");
        app_url.set_username(RUNTIME_ROLE).expect("set user");
        app_url.set_password(None).expect("clear password");
        let db = Db::connect(app_url.as_str(), 8)
            .await
            .expect("connect as runtime role");
        db.check_runtime_role().await.expect("runtime role is fit");

        let prefix = format!("t{}.", Uuid::new_v4().simple());
        Self {
            db,
            admin,
            bus: BusConfig::new(amqp_url(), prefix),
            admin_url,
            queues: Mutex::new(Vec::new()),
            roles: Mutex::new(Vec::new()),
        }
    }

    /// A fresh role that can create schemas in this database, dropped with the environment.
    pub async fn owner_role(&self) -> String {
        let role = format!("bus_it_owner_{}", Uuid::new_v4().simple());
        let database = admin::database_name(&self.admin_url).expect("database name");
        self.admin
            .execute_unprepared(&format!(
                "CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS;
                 GRANT CREATE ON DATABASE \"{database}\" TO {role};"
            ))
            .await
            .expect("create owner role");
        self.roles.lock().expect("role list").push(role.clone());
        role
    }

    pub fn relay(&self) -> Relay {
        Relay::new(self.db.clone(), SCHEMA, self.bus.clone())
    }

    /// A consumer whose queues are deleted with the environment.
    pub fn consumer(
        &self,
        service: &str,
        bindings: &[&str],
        handler: Arc<dyn Handler>,
        opts: ConsumerOptions,
    ) -> Consumer {
        let tiers = opts.retry_delays.len();
        let consumer = Consumer::new(
            self.db.clone(),
            SCHEMA,
            self.bus.clone(),
            service,
            bindings.iter().map(|b| b.to_string()).collect(),
            handler,
            opts,
        );
        let mut queues = self.queues.lock().expect("queue list");
        queues.push(consumer.queue().to_owned());
        queues.push(consumer.dead_letter_queue().to_owned());
        queues.extend((1..=tiers).map(|n| format!("{}.retry.{n}", consumer.queue())));
        consumer
    }

    /// A test-side broker connection, named so it is never mistaken for a consumer's.
    pub async fn amqp(&self) -> (Connection, Channel) {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{}probe", self.bus.prefix).into());
        let conn = Connection::connect(&self.bus.amqp_url, props)
            .await
            .expect("connect to broker");
        let channel = conn.create_channel().await.expect("channel");
        (conn, channel)
    }

    /// A queue bound to the events exchange with `pattern`, to see what the relay publishes.
    pub async fn probe(&self, pattern: &str) -> Probe {
        let probe = Probe::bind(&self.bus, pattern).await.expect("probe queue");
        self.queues
            .lock()
            .expect("queue list")
            .push(probe.queue().to_owned());
        probe
    }

    /// Writes `event` to the outbox in its tenant's transaction and commits.
    pub async fn commit_event(&self, event: &Event) {
        let tx = self.db.tenant_tx(event.tenantid).await.expect("tenant tx");
        outbox::append(&tx, SCHEMA, event).await.expect("append");
        tx.commit().await.expect("commit");
    }

    /// How many effects the handlers recorded for `event_id` (read as superuser, across tenants).
    pub async fn effects(&self, event_id: Uuid) -> i64 {
        self.admin_count(
            &format!("SELECT count(*) AS n FROM {SCHEMA}.effects WHERE event_id = $1"),
            event_id,
        )
        .await
    }

    pub async fn admin_count(&self, sql: &str, id: Uuid) -> i64 {
        self.admin
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [id.into()],
            ))
            .await
            .expect("count query")
            .expect("one row")
            .try_get("", "n")
            .expect("count column")
    }

    /// Messages ready in `queue` (not counting those delivered and unacknowledged).
    pub async fn ready(&self, channel: &Channel, queue: &str) -> u32 {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let bus = self.bus.clone();
        let queues = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|e| e.into_inner()));
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|e| e.into_inner()));
        // Async cleanup cannot run inside Drop on the test's runtime; a scratch runtime can.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(conn) =
                    Connection::connect(&bus.amqp_url, ConnectionProperties::default()).await
                    && let Ok(channel) = conn.create_channel().await
                {
                    for queue in &queues {
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
                if !roles.is_empty()
                    && let Ok(maintenance) = Database::connect(admin_base_url()).await
                {
                    for role in &roles {
                        let _ = maintenance
                            .execute_unprepared(&format!("DROP ROLE IF EXISTS {role}"))
                            .await;
                    }
                    let _ = maintenance.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Polls `check` until it holds, failing the test after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `user.created` event for `tenant`, created inside a traced span.
pub fn user_created(tenant: TenantId) -> Event {
    let span = tracing::info_span!("create_user");
    span.in_scope(|| {
        let user = Uuid::now_v7();
        Event::new(
            "identity",
            "user.created",
            tenant,
            Some(Uuid::now_v7()),
            "user",
            user,
            None,
            Some(json!({"id": user, "email": "someone@example.com"})),
        )
    })
}

/// What a test handler does with each event.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Record,
    FailTransient,
    FailPermanent,
    /// Records after a pause, to be caught in flight by a shutdown.
    RecordSlowly(Duration),
}

/// A handler that records an effect row per event and remembers the trace it ran in.
pub struct TestHandler {
    pub behaviour: Behaviour,
    pub calls: AtomicUsize,
    pub trace_ids: Mutex<Vec<String>>,
}

impl TestHandler {
    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            calls: AtomicUsize::new(0),
            trace_ids: Mutex::new(Vec::new()),
        })
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Handler for TestHandler {
    async fn handle(&self, tx: &TenantTx, event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let cx = tracing::Span::current().context();
        self.trace_ids
            .lock()
            .expect("trace ids")
            .push(cx.span().span_context().trace_id().to_string());
        match self.behaviour {
            Behaviour::FailTransient => {
                return Err(HandlerError::Transient(anyhow::anyhow!(
                    "dependency unavailable"
                )));
            }
            Behaviour::FailPermanent => {
                return Err(HandlerError::Permanent(anyhow::anyhow!("nonsense event")));
            }
            Behaviour::RecordSlowly(pause) => tokio::time::sleep(pause).await,
            Behaviour::Record => {}
        }
        tx.conn()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("INSERT INTO {SCHEMA}.effects (tenant_id, event_id) VALUES ($1, $2)"),
                [tx.tenant().uuid().into(), event.id.into()],
            ))
            .await?;
        Ok(())
    }
}

/// Retry tiers short enough for tests.
pub fn fast_options() -> ConsumerOptions {
    ConsumerOptions {
        retry_delays: vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_millis(300),
        ],
        ..ConsumerOptions::default()
    }
}

/// Closes, from the broker side, every connection whose client-provided name contains `needle`.
pub async fn close_connections_named(needle: &str) -> usize {
    let listing = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        listing.status.success(),
        "rabbitmqctl list_connections failed"
    );
    let pids: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect();
    for pid in &pids {
        let closed = tokio::process::Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "closed by test"])
            .output()
            .await
            .expect("rabbitmqctl runs");
        assert!(
            closed.status.success(),
            "rabbitmqctl close_connection failed"
        );
    }
    pids.len()
}
