//! The identity service: sign-up, login, tokens, users, teams, roles, API clients and
//! security events, served over gRPC as crm.identity.v1.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use crm_bus::Event;
use crm_kit::{
    ApiError, ApiResult, Cache, Caller, Db, ErrorCode, TenantId, TenantTx, TokenVerifier,
    auth::{ACCESS_TOKEN_TYP, AccessClaims},
    error::Violations,
    paging::{PageTokens, page_size},
    rpc::{etag, fingerprint, parse_etag, path_id, ts},
};
use crm_proto::identity::{self as pb, identity_service_server::IdentityService};
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore;
use regex::Regex;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    keys::KeyStore,
    passwords::Passwords,
    permissions::{self, FieldAccess, FieldRule, Grant, Scope},
    store::{self, RoleRow, TeamRow, UserRow},
    throttle::{self, Throttle},
};

/// Token lifetimes and claims.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_idle_ttl: Duration,
    pub refresh_absolute_ttl: Duration,
}

/// The service's state.
#[derive(Clone)]
pub struct Identity {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    cache: Cache,
    keys: KeyStore,
    passwords: Passwords,
    pages: PageTokens,
    throttle: Throttle,
    tokens: TokenSettings,
    verifier: Arc<TokenVerifier>,
    email_re: Regex,
    slug_re: Regex,
    key_re: Regex,
}

const SERVICE: &str = "identity";
const MAX_NAME: usize = 200;
const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;
const PERMISSIONS_TTL: Duration = Duration::from_secs(300);

fn sha256(s: &str) -> Vec<u8> {
    Sha256::digest(s.as_bytes()).to_vec()
}

fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b))
}

fn user_pb(u: &UserRow) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        tenant_id: u.tenant_id.to_string(),
        email: u.email.clone(),
        name: u.name.clone(),
        role: u.role_key.clone(),
        team_ids: u.teams().iter().map(Uuid::to_string).collect(),
        timezone: u.timezone.clone(),
        locale: u.locale.clone(),
        disabled: u.disabled,
        version: u.version,
        etag: etag(u.version),
        create_time: ts(u.created_at),
        update_time: ts(u.updated_at),
    }
}

fn grant_pb(g: &Grant) -> pb::Permission {
    pb::Permission {
        object_type: g.object_type.clone(),
        action: g.action.clone(),
        scope: match g.scope {
            Scope::Own => pb::Scope::Own,
            Scope::Team => pb::Scope::Team,
            Scope::All => pb::Scope::All,
        } as i32,
    }
}

fn rule_pb(r: &FieldRule) -> pb::FieldRule {
    pb::FieldRule {
        object_type: r.object_type.clone(),
        field: r.field.clone(),
        access: match r.access {
            FieldAccess::Hidden => pb::FieldAccess::Hidden,
            FieldAccess::ReadOnly => pb::FieldAccess::ReadOnly,
        } as i32,
    }
}

fn role_pb(r: &RoleRow) -> pb::Role {
    pb::Role {
        id: r.id.to_string(),
        key: r.key.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        builtin: r.builtin,
        permissions: r.grants().iter().map(grant_pb).collect(),
        field_rules: r.rules().iter().map(rule_pb).collect(),
        version: r.version,
        etag: etag(r.version),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
    }
}

fn team_pb(t: &TeamRow) -> pb::Team {
    pb::Team {
        id: t.id.to_string(),
        name: t.name.clone(),
        member_user_ids: t.members().iter().map(Uuid::to_string).collect(),
        version: t.version,
        create_time: ts(t.created_at),
        update_time: ts(t.updated_at),
    }
}

fn tenant_pb(t: &store::TenantRow) -> pb::Tenant {
    pb::Tenant {
        id: t.id.to_string(),
        name: t.name.clone(),
        slug: t.slug.clone(),
        create_time: ts(t.created_at),
    }
}

fn grants_from_pb(ps: &[pb::Permission], v: &mut Violations) -> Vec<Grant> {
    ps.iter()
        .enumerate()
        .map(|(i, p)| Grant {
            object_type: p.object_type.clone(),
            action: p.action.clone(),
            scope: match pb::Scope::try_from(p.scope) {
                Ok(pb::Scope::Own) => Scope::Own,
                Ok(pb::Scope::Team) => Scope::Team,
                Ok(pb::Scope::All) => Scope::All,
                _ => {
                    v.add(
                        format!("permissions[{i}].scope"),
                        "must be own, team or all",
                    );
                    Scope::Own
                }
            },
        })
        .collect()
}

fn rules_from_pb(rs: &[pb::FieldRule], v: &mut Violations) -> Vec<FieldRule> {
    rs.iter()
        .enumerate()
        .map(|(i, r)| FieldRule {
            object_type: r.object_type.clone(),
            field: r.field.clone(),
            access: match pb::FieldAccess::try_from(r.access) {
                Ok(pb::FieldAccess::Hidden) => FieldAccess::Hidden,
                Ok(pb::FieldAccess::ReadOnly) => FieldAccess::ReadOnly,
                _ => {
                    v.add(
                        format!("field_rules[{i}].access"),
                        "must be hidden or read_only",
                    );
                    FieldAccess::Hidden
                }
            },
        })
        .collect()
}

/// What a caller may do: its role's grants and field rules, and its teams.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Effective {
    pub role: String,
    pub grants: Vec<Grant>,
    pub field_rules: Vec<FieldRule>,
    pub team_ids: Vec<Uuid>,
    /// Every member of the teams, the subject included.
    #[serde(default)]
    pub team_member_ids: Vec<Uuid>,
}

impl Effective {
    fn to_pb(&self, tenant: TenantId, subject: Uuid) -> pb::EffectivePermissions {
        pb::EffectivePermissions {
            tenant_id: tenant.to_string(),
            user_id: subject.to_string(),
            role: self.role.clone(),
            team_ids: self.team_ids.iter().map(Uuid::to_string).collect(),
            permissions: self.grants.iter().map(grant_pb).collect(),
            field_rules: self.field_rules.iter().map(rule_pb).collect(),
            team_member_user_ids: self.team_member_ids.iter().map(Uuid::to_string).collect(),
        }
    }
}

