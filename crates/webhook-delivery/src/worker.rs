//! The delivery worker: claims due deliveries of every tenant in batches (SKIP LOCKED,
//! leased to this worker, never more than a few in flight per endpoint), rounds ahead of
//! the tries in flight so that a freed slot need not wait for a claim, signs and sends them
//! over pooled connections, and records the tries in batches. A worker that dies
//! mid-try loses nothing: its leases run out and the deliveries are tried again, with the
//! same webhook-id. A worker that is stopped drains: it claims nothing more, lets the tries
//! in flight finish (up to the drain timeout), records them and hands back the rest.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use crm_bus::Event;
use crm_kit::{Db, TenantId};
use rand::Rng;
use sea_orm::{ConnectionTrait, FromQueryResult, QueryResult};
use sqlx::postgres::PgListener;
use tokio::{
    sync::mpsc,
    task::{Id, JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    catalog,
    config::WebhookSettings,
    crypto::{SecretCipher, SigningKey},
    service::webhook_id,
    ssrf::{AddressPolicy, CheckedResolver, RefusedAddress},
    store::{self, AttemptOutcome, NOTIFY_CHANNEL, stmt},
};

/// How much of a response body each attempt keeps.
const RESPONSE_PREFIX: usize = 1024;
/// Most deliveries claimed in one round.
const MAX_BATCH: usize = 500;
/// Rounds of tries a worker holds, overall and per endpoint: the round in flight and the
/// rounds claimed ahead that wait for a slot. A claimed delivery may wait out one try per
/// round ahead before its own, which the lease covers. Holding rounds ahead lets each claim
/// wait for a round's worth of room and still leave no slot idle; five ahead let each claim
/// carry more rows than three did (about 1.1 times the deliveries per second in the
/// benchmark), and seven no more than five.
pub(crate) const ROUNDS_HELD: u32 = 6;
/// Longest a slot waits idle for the next claim while less than a round has room.
const IDLE_GRACE: Duration = Duration::from_millis(20);
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// Finished tries waiting to be recorded before senders wait.
const RECORD_QUEUE: usize = 8192;
/// Most tries recorded together.
const MAX_RECORD_BATCH: usize = 1000;
/// Signing keys kept decrypted, by endpoint and version.
const MAX_CACHED_KEYS: usize = 10_000;

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

/// One row of `webhooks.claim_batch`: a leased delivery and what sending it needs.
#[derive(FromQueryResult)]
struct Claimed {
    tenant_id: Uuid,
    id: Uuid,
    endpoint_id: Uuid,
    payload: String,
    attempt_count: i32,
    url: String,
    endpoint_version: i64,
    secret_enc: Vec<u8>,
    secret_nonce: Vec<u8>,
    previous_secret_enc: Option<Vec<u8>>,
    previous_secret_nonce: Option<Vec<u8>>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    failing_since: Option<DateTime<Utc>>,
}

/// The keys that sign an endpoint's deliveries: the current one, and the previous one
/// until its overlap ends.
struct Keys {
    current: SigningKey,
    previous: Option<(SigningKey, DateTime<Utc>)>,
}

/// A claimed delivery with its keys.
struct Job {
    tenant: TenantId,
    delivery_id: Uuid,
    endpoint_id: Uuid,
    url: String,
    payload: String,
    attempt_count: i32,
    failing_since: Option<DateTime<Utc>>,
    keys: Arc<Keys>,
}

/// A finished try, waiting to be recorded.
struct Done {
    tenant: TenantId,
    delivery_id: Uuid,
    endpoint_id: Uuid,
    failing_since: Option<DateTime<Utc>>,
    outcome: AttemptOutcome,
    gone: bool,
}

/// What the claim loop knows of the deliveries it holds: tries in flight, and deliveries
/// claimed ahead that wait for a slot.
#[derive(Default)]
struct InFlight {
    tasks: JoinSet<Done>,
    /// The endpoint of each task, to free its slot however the task ends.
    endpoints: HashMap<Id, Uuid>,
    /// Tries in flight per endpoint.
    per_endpoint: HashMap<Uuid, usize>,
    /// Claimed deliveries waiting for a slot, oldest first.
    ready: VecDeque<Job>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Deliveries held: in flight or waiting for a slot.
    fn held(&self) -> usize {
        self.tasks.len() + self.ready.len()
    }

    /// Deliveries held per endpoint, as the claim counts them.
    fn held_per_endpoint(&self) -> HashMap<Uuid, usize> {
        let mut held = self.per_endpoint.clone();
        for job in &self.ready {
            *held.entry(job.endpoint_id).or_default() += 1;
        }
        held
    }

    /// Starts waiting deliveries, oldest first, while there are slots for them overall and
    /// for their endpoint.
    fn start_ready(&mut self, inner: &Arc<Inner>, concurrency: usize, per_endpoint: usize) {
        if self.ready.is_empty() || self.tasks.len() >= concurrency {
            return;
        }
        let mut waiting = VecDeque::new();
        while let Some(job) = self.ready.pop_front() {
            let running = self.per_endpoint.get(&job.endpoint_id).copied();
            if self.tasks.len() < concurrency && running.unwrap_or(0) < per_endpoint {
                self.start(inner, job);
            } else {
                waiting.push_back(job);
            }
        }
        self.ready = waiting;
    }

    fn start(&mut self, inner: &Arc<Inner>, job: Job) {
        let endpoint = job.endpoint_id;
        let inner = inner.clone();
        let handle = self.tasks.spawn(async move { inner.attempt(job).await });
        self.endpoints.insert(handle.id(), endpoint);
        *self.per_endpoint.entry(endpoint).or_default() += 1;
    }

    /// Frees the slot of a finished task; its try, if it came to one.
    fn finish(&mut self, result: Result<(Id, Done), tokio::task::JoinError>) -> Option<Done> {
        let (id, done) = match result {
            Ok((id, done)) => (id, Some(done)),
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "webhook try panicked; its lease runs out");
                }
                (e.id(), None)
            }
        };
        if let Some(endpoint) = self.endpoints.remove(&id)
            && let Some(n) = self.per_endpoint.get_mut(&endpoint)
        {
            *n -= 1;
            if *n == 0 {
                self.per_endpoint.remove(&endpoint);
            }
        }
        done
    }
}

