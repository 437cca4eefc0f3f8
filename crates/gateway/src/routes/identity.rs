//! The identity section of the partner API: sign-up, login, tokens, the caller, users, teams,
//! roles, API clients and security events.

use axum::{
    Json as AJson,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use crm_kit::ApiError;
use crm_proto::identity as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{created, if_match, missing, none_if_empty, update_mask, with_etag};
use crate::{
    app::AppState,
    backends::Ctx,
    dto::{ListParams, StdErrors, next_cursor, time},
    error::{GwError, GwResult, Json, OwnErrorFormat, Query, body_rejection},
};

// ---- shapes ----------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SignupRequest {
    /// 1 to 200 characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Acme Inc."
    )]
    pub tenant_name: String,
    /// Lowercase letters, digits and hyphens; identifies the tenant at login.
    #[schema(
        max_length = 63,
        pattern = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
        example = "acme"
    )]
    pub tenant_slug: String,
    #[schema(format = Email, max_length = 254, example = "admin@acme.example")]
    pub email: String,
    /// 12 to 1024 characters.
    #[schema(
        min_length = 12,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    pub password: String,
    /// At most 200 characters.
    #[schema(max_length = 200, example = "Ada Admin")]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub slug: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignupUser {
    pub id: String,
    pub email: String,
    pub role: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignupResponse {
    pub tenant: Tenant,
    pub user: SignupUser,
    pub access_token: String,
    pub refresh_token: String,
    /// Always "Bearer".
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginRequest {
    #[schema(min_length = 1, max_length = 63, example = "acme")]
    pub tenant_slug: String,
    #[schema(min_length = 1, max_length = 254, example = "admin@acme.example")]
    pub email: String,
    #[schema(
        min_length = 1,
        max_length = 1024,
        example = "correct horse battery staple"
    )]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token of the last token pair.
    #[schema(min_length = 1)]
    pub refresh_token: String,
}

/// OAuth 2.0 token response (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct OAuthToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
}

/// OAuth 2.0 error response (RFC 6749 §5.2).
#[derive(Serialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// The one grant the token endpoint supports.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum GrantType {
    ClientCredentials,
}

/// Form fields of the client credentials grant. The client may authenticate with HTTP Basic
/// instead of `client_id` and `client_secret` (RFC 6749 §2.3.1).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    #[schema(value_type = GrantType)]
    pub grant_type: String,
    #[schema(required = false)]
    pub client_id: String,
    #[schema(required = false)]
    pub client_secret: String,
    /// Ignored: a client token carries the role of its client.
    #[schema(required = false)]
    pub scope: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub team_ids: Vec<String>,
    pub timezone: String,
    pub locale: String,
    pub disabled: bool,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub team_ids: Vec<String>,
    pub timezone: String,
    pub locale: String,
}

#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Permission {
    /// account, contact, opportunity, lead, ticket, activity, user, team, role, ...
    #[schema(example = "contact")]
    pub object_type: String,
    #[schema(value_type = Action)]
    pub action: String,
    #[schema(value_type = Scope)]
    pub scope: String,
}

/// What a grant allows.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    Export,
}

/// How far a grant reaches: the caller's own records, their teams' records, or all.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Scope {
    Own,
    Team,
    All,
}

/// What a field rule does to a field.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum Access {
    Hidden,
    ReadOnly,
}