impl Identity {
    /// The service over its dependencies.
    pub fn new(
        db: Db,
        cache: Cache,
        keys: KeyStore,
        passwords: Passwords,
        pages: PageTokens,
        tokens: TokenSettings,
        verifier: Arc<TokenVerifier>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                throttle: Throttle::new(cache.clone()),
                db,
                cache,
                keys,
                passwords,
                pages,
                tokens,
                verifier,
                email_re: Regex::new(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")?,
                slug_re: Regex::new(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")?,
                key_re: Regex::new(r"^[a-z][a-z0-9_]{1,62}$")?,
            }),
        })
    }

    /// The verifier this service checks its own tokens with.
    pub fn verifier(&self) -> Arc<TokenVerifier> {
        self.inner.verifier.clone()
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.inner.keys
    }

    async fn tx(&self, tenant: TenantId) -> ApiResult<TenantTx> {
        Ok(self.inner.db.tenant_tx(tenant).await?)
    }

    fn check_email(&self, v: &mut Violations, field: &str, email: &str) -> String {
        v.text(field, email);
        let e = email.trim().to_lowercase();
        if e.is_empty() {
            v.add(field, "is required");
        } else if e.len() > 254 || !self.inner.email_re.is_match(&e) {
            v.add(field, "must be a valid e-mail address");
        }
        e
    }

    fn check_password(v: &mut Violations, field: &str, pw: &str, required: bool) {
        let n = pw.chars().count();
        if n == 0 {
            if required {
                v.add(field, "is required");
            }
        } else if n < MIN_PASSWORD {
            v.add(field, format!("must be at least {MIN_PASSWORD} characters"));
        } else if n > MAX_PASSWORD {
            v.add(field, format!("must be at most {MAX_PASSWORD} characters"));
        }
    }

    fn check_name(v: &mut Violations, field: &str, name: &str, required: bool) {
        v.text(field, name);
        let n = name.trim().chars().count();
        if required && n == 0 {
            v.add(field, "is required");
        } else if n > MAX_NAME {
            v.add(field, format!("must be at most {MAX_NAME} characters"));
        }
    }

    fn check_tz_locale(v: &mut Violations, tz: &str, locale: &str) {
        if tz.is_empty()
            || tz.len() > 64
            || !tz
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
        {
            v.add(
                "timezone",
                "must be an IANA time zone name such as Europe/Paris",
            );
        }
        if locale.is_empty()
            || locale.len() > 35
            || !locale
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            v.add("locale", "must be a BCP 47 language tag such as en-GB");
        }
    }

    // ---- tokens -----------------------------------------------------------------------

    async fn access_token(
        &self,
        tenant: TenantId,
        subject: Uuid,
        roles: Vec<String>,
        teams: Vec<Uuid>,
        client_id: Option<String>,
    ) -> ApiResult<(String, i64)> {
        let key = self
            .inner
            .keys
            .current()
            .await
            .map_err(ApiError::internal)?;
        let now = Utc::now().timestamp();
        let ttl = self.inner.tokens.access_ttl.as_secs() as i64;
        let claims = AccessClaims {
            iss: self.inner.tokens.issuer.clone(),
            sub: subject.to_string(),
            aud: self.inner.tokens.audience.clone(),
            exp: now + ttl,
            iat: now,
            nbf: now,
            jti: Uuid::now_v7().to_string(),
            tid: tenant.to_string(),
            roles,
            teams: teams.iter().map(Uuid::to_string).collect(),
            client_id,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYP.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.key).map_err(ApiError::internal)?;
        Ok((token, ttl))
    }

    /// Starts a refresh-token family (login, sign-up) or continues one (refresh).
    async fn new_refresh(
        &self,
        tx: &TenantTx,
        user: Uuid,
        family: Option<(Uuid, DateTime<Utc>)>,
    ) -> ApiResult<String> {
        let token = random_token("crt_");
        let now = Utc::now();
        let (family, family_exp) = family.unwrap_or_else(|| {
            (
                Uuid::now_v7(),
                now + chrono::Duration::from_std(self.inner.tokens.refresh_absolute_ttl)
                    .unwrap_or(chrono::Duration::days(90)),
            )
        });
        let idle = now
            + chrono::Duration::from_std(self.inner.tokens.refresh_idle_ttl)
                .unwrap_or(chrono::Duration::days(14));
        store::insert_refresh(
            tx,
            family,
            user,
            &sha256(&token),
            idle.min(family_exp),
            family_exp,
        )
        .await?;
        Ok(token)
    }

    async fn pair(
        &self,
        tx: &TenantTx,
        user: &UserRow,
        family: Option<(Uuid, DateTime<Utc>)>,
    ) -> ApiResult<pb::TokenPair> {
        let refresh = self.new_refresh(tx, user.id, family).await?;
        let (access, expires_in) = self
            .access_token(
                tx.tenant(),
                user.id,
                vec![user.role_key.clone()],
                user.teams(),
                None,
            )
            .await?;
        Ok(pb::TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "Bearer".into(),
            expires_in,
        })
    }

    // ---- permissions ------------------------------------------------------------------

    async fn generation(&self, tenant: TenantId) -> String {
        self.inner
            .cache
            .get(&format!("perm:gen:{tenant}"))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| "0".into())
    }

    /// Drops every cached permission set of a tenant (roles, teams or users changed).
    async fn invalidate_permissions(&self, tenant: TenantId) {
        if let Err(e) = self
            .inner
            .cache
            .incr(
                &format!("perm:gen:{tenant}"),
                Duration::from_secs(30 * 86_400),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot invalidate cached permissions");
        }
    }

    async fn load_effective(
        &self,
        tx: &TenantTx,
        subject: Uuid,
        is_client: bool,
    ) -> ApiResult<Option<Effective>> {
        let (role_key, teams) = if is_client {
            match store::api_client_by_id(tx, subject).await? {
                Some(c) => (c.role_key, vec![]),
                None => return Ok(None),
            }
        } else {
            match store::user_by_id(tx, subject).await? {
                Some(u) if !u.disabled => (u.role_key.clone(), u.teams()),
                _ => return Ok(None),
            }
        };
        let Some(role) = store::role_by_key(tx, &role_key).await? else {
            return Ok(None);
        };
        let mut team_member_ids = store::team_member_ids(tx, &teams).await?;
        if !is_client && !team_member_ids.contains(&subject) {
            team_member_ids.push(subject);
        }
        Ok(Some(Effective {
            role: role.key.clone(),
            grants: role.grants(),
            field_rules: role.rules(),
            team_ids: teams,
            team_member_ids,
        }))
    }

    /// The effective permissions of a subject, cached until a role, team or user changes.
    pub async fn effective(
        &self,
        tenant: TenantId,
        subject: Uuid,
        is_client: bool,
    ) -> ApiResult<Effective> {
        let key = format!("perm:{tenant}:{}:{subject}", self.generation(tenant).await);
        if let Ok(Some(hit)) = self.inner.cache.get(&key).await
            && let Ok(e) = serde_json::from_str::<Effective>(&hit)
        {
            return Ok(e);
        }
        let tx = self.tx(tenant).await?;
        let eff = self.load_effective(&tx, subject, is_client).await?;
        tx.commit().await?;
        // A caller whose user was disabled or deleted keeps no rights, even with a live token.
        let eff = eff.ok_or_else(|| {
            ApiError::unauthenticated("the caller no longer exists or is disabled")
        })?;
        if let Ok(s) = serde_json::to_string(&eff)
            && let Err(e) = self.inner.cache.set(&key, &s, PERMISSIONS_TTL).await
        {
            tracing::warn!(error = %e, "cannot cache permissions");
        }
        Ok(eff)
    }

    async fn require(&self, caller: &Caller, object_type: &str, action: &str) -> ApiResult<Scope> {
        let eff = self
            .effective(caller.tenant, caller.subject, caller.client_id.is_some())
            .await?;
        permissions::scope_for(&eff.grants, object_type, action).ok_or_else(|| {
            ApiError::permission_denied(format!("the caller may not {action} {object_type}"))
        })
    }

    /// One page of a list: the read permission, the page token (bound to tenant and query),
    /// a keyset query in a tenant transaction, and the token of the next page.
    async fn list_page<T>(
        &self,
        caller: &Caller,
        (object_type, query): (&str, &str),
        token: &str,
        size: i32,
        fetch: impl AsyncFnOnce(&TenantTx, Option<Uuid>, u64) -> Result<Vec<T>, sea_orm::DbErr>,
        id: impl Fn(&T) -> Uuid,
    ) -> ApiResult<(Vec<T>, String)> {
        self.require(caller, object_type, "read").await?;
        let size = page_size(size, "page_size")?;
        let after = self
            .inner
            .pages
            .decode(token, caller.tenant, query, "page_token")?
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = fetch(&tx, after, size + 1).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = self
                    .inner
                    .pages
                    .encode(caller.tenant, query, &id(last).to_string());
            }
        }
        Ok((rows, next))
    }

    /// One record by id after the read permission; unknown, foreign and malformed ids alike
    /// are "not found".
    async fn get_row<T>(
        &self,
        caller: &Caller,
        object_type: &str,
        what: &str,
        id: &str,
        fetch: impl AsyncFnOnce(&TenantTx, Uuid) -> Result<Option<T>, sea_orm::DbErr>,
    ) -> ApiResult<T> {
        self.require(caller, object_type, "read").await?;
        let id = path_id(what, id)?;
        let tx = self.tx(caller.tenant).await?;
        let row = fetch(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found(what))?;
        tx.commit().await?;
        Ok(row)
    }

    // ---- operations -------------------------------------------------------------------

    /// Creates a tenant with its built-in roles and its first user, an admin.
    pub async fn sign_up(&self, r: pb::SignUpRequest) -> ApiResult<pb::SignUpResponse> {
        let mut v = Violations::new();
        Self::check_name(&mut v, "tenant_name", &r.tenant_name, true);
        let slug = r.tenant_slug.trim().to_lowercase();
        if slug.is_empty() {
            v.add("tenant_slug", "is required");
        } else if !self.inner.slug_re.is_match(&slug) {
            v.add("tenant_slug", "must be 1 to 63 lowercase letters, digits or hyphens, not starting or ending with a hyphen");
        }
        let email = self.check_email(&mut v, "email", &r.email);
        Self::check_password(&mut v, "password", &r.password, true);
        Self::check_name(&mut v, "name", &r.name, false);
        v.finish()?;

        let hash = self
            .inner
            .passwords
            .hash(&SecretString::from(r.password))
            .await
            .map_err(ApiError::internal)?;
        let tenant = TenantId::new();
        let user_id = Uuid::now_v7();
        let tx = self.tx(tenant).await?;
        if let Err(e) = store::insert_tenant(&tx, r.tenant_name.trim(), &slug).await {
            if store::unique_violation(&e, "tenants_slug") {
                return Err(ApiError::conflict("a tenant with this slug already exists")
                    .with_fields(vec![crm_kit::error::FieldViolation {
                        field: "tenant_slug".into(),
                        message: "is already taken".into(),
                    }]));
            }
            return Err(e.into());
        }
        let mut admin_role = None;
        for b in permissions::builtin_roles() {
            let id = Uuid::now_v7();
            if b.key == "admin" {
                admin_role = Some(id);
            }
            store::insert_role(
                &tx,
                id,
                b.key,
                b.name,
                b.description,
                true,
                &b.grants,
                &b.field_rules,
                Some(user_id),
            )
            .await?;
        }
        let admin_role = admin_role.ok_or_else(|| ApiError::internal("no admin role"))?;
        store::insert_user(
            &tx,
            user_id,
            &email,
            r.name.trim(),
            admin_role,
            Some(&hash),
            "UTC",
            "en",
            Some(user_id),
        )
        .await?;
        let tenant_row = store::get_tenant(&tx)
            .await?
            .ok_or_else(|| ApiError::internal("tenant vanished"))?;
        let user = store::user_by_id(&tx, user_id)
            .await?
            .ok_or_else(|| ApiError::internal("user vanished"))?;
        store::emit(&tx, Event::new(SERVICE, "tenant.created", tenant, Some(user_id), "tenant", tenant,
            None, Some(serde_json::json!({"id": tenant, "name": tenant_row.name, "slug": tenant_row.slug})))).await?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "user.created",
                tenant,
                Some(user_id),
                "user",
                user_id,
                None,
                Some(user.public_json()),
            ),
        )
        .await?;
        store::record_security(
            &tx,
            "user.created",
            Some(user_id),
            Some(user_id),
            None,
            serde_json::json!({"role": "admin", "via": "signup"}),
        )
        .await?;
        let tokens = self.pair(&tx, &user, None).await?;
        tx.commit().await?;
        Ok(pb::SignUpResponse {
            tenant: Some(tenant_pb(&tenant_row)),
            user: Some(user_pb(&user)),
            tokens: Some(tokens),
        })
    }

    /// Exchanges credentials for tokens; unknown e-mail and wrong password answer alike.
    pub async fn login(&self, r: pb::LoginRequest) -> ApiResult<pb::TokenPair> {
        let mut v = Violations::new();
        let slug = r.tenant_slug.trim().to_lowercase();
        if slug.is_empty() {
            v.add("tenant_slug", "is required");
        } else if slug.len() > 63 {
            v.add("tenant_slug", "must be at most 63 characters");
        }
        v.text("tenant_slug", &slug);
        let email = r.email.trim().to_lowercase();
        v.text("email", &email);
        if email.is_empty() {
            v.add("email", "is required");
        } else if email.len() > 254 {
            v.add("email", "must be at most 254 characters");
        }
        if r.password.is_empty() {
            v.add("password", "is required");
        } else if r.password.len() > MAX_PASSWORD * 4 {
            v.add(
                "password",
                format!("must be at most {MAX_PASSWORD} characters"),
            );
        }
        v.finish()?;
        let account_key = format!(
            "acct:{}",
            URL_SAFE_NO_PAD.encode(sha256(&format!("{slug}\0{email}")))
        );
        let address_key =
            (!r.client_address.is_empty()).then(|| format!("addr:{}", r.client_address));
        let mut keys = vec![account_key.clone()];
        keys.extend(address_key.clone());
        self.inner.throttle.check(&keys).await?;

        let password = SecretString::from(r.password);
        let denied = || ApiError::unauthenticated("invalid e-mail or password");
        let address = (!r.client_address.is_empty()).then_some(r.client_address.as_str());
        let tenant = store::tenant_id_by_slug(self.inner.db.conn(), &slug).await?;
        // Read in a short transaction: the hash must not hold a pooled connection.
        let found = match tenant {
            Some(t) => {
                let tx = self.tx(t).await?;
                let u = store::user_by_email(&tx, &email).await?;
                tx.commit().await?;
                Some((t, u))
            }
            None => None,
        };
        let stored = found
            .as_ref()
            .and_then(|(_, u)| u.as_ref())
            .filter(|u| !u.disabled)
            .and_then(|u| u.password_hash.clone());
        let verified = self
            .inner
            .passwords
            .verify(&password, stored.as_deref())
            .await
            .map_err(ApiError::internal)?;
        match found {
            Some((tenant, Some(user))) if verified.ok => {
                let tx = self.tx(tenant).await?;
                if verified.needs_rehash {
                    let h = self
                        .inner
                        .passwords
                        .hash(&password)
                        .await
                        .map_err(ApiError::internal)?;
                    store::set_password_hash(&tx, user.id, &h).await?;
                }
                store::record_security(
                    &tx,
                    "login.succeeded",
                    Some(user.id),
                    Some(user.id),
                    address,
                    serde_json::json!({}),
                )
                .await?;
                let pair = self.pair(&tx, &user, None).await?;
                tx.commit().await?;
                self.inner.throttle.succeeded(&account_key).await;
                metrics::counter!("crm_logins_total", "outcome" => "success").increment(1);
                Ok(pair)
            }
            found => {
                if let Some((tenant, user)) = found {
                    let tx = self.tx(tenant).await?;
                    let reason = match &user {
                        None => "unknown_email",
                        Some(u) if u.disabled => "disabled",
                        Some(u) if u.password_hash.is_none() => "no_password",
                        Some(_) => "wrong_password",
                    };
                    store::record_security(
                        &tx,
                        "login.failed",
                        None,
                        user.as_ref().map(|u| u.id),
                        address,
                        serde_json::json!({"email": email, "reason": reason}),
                    )
                    .await?;
                    tx.commit().await?;
                }
                self.inner
                    .throttle
                    .failed(&account_key, throttle::ACCOUNT_THRESHOLD)
                    .await;
                if let Some(k) = &address_key {
                    self.inner
                        .throttle
                        .failed(k, throttle::ADDRESS_THRESHOLD)
                        .await;
                }
                metrics::counter!("crm_logins_total", "outcome" => "failure").increment(1);
                Err(denied())
            }
        }
    }

    /// Rotates a refresh token; a token used twice revokes its whole family.
    pub async fn refresh(&self, r: pb::RefreshTokenRequest) -> ApiResult<pb::TokenPair> {
        if r.refresh_token.is_empty() {
            return Err(ApiError::invalid("refresh_token", "is required"));
        }
        let denied = || ApiError::unauthenticated("invalid refresh token");
        if r.refresh_token.len() > 200 {
            return Err(denied());
        }
        let hash = sha256(&r.refresh_token);
        let tenant = store::tenant_id_by_refresh(self.inner.db.conn(), &hash)
            .await?
            .ok_or_else(denied)?;
        let tx = self.tx(tenant).await?;
        match store::claim_refresh(&tx, &hash).await? {
            Some(row) => {
                let now = Utc::now();
                if row.expires_at <= now || row.family_expires_at <= now {
                    tx.commit().await?;
                    return Err(denied());
                }
                let user = store::user_by_id(&tx, row.user_id)
                    .await?
                    .filter(|u| !u.disabled);
                let Some(user) = user else {
                    store::revoke_family(&tx, row.family_id).await?;
                    tx.commit().await?;
                    return Err(denied());
                };
                let pair = self
                    .pair(&tx, &user, Some((row.family_id, row.family_expires_at)))
                    .await?;
                tx.commit().await?;
                Ok(pair)
            }
            None => {
                if let Some(row) = store::refresh_by_hash(&tx, &hash).await?
                    && row.used_at.is_some()
                {
                    let revoked = store::revoke_family(&tx, row.family_id).await?;
                    store::record_security(
                        &tx,
                        "refresh_token.reused",
                        None,
                        Some(row.user_id),
                        None,
                        serde_json::json!({"familyId": row.family_id, "revokedTokens": revoked}),
                    )
                    .await?;
                    tracing::warn!(tenant_id = %tenant, user_id = %row.user_id, "refresh token reused; family revoked");
                }
                tx.commit().await?;
                Err(denied())
            }
        }
    }

    /// Revokes the family of a refresh token. Unknown tokens are accepted silently.
    pub async fn logout(&self, r: pb::LogoutRequest) -> ApiResult<()> {
        if r.refresh_token.is_empty() {
            return Err(ApiError::invalid("refresh_token", "is required"));
        }
        let hash = sha256(&r.refresh_token);
        if let Some(tenant) = store::tenant_id_by_refresh(self.inner.db.conn(), &hash).await? {
            let tx = self.tx(tenant).await?;
            if let Some(row) = store::refresh_by_hash(&tx, &hash).await? {
                store::revoke_family(&tx, row.family_id).await?;
                store::record_security(
                    &tx,
                    "logout",
                    Some(row.user_id),
                    Some(row.user_id),
                    None,
                    serde_json::json!({}),
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// OAuth2 client_credentials.
    pub async fn client_token(
        &self,
        r: pb::IssueClientTokenRequest,
    ) -> ApiResult<pb::IssueClientTokenResponse> {
        let mut v = Violations::new();
        v.check(r.client_id.is_empty(), "client_id", "is required");
        v.text("client_id", &r.client_id);
        v.check(r.client_secret.is_empty(), "client_secret", "is required");
        v.finish()?;
        let denied = || ApiError::unauthenticated("invalid client credentials");
        if r.client_id.len() > 200 || r.client_secret.len() > 200 {
            return Err(denied());
        }
        let tenant = store::tenant_id_by_client(self.inner.db.conn(), &r.client_id)
            .await?
            .ok_or_else(denied)?;
        let tx = self.tx(tenant).await?;
        let client = store::api_client_by_client_id(&tx, &r.client_id)
            .await?
            .ok_or_else(denied)?;
        let given = sha256(&r.client_secret);
        if !constant_time_eq(&given, &client.secret_hash) {
            store::record_security(
                &tx,
                "client_token.failed",
                None,
                Some(client.id),
                None,
                serde_json::json!({"clientId": client.client_id}),
            )
            .await?;
            tx.commit().await?;
            return Err(denied());
        }
        store::touch_api_client(&tx, client.id).await?;
        tx.commit().await?;
        let (token, expires_in) = self
            .access_token(
                tenant,
                client.id,
                vec![client.role_key.clone()],
                vec![],
                Some(client.client_id.clone()),
            )
            .await?;
        Ok(pb::IssueClientTokenResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in,
        })
    }

    /// The public keys.
    pub async fn jwks(&self) -> ApiResult<Vec<pb::Jwk>> {
        let keys = self
            .inner
            .keys
            .public_keys()
            .await
            .map_err(ApiError::internal)?;
        Ok(keys
            .into_iter()
            .map(|k| pb::Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: k.x,
                kid: k.kid,
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect())
    }

    /// The caller with tenant and permissions.
    pub async fn me(&self, caller: &Caller) -> ApiResult<pb::GetMeResponse> {
        let eff = self
            .effective(caller.tenant, caller.subject, caller.client_id.is_some())
            .await?;
        let tx = self.tx(caller.tenant).await?;
        let tenant = store::get_tenant(&tx)
            .await?
            .ok_or_else(|| ApiError::not_found("tenant"))?;
        let user = match caller.user_id() {
            Some(u) => store::user_by_id(&tx, u.uuid()).await?,
            None => None,
        };
        tx.commit().await?;
        Ok(pb::GetMeResponse {
            user: user.as_ref().map(user_pb),
            tenant: Some(tenant_pb(&tenant)),
            permissions: Some(eff.to_pb(caller.tenant, caller.subject)),
        })
    }

    /// Effective permissions of the caller or (with user read permission) another user.
    pub async fn permissions_of(
        &self,
        caller: &Caller,
        user_id: &str,
    ) -> ApiResult<pb::EffectivePermissions> {
        if user_id.is_empty() || user_id == caller.subject.to_string() {
            let eff = self
                .effective(caller.tenant, caller.subject, caller.client_id.is_some())
                .await?;
            return Ok(eff.to_pb(caller.tenant, caller.subject));
        }
        self.require(caller, "user", "read").await?;
        let id = path_id("user", user_id)?;
        let eff = self
            .effective(caller.tenant, id, false)
            .await
            .map_err(|_| ApiError::not_found("user"))?;
        Ok(eff.to_pb(caller.tenant, id))
    }

    pub async fn list_users(
        &self,
        caller: &Caller,
        r: pb::ListUsersRequest,
    ) -> ApiResult<pb::ListUsersResponse> {
        let (rows, next) = self
            .list_page(
                caller,
                ("user", "users"),
                &r.page_token,
                r.page_size,
                async |tx, after, n| store::list_users(tx, after, n).await,
                |u| u.id,
            )
            .await?;
        Ok(pb::ListUsersResponse {
            users: rows.iter().map(user_pb).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_user(&self, caller: &Caller, id: &str) -> ApiResult<pb::User> {
        let u = self
            .get_row(caller, "user", "user", id, async |tx, id| {
                store::user_by_id(tx, id).await
            })
            .await?;
        Ok(user_pb(&u))
    }

    pub async fn create_user(
        &self,
        caller: &Caller,
        r: pb::CreateUserRequest,
    ) -> ApiResult<pb::User> {
        self.require(caller, "user", "create").await?;
        let fp = fingerprint(&pb::CreateUserRequest {
            password: if r.password.is_empty() {
                String::new()
            } else {
                "set".into()
            },
            request_id: String::new(),
            ..r.clone()
        });
        let mut v = Violations::new();
        let email = self.check_email(&mut v, "email", &r.email);
        Self::check_name(&mut v, "name", &r.name, false);
        v.check(r.role.trim().is_empty(), "role", "is required");
        v.text("role", &r.role);
        Self::check_password(&mut v, "password", &r.password, false);
        let tz = if r.timezone.is_empty() {
            "UTC".to_owned()
        } else {
            r.timezone.clone()
        };
        let locale = if r.locale.is_empty() {
            "en".to_owned()
        } else {
            r.locale.clone()
        };
        Self::check_tz_locale(&mut v, &tz, &locale);
        v.check(
            r.request_id.len() > 200,
            "request_id",
            "must be at most 200 characters",
        );
        v.finish()?;
        let hash = if r.password.is_empty() {
            None
        } else {
            Some(
                self.inner
                    .passwords
                    .hash(&SecretString::from(r.password))
                    .await
                    .map_err(ApiError::internal)?,
            )
        };
        let tx = self.tx(caller.tenant).await?;
        if !r.request_id.is_empty()
            && let Some(id) =
                crm_kit::idempotency::find(&tx, store::SCHEMA, "create_user", &r.request_id, &fp)
                    .await?
        {
            let u = store::user_by_id(&tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("user"))?;
            tx.commit().await?;
            return Ok(user_pb(&u));
        }
        let role = store::role_by_key(&tx, r.role.trim())
            .await?
            .ok_or_else(|| ApiError::invalid("role", "no such role"))?;
        let id = Uuid::now_v7();
        if let Err(e) = store::insert_user(
            &tx,
            id,
            &email,
            r.name.trim(),
            role.id,
            hash.as_deref(),
            &tz,
            &locale,
            Some(caller.subject),
        )
        .await
        {
            if store::unique_violation(&e, "users_tenant_id_email_key") {
                return Err(ApiError::conflict("a user with this e-mail already exists")
                    .with_fields(vec![crm_kit::error::FieldViolation {
                        field: "email".into(),
                        message: "is already taken".into(),
                    }]));
            }
            return Err(e.into());
        }
        if !r.request_id.is_empty() {
            crm_kit::idempotency::remember(
                &tx,
                store::SCHEMA,
                "create_user",
                &r.request_id,
                &fp,
                id,
            )
            .await?;
        }
        let u = store::user_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("user vanished"))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "user.created",
                caller.tenant,
                Some(caller.subject),
                "user",
                id,
                None,
                Some(u.public_json()),
            ),
        )
        .await?;
        store::record_security(
            &tx,
            "user.created",
            Some(caller.subject),
            Some(id),
            None,
            serde_json::json!({"role": role.key}),
        )
        .await?;
        tx.commit().await?;
        Ok(user_pb(&u))
    }

    pub async fn update_user(
        &self,
        caller: &Caller,
        r: pb::UpdateUserRequest,
    ) -> ApiResult<pb::User> {
        self.require(caller, "user", "update").await?;
        let id = path_id("user", &r.id)?;
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let mut v = Violations::new();
        if paths.is_empty() {
            v.add("update_mask", "names no field to change");
        }
        let mut ch = store::UserChanges::default();
        let mut role_key = None;
        for p in &paths {
            match p.as_str() {
                "name" => {
                    Self::check_name(&mut v, "name", &r.name, false);
                    ch.name = Some(r.name.trim().to_owned());
                }
                "role" => {
                    v.check(r.role.trim().is_empty(), "role", "is required");
                    v.text("role", &r.role);
                    v.text("role", &r.role);
                    role_key = Some(r.role.trim().to_owned());
                }
                "password" => Self::check_password(&mut v, "password", &r.password, true),
                "timezone" => {
                    Self::check_tz_locale(&mut v, &r.timezone, "en");
                    ch.timezone = Some(r.timezone.clone());
                }
                "locale" => {
                    Self::check_tz_locale(&mut v, "UTC", &r.locale);
                    ch.locale = Some(r.locale.clone());
                }
                "disabled" => ch.disabled = Some(r.disabled),
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        let expected = parse_etag(&r.etag)?;
        v.finish()?;
        if paths.iter().any(|p| p == "password") {
            ch.password_hash = Some(
                self.inner
                    .passwords
                    .hash(&SecretString::from(r.password.clone()))
                    .await
                    .map_err(ApiError::internal)?,
            );
        }
        if ch.disabled == Some(true) && id == caller.subject {
            return Err(ApiError::invalid("disabled", "you cannot disable yourself"));
        }
        if role_key.is_some() && id == caller.subject {
            // Another admin must do it, so a tenant never loses its last administrator this way.
            return Err(ApiError::new(
                ErrorCode::RuleViolation,
                "you cannot change your own role",
            ));
        }
        let tx = self.tx(caller.tenant).await?;
        let before = store::user_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if let Some(k) = &role_key {
            let role = store::role_by_key(&tx, k)
                .await?
                .ok_or_else(|| ApiError::invalid("role", "no such role"))?;
            ch.role_id = Some(role.id);
        }
        if !store::update_user(&tx, id, &ch, expected).await? {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                "the user was changed by someone else; reload and retry",
            ));
        }
        let after = store::user_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("user vanished"))?;
        if before.role_key != after.role_key {
            store::record_security(
                &tx,
                "user.role_changed",
                Some(caller.subject),
                Some(id),
                None,
                serde_json::json!({"before": before.role_key, "after": after.role_key}),
            )
            .await?;
        }
        if !before.disabled && after.disabled {
            store::revoke_user_tokens(&tx, id).await?;
            store::record_security(
                &tx,
                "user.disabled",
                Some(caller.subject),
                Some(id),
                None,
                serde_json::json!({}),
            )
            .await?;
        }
        if ch.password_hash.is_some() {
            store::revoke_user_tokens(&tx, id).await?;
            store::record_security(
                &tx,
                "user.password_changed",
                Some(caller.subject),
                Some(id),
                None,
                serde_json::json!({}),
            )
            .await?;
        }
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "user.updated",
                caller.tenant,
                Some(caller.subject),
                "user",
                id,
                Some(before.public_json()),
                Some(after.public_json()),
            ),
        )
        .await?;
        tx.commit().await?;
        self.invalidate_permissions(caller.tenant).await;
        Ok(user_pb(&after))
    }

    pub async fn list_teams(
        &self,
        caller: &Caller,
        r: pb::ListTeamsRequest,
    ) -> ApiResult<pb::ListTeamsResponse> {
        let (rows, next) = self
            .list_page(
                caller,
                ("team", "teams"),
                &r.page_token,
                r.page_size,
                async |tx, after, n| store::list_teams(tx, after, n).await,
                |t| t.id,
            )
            .await?;
        Ok(pb::ListTeamsResponse {
            teams: rows.iter().map(team_pb).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_team(&self, caller: &Caller, id: &str) -> ApiResult<pb::Team> {
        let t = self
            .get_row(caller, "team", "team", id, async |tx, id| {
                store::team_by_id(tx, id).await
            })
            .await?;
        Ok(team_pb(&t))
    }

    pub async fn create_team(
        &self,
        caller: &Caller,
        r: pb::CreateTeamRequest,
    ) -> ApiResult<pb::Team> {
        self.require(caller, "team", "create").await?;
        let fp = fingerprint(&pb::CreateTeamRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let mut v = Violations::new();
        Self::check_name(&mut v, "name", &r.name, true);
        v.check(
            r.request_id.len() > 200,
            "request_id",
            "must be at most 200 characters",
        );
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        if !r.request_id.is_empty()
            && let Some(id) =
                crm_kit::idempotency::find(&tx, store::SCHEMA, "create_team", &r.request_id, &fp)
                    .await?
        {
            let t = store::team_by_id(&tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("team"))?;
            tx.commit().await?;
            return Ok(team_pb(&t));
        }
        let id = Uuid::now_v7();
        if let Err(e) = store::insert_team(&tx, id, r.name.trim(), Some(caller.subject)).await {
            if store::unique_violation(&e, "teams_tenant_id_name_key") {
                return Err(ApiError::conflict("a team with this name already exists")
                    .with_fields(vec![crm_kit::error::FieldViolation {
                        field: "name".into(),
                        message: "is already taken".into(),
                    }]));
            }
            return Err(e.into());
        }
        if !r.request_id.is_empty() {
            crm_kit::idempotency::remember(
                &tx,
                store::SCHEMA,
                "create_team",
                &r.request_id,
                &fp,
                id,
            )
            .await?;
        }
        let t = store::team_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("team vanished"))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "team.created",
                caller.tenant,
                Some(caller.subject),
                "team",
                id,
                None,
                Some(t.public_json()),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(team_pb(&t))
    }

    pub async fn set_team_member(
        &self,
        caller: &Caller,
        team_id: &str,
        user_id: &str,
        member: bool,
    ) -> ApiResult<pb::Team> {
        self.require(caller, "team", "update").await?;
        let team = path_id("team", team_id)?;
        let user = path_id("user", user_id)?;
        let tx = self.tx(caller.tenant).await?;
        let before = store::team_by_id(&tx, team)
            .await?
            .ok_or_else(|| ApiError::not_found("team"))?;
        if store::user_by_id(&tx, user).await?.is_none() {
            return Err(ApiError::not_found("user"));
        }
        let changed = store::set_member(&tx, team, user, member, Some(caller.subject)).await?;
        let after = store::team_by_id(&tx, team)
            .await?
            .ok_or_else(|| ApiError::internal("team vanished"))?;
        if changed {
            store::emit(
                &tx,
                Event::new(
                    SERVICE,
                    "team.updated",
                    caller.tenant,
                    Some(caller.subject),
                    "team",
                    team,
                    Some(before.public_json()),
                    Some(after.public_json()),
                ),
            )
            .await?;
        }
        tx.commit().await?;
        if changed {
            self.invalidate_permissions(caller.tenant).await;
        }
        Ok(team_pb(&after))
    }

    pub async fn list_roles(
        &self,
        caller: &Caller,
        r: pb::ListRolesRequest,
    ) -> ApiResult<pb::ListRolesResponse> {
        let (rows, next) = self
            .list_page(
                caller,
                ("role", "roles"),
                &r.page_token,
                r.page_size,
                async |tx, after, n| store::list_roles(tx, after, n).await,
                |r| r.id,
            )
            .await?;
        Ok(pb::ListRolesResponse {
            roles: rows.iter().map(role_pb).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_role(&self, caller: &Caller, id: &str) -> ApiResult<pb::Role> {
        let r = self
            .get_row(caller, "role", "role", id, async |tx, id| {
                store::role_by_id(tx, id).await
            })
            .await?;
        Ok(role_pb(&r))
    }

    pub async fn create_role(
        &self,
        caller: &Caller,
        r: pb::CreateRoleRequest,
    ) -> ApiResult<pb::Role> {
        self.require(caller, "role", "create").await?;
        let fp = fingerprint(&pb::CreateRoleRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let mut v = Violations::new();
        let key = r.key.trim().to_owned();
        if key.is_empty() {
            v.add("key", "is required");
        } else if !self.inner.key_re.is_match(&key) {
            v.add(
                "key",
                "must be 2 to 63 lowercase letters, digits or underscores, starting with a letter",
            );
        }
        Self::check_name(&mut v, "name", &r.name, true);
        v.check(
            r.description.chars().count() > 1000 || r.description.contains('\0'),
            "description",
            "must be at most 1000 characters, with no NUL character",
        );
        v.check(
            r.permissions.len() > 500,
            "permissions",
            "must hold at most 500 grants",
        );
        v.check(
            r.field_rules.len() > 500,
            "field_rules",
            "must hold at most 500 rules",
        );
        let grants = grants_from_pb(&r.permissions, &mut v);
        let rules = rules_from_pb(&r.field_rules, &mut v);
        permissions::validate_grants(&grants, &rules, &mut v);
        v.check(
            r.request_id.len() > 200,
            "request_id",
            "must be at most 200 characters",
        );
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        if !r.request_id.is_empty()
            && let Some(id) =
                crm_kit::idempotency::find(&tx, store::SCHEMA, "create_role", &r.request_id, &fp)
                    .await?
        {
            let role = store::role_by_id(&tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("role"))?;
            tx.commit().await?;
            return Ok(role_pb(&role));
        }
        let id = Uuid::now_v7();
        if let Err(e) = store::insert_role(
            &tx,
            id,
            &key,
            r.name.trim(),
            &r.description,
            false,
            &grants,
            &rules,
            Some(caller.subject),
        )
        .await
        {
            if store::unique_violation(&e, "roles_tenant_id_key_key") {
                return Err(
                    ApiError::conflict("a role with this key already exists").with_fields(vec![
                        crm_kit::error::FieldViolation {
                            field: "key".into(),
                            message: "is already taken".into(),
                        },
                    ]),
                );
            }
            return Err(e.into());
        }
        if !r.request_id.is_empty() {
            crm_kit::idempotency::remember(
                &tx,
                store::SCHEMA,
                "create_role",
                &r.request_id,
                &fp,
                id,
            )
            .await?;
        }
        let role = store::role_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("role vanished"))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "role.created",
                caller.tenant,
                Some(caller.subject),
                "role",
                id,
                None,
                Some(role.public_json()),
            ),
        )
        .await?;
        store::record_security(
            &tx,
            "role.created",
            Some(caller.subject),
            Some(id),
            None,
            serde_json::json!({"key": role.key}),
        )
        .await?;
        tx.commit().await?;
        Ok(role_pb(&role))
    }

    pub async fn update_role(
        &self,
        caller: &Caller,
        r: pb::UpdateRoleRequest,
    ) -> ApiResult<pb::Role> {
        self.require(caller, "role", "update").await?;
        let id = path_id("role", &r.id)?;
        let paths: Vec<String> = r
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let mut v = Violations::new();
        if paths.is_empty() {
            v.add("update_mask", "names no field to change");
        }
        for p in &paths {
            if !["name", "description", "permissions", "field_rules"].contains(&p.as_str()) {
                v.add("update_mask", format!("unknown field {p:?}"));
            }
        }
        let has = |f: &str| paths.iter().any(|p| p == f);
        if has("name") {
            Self::check_name(&mut v, "name", &r.name, true);
        }
        v.check(
            has("description")
                && (r.description.chars().count() > 1000 || r.description.contains('\0')),
            "description",
            "must be at most 1000 characters, with no NUL character",
        );
        let grants = grants_from_pb(&r.permissions, &mut v);
        let rules = rules_from_pb(&r.field_rules, &mut v);
        permissions::validate_grants(&grants, &rules, &mut v);
        let expected = parse_etag(&r.etag)?;
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let before = store::role_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("role"))?;
        if before.key == "admin" && (has("permissions") || has("field_rules")) {
            return Err(ApiError::new(
                ErrorCode::RuleViolation,
                "the admin role's permissions cannot be changed, so a tenant can never lock itself out",
            ));
        }
        let name = if has("name") {
            r.name.trim().to_owned()
        } else {
            before.name.clone()
        };
        let description = if has("description") {
            r.description.clone()
        } else {
            before.description.clone()
        };
        let grants = if has("permissions") {
            grants
        } else {
            before.grants()
        };
        let rules = if has("field_rules") {
            rules
        } else {
            before.rules()
        };
        if !store::update_role(&tx, id, &name, &description, &grants, &rules, expected).await? {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                "the role was changed by someone else; reload and retry",
            ));
        }
        let after = store::role_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("role vanished"))?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "role.updated",
                caller.tenant,
                Some(caller.subject),
                "role",
                id,
                Some(before.public_json()),
                Some(after.public_json()),
            ),
        )
        .await?;
        store::record_security(&tx, "role.updated", Some(caller.subject), Some(id), None,
            serde_json::json!({"key": after.key, "before": before.public_json(), "after": after.public_json()})).await?;
        tx.commit().await?;
        self.invalidate_permissions(caller.tenant).await;
        Ok(role_pb(&after))
    }

    pub async fn list_api_clients(
        &self,
        caller: &Caller,
        r: pb::ListApiClientsRequest,
    ) -> ApiResult<pb::ListApiClientsResponse> {
        let (rows, next) = self
            .list_page(
                caller,
                ("api_client", "api_clients"),
                &r.page_token,
                r.page_size,
                async |tx, after, n| store::list_api_clients(tx, after, n).await,
                |c| c.id,
            )
            .await?;
        Ok(pb::ListApiClientsResponse {
            api_clients: rows.iter().map(client_pb).collect(),
            next_page_token: next,
        })
    }

    pub async fn create_api_client(
        &self,
        caller: &Caller,
        r: pb::CreateApiClientRequest,
    ) -> ApiResult<pb::CreateApiClientResponse> {
        self.require(caller, "api_client", "create").await?;
        let mut v = Violations::new();
        Self::check_name(&mut v, "name", &r.name, true);
        v.check(r.role.trim().is_empty(), "role", "is required");
        v.text("role", &r.role);
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let role = store::role_by_key(&tx, r.role.trim())
            .await?
            .ok_or_else(|| ApiError::invalid("role", "no such role"))?;
        let id = Uuid::now_v7();
        let mut cid = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut cid);
        let client_id = format!("crm_{}", hex_lower(&cid));
        let secret = random_token("crm_secret_");
        store::insert_api_client(
            &tx,
            id,
            r.name.trim(),
            &client_id,
            &sha256(&secret),
            role.id,
            Some(caller.subject),
        )
        .await?;
        let c = store::api_client_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::internal("client vanished"))?;
        store::emit(&tx, Event::new(SERVICE, "api_client.created", caller.tenant, Some(caller.subject), "api_client", id, None,
            Some(serde_json::json!({"id": id, "name": c.name, "clientId": c.client_id, "role": c.role_key})))).await?;
        store::record_security(
            &tx,
            "api_client.created",
            Some(caller.subject),
            Some(id),
            None,
            serde_json::json!({"clientId": c.client_id, "role": c.role_key}),
        )
        .await?;
        tx.commit().await?;
        Ok(pb::CreateApiClientResponse {
            api_client: Some(client_pb(&c)),
            client_secret: secret,
        })
    }

    pub async fn delete_api_client(&self, caller: &Caller, id: &str) -> ApiResult<()> {
        self.require(caller, "api_client", "delete").await?;
        let id = path_id("api client", id)?;
        let tx = self.tx(caller.tenant).await?;
        let c = store::api_client_by_id(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("api client"))?;
        store::delete_api_client(&tx, id).await?;
        store::emit(
            &tx,
            Event::new(
                SERVICE,
                "api_client.deleted",
                caller.tenant,
                Some(caller.subject),
                "api_client",
                id,
                Some(serde_json::json!({"id": id, "name": c.name, "clientId": c.client_id})),
                None,
            ),
        )
        .await?;
        store::record_security(
            &tx,
            "api_client.deleted",
            Some(caller.subject),
            Some(id),
            None,
            serde_json::json!({"clientId": c.client_id}),
        )
        .await?;
        tx.commit().await?;
        self.invalidate_permissions(caller.tenant).await;
        Ok(())
    }

    pub async fn list_security_events(
        &self,
        caller: &Caller,
        r: pb::ListSecurityEventsRequest,
    ) -> ApiResult<pb::ListSecurityEventsResponse> {
        if r.kind.contains('\0') {
            return Err(ApiError::invalid(
                "kind",
                "must not contain the NUL character",
            ));
        }
        if r.kind.len() > 100 {
            return Err(ApiError::invalid("kind", "must be at most 100 characters"));
        }
        let query = format!("security_events:{}", r.kind);
        let kind = (!r.kind.is_empty()).then_some(r.kind.as_str());
        let (rows, next) = self
            .list_page(
                caller,
                ("security_event", &query),
                &r.page_token,
                r.page_size,
                async |tx, before, n| store::list_security_events(tx, kind, before, n).await,
                |e| e.id,
            )
            .await?;
        Ok(pb::ListSecurityEventsResponse {
            security_events: rows
                .iter()
                .map(|e| pb::SecurityEvent {
                    id: e.id.to_string(),
                    kind: e.kind.clone(),
                    actor_id: e.actor_id.map(|a| a.to_string()).unwrap_or_default(),
                    subject_id: e.subject_id.map(|a| a.to_string()).unwrap_or_default(),
                    client_address: e.client_address.clone().unwrap_or_default(),
                    detail_json: e.detail.to_string(),
                    create_time: ts(e.created_at),
                })
                .collect(),
            next_page_token: next,
        })
    }
}

