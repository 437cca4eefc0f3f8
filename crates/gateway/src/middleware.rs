//! Request pipeline: authentication, rate limits and idempotency keys.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::{Body, to_bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use crm_kit::{ApiError, Cache, Caller, ErrorCode, TokenVerifier, auth::bearer};
use sha2::{Digest, Sha256};

use crate::{
    backends::ClientAddress,
    config::Quota,
    error::{GwError, render},
};

/// Records the client address for handlers, rate limits and login throttling. Behind a
/// trusted load balancer it is the right-most X-Forwarded-For entry no trusted proxy added;
/// otherwise the peer of the connection (a client cannot choose its own address).
pub async fn client_address(
    State(trusted): State<Arc<Vec<ipnet::IpNet>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let addr = peer
        .map(|p| resolve_client(p, req.headers(), &trusted).to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(ClientAddress(addr));
    next.run(req).await
}

fn resolve_client(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7, 10.1.2.3".parse().unwrap(),
        );
        let lb: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let outsider: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        // The right-most address a trusted proxy did not add; earlier entries are the client's to forge.
        assert_eq!(resolve_client(lb, &h, &trusted).to_string(), "198.51.100.7");
        assert_eq!(resolve_client(outsider, &h, &trusted), outsider);
        assert_eq!(resolve_client(lb, &HeaderMap::new(), &trusted), lb);
    }
}

/// Verifies the bearer token and hands the caller to the handlers.
pub async fn authenticate(
    State(verifier): State<Arc<TokenVerifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(req.headers().get(header::AUTHORIZATION)) else {
        return unauthorized(ApiError::unauthenticated(
            "missing bearer token in the Authorization header",
        ));
    };
    match verifier.verify(token).await {
        Ok(caller) => {
            tracing::Span::current().record("tenant_id", tracing::field::display(caller.tenant));
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) if e.code == ErrorCode::Unauthenticated => unauthorized(e),
        Err(e) => GwError(e).into_response(),
    }
}

fn unauthorized(e: ApiError) -> Response {
    let mut res = GwError(e).into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// Fixed-window counters in Redis, with an in-process fallback while Redis is unreachable.
#[derive(Clone)]
pub struct RateLimiter {
    shared: Cache,
    local: Cache,
    degraded: Arc<AtomicBool>,
    pub tenant: Quota,
    pub client: Quota,
    pub anonymous: Quota,
}

struct Usage {
    name: &'static str,
    quota: Quota,
    used: u64,
    reset: u64,
}

impl RateLimiter {
    /// Limits counted in `shared`, falling back to a local counter.
    pub fn new(shared: Cache, tenant: Quota, client: Quota, anonymous: Quota) -> Self {
        Self {
            shared,
            local: Cache::memory(),
            degraded: Arc::new(AtomicBool::new(false)),
            tenant,
            client,
            anonymous,
        }
    }

    async fn hit(&self, name: &'static str, key: &str, quota: Quota) -> Usage {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let w = quota.window.as_secs().max(1);
        let slot = format!("rl:{name}:{key}:{}", now / w);
        let used = match self.shared.incr(&slot, quota.window).await {
            Ok(n) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limits are shared again");
                }
                n
            }
            Err(e) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "redis unreachable: rate limits are counted per gateway instance");
                }
                metrics::counter!("crm_gateway_rate_limit_fallback_total").increment(1);
                self.local.incr(&slot, quota.window).await.unwrap_or(0)
            }
        };
        Usage {
            name,
            quota,
            used: used.max(0) as u64,
            reset: w - now % w,
        }
    }
}