#[derive(Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldRule {
    #[schema(example = "contact")]
    pub object_type: String,
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100, example = "phone")]
    pub field: String,
    #[schema(value_type = Access)]
    pub access: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectivePermissions {
    pub role: String,
    pub team_ids: Vec<String>,
    pub permissions: Vec<Permission>,
    pub field_rules: Vec<FieldRule>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// Null when the caller is an API client.
    #[schema(required = true)]
    pub user: Option<MeUser>,
    pub tenant: Tenant,
    pub permissions: EffectivePermissions,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateUserRequest {
    #[schema(format = Email, max_length = 254, example = "rep@acme.example")]
    pub email: String,
    /// At most 200 characters.
    #[schema(max_length = 200, example = "Riley Rep")]
    pub name: Option<String>,
    /// A role key: admin, sales_manager, sales_rep, support_agent, read_only or a custom one.
    #[schema(min_length = 1, example = "sales_rep")]
    pub role: String,
    /// Optional; a user without one cannot log in until it is set. 12 to 1024 characters.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: Option<String>,
    /// IANA time zone name (default UTC).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9/_+-]+$",
        example = "Europe/Paris"
    )]
    pub timezone: Option<String>,
    /// BCP 47 language tag (default en).
    #[schema(
        min_length = 1,
        max_length = 35,
        pattern = r"^[A-Za-z0-9_-]+$",
        example = "en-GB"
    )]
    pub locale: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateUserRequest {
    /// At most 200 characters.
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// A role key; nobody can change their own role.
    #[schema(min_length = 1, example = "sales_manager")]
    pub role: Option<String>,
    /// 12 to 1024 characters; revokes the user's refresh tokens.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9/_+-]+$",
        example = "Europe/Paris"
    )]
    pub timezone: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 35,
        pattern = r"^[A-Za-z0-9_-]+$",
        example = "en-GB"
    )]
    pub locale: Option<String>,
    /// Nobody can disable themselves.
    pub disabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub id: String,
    pub name: String,
    pub member_user_ids: Vec<String>,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTeamRequest {
    /// 1 to 200 characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "EMEA sales"
    )]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    pub id: String,
    pub key: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub permissions: Vec<Permission>,
    pub field_rules: Vec<FieldRule>,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRoleRequest {
    /// 2 to 63 lowercase letters, digits or underscores, starting with a letter.
    #[schema(pattern = r"^[a-z][a-z0-9_]{1,62}$", example = "deal_desk")]
    pub key: String,
    /// 1 to 200 characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Deal desk"
    )]
    pub name: String,
    /// At most 1000 characters.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// At most 500 grants.
    #[schema(max_items = 500)]
    pub permissions: Vec<Permission>,
    /// At most 500 rules.
    #[schema(max_items = 500)]
    pub field_rules: Option<Vec<FieldRule>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateRoleRequest {
    /// 1 to 200 characters, not only spaces.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub name: Option<String>,
    /// At most 1000 characters.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
    /// Replaces every grant; the admin role's cannot change. At most 500.
    #[schema(max_items = 500)]
    pub permissions: Option<Vec<Permission>>,
    /// Replaces every rule; the admin role's cannot change. At most 500.
    #[schema(max_items = 500)]
    pub field_rules: Option<Vec<FieldRule>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiClient {
    pub id: String,
    pub name: String,
    pub client_id: String,
    pub role: String,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub last_used_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateApiClientRequest {
    /// 1 to 200 characters, not only spaces.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "ERP sync"
    )]
    pub name: String,
    /// The role key whose permissions the client gets.
    #[schema(min_length = 1, example = "read_only")]
    pub role: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiClient {
    pub id: String,
    pub name: String,
    pub client_id: String,
    /// Shown once; store it now.
    pub client_secret: String,
    pub role: String,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityEvent {
    pub id: String,
    /// login.succeeded, login.failed, refresh_token.reused, user.role_changed, ...
    pub kind: String,
    pub actor_id: Option<String>,
    pub subject_id: Option<String>,
    pub client_address: Option<String>,
    pub detail: serde_json::Value,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub occurred_at: Option<String>,
}

macro_rules! page {
    ($name:ident, $item:ty) => {
        #[derive(Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub items: Vec<$item>,
            /// Null on the last page.
            #[schema(required = true)]
            pub next_cursor: Option<String>,
        }
    };
}
page!(UserPage, User);
page!(TeamPage, Team);
page!(RolePage, Role);
page!(ApiClientPage, ApiClient);
page!(SecurityEventPage, SecurityEvent);

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SecurityEventParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    /// Only events of this kind, e.g. login.failed; at most 100 characters.
    #[param(max_length = 100)]
    pub kind: Option<String>,
}

// ---- conversions -------------------------------------------------------------------------

fn scope_str(s: i32) -> String {
    match pb::Scope::try_from(s) {
        Ok(pb::Scope::Own) => "own",
        Ok(pb::Scope::Team) => "team",
        Ok(pb::Scope::All) => "all",
        _ => "unspecified",
    }
    .into()
}

