//! Login throttling in the cache: after a few failures an account (or a client address) must
//! wait, and the wait doubles with each further failure up to a cap. Nothing is ever locked
//! for good: counters expire on their own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crm_kit::{ApiError, ApiResult, Cache, ErrorCode};

/// Failures before an account has to wait.
pub const ACCOUNT_THRESHOLD: i64 = 5;
/// Failures before a client address has to wait.
pub const ADDRESS_THRESHOLD: i64 = 20;
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// How long failures are remembered.
pub const WINDOW: Duration = Duration::from_secs(60 * 60);

/// Growing delays per key.
#[derive(Clone, Debug)]
pub struct Throttle {
    cache: Cache,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wait after `failures` failures past `threshold`.
pub fn delay_after(failures: i64, threshold: i64) -> Option<Duration> {
    if failures < threshold {
        return None;
    }
    let exp = (failures - threshold).clamp(0, 20) as u32;
    Some(Duration::from_secs(1u64 << exp).min(MAX_DELAY))
}

impl Throttle {
    /// Throttling on a cache.
    pub fn new(cache: Cache) -> Self {
        Self { cache }
    }

    /// Refuses the attempt when any key is waiting.
    pub async fn check(&self, keys: &[String]) -> ApiResult<()> {
        for k in keys {
            match self.cache.get(&format!("throttle:block:{k}")).await {
                Ok(Some(until)) => {
                    let until: u64 = until.parse().unwrap_or(0);
                    let now = now_millis();
                    if until > now {
                        // Round up: a client that waits the advertised time is let in.
                        let wait = (until - now).div_ceil(1000);
                        return Err(ApiError::new(
                            ErrorCode::RateLimited,
                            "too many failed attempts; try again later",
                        )
                        .with_retry_after(Duration::from_secs(wait)));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    // Logins keep working without the cache; throttling resumes when it is back.
                    metrics::counter!("crm_login_throttle_unavailable_total").increment(1);
                    tracing::warn!(error = %e, "login throttle unavailable");
                }
            }
        }
        Ok(())
    }

    /// Counts a failure and starts a wait once the threshold is reached.
    pub async fn failed(&self, key: &str, threshold: i64) {
        let res = async {
            let n = self
                .cache
                .incr(&format!("throttle:fail:{key}"), WINDOW)
                .await?;
            if let Some(d) = delay_after(n, threshold) {
                let until = now_millis() + d.as_millis() as u64;
                self.cache
                    .set(&format!("throttle:block:{key}"), &until.to_string(), d)
                    .await?;
            }
            Ok::<_, crm_kit::cache::CacheError>(())
        }
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "login throttle unavailable");
        }
    }

    /// Forgets the failures of a key.
    pub async fn succeeded(&self, key: &str) {
        let keys = [
            format!("throttle:fail:{key}"),
            format!("throttle:block:{key}"),
        ];
        if let Err(e) = self.cache.del(&keys).await {
            tracing::warn!(error = %e, "login throttle unavailable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        assert_eq!(delay_after(4, 5), None);
        assert_eq!(delay_after(5, 5), Some(Duration::from_secs(1)));
        assert_eq!(delay_after(7, 5), Some(Duration::from_secs(4)));
        assert_eq!(delay_after(100, 5), Some(MAX_DELAY));
    }
}
