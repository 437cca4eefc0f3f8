//! The delivery worker: claims due deliveries of every tenant (SKIP LOCKED, leased, never
//! more than a few in flight per endpoint), signs and sends them, records every try and
//! schedules the next one. A worker that dies mid-try loses nothing: its lease runs out and
//! the delivery is tried again, with the same webhook-id.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use crm_bus::Event;
use crm_kit::{Db, TenantId};
use rand::Rng;
use sea_orm::ConnectionTrait;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{
    catalog,
    config::WebhookSettings,
    crypto::{self, SecretCipher},
    service::webhook_id,
    ssrf::{AddressPolicy, CheckedResolver, RefusedAddress},
    store::{self, AttemptOutcome, DeliveryRow, EndpointRow, NOTIFY_CHANNEL, stmt},
};

/// How much of a response body each attempt keeps.
const RESPONSE_PREFIX: usize = 1024;
/// Most deliveries claimed in one round.
const MAX_BATCH: usize = 100;
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Finished tries waiting to be recorded before senders wait.
const RECORD_QUEUE: usize = 4096;
/// Most tries recorded together.
const MAX_RECORD_BATCH: usize = 500;

/// Sends webhooks until cancelled.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: Arc<WebhookSettings>,
    cipher: SecretCipher,
    policy: AddressPolicy,
    client: reqwest::Client,
}

/// What one HTTP try came to.
enum Sent {
    Response {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    Failed {
        timeout: bool,
        error: String,
    },
}

impl Worker {
    /// A worker over the service's database.
    pub fn new(
        db: Db,
        settings: Arc<WebhookSettings>,
        cipher: SecretCipher,
    ) -> anyhow::Result<Self> {
        let policy = AddressPolicy::new(settings.allow_nets.clone());
        let client = reqwest::Client::builder()
            // A 3xx is a failure: following it could lead anywhere, the checks included.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            // A proxy would resolve names itself, past the address checks.
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("crm-webhooks/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                settings,
                cipher,
                policy,
                client,
            }),
        })
    }

    /// Claims and sends until `cancel` fires; tries in flight are then abandoned and their
    /// leases run out, so another worker tries them again.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let settings = self.inner.settings.clone();
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let tracker = TaskTracker::new();
        // Finished tries are recorded in batches, one transaction per tenant: a commit per
        // try would cap the worker at what PostgreSQL can flush.
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(RECORD_QUEUE);
        // Recorded tries free their endpoints' slots: the claim loop looks again at once.
        let recorded = Arc::new(Notify::new());
        let recorder = {
            let inner = self.inner.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                while let Some(first) = done_rx.recv().await {
                    let mut batch = vec![first];
                    while batch.len() < MAX_RECORD_BATCH {
                        match done_rx.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(_) => break,
                        }
                    }
                    inner.record(batch).await;
                    recorded.notify_one();
                }
            })
        };
        let mut listener: Option<PgListener> = None;
        let mut last_purge: Option<Instant> = None;
        tracing::info!(concurrency = settings.concurrency, "webhook worker started");
        while !cancel.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                last_purge = Some(Instant::now());
                self.purge().await;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => drop(permit),
                    _ = cancel.cancelled() => break,
                }
                continue;
            }
            let batch = free.min(MAX_BATCH);
            let claimed = match self.claim(batch).await {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim webhook deliveries");
                    tokio::select! {
                        _ = tokio::time::sleep(settings.poll_interval) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            };
            let full = claimed.len() == batch;
            let mut by_tenant: HashMap<TenantId, Vec<Uuid>> = HashMap::new();
            for (tenant, id) in claimed {
                by_tenant.entry(tenant).or_default().push(id);
            }
            for (tenant, ids) in by_tenant {
                let jobs = match self.inner.load(tenant, &ids).await {
                    Ok(jobs) => jobs,
                    Err(error) => {
                        tracing::warn!(tenant_id = %tenant, error = format!("{error:#}"), "cannot load claimed deliveries; their leases run out");
                        continue;
                    }
                };
                for job in jobs {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    let inner = self.inner.clone();
                    let cancel = cancel.clone();
                    let done_tx = done_tx.clone();
                    tracker.spawn(async move {
                        tokio::select! {
                            done = inner.attempt(job) => {
                                drop(permit);
                                let _ = done_tx.send(done).await;
                            }
                            _ = cancel.cancelled() => {}
                        }
                    });
                }
            }
            if !full {
                tokio::select! {
                    _ = wait_for_work(&mut listener, settings.poll_interval, &cancel) => {}
                    _ = recorded.notified() => {}
                }
            }
        }
        tracker.close();
        tracker.wait().await;
        drop(done_tx);
        if let Err(error) = recorder.await {
            tracing::warn!(%error, "webhook recorder stopped abnormally");
        }
        tracing::info!("webhook worker stopped");
        Ok(())
    }

    async fn listen(&self) -> Option<PgListener> {
        let result = async {
            let mut l = PgListener::connect_with(self.inner.db.pg_pool()).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        match result {
            Ok(l) => Some(l),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for new deliveries; polling");
                None
            }
        }
    }

    async fn claim(&self, batch: usize) -> Result<Vec<(TenantId, Uuid)>, sea_orm::DbErr> {
        let s = &self.inner.settings;
        let rows = self
            .inner
            .db
            .conn()
            .query_all_raw(stmt(
                "SELECT tenant_id, id FROM webhooks.claim_deliveries($1, $2, $3)",
                [
                    (batch as i32).into(),
                    (s.per_endpoint_concurrency as i32).into(),
                    (s.lease().as_secs_f64().ceil() as i32).into(),
                ],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    TenantId(r.try_get::<Uuid>("", "tenant_id")?),
                    r.try_get::<Uuid>("", "id")?,
                ))
            })
            .collect()
    }

    async fn purge(&self) {
        let secs = self.inner.settings.retention.as_secs() as i64;
        if let Err(error) = self
            .inner
            .db
            .conn()
            .execute_raw(stmt("SELECT webhooks.purge($1)", [secs.into()]))
            .await
        {
            tracing::warn!(%error, "cannot purge old deliveries");
        }
    }
}