impl Worker {
    /// A worker over the service's database.
    pub fn new(
        db: Db,
        settings: Arc<WebhookSettings>,
        cipher: SecretCipher,
    ) -> anyhow::Result<Self> {
        let policy = AddressPolicy::new(settings.allow_nets.clone());
        // One client for the worker: its pool keeps connections to endpoints alive between
        // tries. Pooled connections were opened to addresses the checked resolver handed
        // out, so reusing them reaches only checked addresses.
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
            .pool_idle_timeout(Duration::from_secs(60))
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

    /// Claims and sends until `cancel` fires, then drains: tries in flight finish (up to
    /// the drain timeout) and are recorded, and whatever is still leased to this worker is
    /// handed back at once. Dropping the future instead (a crash) leaves the leases to run
    /// out.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        // Identifies this worker's leases: only it records or releases them.
        let token = Uuid::now_v7();
        let (done_tx, done_rx) = mpsc::channel::<Done>(RECORD_QUEUE);
        tracing::info!(
            concurrency = self.inner.settings.concurrency,
            "webhook worker started"
        );
        // Finished tries are recorded in batches, one statement each, beside the claims.
        let recorder = self.inner.clone().record_loop(token, done_rx);
        let sender = self.send_loop(token, cancel, done_tx);
        tokio::join!(recorder, sender);
        match self
            .inner
            .db
            .conn()
            .query_one_raw(stmt(
                "SELECT webhooks.release_leases($1) AS n",
                [token.into()],
            ))
            .await
        {
            Ok(row) => {
                let n: i64 = row.and_then(|r| r.try_get("", "n").ok()).unwrap_or(0);
                if n > 0 {
                    tracing::info!(
                        released = n,
                        "webhook worker handed back unfinished deliveries"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot hand back leased deliveries; their leases run out")
            }
        }
        tracing::info!("webhook worker stopped");
        Ok(())
    }

    async fn send_loop(&self, token: Uuid, cancel: CancellationToken, done_tx: mpsc::Sender<Done>) {
        let settings = self.inner.settings.clone();
        let (concurrency, per_endpoint) = (settings.concurrency, settings.per_endpoint_concurrency);
        let mut inflight = InFlight::default();
        let mut keys: HashMap<(Uuid, i64), Arc<Keys>> = HashMap::new();
        let mut listener: Option<PgListener> = None;
        let mut last_purge: Option<Instant> = None;
        let mut poll = tokio::time::interval(settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The claim under way. It runs beside the tries and claims rounds ahead of them, so
        // that a slot that frees up finds its next delivery already claimed.
        let mut claim: Option<JoinHandle<anyhow::Result<Vec<Claimed>>>> = None;
        // Whether a claim may find something: after a wake-up, or while claims find work.
        let mut look = true;
        // Since when a slot has been idle with a claim not under way.
        let mut idle_since: Option<Instant> = None;
        while !cancel.is_cancelled() {
            if listener.is_none() {
                listener = self.listen().await;
            }
            if last_purge.is_none_or(|t| t.elapsed() >= PURGE_EVERY) {
                last_purge = Some(Instant::now());
                self.purge().await;
            }
            inflight.start_ready(&self.inner, concurrency, per_endpoint);
            let rounds = ROUNDS_HELD as usize;
            let room = (rounds * concurrency).saturating_sub(inflight.held());
            // A claim waits until a whole round has room, so that each carries many rows.
            // A slot left idle for want of a delivery it may start (those held wait for
            // endpoints at their limit) waits at most `IDLE_GRACE` for the next claim.
            if inflight.len() >= concurrency {
                idle_since = None;
            } else if idle_since.is_none() {
                idle_since = Some(Instant::now());
            }
            let may_claim = look && claim.is_none() && room > 0;
            // What is left of that grace, while a claim could serve the idle slot.
            let idle_wait = idle_since
                .filter(|_| may_claim)
                .map(|t| IDLE_GRACE.saturating_sub(t.elapsed()));
            if may_claim && (room >= concurrency || idle_wait == Some(Duration::ZERO)) {
                let asked = room.min(MAX_BATCH);
                idle_since = None;
                let (worker, busy) = (self.clone(), inflight.held_per_endpoint());
                claim = Some(tokio::spawn(async move {
                    worker
                        .claim(token, asked, rounds * per_endpoint, &busy)
                        .await
                }));
            }
            // A claim under way serves the idle slot; nothing is left to wait for.
            let idle_wait = idle_wait.filter(|_| claim.is_none());
            tokio::select! {
                _ = cancel.cancelled() => break,
                result = async { claim.as_mut().expect("a claim").await }, if claim.is_some() => {
                    claim = None;
                    match result.map_err(anyhow::Error::from).and_then(|r| r) {
                        Ok(rows) => {
                            look = !rows.is_empty();
                            let jobs = rows.into_iter().filter_map(|row| {
                                self.job(row, &mut keys)
                                    .inspect_err(|error| tracing::error!(
                                        error = format!("{error:#}"),
                                        "cannot decrypt an endpoint secret; its delivery waits for its lease to run out"
                                    ))
                                    .ok()
                            });
                            inflight.ready.extend(jobs);
                        }
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "cannot claim webhook deliveries");
                            look = false;
                        }
                    }
                }
                Some(result) = inflight.tasks.join_next_with_id(), if !inflight.tasks.is_empty() => {
                    let mut finished = vec![result];
                    while let Some(r) = inflight.tasks.try_join_next_with_id() {
                        finished.push(r);
                    }
                    for r in finished {
                        if let Some(done) = inflight.finish(r) {
                            let _ = done_tx.send(done).await;
                        }
                    }
                }
                woke = wait_for_notice(&mut listener) => {
                    if !woke {
                        listener = None;
                    }
                    look = true;
                }
                _ = poll.tick() => look = true,
                _ = tokio::time::sleep(idle_wait.unwrap_or_default()), if idle_wait.is_some() => {}
            }
        }
        // A claim under way finishes; what it and the earlier claims leased but did not
        // start is handed back with the rest when the worker stops.
        if let Some(claim) = claim {
            let _ = claim.await;
        }
        // Drain: nothing more is claimed; tries in flight finish, up to the drain timeout.
        if !inflight.tasks.is_empty() {
            tracing::info!(in_flight = inflight.len(), "webhook worker draining");
            let deadline = tokio::time::sleep(settings.drain_timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    result = inflight.tasks.join_next_with_id() => match result {
                        Some(r) => {
                            if let Some(done) = inflight.finish(r) {
                                let _ = done_tx.send(done).await;
                            }
                        }
                        None => break,
                    },
                    _ = &mut deadline => {
                        tracing::warn!(
                            in_flight = inflight.len(),
                            "drain timeout: abandoning tries in flight; they are handed back"
                        );
                        inflight.tasks.abort_all();
                        while inflight.tasks.join_next().await.is_some() {}
                        break;
                    }
                }
            }
        }
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

    /// Claims up to `batch` due deliveries, at most `per_endpoint` held per endpoint counting
    /// those this worker holds already (`busy`).
    async fn claim(
        &self,
        token: Uuid,
        batch: usize,
        per_endpoint: usize,
        busy: &HashMap<Uuid, usize>,
    ) -> anyhow::Result<Vec<Claimed>> {
        let s = &self.inner.settings;
        // Uuids and counts as comma lists: nothing in them needs quoting.
        let mut busy_ids = String::new();
        let mut busy_counts = String::new();
        for (id, n) in busy {
            if !busy_ids.is_empty() {
                busy_ids.push(',');
                busy_counts.push(',');
            }
            busy_ids.push_str(&id.to_string());
            busy_counts.push_str(&n.to_string());
        }
        // A claim only leases: should the database lose it in a crash, the deliveries are
        // due again and are sent again with the same webhook-id, as after a worker's crash.
        // So its commit does not wait for the WAL to reach the disk, which took about a
        // third of the time of a claim. The setting and the claim go as one simple query,
        // one implicit transaction and one round trip; every value in it is a uuid or a
        // number formatted here.
        let sql = format!(
            "SET LOCAL synchronous_commit = off; \
             SELECT * FROM webhooks.claim_batch('{token}', {batch}, {per_endpoint}, {lease}, \
             '{{{busy_ids}}}'::uuid[], '{{{busy_counts}}}'::integer[])",
            lease = s.lease().as_secs_f64().ceil() as i64,
        );
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.inner.db.pg_pool())
            .await?;
        rows.into_iter()
            .map(|row| Ok(Claimed::from_query_result(&QueryResult::from(row), "")?))
            .collect()
    }

