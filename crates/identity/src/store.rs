//! SQL of the identity schema. Every function that touches tenant data takes a [`TenantTx`],
//! and filters by its tenant on top of row-level security.

use chrono::{DateTime, Utc};
use crm_bus::Event;
use crm_kit::{ApiError, ApiResult, TenantId, TenantTx};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value};
use uuid::Uuid;

use crate::permissions::{FieldRule, Grant};

/// The schema this service owns.
pub const SCHEMA: &str = "identity";

pub(crate) fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// Maps a unique violation on `constraint` to a conflict naming `field`.
pub(crate) fn unique_violation(e: &DbErr, constraint: &str) -> bool {
    let s = e.to_string();
    s.contains("duplicate key value") && s.contains(constraint)
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct UserRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub name: String,
    pub role_id: Uuid,
    pub role_key: String,
    pub password_hash: Option<String>,
    pub timezone: String,
    pub locale: String,
    pub disabled: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub team_ids: String,
}

impl UserRow {
    /// Team ids as a list.
    pub fn teams(&self) -> Vec<Uuid> {
        self.team_ids
            .split(',')
            .filter_map(|s| Uuid::parse_str(s).ok())
            .collect()
    }

    /// What events and audit views may show (never the password hash).
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role_key,
            "teamIds": self.teams(),
            "timezone": self.timezone,
            "locale": self.locale,
            "disabled": self.disabled,
            "version": self.version,
        })
    }
}

const USER_SELECT: &str = "SELECT u.id, u.tenant_id, u.email, u.name, u.role_id, r.key AS role_key, \
    u.password_hash, u.timezone, u.locale, u.disabled, u.version, u.created_at, u.updated_at, \
    COALESCE((SELECT string_agg(tm.team_id::text, ',' ORDER BY tm.team_id) FROM identity.team_members tm \
              WHERE tm.tenant_id = u.tenant_id AND tm.user_id = u.id), '') AS team_ids \
    FROM identity.users u JOIN identity.roles r ON r.tenant_id = u.tenant_id AND r.id = u.role_id";

#[derive(Debug, Clone, FromQueryResult)]
pub struct RoleRow {
    pub id: Uuid,
    pub key: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub permissions: serde_json::Value,
    pub field_rules: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RoleRow {
    /// The grants, as stored.
    pub fn grants(&self) -> Vec<Grant> {
        serde_json::from_value(self.permissions.clone()).unwrap_or_default()
    }

    /// The field rules, as stored.
    pub fn rules(&self) -> Vec<FieldRule> {
        serde_json::from_value(self.field_rules.clone()).unwrap_or_default()
    }

    /// What events show.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "permissions": self.permissions,
            "fieldRules": self.field_rules,
            "version": self.version,
        })
    }
}

const ROLE_SELECT: &str = "SELECT id, key, name, description, builtin, permissions, field_rules, version, \
    created_at, updated_at FROM identity.roles";

#[derive(Debug, Clone, FromQueryResult)]
pub struct TeamRow {
    pub id: Uuid,
    pub name: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub member_ids: String,
}

impl TeamRow {
    /// Member ids as a list.
    pub fn members(&self) -> Vec<Uuid> {
        self.member_ids
            .split(',')
            .filter_map(|s| Uuid::parse_str(s).ok())
            .collect()
    }

    /// What events show.
    pub fn public_json(&self) -> serde_json::Value {
        serde_json::json!({"id": self.id, "name": self.name, "memberUserIds": self.members(), "version": self.version})
    }
}

const TEAM_SELECT: &str = "SELECT t.id, t.name, t.version, t.created_at, t.updated_at, \
    COALESCE((SELECT string_agg(m.user_id::text, ',' ORDER BY m.user_id) FROM identity.team_members m \
              WHERE m.tenant_id = t.tenant_id AND m.team_id = t.id), '') AS member_ids \
    FROM identity.teams t";