fn access_str(a: i32) -> String {
    match pb::FieldAccess::try_from(a) {
        Ok(pb::FieldAccess::Hidden) => "hidden",
        Ok(pb::FieldAccess::ReadOnly) => "read_only",
        _ => "unspecified",
    }
    .into()
}

fn permission(p: pb::Permission) -> Permission {
    Permission {
        object_type: p.object_type,
        action: p.action,
        scope: scope_str(p.scope),
    }
}

fn field_rule(r: pb::FieldRule) -> FieldRule {
    FieldRule {
        object_type: r.object_type,
        field: r.field,
        access: access_str(r.access),
    }
}

fn permissions_pb(ps: Vec<Permission>) -> Result<Vec<pb::Permission>, ApiError> {
    ps.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let scope = match p.scope.as_str() {
                "own" => pb::Scope::Own,
                "team" => pb::Scope::Team,
                "all" => pb::Scope::All,
                _ => {
                    return Err(ApiError::invalid(
                        format!("permissions[{i}].scope"),
                        "must be own, team or all",
                    ));
                }
            };
            Ok(pb::Permission {
                object_type: p.object_type,
                action: p.action,
                scope: scope as i32,
            })
        })
        .collect()
}

fn rules_pb(rs: Vec<FieldRule>) -> Result<Vec<pb::FieldRule>, ApiError> {
    rs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let access = match r.access.as_str() {
                "hidden" => pb::FieldAccess::Hidden,
                "read_only" => pb::FieldAccess::ReadOnly,
                _ => {
                    return Err(ApiError::invalid(
                        format!("fieldRules[{i}].access"),
                        "must be hidden or read_only",
                    ));
                }
            };
            Ok(pb::FieldRule {
                object_type: r.object_type,
                field: r.field,
                access: access as i32,
            })
        })
        .collect()
}

fn tenant(t: Option<pb::Tenant>) -> Tenant {
    let t = t.unwrap_or_default();
    Tenant {
        id: t.id,
        name: t.name,
        slug: t.slug,
    }
}

fn user(u: pb::User) -> User {
    User {
        id: u.id,
        email: u.email,
        name: u.name,
        role: u.role,
        team_ids: u.team_ids,
        timezone: u.timezone,
        locale: u.locale,
        disabled: u.disabled,
        version: u.version,
        created_at: time(u.create_time),
        updated_at: time(u.update_time),
    }
}

fn team(t: pb::Team) -> Team {
    Team {
        id: t.id,
        name: t.name,
        member_user_ids: t.member_user_ids,
        version: t.version,
        created_at: time(t.create_time),
        updated_at: time(t.update_time),
    }
}

fn role(r: pb::Role) -> Role {
    Role {
        id: r.id,
        key: r.key,
        name: r.name,
        description: r.description,
        builtin: r.builtin,
        permissions: r.permissions.into_iter().map(permission).collect(),
        field_rules: r.field_rules.into_iter().map(field_rule).collect(),
        version: r.version,
        created_at: time(r.create_time),
        updated_at: time(r.update_time),
    }
}

fn api_client(c: pb::ApiClient) -> ApiClient {
    ApiClient {
        id: c.id,
        name: c.name,
        client_id: c.client_id,
        role: c.role,
        created_at: time(c.create_time),
        last_used_at: time(c.last_used_time),
    }
}