/// Applies the tenant and client quotas (or the anonymous one) and sets the RateLimit headers.
pub async fn rate_limit(State(limiter): State<RateLimiter>, req: Request, next: Next) -> Response {
    let usages = match req.extensions().get::<Caller>() {
        Some(c) => {
            let subject = c.client_id.clone().unwrap_or_else(|| c.subject.to_string());
            let (tenant_key, client_key) =
                (c.tenant.to_string(), format!("{}:{subject}", c.tenant));
            // Both counters in one round trip's time.
            let (tenant, client) = tokio::join!(
                limiter.hit("tenant", &tenant_key, limiter.tenant),
                limiter.hit("client", &client_key, limiter.client),
            );
            vec![tenant, client]
        }
        None => {
            let addr = req
                .extensions()
                .get::<ClientAddress>()
                .map(|a| a.0.clone())
                .unwrap_or_default();
            vec![limiter.hit("anonymous", &addr, limiter.anonymous).await]
        }
    };
    let policy = usages
        .iter()
        .map(|u| {
            format!(
                "\"{}\";q={};w={}",
                u.name,
                u.quota.requests,
                u.quota.window.as_secs()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // The header reports the quota closest to running out.
    let tightest = usages
        .iter()
        .min_by_key(|u| u.quota.requests.saturating_sub(u.used))
        .map(|u| (u.name, u.quota.requests.saturating_sub(u.used), u.reset));
    let exceeded = usages.iter().find(|u| u.used > u.quota.requests);
    let mut res = match exceeded {
        Some(u) => {
            metrics::counter!("crm_gateway_rate_limited_total", "policy" => u.name).increment(1);
            GwError(
                ApiError::new(
                    ErrorCode::RateLimited,
                    format!("{} rate limit exceeded", u.name),
                )
                .with_retry_after(std::time::Duration::from_secs(u.reset)),
            )
            .into_response()
        }
        None => next.run(req).await,
    };
    if let Ok(v) = HeaderValue::from_str(&policy) {
        res.headers_mut()
            .insert(HeaderName::from_static("ratelimit-policy"), v);
    }
    if let Some((name, remaining, reset)) = tightest
        && let Ok(v) = HeaderValue::from_str(&format!("\"{name}\";r={remaining};t={reset}"))
    {
        res.headers_mut()
            .insert(HeaderName::from_static("ratelimit"), v);
    }
    res
}

/// Idempotency keys: kept per tenant and client for 24 hours.
#[derive(Clone)]
pub struct Idempotency {
    pub cache: Cache,
    pub body_limit: usize,
}

const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const KEPT_HEADERS: &[&str] = &["content-type", "etag", "location"];

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    fp: String,
    done: bool,
    /// The response carried credentials (Cache-Control: no-store) and was not kept.
    #[serde(default)]
    withheld: bool,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// The same key and body answer with the first response; the same key with another body is a 422;
/// a duplicate while the first is still running is a 409.
pub async fn idempotency(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get("idempotency-key").cloned() else {
        return next.run(req).await;
    };
    let key = match raw.to_str() {
        Ok(k)
            if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..=0x7e).contains(&b)) =>
        {
            k.to_owned()
        }
        _ => {
            return GwError(ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            ))
            .into_response();
        }
    };
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, idem.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return GwError(ApiError::new(
                ErrorCode::PayloadTooLarge,
                "request body is too large",
            ))
            .into_response();
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path());
    h.update([0]);
    h.update(parts.uri.query().unwrap_or(""));
    h.update([0]);
    h.update(&bytes);
    let fp = STANDARD.encode(h.finalize());
    let subject = caller
        .client_id
        .clone()
        .unwrap_or_else(|| caller.subject.to_string());
    let cache_key = format!("idem:{}:{subject}:{key}", caller.tenant);
    let pending = Stored {
        fp: fp.clone(),
        done: false,
        withheld: false,
        status: 0,
        headers: vec![],
        body: String::new(),
    };
    let pending_json = serde_json::to_string(&pending).unwrap_or_default();
    match idem
        .cache
        .set_nx(&cache_key, &pending_json, IDEMPOTENCY_TTL)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            let stored = idem
                .cache
                .get(&cache_key)
                .await
                .ok()
                .flatten()
                .and_then(|s| serde_json::from_str::<Stored>(&s).ok());
            return match stored {
                Some(s) if s.fp != fp => GwError(ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used with another request",
                ))
                .into_response(),
                Some(s) if s.done && s.withheld => GwError(ApiError::conflict(format!(
                    "the first request with this Idempotency-Key already succeeded (status {}); \
                     its response held credentials, which are never kept",
                    s.status
                )))
                .into_response(),
                Some(s) if s.done => replay(s),
                _ => GwError(ApiError::conflict(
                    "a request with this Idempotency-Key is still in progress",
                ))
                .into_response(),
            };
        }
        Err(e) => {
            tracing::warn!(error = %e, "idempotency store unreachable");
            return GwError(
                ApiError::new(
                    ErrorCode::Unavailable,
                    "idempotency keys cannot be checked right now; retry shortly",
                )
                .with_retry_after(std::time::Duration::from_secs(1)),
            )
            .into_response();
        }
    }
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // Render errors now, so a replay returns the same problem document.
    let res = render(
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await,
        request_id.as_deref(),
    );
    let status = res.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        // Not a final answer: let the client retry with the same key.
        let _ = idem.cache.del(&[cache_key]).await;
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes = match to_bytes(body, 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            let _ = idem.cache.del(&[cache_key]).await;
            return GwError(ApiError::internal(format!("response body: {e}"))).into_response();
        }
    };
    let withheld = parts
        .headers
        .get(header::CACHE_CONTROL)
        .is_some_and(|v| v.as_bytes().windows(8).any(|w| w == b"no-store"));
    let stored = Stored {
        fp,
        done: true,
        withheld,
        status: status.as_u16(),
        headers: if withheld {
            vec![]
        } else {
            kept_headers(&parts.headers)
        },
        body: if withheld {
            String::new()
        } else {
            STANDARD.encode(&bytes)
        },
    };
    if let Ok(s) = serde_json::to_string(&stored)
        && let Err(e) = idem.cache.set(&cache_key, &s, IDEMPOTENCY_TTL).await
    {
        tracing::warn!(error = %e, "cannot store idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn kept_headers(h: &HeaderMap) -> Vec<(String, String)> {
    KEPT_HEADERS
        .iter()
        .filter_map(|k| {
            h.get(*k)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*k).to_owned(), v.to_owned()))
        })
        .collect()
}

fn replay(s: Stored) -> Response {
    let status = StatusCode::from_u16(s.status).unwrap_or(StatusCode::OK);
    let body = STANDARD.decode(s.body).unwrap_or_default();
    let mut res = (status, body).into_response();
    for (k, v) in s.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
            res.headers_mut().insert(k, v);
        }
    }
    res.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    res
}