#[derive(Debug, Clone, FromQueryResult)]
pub struct ApiClientRow {
    pub id: Uuid,
    pub name: String,
    pub client_id: String,
    pub secret_hash: Vec<u8>,
    pub role_key: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

const CLIENT_SELECT: &str = "SELECT c.id, c.name, c.client_id, c.secret_hash, r.key AS role_key, c.created_at, \
    c.last_used_at FROM identity.api_clients c JOIN identity.roles r ON r.tenant_id = c.tenant_id AND r.id = c.role_id";

#[derive(Debug, Clone, FromQueryResult)]
pub struct SecurityEventRow {
    pub id: Uuid,
    pub kind: String,
    pub actor_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub client_address: Option<String>,
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromQueryResult)]
pub struct RefreshRow {
    pub id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub family_expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

fn t(tx: &TenantTx) -> Value {
    tx.tenant().uuid().into()
}

/// Looks a tenant id up by slug, before any tenant is known.
pub async fn tenant_id_by_slug<C: ConnectionTrait>(
    c: &C,
    slug: &str,
) -> Result<Option<TenantId>, DbErr> {
    let row = c
        .query_one_raw(stmt(
            "SELECT identity.tenant_id_by_slug($1) AS id",
            [slug.into()],
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<Option<Uuid>>("", "id").ok().flatten())
        .map(TenantId))
}

/// Looks a tenant id up by refresh-token hash.
pub async fn tenant_id_by_refresh<C: ConnectionTrait>(
    c: &C,
    hash: &[u8],
) -> Result<Option<TenantId>, DbErr> {
    let row = c
        .query_one_raw(stmt(
            "SELECT identity.tenant_id_by_refresh_token($1) AS id",
            [hash.to_vec().into()],
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<Option<Uuid>>("", "id").ok().flatten())
        .map(TenantId))
}

/// Looks a tenant id up by OAuth client id.
pub async fn tenant_id_by_client<C: ConnectionTrait>(
    c: &C,
    client_id: &str,
) -> Result<Option<TenantId>, DbErr> {
    let row = c
        .query_one_raw(stmt(
            "SELECT identity.tenant_id_by_client_id($1) AS id",
            [client_id.into()],
        ))
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<Option<Uuid>>("", "id").ok().flatten())
        .map(TenantId))
}

pub async fn insert_tenant(tx: &TenantTx, name: &str, slug: &str) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.tenants (id, name, slug) VALUES ($1, $2, $3)",
            [t(tx), name.into(), slug.into()],
        ))
        .await?;
    Ok(())
}

pub async fn get_tenant(tx: &TenantTx) -> Result<Option<TenantRow>, DbErr> {
    TenantRow::find_by_statement(stmt(
        "SELECT id, name, slug, created_at FROM identity.tenants WHERE id = $1",
        [t(tx)],
    ))
    .one(tx.conn())
    .await
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_role(
    tx: &TenantTx,
    id: Uuid,
    key: &str,
    name: &str,
    description: &str,
    builtin: bool,
    grants: &[Grant],
    rules: &[FieldRule],
    actor: Option<Uuid>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.roles (tenant_id, id, key, name, description, builtin, permissions, field_rules, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                t(tx),
                id.into(),
                key.into(),
                name.into(),
                description.into(),
                builtin.into(),
                serde_json::to_value(grants).unwrap_or_default().into(),
                serde_json::to_value(rules).unwrap_or_default().into(),
                actor.into(),
            ],
        ))
        .await?;
    Ok(())
}

