//! Benchmarks of the platform's hot paths against the real local services: token
//! verification, logins over gRPC, and the outbox relay. Each binary in `src/bin` makes
//! its own scratch database and bus prefix with [`Scratch`] and prints a markdown table.

pub mod names;
pub mod stack;

use std::{sync::Mutex, time::Duration};

use anyhow::Context as _;
use crm_bus::BusConfig;
use crm_kit::{Db, admin};
use lapin::{Channel, Connection, ConnectionProperties, options::QueueDeleteOptions};
use uuid::Uuid;

/// The login role services run as; shared by every scratch database, so never dropped.
pub const RUNTIME_ROLE: &str = "crm_app";

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Logs to stderr when `RUST_LOG` is set; silent otherwise so the tables stay readable.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A random database and bus prefix for one benchmark run, removed by [`Scratch::cleanup`].
pub struct Scratch {
    /// Superuser URL of the scratch database.
    pub admin_url: String,
    /// Runtime-role URL of the scratch database.
    pub runtime_url: String,
    /// The broker, with this run's exchange and queue prefix.
    pub bus: BusConfig,
    pub redis_url: String,
    queues: Mutex<Vec<String>>,
    /// Services whose consumers run under this run's prefix.
    consumers: Mutex<Vec<String>>,
}

impl Scratch {
    /// Creates a database named `bench_<tag>_<random>` and picks a random bus prefix.
    pub async fn create(tag: &str) -> anyhow::Result<Self> {
        let base = env_or(
            "CRM_DATABASE_ADMIN_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let name = format!("bench_{tag}_{}", Uuid::new_v4().simple());
        let admin_url = admin::with_database(&base, &name)?;
        admin::ensure_database(&admin_url)
            .await
            .context("cannot create the scratch database: is PostgreSQL running?")?;
        let mut runtime = url::Url::parse(&admin_url).context("admin url")?;
        runtime
            .set_username(RUNTIME_ROLE)
            .map_err(|()| anyhow::anyhow!("cannot set the runtime role in {admin_url}"))?;
        runtime
            .set_password(None)
            .map_err(|()| anyhow::anyhow!("cannot clear the password in {admin_url}"))?;
        let amqp = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let prefix = format!("bench{}.", Uuid::new_v4().simple());
        Ok(Self {
            admin_url,
            runtime_url: runtime.to_string(),
            bus: BusConfig::new(amqp, prefix),
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            queues: Mutex::new(Vec::new()),
            consumers: Mutex::new(Vec::new()),
        })
    }

    /// Runs every service's migrations, as `crm migrate` does.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        crm_migrations::migrate_all(&self.admin_url, RUNTIME_ROLE)
            .await
            .context("migrating the scratch database")
    }

    /// A pool connected as the runtime role, checked as services check it.
    pub async fn runtime_db(&self, max_connections: u32) -> anyhow::Result<Db> {
        let db = Db::connect(&self.runtime_url, max_connections)
            .await
            .context("connecting as the runtime role")?;
        db.check_runtime_role().await?;
        Ok(db)
    }

    /// A broker connection and channel named after this run's prefix.
    pub async fn amqp(&self, role: &str) -> anyhow::Result<(Connection, Channel)> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{}{role}", self.bus.prefix).into());
        let conn = Connection::connect(&self.bus.amqp_url, props)
            .await
            .context("connecting to RabbitMQ: is it running?")?;
        let channel = conn.create_channel().await.context("opening a channel")?;
        Ok((conn, channel))
    }

    /// A queue name under this run's prefix, deleted on cleanup.
    pub fn queue(&self, name: &str) -> String {
        let queue = format!("{}{name}", self.bus.prefix);
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(queue.clone());
        queue
    }

    /// Records that `service`'s consumer runs under this run's prefix: its queue, retry
    /// and dead-letter queues are deleted on cleanup.
    pub fn consumer(&self, service: &str) {
        self.consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(service.to_owned());
    }

    /// Deletes the queues, the consumers' topologies, the prefixed exchanges and the
    /// database; reports what it could not.
    pub async fn cleanup(self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|e| e.into_inner()));
        if !queues.is_empty() {
            match self.amqp("cleanup").await {
                Ok((conn, channel)) => {
                    for queue in &queues {
                        if let Err(e) = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await
                        {
                            eprintln!("warning: cannot delete queue {queue}: {e}");
                        }
                    }
                    let _ = conn.close(200, "bench done".into()).await;
                }
                Err(e) => eprintln!("warning: broker cleanup skipped: {e:#}"),
            }
        }
        let consumers =
            std::mem::take(&mut *self.consumers.lock().unwrap_or_else(|e| e.into_inner()));
        let consumers: Vec<&str> = consumers.iter().map(String::as_str).collect();
        crm_bus::consumer::delete_topology(&self.bus, &consumers).await;
        if let Err(e) = admin::drop_database(&self.admin_url).await {
            eprintln!("warning: cannot drop the scratch database: {e}");
        }
    }
}

/// Latencies of one measured path, and the wall time it ran for.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    latencies: Vec<Duration>,
    /// Items per sample (events in a relay batch); 1 for a call.
    items: u64,
    wall: Duration,
}

impl Samples {
    /// Records one call (or one batch of `items`) that took `latency`.
    pub fn record(&mut self, latency: Duration, items: u64) {
        self.latencies.push(latency);
        self.items += items;
    }

    /// Adds wall-clock time spent on this path.
    pub fn add_wall(&mut self, wall: Duration) {
        self.wall += wall;
    }

    /// Folds another run of the same path into this one.
    pub fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.items += other.items;
        self.wall += other.wall;
    }

    /// Percentiles (nearest rank) and throughput.
    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> Duration {
            if sorted.is_empty() {
                return Duration::ZERO;
            }
            let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        let secs = self.wall.as_secs_f64();
        Summary {
            samples: sorted.len(),
            items: self.items,
            per_sec: if secs > 0.0 {
                self.items as f64 / secs
            } else {
                0.0
            },
            p50: pct(50.0),
            p95: pct(95.0),
            p99: pct(99.0),
        }
    }
}

/// What a table row shows.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub samples: usize,
    pub items: u64,
    pub per_sec: f64,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

/// Microseconds with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// `a / b` with two decimals, or a dash when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// A rate with a thousands-friendly precision.
pub fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// One line on the machine, printed above every table.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "machine: {cores} cores available, {} {}; at {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.record(Duration::from_millis(i), 1);
        }
        s.add_wall(Duration::from_secs(2));
        let sum = s.summary();
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p95, Duration::from_millis(95));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.items, 100);
        assert!((sum.per_sec - 50.0).abs() < 1e-9);
    }
}
