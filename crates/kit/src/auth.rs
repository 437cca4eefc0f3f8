//! Access-token verification against identity's JWKS, and the typed caller handed to handlers.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use uuid::Uuid;

use crate::{
    error::ApiError,
    ids::{TeamId, TenantId, UserId},
};

/// The `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    /// Tenant id.
    pub tid: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    /// Set when the subject is an API client rather than a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Who is calling: a user or an API client, always of one tenant.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: TenantId,
    /// The user id, or the API client's id for client tokens.
    pub subject: Uuid,
    pub roles: Vec<String>,
    pub teams: Vec<TeamId>,
    /// The OAuth client id when the caller is an API client.
    pub client_id: Option<String>,
    /// The verified token, to forward to other services.
    pub token: String,
}

impl Caller {
    /// The user id, when the caller is a user.
    pub fn user_id(&self) -> Option<UserId> {
        self.client_id.is_none().then_some(UserId(self.subject))
    }

    /// Whether the caller has a role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// One public key of the JWKS (Ed25519).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicJwk {
    pub kid: String,
    /// base64url of the raw 32-byte public key.
    pub x: String,
}

/// Where the verifier gets the JWKS from.
#[async_trait::async_trait]
pub trait JwksSource: Send + Sync + 'static {
    async fn fetch(&self) -> anyhow::Result<Vec<PublicJwk>>;
}

/// Reads the JWKS from identity over gRPC.
pub struct GrpcJwksSource {
    client: crm_proto::identity::identity_service_client::IdentityServiceClient<
        tonic::transport::Channel,
    >,
}

impl GrpcJwksSource {
    /// A lazily connected source; the first fetch connects.
    pub fn new(identity_url: &str) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(identity_url.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            client: crm_proto::identity::identity_service_client::IdentityServiceClient::new(
                channel,
            ),
        })
    }
}

#[async_trait::async_trait]
impl JwksSource for GrpcJwksSource {
    async fn fetch(&self) -> anyhow::Result<Vec<PublicJwk>> {
        let resp = self
            .client
            .clone()
            .get_jwks(crm_proto::identity::GetJwksRequest {})
            .await?;
        Ok(resp
            .into_inner()
            .keys
            .into_iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .map(|k| PublicJwk { kid: k.kid, x: k.x })
            .collect())
    }
}

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens; caches the JWKS, refetching on an unknown `kid` at most once per cooldown.
pub struct TokenVerifier {
    source: Arc<dyn JwksSource>,
    keys: RwLock<KeySet>,
    last_refetch: Mutex<Option<Instant>>,
    validation: Validation,
    cooldown: Duration,
    max_age: Duration,
}

impl TokenVerifier {
    /// A verifier for tokens of one issuer and audience.
    pub fn new(source: Arc<dyn JwksSource>, issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        Self {
            source,
            keys: RwLock::new(KeySet {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            last_refetch: Mutex::new(None),
            validation,
            cooldown: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
        }
    }

    /// Shortens the refetch cooldown (tests).
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    async fn refresh(&self, force: bool) -> Result<(), ApiError> {
        let mut last = self.last_refetch.lock().await;
        if let Some(at) = *last {
            let fresh = self
                .keys
                .read()
                .await
                .fetched_at
                .is_some_and(|f| f.elapsed() < self.max_age);
            if at.elapsed() < self.cooldown && (force || fresh) {
                return Ok(());
            }
        }
        *last = Some(Instant::now());
        let jwks = self.source.fetch().await.map_err(|e| {
            tracing::warn!(error = %e, "jwks fetch failed");
            ApiError::new(
                crate::error::ErrorCode::Unavailable,
                "token keys unavailable",
            )
        })?;
        let mut keys = HashMap::new();
        for k in jwks {
            match DecodingKey::from_ed_components(&k.x) {
                Ok(d) => {
                    keys.insert(k.kid, d);
                }
                Err(e) => tracing::warn!(kid = %k.kid, error = %e, "skipping malformed jwk"),
            }
        }
        let mut set = self.keys.write().await;
        set.keys = keys;
        set.fetched_at = Some(Instant::now());
        metrics::counter!("crm_jwks_fetches_total").increment(1);
        Ok(())
    }

    async fn key(&self, kid: &str) -> Result<Option<DecodingKey>, ApiError> {
        {
            let set = self.keys.read().await;
            let stale = set.fetched_at.is_none_or(|f| f.elapsed() >= self.max_age);
            if !stale && let Some(k) = set.keys.get(kid) {
                return Ok(Some(k.clone()));
            }
        }
        self.refresh(true).await?;
        Ok(self.keys.read().await.keys.get(kid).cloned())
    }

    /// Verifies a bearer token and returns the caller.
    pub async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let bad = || ApiError::unauthenticated("invalid access token");
        let header = decode_header(token).map_err(|_| bad())?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
            return Err(bad());
        }
        let kid = header.kid.ok_or_else(bad)?;
        let key = self.key(&kid).await?.ok_or_else(bad)?;
        let data = decode::<AccessClaims>(token, &key, &self.validation).map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            bad()
        })?;
        let c = data.claims;
        let tenant: TenantId = c.tid.parse().map_err(|_| bad())?;
        let subject = Uuid::parse_str(&c.sub).map_err(|_| bad())?;
        let teams = c
            .teams
            .iter()
            .map(|t| t.parse::<TeamId>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad())?;
        Ok(Caller {
            tenant,
            subject,
            roles: c.roles,
            teams,
            client_id: c.client_id,
            token: token.to_owned(),
        })
    }
}

/// Reads the bearer token of an `authorization` header value.
pub fn bearer(value: Option<&http::HeaderValue>) -> Option<&str> {
    let v = value?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Reads the caller a request was authenticated as.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::unauthenticated("missing access token").into())
}

/// Tower layer that authenticates every gRPC call except the listed public methods.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    public: Arc<HashSet<String>>,
}

impl AuthLayer {
    /// Paths in `public` (e.g. `/crm.identity.v1.IdentityService/Login`), health and reflection pass without a token.
    pub fn new(verifier: Arc<TokenVerifier>, public: &[&str]) -> Self {
        Self {
            verifier,
            public: Arc::new(public.iter().map(|s| (*s).to_owned()).collect()),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<TokenVerifier>,
    public: Arc<HashSet<String>>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let path = req.uri().path().to_owned();
        let open = !path.starts_with("/crm.") || self.public.contains(&path);
        Box::pin(async move {
            if open {
                return inner.call(req).await;
            }
            let Some(token) = bearer(req.headers().get(http::header::AUTHORIZATION)) else {
                let status: tonic::Status =
                    ApiError::unauthenticated("missing access token").into();
                return Ok(status.into_http());
            };
            match verifier.verify(token).await {
                Ok(caller) => {
                    let span = tracing::Span::current();
                    span.record("tenant_id", tracing::field::display(caller.tenant));
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}