/// Security events other services record for their callers.
const RECORDABLE_ACTIONS: &[&str] = &[
    "bulk_assign_owner",
    "bulk_delete",
    "bulk_move_stage",
    "exported",
];

impl Identity {
    /// Records a security event with the caller as actor.
    pub async fn record_security_event(
        &self,
        caller: &Caller,
        r: pb::RecordSecurityEventRequest,
    ) -> ApiResult<pb::SecurityEvent> {
        let mut v = Violations::new();
        let known = r.kind.split_once('.').is_some_and(|(object, action)| {
            permissions::OBJECT_TYPES.contains(&object) && RECORDABLE_ACTIONS.contains(&action)
        });
        v.check(
            !known,
            "kind",
            "must be <object type>.<bulk_assign_owner|bulk_delete|bulk_move_stage|exported>",
        );
        v.check(
            r.detail_json.len() > 64 * 1024,
            "detail_json",
            "must be at most 64 KiB",
        );
        let detail = if r.detail_json.is_empty() {
            serde_json::json!({})
        } else {
            match serde_json::from_str::<serde_json::Value>(&r.detail_json) {
                Ok(d) if d.is_object() => d,
                _ => {
                    v.add("detail_json", "must be a JSON object");
                    serde_json::Value::Null
                }
            }
        };
        v.text("client_address", &r.client_address);
        v.check(
            r.client_address.len() > 100,
            "client_address",
            "must be at most 100 characters",
        );
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let address = (!r.client_address.is_empty()).then_some(r.client_address.as_str());
        let id = store::record_security(
            &tx,
            &r.kind,
            Some(caller.subject),
            None,
            address,
            detail.clone(),
        )
        .await?;
        tx.commit().await?;
        Ok(pb::SecurityEvent {
            id: id.to_string(),
            kind: r.kind,
            actor_id: caller.subject.to_string(),
            subject_id: String::new(),
            client_address: r.client_address,
            detail_json: detail.to_string(),
            create_time: ts(Utc::now()),
        })
    }
}

