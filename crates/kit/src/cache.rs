//! The shared cache: Redis in deployments, an in-process map for `crm up --embedded`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::{AsyncCommands, aio::ConnectionManager};

/// Cache errors (Redis unreachable or misbehaving).
#[derive(Debug, thiserror::Error)]
#[error("cache: {0}")]
pub struct CacheError(String);

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

type Entries = HashMap<String, (String, Option<Instant>)>;

/// Redis, or an in-process stand-in with the same semantics for a single process.
#[derive(Clone)]
pub enum Cache {
    Redis(RedisCache),
    Memory(Arc<Mutex<Entries>>),
}

/// A Redis connection that fails fast while Redis is down, so callers with a fallback
/// (rate limits, throttles, permission caches) are not held up by reconnect attempts.
#[derive(Clone)]
pub struct RedisCache {
    mgr: ConnectionManager,
    down_until: Arc<Mutex<Option<Instant>>>,
}

/// How long each command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// How long to skip Redis after a failure before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl RedisCache {
    /// Runs a command unless Redis failed very recently; marks it down on failure.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, redis::RedisError>>,
    {
        let down = *self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_some_and(|d| Instant::now() < d) {
            return Err(CacheError("redis unavailable".into()));
        }
        let res = match tokio::time::timeout(COMMAND_TIMEOUT, f(self.mgr.clone())).await {
            Ok(r) => r.map_err(CacheError::from),
            Err(_) => Err(CacheError("redis timed out".into())),
        };
        let mut guard = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        *guard = res.is_err().then(|| Instant::now() + RETRY_AFTER_FAILURE);
        res
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(_) => f.write_str("Cache::Redis"),
            Self::Memory(_) => f.write_str("Cache::Memory"),
        }
    }
}

impl Cache {
    /// Connects to Redis.
    pub async fn connect(url: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2);
        let mgr = ConnectionManager::new_with_config(client, cfg).await?;
        Ok(Self::Redis(RedisCache {
            mgr,
            down_until: Arc::new(Mutex::new(None)),
        }))
    }

    /// An in-process cache.
    pub fn memory() -> Self {
        Self::Memory(Arc::new(Mutex::new(HashMap::new())))
    }

    fn with_map<T>(m: &Mutex<Entries>, f: impl FnOnce(&mut Entries) -> T) -> T {
        let mut guard = m.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        guard.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        f(&mut guard)
    }

    /// Checks the connection.
    pub async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Self::Redis(r) => {
                let _: String = r
                    .run(|mut c| async move { redis::cmd("PING").query_async(&mut c).await })
                    .await?;
                Ok(())
            }
            Self::Memory(_) => Ok(()),
        }
    }

    /// Reads a value.
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        match self {
            Self::Redis(r) => r.run(|mut c| async move { c.get(key).await }).await,
            Self::Memory(m) => Ok(Self::with_map(m, |map| {
                map.get(key).map(|(v, _)| v.clone())
            })),
        }
    }

    /// Writes a value with a time to live.
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        match self {
            Self::Redis(r) => {
                r.run(|mut c| async move {
                    c.set_ex::<_, _, ()>(key, value, ttl.as_secs().max(1)).await
                })
                .await
            }
            Self::Memory(m) => {
                Self::with_map(m, |map| {
                    map.insert(
                        key.to_owned(),
                        (value.to_owned(), Some(Instant::now() + ttl)),
                    )
                });
                Ok(())
            }
        }
    }

    /// Writes a value only if the key is absent; returns whether it was written.
    pub async fn set_nx(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        match self {
            Self::Redis(r) => {
                let res: Option<String> = r
                    .run(|mut c| async move {
                        redis::cmd("SET")
                            .arg(key)
                            .arg(value)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl.as_millis().max(1) as u64)
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                Ok(res.is_some())
            }
            Self::Memory(m) => Ok(Self::with_map(m, |map| {
                if map.contains_key(key) {
                    false
                } else {
                    map.insert(
                        key.to_owned(),
                        (value.to_owned(), Some(Instant::now() + ttl)),
                    );
                    true
                }
            })),
        }
    }

    /// Deletes keys.
    pub async fn del(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        match self {
            Self::Redis(r) => {
                r.run(|mut c| async move { c.del::<_, ()>(keys).await })
                    .await
            }
            Self::Memory(m) => {
                Self::with_map(m, |map| {
                    keys.iter().for_each(|k| {
                        map.remove(k);
                    })
                });
                Ok(())
            }
        }
    }

    /// Increments a counter, starting its time to live on first use; returns the new value.
    pub async fn incr(&self, key: &str, ttl: Duration) -> Result<i64, CacheError> {
        match self {
            Self::Redis(r) => {
                let (n, _): (i64, i64) = r
                    .run(|mut c| async move {
                        redis::pipe()
                            .atomic()
                            .incr(key, 1)
                            .cmd("EXPIRE")
                            .arg(key)
                            .arg(ttl.as_secs().max(1))
                            .arg("NX")
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                Ok(n)
            }
            Self::Memory(m) => Ok(Self::with_map(m, |map| {
                let entry = map
                    .entry(key.to_owned())
                    .or_insert_with(|| ("0".into(), Some(Instant::now() + ttl)));
                let n = entry.0.parse::<i64>().unwrap_or(0) + 1;
                entry.0 = n.to_string();
                n
            })),
        }
    }
}