async fn wait_for_work(
    listener: &mut Option<PgListener>,
    poll: Duration,
    cancel: &CancellationToken,
) {
    match listener {
        Some(l) => {
            tokio::select! {
                r = l.recv() => {
                    if let Err(error) = r {
                        tracing::debug!(%error, "delivery listener lost; reconnecting");
                        *listener = None;
                    }
                }
                _ = tokio::time::sleep(poll) => {}
                _ = cancel.cancelled() => {}
            }
        }
        None => {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut parts = vec![e.to_string()];
    let mut refused = false;
    let mut cur = e.source();
    while let Some(s) = cur {
        if s.downcast_ref::<RefusedAddress>().is_some() {
            refused = true;
        }
        parts.push(s.to_string());
        cur = s.source();
    }
    (parts.join(": "), refused)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    (at - Utc::now()).to_std().ok()
}

/// The keys that sign an endpoint's deliveries: the current one, and the previous one
/// during a rotation.
type Keys = Arc<Vec<Vec<u8>>>;

/// A claimed delivery, loaded with its endpoint and the keys that sign it.
struct Job {
    tenant: TenantId,
    delivery: DeliveryRow,
    endpoint: Arc<EndpointRow>,
    keys: Keys,
}

/// A finished try, waiting to be recorded.
struct Done {
    tenant: TenantId,
    delivery_id: Uuid,
    endpoint: Arc<EndpointRow>,
    outcome: AttemptOutcome,
    gone: bool,
}

impl Inner {
    /// Loads the claimed deliveries of one tenant with their endpoints; deliveries whose
    /// endpoint was deleted or disabled are settled as failed without a try.
    async fn load(&self, tenant: TenantId, ids: &[Uuid]) -> anyhow::Result<Vec<Job>> {
        let tx = self.db.tenant_tx(tenant).await?;
        let deliveries = store::deliveries_by_id(&tx, ids).await?;
        let mut endpoint_ids: Vec<Uuid> = deliveries.iter().map(|d| d.endpoint_id).collect();
        endpoint_ids.sort_unstable();
        endpoint_ids.dedup();
        let mut endpoints: HashMap<Uuid, (Arc<EndpointRow>, Keys)> = HashMap::new();
        for e in store::endpoints_by_id(&tx, &endpoint_ids).await? {
            if e.deleted || !e.enabled {
                continue;
            }
            let mut keys = vec![self.cipher.open(e.id, &e.secret_enc, &e.secret_nonce)?];
            if let (Some(enc), Some(nonce), Some(until)) = (
                &e.previous_secret_enc,
                &e.previous_secret_nonce,
                e.previous_secret_expires_at,
            ) && until > Utc::now()
            {
                keys.push(self.cipher.open(e.id, enc, nonce)?);
            }
            endpoints.insert(e.id, (Arc::new(e), Arc::new(keys)));
        }
        let mut jobs = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            match endpoints.get(&d.endpoint_id) {
                Some((endpoint, keys)) => jobs.push(Job {
                    tenant,
                    endpoint: endpoint.clone(),
                    keys: keys.clone(),
                    delivery: d,
                }),
                None => store::fail_without_attempt(&tx, d.id).await?,
            }
        }
        tx.commit().await?;
        Ok(jobs)
    }

    /// Signs and sends one delivery and works out what comes next.
    async fn attempt(&self, job: Job) -> Done {
        let Job {
            tenant,
            delivery: d,
            endpoint: e,
            keys,
        } = job;
        let msg_id = webhook_id(d.id);
        let timestamp = Utc::now().timestamp();
        let signature = keys
            .iter()
            .map(|k| crypto::sign(k, &msg_id, timestamp, d.payload.as_bytes()))
            .collect::<Vec<_>>()
            .join(" ");
        let started = Instant::now();
        let sent = self
            .send(&e.url, &msg_id, timestamp, &signature, &d.payload)
            .await;
        let duration = started.elapsed();

        let s = &self.settings;
        let attempt_no = d.attempt_count as usize + 1;
        let scheduled = || -> Option<Duration> {
            let base = *s.retry_schedule.get(attempt_no - 1)?;
            let jitter = rand::thread_rng().gen_range(0.9..1.1);
            Some(base.mul_f64(jitter))
        };
        let (outcome, gone) = match sent {
            Sent::Response {
                status,
                retry_after,
                body,
            } => {
                let succeeded = (200..300).contains(&status);
                let gone = status == 410;
                let next = if succeeded || gone {
                    None
                } else {
                    scheduled().map(|mut delay| {
                        if status == 429 {
                            delay = delay.max(s.throttle_min);
                        }
                        if matches!(status, 429 | 503)
                            && let Some(ra) = retry_after
                        {
                            delay = delay.max(ra.min(s.retry_after_max));
                        }
                        delay
                    })
                };
                (
                    AttemptOutcome {
                        succeeded,
                        response_code: i32::from(status),
                        response_body: body,
                        error: String::new(),
                        duration_ms: duration.as_millis() as i64,
                        next_attempt_at: next.map(|d| Utc::now() + d),
                    },
                    gone,
                )
            }
            Sent::Failed { timeout, error } => {
                let next = scheduled().map(|d| if timeout { d.max(s.throttle_min) } else { d });
                (
                    AttemptOutcome {
                        succeeded: false,
                        response_code: 0,
                        response_body: String::new(),
                        error,
                        duration_ms: duration.as_millis() as i64,
                        next_attempt_at: next.map(|d| Utc::now() + d),
                    },
                    false,
                )
            }
        };
        let label = if outcome.succeeded {
            "succeeded"
        } else {
            "failed"
        };
        metrics::counter!("crm_webhook_attempts_total", "outcome" => label).increment(1);
        metrics::histogram!("crm_webhook_attempt_duration_seconds").record(duration.as_secs_f64());
        Done {
            tenant,
            delivery_id: d.id,
            endpoint: e,
            outcome,
            gone,
        }
    }

    /// Records finished tries, one transaction per tenant; a batch that cannot be recorded
    /// is tried again once its leases run out.
    async fn record(&self, done: Vec<Done>) {
        let mut by_tenant: HashMap<TenantId, Vec<Done>> = HashMap::new();
        for d in done {
            by_tenant.entry(d.tenant).or_default().push(d);
        }
        for (tenant, items) in by_tenant {
            if let Err(error) = self.record_tenant(tenant, &items).await {
                tracing::warn!(
                    tenant_id = %tenant,
                    tries = items.len(),
                    error = format!("{error:#}"),
                    "cannot record webhook tries; their leases run out and they are tried again"
                );
            }
        }
    }

    async fn record_tenant(&self, tenant: TenantId, items: &[Done]) -> anyhow::Result<()> {
        let tx = self.db.tenant_tx(tenant).await?;
        let recorded = store::record_attempts(
            &tx,
            &items
                .iter()
                .map(|d| (d.delivery_id, &d.outcome))
                .collect::<Vec<_>>(),
        )
        .await?;
        // The endpoints' health, changed only where it changes.
        let mut health: HashMap<Uuid, (Arc<EndpointRow>, bool, bool)> = HashMap::new();
        for d in items.iter().filter(|d| recorded.contains(&d.delivery_id)) {
            let h = health
                .entry(d.endpoint.id)
                .or_insert_with(|| (d.endpoint.clone(), false, false));
            h.1 |= d.outcome.succeeded;
            h.2 |= d.gone;
        }
        let limit = chrono::Duration::from_std(self.settings.disable_after)
            .unwrap_or(chrono::Duration::MAX);
        for (endpoint, any_success, gone) in health.into_values() {
            let disable = if gone {
                Some("gone")
            } else if any_success {
                if endpoint.failing_since.is_some() {
                    store::record_health(&tx, endpoint.id, true).await?;
                }
                None
            } else {
                let since = match endpoint.failing_since {
                    Some(t) => Some(t),
                    None => store::record_health(&tx, endpoint.id, false).await?,
                };
                since
                    .filter(|t| Utc::now() - *t >= limit)
                    .map(|_| "failing")
            };
            if let Some(reason) = disable
                && store::disable_endpoint(&tx, endpoint.id, reason).await?
            {
                tracing::info!(tenant_id = %tenant, endpoint_id = %endpoint.id, reason, "webhook endpoint disabled");
                let mut after = endpoint.public_json();
                after["enabled"] = false.into();
                after["disabledReason"] = reason.into();
                store::emit(
                    &tx,
                    Event::new(
                        "webhook-delivery",
                        catalog::ENDPOINT_DISABLED,
                        tenant,
                        None,
                        "webhook_endpoint",
                        endpoint.id,
                        Some(endpoint.public_json()),
                        Some(after),
                    ),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn send(
        &self,
        url: &str,
        msg_id: &str,
        timestamp: i64,
        signature: &str,
        body: &str,
    ) -> Sent {
        let refused = || Sent::Failed {
            timeout: false,
            error: "refused: the endpoint's address is private or reserved".into(),
        };
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => {
                return Sent::Failed {
                    timeout: false,
                    error: format!("invalid url: {e}"),
                };
            }
        };
        // Address literals never reach the resolver; check them here.
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) if !self.policy.permits(ip.into()) => return refused(),
            Some(url::Host::Ipv6(ip)) if !self.policy.permits(ip.into()) => return refused(),
            _ => {}
        }
        let res = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match res {
            Ok(mut res) => {
                let status = res.status().as_u16();
                let retry_after = retry_after(res.headers());
                let mut prefix = Vec::new();
                while prefix.len() < RESPONSE_PREFIX {
                    match res.chunk().await {
                        Ok(Some(chunk)) => prefix.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                prefix.truncate(RESPONSE_PREFIX);
                Sent::Response {
                    status,
                    retry_after,
                    body: String::from_utf8_lossy(&prefix).replace('\0', ""),
                }
            }
            Err(e) => {
                let (error, was_refused) = error_chain(&e);
                if was_refused {
                    return refused();
                }
                Sent::Failed {
                    timeout: e.is_timeout(),
                    error: if e.is_timeout() {
                        "timed out".into()
                    } else {
                        error
                    },
                }
            }
        }
    }
}