    /// A claimed row ready to send: its endpoint's keys come from the cache, or are
    /// decrypted once per endpoint version.
    fn job(
        &self,
        row: Claimed,
        cache: &mut HashMap<(Uuid, i64), Arc<Keys>>,
    ) -> anyhow::Result<Job> {
        let key = (row.endpoint_id, row.endpoint_version);
        let keys = match cache.get(&key) {
            Some(k) => k.clone(),
            None => {
                let cipher = &self.inner.cipher;
                let current = cipher.open(row.endpoint_id, &row.secret_enc, &row.secret_nonce)?;
                let previous = match (
                    &row.previous_secret_enc,
                    &row.previous_secret_nonce,
                    row.previous_secret_expires_at,
                ) {
                    (Some(enc), Some(nonce), Some(until)) if until > Utc::now() => Some((
                        SigningKey::new(&cipher.open(row.endpoint_id, enc, nonce)?),
                        until,
                    )),
                    _ => None,
                };
                let k = Arc::new(Keys {
                    current: SigningKey::new(&current),
                    previous,
                });
                if cache.len() >= MAX_CACHED_KEYS {
                    cache.clear();
                }
                // Older versions of this endpoint are of no more use.
                cache.retain(|(id, _), _| *id != row.endpoint_id);
                cache.insert(key, k.clone());
                k
            }
        };
        Ok(Job {
            tenant: TenantId(row.tenant_id),
            delivery_id: row.id,
            endpoint_id: row.endpoint_id,
            url: row.url,
            payload: row.payload,
            attempt_count: row.attempt_count,
            failing_since: row.failing_since,
            keys,
        })
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

/// Waits for a notification of new deliveries; false when the listener is lost.
async fn wait_for_notice(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => match l.recv().await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, "delivery listener lost; reconnecting");
                false
            }
        },
        None => std::future::pending().await,
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