fn tokens(t: Option<pb::TokenPair>) -> TokenPair {
    let t = t.unwrap_or_default();
    TokenPair {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: t.token_type,
        expires_in: t.expires_in,
    }
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

// ---- public routes -----------------------------------------------------------------------

/// Creates a tenant and its first user, an admin.
#[utoipa::path(post, path = "/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, description = "Tenant created; the user is logged in", body = SignupResponse, headers(("Location" = String, description = "URL of the new user"))), StdErrors))]
async fn signup(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<SignupRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(None)?;
    let r = cell
        .sign_up(s.backends.request(
            &ctx,
            pb::SignUpRequest {
                tenant_name: b.tenant_name,
                tenant_slug: b.tenant_slug,
                email: b.email,
                password: b.password,
                name: b.name.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    let u = r.user.ok_or_else(missing("user"))?;
    let t = tokens(r.tokens);
    let body = SignupResponse {
        tenant: tenant(r.tenant),
        user: SignupUser {
            id: u.id.clone(),
            email: u.email,
            role: u.role,
        },
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: t.token_type,
        expires_in: t.expires_in,
    };
    Ok(no_store(created(
        format!("/api/v1/users/{}", u.id),
        None,
        AJson(body),
    )))
}

/// Exchanges credentials for tokens; a wrong e-mail and a wrong password give the same 401.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "Logged in", body = TokenPair), StdErrors))]
async fn login(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<LoginRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(None)?;
    let r = cell
        .login(s.backends.request(
            &ctx,
            pb::LoginRequest {
                tenant_slug: b.tenant_slug,
                email: b.email,
                password: b.password,
                client_address: ctx.client_address.clone(),
            },
        ))
        .await?
        .into_inner();
    Ok(no_store(AJson(tokens(r.tokens)).into_response()))
}

/// Rotates a refresh token. A rotated token used again is refused and revokes its family.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, description = "A new token pair", body = TokenPair), StdErrors))]
async fn refresh(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<RefreshRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(None)?;
    let r = cell
        .refresh_token(s.backends.request(
            &ctx,
            pb::RefreshTokenRequest {
                refresh_token: b.refresh_token,
            },
        ))
        .await?
        .into_inner();
    Ok(no_store(AJson(tokens(r.tokens)).into_response()))
}

/// Revokes a refresh token and its family.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "Logged out"), StdErrors))]
async fn logout(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<RefreshRequest>,
) -> GwResult<StatusCode> {
    let mut cell = s.backends.identity(None)?;
    cell.logout(s.backends.request(
        &ctx,
        pb::LogoutRequest {
            refresh_token: b.refresh_token,
        },
    ))
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut res = (
        status,
        AJson(OAuthError {
            error: error.into(),
            error_description: description.into(),
        }),
    )
        .into_response();
    res.extensions_mut().insert(OwnErrorFormat);
    no_store(res)
}

/// OAuth 2.0 client credentials grant (RFC 6749 §4.4), form-encoded.
#[utoipa::path(post, path = "/oauth/token", tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Access token", body = OAuthToken),
        (status = 400, description = "invalid_request or unsupported_grant_type", body = OAuthError),
        (status = 401, description = "invalid_client", body = OAuthError),
        (status = 413, description = "Body too large", body = crate::dto::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded", body = crate::dto::Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = crate::dto::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = crate::dto::Problem, content_type = "application/problem+json"),
        (status = 504, description = "The request took too long", body = crate::dto::Problem, content_type = "application/problem+json")))]
async fn oauth_token(
    State(s): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "content-type must be application/x-www-form-urlencoded",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_rejection(e).into_response(),
    };
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "malformed form body",
        );
    };
    if let Some((k, _)) = form
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        let what = if k.contains('\0') {
            "a parameter name"
        } else {
            k.as_str()
        };
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{what} must not contain NUL characters"),
        );
    }
    let get = |k: &str| {
        let mut it = form.iter().filter(|(name, _)| name == k);
        match (it.next(), it.next()) {
            (Some((_, v)), None) => Ok(Some(v.clone())),
            (None, _) => Ok(None),
            _ => Err(k.to_owned()),
        }
    };
    let (grant, id, secret, scope) = match (
        get("grant_type"),
        get("client_id"),
        get("client_secret"),
        get("scope"),
    ) {
        (Ok(g), Ok(i), Ok(s), Ok(sc)) => (g, i, s, sc),
        (Err(k), ..) | (_, Err(k), ..) | (_, _, Err(k), _) | (.., Err(k)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{k} is repeated"),
            );
        }
    };
    // Client authentication may also come as HTTP Basic (RFC 6749 §2.3.1).
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    match grant.as_deref() {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            );
        }
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            );
        }
    }
    let (id, secret) = match (id, secret, basic) {
        (Some(i), Some(s), _) => (i, s),
        (None, None, Some((i, s))) => (i, s),
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client_id and client_secret are required",
            );
        }
    };
    if id.contains('\0') || secret.contains('\0') {
        // Only HTTP Basic credentials can still hold one; no client is named like that.
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let mut cell = match s.backends.cell(None) {
        Ok(c) => c.identity.clone(),
        Err(e) => return e.into_response(),
    };
    match cell
        .issue_client_token(s.backends.request(
            &ctx,
            pb::IssueClientTokenRequest {
                client_id: id,
                client_secret: secret,
                scope: scope.unwrap_or_default(),
            },
        ))
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            no_store(
                AJson(OAuthToken {
                    access_token: r.access_token,
                    token_type: r.token_type,
                    expires_in: r.expires_in,
                })
                .into_response(),
            )
        }
        Err(st)
            if matches!(
                st.code(),
                tonic::Code::Unauthenticated | tonic::Code::InvalidArgument
            ) =>
        {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
        Err(st) => GwError::from(st).into_response(),
    }
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set", body = serde_json::Value), StdErrors))]
pub async fn jwks(State(s): State<AppState>, ctx: Ctx) -> GwResult<Response> {
    let mut cell = s.backends.identity(None)?;
    let keys = cell
        .get_jwks(s.backends.request(&ctx, pb::GetJwksRequest {}))
        .await?
        .into_inner()
        .keys;
    let body = serde_json::json!({
        "keys": keys.into_iter().map(|k| serde_json::json!({
            "kty": k.kty, "crv": k.crv, "x": k.x, "kid": k.kid, "alg": k.alg, "use": k.r#use,
        })).collect::<Vec<_>>()
    });
    let mut res = AJson(body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(res)
}

// ---- authenticated routes ----------------------------------------------------------------

/// The caller, their tenant and effective permissions.
#[utoipa::path(get, path = "/me", tag = "identity", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = Me), StdErrors))]
async fn me(State(s): State<AppState>, ctx: Ctx) -> GwResult<AJson<Me>> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .get_me(s.backends.request(&ctx, pb::GetMeRequest {}))
        .await?
        .into_inner();
    let p = r.permissions.unwrap_or_default();
    Ok(AJson(Me {
        user: r.user.map(|u| MeUser {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            team_ids: u.team_ids,
            timezone: u.timezone,
            locale: u.locale,
        }),
        tenant: tenant(r.tenant),
        permissions: EffectivePermissions {
            role: p.role,
            team_ids: p.team_ids,
            permissions: p.permissions.into_iter().map(permission).collect(),
            field_rules: p.field_rules.into_iter().map(field_rule).collect(),
        },
    }))
}