fn client_pb(c: &store::ApiClientRow) -> pb::ApiClient {
    pb::ApiClient {
        id: c.id.to_string(),
        name: c.name.clone(),
        client_id: c.client_id.clone(),
        role: c.role_key.clone(),
        create_time: ts(c.created_at),
        last_used_time: c.last_used_at.and_then(ts),
    }
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    crm_kit::auth::caller(req)
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IdentityService for Identity {
    async fn sign_up(&self, req: Request<pb::SignUpRequest>) -> R<pb::SignUpResponse> {
        Ok(Response::new(
            Identity::sign_up(self, req.into_inner()).await?,
        ))
    }

    async fn login(&self, req: Request<pb::LoginRequest>) -> R<pb::LoginResponse> {
        let mut r = req.into_inner();
        if r.client_address.len() > 64 {
            r.client_address.truncate(64);
        }
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(Identity::login(self, r).await?),
        }))
    }

    async fn refresh_token(
        &self,
        req: Request<pb::RefreshTokenRequest>,
    ) -> R<pb::RefreshTokenResponse> {
        Ok(Response::new(pb::RefreshTokenResponse {
            tokens: Some(self.refresh(req.into_inner()).await?),
        }))
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> R<pb::LogoutResponse> {
        Identity::logout(self, req.into_inner()).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn issue_client_token(
        &self,
        req: Request<pb::IssueClientTokenRequest>,
    ) -> R<pb::IssueClientTokenResponse> {
        Ok(Response::new(self.client_token(req.into_inner()).await?))
    }

    async fn get_jwks(&self, _req: Request<pb::GetJwksRequest>) -> R<pb::GetJwksResponse> {
        Ok(Response::new(pb::GetJwksResponse {
            keys: self.jwks().await?,
        }))
    }

    async fn get_me(&self, req: Request<pb::GetMeRequest>) -> R<pb::GetMeResponse> {
        let c = caller(&req)?;
        Ok(Response::new(self.me(&c).await?))
    }

    async fn get_effective_permissions(
        &self,
        req: Request<pb::GetEffectivePermissionsRequest>,
    ) -> R<pb::GetEffectivePermissionsResponse> {
        let c = caller(&req)?;
        let p = self.permissions_of(&c, &req.get_ref().user_id).await?;
        Ok(Response::new(pb::GetEffectivePermissionsResponse {
            permissions: Some(p),
        }))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> R<pb::ListUsersResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Identity::list_users(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> R<pb::GetUserResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(Identity::get_user(self, &c, &req.get_ref().id).await?),
        }))
    }

    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> R<pb::CreateUserResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(Identity::create_user(self, &c, req.into_inner()).await?),
        }))
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> R<pb::UpdateUserResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::UpdateUserResponse {
            user: Some(Identity::update_user(self, &c, req.into_inner()).await?),
        }))
    }

    async fn list_teams(&self, req: Request<pb::ListTeamsRequest>) -> R<pb::ListTeamsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Identity::list_teams(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_team(&self, req: Request<pb::GetTeamRequest>) -> R<pb::GetTeamResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::GetTeamResponse {
            team: Some(Identity::get_team(self, &c, &req.get_ref().id).await?),
        }))
    }

    async fn create_team(&self, req: Request<pb::CreateTeamRequest>) -> R<pb::CreateTeamResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::CreateTeamResponse {
            team: Some(Identity::create_team(self, &c, req.into_inner()).await?),
        }))
    }

    async fn add_team_member(
        &self,
        req: Request<pb::AddTeamMemberRequest>,
    ) -> R<pb::AddTeamMemberResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        Ok(Response::new(pb::AddTeamMemberResponse {
            team: Some(
                self.set_team_member(&c, &r.team_id, &r.user_id, true)
                    .await?,
            ),
        }))
    }

    async fn remove_team_member(
        &self,
        req: Request<pb::RemoveTeamMemberRequest>,
    ) -> R<pb::RemoveTeamMemberResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        Ok(Response::new(pb::RemoveTeamMemberResponse {
            team: Some(
                self.set_team_member(&c, &r.team_id, &r.user_id, false)
                    .await?,
            ),
        }))
    }

    async fn list_roles(&self, req: Request<pb::ListRolesRequest>) -> R<pb::ListRolesResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Identity::list_roles(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_role(&self, req: Request<pb::GetRoleRequest>) -> R<pb::GetRoleResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::GetRoleResponse {
            role: Some(Identity::get_role(self, &c, &req.get_ref().id).await?),
        }))
    }

    async fn create_role(&self, req: Request<pb::CreateRoleRequest>) -> R<pb::CreateRoleResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::CreateRoleResponse {
            role: Some(Identity::create_role(self, &c, req.into_inner()).await?),
        }))
    }

    async fn update_role(&self, req: Request<pb::UpdateRoleRequest>) -> R<pb::UpdateRoleResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::UpdateRoleResponse {
            role: Some(Identity::update_role(self, &c, req.into_inner()).await?),
        }))
    }

    async fn list_api_clients(
        &self,
        req: Request<pb::ListApiClientsRequest>,
    ) -> R<pb::ListApiClientsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Identity::list_api_clients(self, &c, req.into_inner()).await?,
        ))
    }

    async fn create_api_client(
        &self,
        req: Request<pb::CreateApiClientRequest>,
    ) -> R<pb::CreateApiClientResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Identity::create_api_client(self, &c, req.into_inner()).await?,
        ))
    }

    async fn delete_api_client(
        &self,
        req: Request<pb::DeleteApiClientRequest>,
    ) -> R<pb::DeleteApiClientResponse> {
        let c = caller(&req)?;
        Identity::delete_api_client(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::DeleteApiClientResponse {}))
    }

    async fn list_security_events(
        &self,
        req: Request<pb::ListSecurityEventsRequest>,
    ) -> R<pb::ListSecurityEventsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Identity::list_security_events(self, &c, req.into_inner()).await?,
        ))
    }

    async fn record_security_event(
        &self,
        req: Request<pb::RecordSecurityEventRequest>,
    ) -> R<pb::RecordSecurityEventResponse> {
        let c = caller(&req)?;
        Ok(Response::new(pb::RecordSecurityEventResponse {
            security_event: Some(
                Identity::record_security_event(self, &c, req.into_inner()).await?,
            ),
        }))
    }
}