pub async fn role_by_key(tx: &TenantTx, key: &str) -> Result<Option<RoleRow>, DbErr> {
    RoleRow::find_by_statement(stmt(
        &format!("{ROLE_SELECT} WHERE tenant_id = $1 AND key = $2"),
        [t(tx), key.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn role_by_id(tx: &TenantTx, id: Uuid) -> Result<Option<RoleRow>, DbErr> {
    RoleRow::find_by_statement(stmt(
        &format!("{ROLE_SELECT} WHERE tenant_id = $1 AND id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn list_roles(
    tx: &TenantTx,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<RoleRow>, DbErr> {
    RoleRow::find_by_statement(stmt(
        &format!("{ROLE_SELECT} WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"),
        [t(tx), after.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

pub async fn update_role(
    tx: &TenantTx,
    id: Uuid,
    name: &str,
    description: &str,
    grants: &[Grant],
    rules: &[FieldRule],
    expected_version: Option<i64>,
) -> Result<bool, DbErr> {
    let res = tx
        .conn()
        .execute_raw(stmt(
            "UPDATE identity.roles SET name = $3, description = $4, permissions = $5, field_rules = $6, \
             version = version + 1, updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND ($7::bigint IS NULL OR version = $7)",
            [
                t(tx),
                id.into(),
                name.into(),
                description.into(),
                serde_json::to_value(grants).unwrap_or_default().into(),
                serde_json::to_value(rules).unwrap_or_default().into(),
                expected_version.into(),
            ],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_user(
    tx: &TenantTx,
    id: Uuid,
    email: &str,
    name: &str,
    role_id: Uuid,
    password_hash: Option<&str>,
    timezone: &str,
    locale: &str,
    actor: Option<Uuid>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.users (tenant_id, id, email, name, role_id, password_hash, timezone, locale, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                t(tx),
                id.into(),
                email.into(),
                name.into(),
                role_id.into(),
                password_hash.map(str::to_owned).into(),
                timezone.into(),
                locale.into(),
                actor.into(),
            ],
        ))
        .await?;
    Ok(())
}

pub async fn user_by_id(tx: &TenantTx, id: Uuid) -> Result<Option<UserRow>, DbErr> {
    UserRow::find_by_statement(stmt(
        &format!("{USER_SELECT} WHERE u.tenant_id = $1 AND u.id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn user_by_email(tx: &TenantTx, email: &str) -> Result<Option<UserRow>, DbErr> {
    UserRow::find_by_statement(stmt(
        &format!("{USER_SELECT} WHERE u.tenant_id = $1 AND u.email = $2"),
        [t(tx), email.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn list_users(
    tx: &TenantTx,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<UserRow>, DbErr> {
    UserRow::find_by_statement(stmt(
        &format!("{USER_SELECT} WHERE u.tenant_id = $1 AND ($2::uuid IS NULL OR u.id > $2) ORDER BY u.id LIMIT $3"),
        [t(tx), after.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

/// The columns an update may change.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<String>,
    pub role_id: Option<Uuid>,
    pub password_hash: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub disabled: Option<bool>,
}

pub async fn update_user(
    tx: &TenantTx,
    id: Uuid,
    ch: &UserChanges,
    expected_version: Option<i64>,
) -> Result<bool, DbErr> {
    let res = tx
        .conn()
        .execute_raw(stmt(
            "UPDATE identity.users SET name = COALESCE($3, name), role_id = COALESCE($4, role_id), \
             password_hash = COALESCE($5, password_hash), timezone = COALESCE($6, timezone), \
             locale = COALESCE($7, locale), disabled = COALESCE($8, disabled), \
             version = version + 1, updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND ($9::bigint IS NULL OR version = $9)",
            [
                t(tx),
                id.into(),
                ch.name.clone().into(),
                ch.role_id.into(),
                ch.password_hash.clone().into(),
                ch.timezone.clone().into(),
                ch.locale.clone().into(),
                ch.disabled.into(),
                expected_version.into(),
            ],
        ))
        .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn set_password_hash(tx: &TenantTx, user: Uuid, hash: &str) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "UPDATE identity.users SET password_hash = $3 WHERE tenant_id = $1 AND id = $2",
            [t(tx), user.into(), hash.into()],
        ))
        .await?;
    Ok(())
}

pub async fn insert_team(
    tx: &TenantTx,
    id: Uuid,
    name: &str,
    actor: Option<Uuid>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.teams (tenant_id, id, name, created_by) VALUES ($1, $2, $3, $4)",
            [t(tx), id.into(), name.into(), actor.into()],
        ))
        .await?;
    Ok(())
}

pub async fn team_by_id(tx: &TenantTx, id: Uuid) -> Result<Option<TeamRow>, DbErr> {
    TeamRow::find_by_statement(stmt(
        &format!("{TEAM_SELECT} WHERE t.tenant_id = $1 AND t.id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn list_teams(
    tx: &TenantTx,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<TeamRow>, DbErr> {
    TeamRow::find_by_statement(stmt(
        &format!("{TEAM_SELECT} WHERE t.tenant_id = $1 AND ($2::uuid IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3"),
        [t(tx), after.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

/// Adds or removes a member; returns whether anything changed.
pub async fn set_member(
    tx: &TenantTx,
    team: Uuid,
    user: Uuid,
    member: bool,
    actor: Option<Uuid>,
) -> Result<bool, DbErr> {
    let res = if member {
        tx.conn()
            .execute_raw(stmt(
                "INSERT INTO identity.team_members (tenant_id, team_id, user_id, created_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                [t(tx), team.into(), user.into(), actor.into()],
            ))
            .await?
    } else {
        tx.conn()
            .execute_raw(stmt(
                "DELETE FROM identity.team_members WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3",
                [t(tx), team.into(), user.into()],
            ))
            .await?
    };
    if res.rows_affected() > 0 {
        tx.conn()
            .execute_raw(stmt(
                "UPDATE identity.teams SET version = version + 1, updated_at = now() WHERE tenant_id = $1 AND id = $2",
                [t(tx), team.into()],
            ))
            .await?;
    }
    Ok(res.rows_affected() > 0)
}

pub async fn insert_refresh(
    tx: &TenantTx,
    family: Uuid,
    user: Uuid,
    hash: &[u8],
    expires_at: DateTime<Utc>,
    family_expires_at: DateTime<Utc>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.refresh_tokens (tenant_id, id, family_id, user_id, token_hash, expires_at, family_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                t(tx),
                Uuid::now_v7().into(),
                family.into(),
                user.into(),
                hash.to_vec().into(),
                expires_at.into(),
                family_expires_at.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// Marks a live token used, atomically: of two concurrent callers only one gets the row.
pub async fn claim_refresh(tx: &TenantTx, hash: &[u8]) -> Result<Option<RefreshRow>, DbErr> {
    RefreshRow::find_by_statement(stmt(
        "UPDATE identity.refresh_tokens SET used_at = now() \
         WHERE tenant_id = $1 AND token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL \
         RETURNING id, family_id, user_id, expires_at, family_expires_at, used_at, revoked_at",
        [t(tx), hash.to_vec().into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn refresh_by_hash(tx: &TenantTx, hash: &[u8]) -> Result<Option<RefreshRow>, DbErr> {
    RefreshRow::find_by_statement(stmt(
        "SELECT id, family_id, user_id, expires_at, family_expires_at, used_at, revoked_at \
         FROM identity.refresh_tokens WHERE tenant_id = $1 AND token_hash = $2",
        [t(tx), hash.to_vec().into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn revoke_family(tx: &TenantTx, family: Uuid) -> Result<u64, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "UPDATE identity.refresh_tokens SET revoked_at = now() \
             WHERE tenant_id = $1 AND family_id = $2 AND revoked_at IS NULL",
            [t(tx), family.into()],
        ))
        .await?
        .rows_affected())
}

pub async fn revoke_user_tokens(tx: &TenantTx, user: Uuid) -> Result<u64, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "UPDATE identity.refresh_tokens SET revoked_at = now() \
             WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            [t(tx), user.into()],
        ))
        .await?
        .rows_affected())
}

pub async fn insert_api_client(
    tx: &TenantTx,
    id: Uuid,
    name: &str,
    client_id: &str,
    secret_hash: &[u8],
    role_id: Uuid,
    actor: Option<Uuid>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.api_clients (tenant_id, id, name, client_id, secret_hash, role_id, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                t(tx),
                id.into(),
                name.into(),
                client_id.into(),
                secret_hash.to_vec().into(),
                role_id.into(),
                actor.into(),
            ],
        ))
        .await?;
    Ok(())
}

pub async fn api_client_by_id(tx: &TenantTx, id: Uuid) -> Result<Option<ApiClientRow>, DbErr> {
    ApiClientRow::find_by_statement(stmt(
        &format!("{CLIENT_SELECT} WHERE c.tenant_id = $1 AND c.id = $2 AND c.deleted_at IS NULL"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn api_client_by_client_id(
    tx: &TenantTx,
    client_id: &str,
) -> Result<Option<ApiClientRow>, DbErr> {
    ApiClientRow::find_by_statement(stmt(
        &format!(
            "{CLIENT_SELECT} WHERE c.tenant_id = $1 AND c.client_id = $2 AND c.deleted_at IS NULL"
        ),
        [t(tx), client_id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn list_api_clients(
    tx: &TenantTx,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<ApiClientRow>, DbErr> {
    ApiClientRow::find_by_statement(stmt(
        &format!(
            "{CLIENT_SELECT} WHERE c.tenant_id = $1 AND c.deleted_at IS NULL AND ($2::uuid IS NULL OR c.id > $2) \
             ORDER BY c.id LIMIT $3"
        ),
        [t(tx), after.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

pub async fn delete_api_client(tx: &TenantTx, id: Uuid) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .execute_raw(stmt(
            "UPDATE identity.api_clients SET deleted_at = now(), updated_at = now() \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            [t(tx), id.into()],
        ))
        .await?
        .rows_affected()
        == 1)
}

pub async fn touch_api_client(tx: &TenantTx, id: Uuid) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "UPDATE identity.api_clients SET last_used_at = now() WHERE tenant_id = $1 AND id = $2",
            [t(tx), id.into()],
        ))
        .await?;
    Ok(())
}

/// Every member of the given teams (what a team scope reaches).
pub async fn team_member_ids(tx: &TenantTx, teams: &[Uuid]) -> Result<Vec<Uuid>, DbErr> {
    if teams.is_empty() {
        return Ok(vec![]);
    }
    let rows = tx
        .conn()
        .query_all_raw(stmt(
            "SELECT DISTINCT user_id FROM identity.team_members WHERE tenant_id = $1 AND team_id = ANY($2) \
             ORDER BY user_id",
            [t(tx), teams.to_vec().into()],
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get::<Uuid>("", "user_id"))
        .collect()
}

/// Appends a security event.
pub async fn record_security(
    tx: &TenantTx,
    kind: &str,
    actor: Option<Uuid>,
    subject: Option<Uuid>,
    client_address: Option<&str>,
    detail: serde_json::Value,
) -> Result<Uuid, DbErr> {
    let id = Uuid::now_v7();
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO identity.security_events (tenant_id, id, kind, actor_id, subject_id, client_address, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                t(tx),
                id.into(),
                kind.into(),
                actor.into(),
                subject.into(),
                client_address.map(str::to_owned).into(),
                detail.into(),
            ],
        ))
        .await?;
    Ok(id)
}

pub async fn list_security_events(
    tx: &TenantTx,
    kind: Option<&str>,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<SecurityEventRow>, DbErr> {
    SecurityEventRow::find_by_statement(stmt(
        "SELECT id, kind, actor_id, subject_id, client_address, detail, created_at FROM identity.security_events \
         WHERE tenant_id = $1 AND ($2::text IS NULL OR kind = $2) AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
        [t(tx), kind.map(str::to_owned).into(), before.into(), (limit as i64).into()],
    ))
    .all(tx.conn())
    .await
}

/// Writes a domain event to the outbox in the caller's transaction.
pub async fn emit(tx: &TenantTx, event: Event) -> ApiResult<()> {
    crm_bus::outbox::append(tx, SCHEMA, &event)
        .await
        .map_err(ApiError::internal)
}