/// Users of the tenant.
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of users", body = UserPage), StdErrors))]
async fn list_users(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<UserPage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .list_users(s.backends.request(
            &ctx,
            pb::ListUsersRequest {
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(UserPage {
        items: r.users.into_iter().map(user).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates a user (admin).
#[utoipa::path(post, path = "/users", tag = "users", security(("bearer" = [])), request_body = CreateUserRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "User created", body = User,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_user(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateUserRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let u = cell
        .create_user(s.backends.request(
            &ctx,
            pb::CreateUserRequest {
                email: b.email,
                name: b.name.unwrap_or_default(),
                role: b.role,
                password: b.password.unwrap_or_default(),
                timezone: b.timezone.unwrap_or_default(),
                locale: b.locale.unwrap_or_default(),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .user
        .ok_or_else(missing("user"))?;
    Ok(created(
        format!("/api/v1/users/{}", u.id),
        Some(u.version),
        AJson(user(u)),
    ))
}

/// One user.
#[utoipa::path(get, path = "/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The user", body = User,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_user(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let u = cell
        .get_user(s.backends.request(&ctx, pb::GetUserRequest { id }))
        .await?
        .into_inner()
        .user
        .ok_or_else(missing("user"))?;
    Ok(with_etag(u.version, AJson(user(u))))
}

/// Changes a user; role changes and disabling are security events. Honours If-Match.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", security(("bearer" = [])), request_body = UpdateUserRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed user", body = User,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_user(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateUserRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut paths = Vec::new();
    let mut req = pb::UpdateUserRequest {
        id,
        etag,
        ..Default::default()
    };
    if let Some(v) = b.name {
        paths.push("name");
        req.name = v;
    }
    if let Some(v) = b.role {
        paths.push("role");
        req.role = v;
    }
    if let Some(v) = b.password {
        paths.push("password");
        req.password = v;
    }
    if let Some(v) = b.timezone {
        paths.push("timezone");
        req.timezone = v;
    }
    if let Some(v) = b.locale {
        paths.push("locale");
        req.locale = v;
    }
    if let Some(v) = b.disabled {
        paths.push("disabled");
        req.disabled = v;
    }
    req.update_mask = Some(update_mask(paths)?);
    let mut cell = s.backends.identity(ctx.tenant())?;
    let u = cell
        .update_user(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .user
        .ok_or_else(missing("user"))?;
    Ok(with_etag(u.version, AJson(user(u))))
}

/// Teams of the tenant.
#[utoipa::path(get, path = "/teams", tag = "teams", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of teams", body = TeamPage), StdErrors))]
async fn list_teams(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<TeamPage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .list_teams(s.backends.request(
            &ctx,
            pb::ListTeamsRequest {
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(TeamPage {
        items: r.teams.into_iter().map(team).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates a team.
#[utoipa::path(post, path = "/teams", tag = "teams", security(("bearer" = [])), request_body = CreateTeamRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Team created", body = Team,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_team(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateTeamRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let t = cell
        .create_team(s.backends.request(
            &ctx,
            pb::CreateTeamRequest {
                name: b.name,
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .team
        .ok_or_else(missing("team"))?;
    Ok(created(
        format!("/api/v1/teams/{}", t.id),
        Some(t.version),
        AJson(team(t)),
    ))
}

/// One team.
#[utoipa::path(get, path = "/teams/{id}", tag = "teams", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The team", body = Team,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_team(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let t = cell
        .get_team(s.backends.request(&ctx, pb::GetTeamRequest { id }))
        .await?
        .into_inner()
        .team
        .ok_or_else(missing("team"))?;
    Ok(with_etag(t.version, AJson(team(t))))
}

/// Adds a user to a team.
#[utoipa::path(post, path = "/teams/{id}/members/{userId}", tag = "teams", security(("bearer" = [])),
    params(("id" = String, Path), ("userId" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 200, description = "The team with the member", body = Team), StdErrors))]
async fn add_member(
    State(s): State<AppState>,
    ctx: Ctx,
    Path((id, user_id)): Path<(String, String)>,
) -> GwResult<AJson<Team>> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let t = cell
        .add_team_member(s.backends.request(
            &ctx,
            pb::AddTeamMemberRequest {
                team_id: id,
                user_id,
            },
        ))
        .await?
        .into_inner()
        .team
        .ok_or_else(missing("team"))?;
    Ok(AJson(team(t)))
}

/// Removes a user from a team.
#[utoipa::path(delete, path = "/teams/{id}/members/{userId}", tag = "teams", security(("bearer" = [])),
    params(("id" = String, Path), ("userId" = String, Path)),
    responses((status = 204, description = "Removed"), StdErrors))]
async fn remove_member(
    State(s): State<AppState>,
    ctx: Ctx,
    Path((id, user_id)): Path<(String, String)>,
) -> GwResult<StatusCode> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    cell.remove_team_member(s.backends.request(
        &ctx,
        pb::RemoveTeamMemberRequest {
            team_id: id,
            user_id,
        },
    ))
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Built-in and custom roles.
#[utoipa::path(get, path = "/roles", tag = "roles", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of roles", body = RolePage), StdErrors))]
async fn list_roles(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<RolePage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .list_roles(s.backends.request(
            &ctx,
            pb::ListRolesRequest {
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(RolePage {
        items: r.roles.into_iter().map(role).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates a custom role.
#[utoipa::path(post, path = "/roles", tag = "roles", security(("bearer" = [])), request_body = CreateRoleRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Role created", body = Role,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_role(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateRoleRequest>,
) -> GwResult<Response> {
    let permissions = permissions_pb(b.permissions)?;
    let field_rules = rules_pb(b.field_rules.unwrap_or_default())?;
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .create_role(s.backends.request(
            &ctx,
            pb::CreateRoleRequest {
                key: b.key,
                name: b.name,
                description: b.description.unwrap_or_default(),
                permissions,
                field_rules,
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .role
        .ok_or_else(missing("role"))?;
    Ok(created(
        format!("/api/v1/roles/{}", r.id),
        Some(r.version),
        AJson(role(r)),
    ))
}

/// One role.
#[utoipa::path(get, path = "/roles/{id}", tag = "roles", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The role", body = Role,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_role(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .get_role(s.backends.request(&ctx, pb::GetRoleRequest { id }))
        .await?
        .into_inner()
        .role
        .ok_or_else(missing("role"))?;
    Ok(with_etag(r.version, AJson(role(r))))
}

/// Changes a role's name, description, permissions or field rules; recorded as a security event.
#[utoipa::path(patch, path = "/roles/{id}", tag = "roles", security(("bearer" = [])), request_body = UpdateRoleRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed role", body = Role,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_role(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateRoleRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateRoleRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(v) = b.name {
        paths.push("name");
        req.name = v;
    }
    if let Some(v) = b.description {
        paths.push("description");
        req.description = v;
    }
    if let Some(v) = b.permissions {
        paths.push("permissions");
        req.permissions = permissions_pb(v)?;
    }
    if let Some(v) = b.field_rules {
        paths.push("field_rules");
        req.field_rules = rules_pb(v)?;
    }
    req.update_mask = Some(update_mask(paths)?);
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .update_role(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .role
        .ok_or_else(missing("role"))?;
    Ok(with_etag(r.version, AJson(role(r))))
}

/// Partner credentials of the tenant.
#[utoipa::path(get, path = "/api-clients", tag = "api-clients", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of API clients", body = ApiClientPage), StdErrors))]
async fn list_api_clients(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<ApiClientPage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .list_api_clients(s.backends.request(
            &ctx,
            pb::ListApiClientsRequest {
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(ApiClientPage {
        items: r.api_clients.into_iter().map(api_client).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates partner credentials bound to a role; the secret is shown once.
#[utoipa::path(post, path = "/api-clients", tag = "api-clients", security(("bearer" = [])), request_body = CreateApiClientRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Credentials created; the secret is shown only now", body = CreatedApiClient, headers(("Location" = String, description = "URL of the new record"))), StdErrors))]
async fn create_api_client(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateApiClientRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .create_api_client(s.backends.request(
            &ctx,
            pb::CreateApiClientRequest {
                name: b.name,
                role: b.role,
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner();
    let c = r.api_client.ok_or_else(missing("api client"))?;
    let body = CreatedApiClient {
        id: c.id.clone(),
        name: c.name,
        client_id: c.client_id,
        client_secret: r.client_secret,
        role: c.role,
        created_at: time(c.create_time),
    };
    Ok(no_store(created(
        format!("/api/v1/api-clients/{}", c.id),
        None,
        AJson(body),
    )))
}

/// Deletes partner credentials; tokens already issued expire on their own.
#[utoipa::path(delete, path = "/api-clients/{id}", tag = "api-clients", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_api_client(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<StatusCode> {
    let mut cell = s.backends.identity(ctx.tenant())?;
    cell.delete_api_client(s.backends.request(&ctx, pb::DeleteApiClientRequest { id }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Logins, failures, role changes, token reuse, API client changes (admin).
#[utoipa::path(get, path = "/security-events", tag = "security", security(("bearer" = [])), params(SecurityEventParams),
    responses((status = 200, description = "A page of security events", body = SecurityEventPage), StdErrors))]
async fn list_security_events(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<SecurityEventParams>,
) -> GwResult<AJson<SecurityEventPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let mut cell = s.backends.identity(ctx.tenant())?;
    let r = cell
        .list_security_events(s.backends.request(
            &ctx,
            pb::ListSecurityEventsRequest {
                page_size,
                page_token,
                kind: q.kind.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(SecurityEventPage {
        items: r
            .security_events
            .into_iter()
            .map(|e| SecurityEvent {
                id: e.id,
                kind: e.kind,
                actor_id: none_if_empty(e.actor_id),
                subject_id: none_if_empty(e.subject_id),
                client_address: none_if_empty(e.client_address),
                detail: serde_json::from_str(&e.detail_json).unwrap_or(serde_json::Value::Null),
                occurred_at: time(e.create_time),
            })
            .collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Routes that need no token.
pub fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(oauth_token))
}

/// Routes behind authentication.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(list_teams, create_team))
        .routes(routes!(get_team))
        .routes(routes!(add_member, remove_member))
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role))
        .routes(routes!(list_api_clients, create_api_client))
        .routes(routes!(delete_api_client))
        .routes(routes!(list_security_events))
}