/// What a batch of tries says of one endpoint.
#[derive(Default)]
struct Health {
    failing_since: Option<DateTime<Utc>>,
    any_success: bool,
    any_failure: bool,
    gone: bool,
}

impl Inner {
    /// Signs and sends one delivery and works out what comes next.
    async fn attempt(&self, job: Job) -> Done {
        let Job {
            tenant,
            delivery_id,
            endpoint_id,
            url,
            payload,
            attempt_count,
            failing_since,
            keys,
        } = job;
        let msg_id = webhook_id(delivery_id);
        let timestamp = Utc::now().timestamp();
        let mut signature = keys.current.sign(&msg_id, timestamp, payload.as_bytes());
        if let Some((previous, until)) = &keys.previous
            && *until > Utc::now()
        {
            signature.push(' ');
            signature.push_str(&previous.sign(&msg_id, timestamp, payload.as_bytes()));
        }
        let started = Instant::now();
        let sent = self
            .send(&url, &msg_id, timestamp, &signature, payload)
            .await;
        let duration = started.elapsed();

        let s = &self.settings;
        let attempt_no = attempt_count as usize + 1;
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
            delivery_id,
            endpoint_id,
            failing_since,
            outcome,
            gone,
        }
    }

    /// Records finished tries as they come, in batches.
    async fn record_loop(self: Arc<Self>, token: Uuid, mut rx: mpsc::Receiver<Done>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_RECORD_BATCH {
                match rx.try_recv() {
                    Ok(d) => batch.push(d),
                    Err(_) => break,
                }
            }
            self.record(token, batch).await;
        }
    }

    /// Records finished tries in one statement, then the endpoints' health where it
    /// changes; a batch that cannot be recorded is tried again once its leases run out.
    async fn record(&self, token: Uuid, done: Vec<Done>) {
        let recorded = match store::record_tries(
            self.db.pg_pool(),
            token,
            &done
                .iter()
                .map(|d| (d.tenant, d.delivery_id, &d.outcome))
                .collect::<Vec<_>>(),
        )
        .await
        {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(
                    tries = done.len(),
                    %error,
                    "cannot record webhook tries; their leases run out and they are tried again"
                );
                return;
            }
        };
        // Health changes only on a failure, a 410, or the first success after failures.
        let mut health: HashMap<(TenantId, Uuid), Health> = HashMap::new();
        for d in done.iter().filter(|d| recorded.contains(&d.delivery_id)) {
            let h = health
                .entry((d.tenant, d.endpoint_id))
                .or_insert_with(|| Health {
                    failing_since: d.failing_since,
                    ..Health::default()
                });
            h.any_success |= d.outcome.succeeded;
            h.any_failure |= !d.outcome.succeeded;
            h.gone |= d.gone;
        }
        let mut by_tenant: HashMap<TenantId, Vec<(Uuid, Health)>> = HashMap::new();
        for ((tenant, endpoint), h) in health {
            let changes = h.gone
                || (h.any_success && h.failing_since.is_some())
                || (!h.any_success && h.any_failure);
            if changes {
                by_tenant.entry(tenant).or_default().push((endpoint, h));
            }
        }
        for (tenant, endpoints) in by_tenant {
            if let Err(error) = self.record_health(tenant, &endpoints).await {
                tracing::warn!(
                    tenant_id = %tenant,
                    error = format!("{error:#}"),
                    "cannot record webhook endpoint health"
                );
            }
        }
    }

    async fn record_health(
        &self,
        tenant: TenantId,
        endpoints: &[(Uuid, Health)],
    ) -> anyhow::Result<()> {
        let tx = self.db.tenant_tx(tenant).await?;
        let limit = chrono::Duration::from_std(self.settings.disable_after)
            .unwrap_or(chrono::Duration::MAX);
        for (endpoint, h) in endpoints {
            let disable = if h.gone {
                Some("gone")
            } else if h.any_success {
                store::record_health(&tx, *endpoint, true).await?;
                None
            } else {
                let since = match h.failing_since {
                    Some(t) => Some(t),
                    None => store::record_health(&tx, *endpoint, false).await?,
                };
                since
                    .filter(|t| Utc::now() - *t >= limit)
                    .map(|_| "failing")
            };
            let Some(reason) = disable else { continue };
            let Some(before) = store::endpoint_any(&tx, *endpoint).await? else {
                continue;
            };
            if store::disable_endpoint(&tx, *endpoint, reason).await? {
                tracing::info!(tenant_id = %tenant, endpoint_id = %endpoint, reason, "webhook endpoint disabled");
                let mut after = before.public_json();
                after["enabled"] = false.into();
                after["disabledReason"] = reason.into();
                after["version"] = (before.version + 1).into();
                store::emit(
                    &tx,
                    Event::new(
                        "webhook-delivery",
                        catalog::ENDPOINT_DISABLED,
                        tenant,
                        None,
                        "webhook_endpoint",
                        *endpoint,
                        Some(before.public_json()),
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
        body: String,
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
            .body(body)
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
