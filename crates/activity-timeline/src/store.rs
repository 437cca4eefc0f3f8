//! SQL of the timeline schema. Every function that touches tenant data takes a [`TenantTx`]
//! and filters by its tenant on top of row-level security.

use chrono::{DateTime, Utc};
use crm_kit::{TenantTx, access::Reach};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value};
use serde_json::{Value as Json, json};
use uuid::Uuid;

/// The schema this service owns.
pub const SCHEMA: &str = "timeline";

fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn t(tx: &TenantTx) -> Value {
    tx.tenant().uuid().into()
}

/// The SQL condition of a reach over `column`, appending its parameter.
fn reach_sql(reach: &Reach, column: &str, params: &mut Vec<Value>) -> Option<String> {
    match reach {
        Reach::All => None,
        Reach::Owners(ids) => {
            params.push(ids.clone().into());
            Some(format!("{column} = ANY(${})", params.len()))
        }
    }
}

// ---- activities ------------------------------------------------------------------------------

/// One activity as stored.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ActivityRow {
    pub id: Uuid,
    pub subject_type: String,
    pub subject_id: Uuid,
    pub activity_type: String,
    pub body: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub due_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub assignee_user_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
}

impl ActivityRow {
    /// The activity as events carry it (REST names).
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "subjectType": self.subject_type,
            "subjectId": self.subject_id,
            "activityType": self.activity_type,
            "body": self.body,
            "occurredAt": self.occurred_at,
            "dueAt": self.due_at,
            "completedAt": self.completed_at,
            "assigneeUserId": self.assignee_user_id,
            "ownerUserId": self.owner_user_id,
            "version": self.version,
        })
    }
}

const ACTIVITY_COLUMNS: &str = "id, subject_type, subject_id, activity_type, body, occurred_at, \
    due_at, completed_at, assignee_user_id, owner_user_id, version, created_at, updated_at, created_by";

/// The values of an activity a create or update writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityValues {
    pub subject_type: String,
    pub subject_id: Uuid,
    pub activity_type: String,
    pub body: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub due_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub assignee_user_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
}

impl From<&ActivityRow> for ActivityValues {
    fn from(r: &ActivityRow) -> Self {
        Self {
            subject_type: r.subject_type.clone(),
            subject_id: r.subject_id,
            activity_type: r.activity_type.clone(),
            body: r.body.clone(),
            occurred_at: r.occurred_at,
            due_at: r.due_at,
            completed_at: r.completed_at,
            assignee_user_id: r.assignee_user_id,
            owner_user_id: r.owner_user_id,
        }
    }
}

pub async fn insert_activity(
    tx: &TenantTx,
    id: Uuid,
    v: &ActivityValues,
    by: Uuid,
) -> Result<ActivityRow, DbErr> {
    ActivityRow::find_by_statement(stmt(
        &format!(
            "INSERT INTO timeline.activities (tenant_id, id, subject_type, subject_id, activity_type, body, \
             occurred_at, due_at, completed_at, assignee_user_id, owner_user_id, created_by, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {ACTIVITY_COLUMNS}"
        ),
        [
            t(tx),
            id.into(),
            v.subject_type.clone().into(),
            v.subject_id.into(),
            v.activity_type.clone().into(),
            v.body.clone().into(),
            v.occurred_at.into(),
            v.due_at.into(),
            v.completed_at.into(),
            v.assignee_user_id.into(),
            v.owner_user_id.into(),
            by.into(),
        ],
    ))
    .one(tx.conn())
    .await?
    .ok_or(DbErr::RecordNotInserted)
}

/// An activity, live or (with `deleted`) soft-deleted; `lock` takes a row lock for an update.
pub async fn fetch_activity(
    tx: &TenantTx,
    id: Uuid,
    deleted: bool,
    lock: bool,
) -> Result<Option<ActivityRow>, DbErr> {
    let state = if deleted {
        "deleted_at IS NOT NULL"
    } else {
        "deleted_at IS NULL"
    };
    let lock = if lock { " FOR UPDATE" } else { "" };
    ActivityRow::find_by_statement(stmt(
        &format!(
            "SELECT {ACTIVITY_COLUMNS} FROM timeline.activities WHERE tenant_id = $1 AND id = $2 AND {state}{lock}"
        ),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

pub async fn update_activity(
    tx: &TenantTx,
    id: Uuid,
    v: &ActivityValues,
    by: Uuid,
) -> Result<ActivityRow, DbErr> {
    ActivityRow::find_by_statement(stmt(
        &format!(
            "UPDATE timeline.activities SET body = $3, occurred_at = $4, due_at = $5, completed_at = $6, \
             assignee_user_id = $7, owner_user_id = $8, updated_by = $9, updated_at = now(), version = version + 1 \
             WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING {ACTIVITY_COLUMNS}"
        ),
        [
            t(tx),
            id.into(),
            v.body.clone().into(),
            v.occurred_at.into(),
            v.due_at.into(),
            v.completed_at.into(),
            v.assignee_user_id.into(),
            v.owner_user_id.into(),
            by.into(),
        ],
    ))
    .one(tx.conn())
    .await?
    .ok_or_else(|| DbErr::RecordNotFound("activity".into()))
}

pub async fn set_activity_deleted(
    tx: &TenantTx,
    id: Uuid,
    deleted: bool,
    by: Uuid,
) -> Result<(), DbErr> {
    let sql = if deleted {
        "UPDATE timeline.activities SET deleted_at = now(), deleted_by = $3, updated_at = now(), \
         updated_by = $3, version = version + 1 WHERE tenant_id = $1 AND id = $2"
    } else {
        "UPDATE timeline.activities SET deleted_at = NULL, deleted_by = NULL, updated_at = now(), \
         updated_by = $3, version = version + 1 WHERE tenant_id = $1 AND id = $2"
    };
    tx.conn()
        .execute_raw(stmt(sql, [t(tx), id.into(), by.into()]))
        .await?;
    Ok(())
}

/// Filters of an activity list.
#[derive(Debug, Default, Clone)]
pub struct ActivityFilter {
    pub subject_type: Option<String>,
    pub subject_id: Option<Uuid>,
    pub activity_type: Option<String>,
    pub assignee_user_id: Option<Uuid>,
}

/// Live activities newest first, after a (occurred_at, id) position.
pub async fn list_activities(
    tx: &TenantTx,
    f: &ActivityFilter,
    reach: &Reach,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u64,
) -> Result<Vec<ActivityRow>, DbErr> {
    let mut params: Vec<Value> = vec![t(tx)];
    let mut cond = vec!["tenant_id = $1".to_owned(), "deleted_at IS NULL".to_owned()];
    let mut eq = |column: &str, v: Value, params: &mut Vec<Value>| {
        params.push(v);
        cond.push(format!("{column} = ${}", params.len()));
    };
    if let Some(s) = &f.subject_type {
        eq("subject_type", s.clone().into(), &mut params);
    }
    if let Some(s) = f.subject_id {
        eq("subject_id", s.into(), &mut params);
    }
    if let Some(s) = &f.activity_type {
        eq("activity_type", s.clone().into(), &mut params);
    }
    if let Some(s) = f.assignee_user_id {
        eq("assignee_user_id", s.into(), &mut params);
    }
    if let Some(r) = reach_sql(reach, "owner_user_id", &mut params) {
        cond.push(r);
    }
    if let Some((at, id)) = after {
        params.push(at.into());
        params.push(id.into());
        cond.push(format!(
            "(occurred_at, id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    ActivityRow::find_by_statement(stmt(
        &format!(
            "SELECT {ACTIVITY_COLUMNS} FROM timeline.activities WHERE {} \
             ORDER BY occurred_at DESC, id DESC LIMIT {limit}",
            cond.join(" AND ")
        ),
        params,
    ))
    .all(tx.conn())
    .await
}

/// Open tasks of an assignee by due time (none last), after a (due key, id) position;
/// `due_before` keeps only those due before that time (overdue).
pub async fn open_tasks(
    tx: &TenantTx,
    assignee: Uuid,
    due_before: Option<DateTime<Utc>>,
    reach: &Reach,
    after: Option<(Option<DateTime<Utc>>, Uuid)>,
    limit: u64,
) -> Result<Vec<ActivityRow>, DbErr> {
    const DUE: &str = "coalesce(due_at, 'infinity'::timestamptz)";
    let mut params: Vec<Value> = vec![t(tx), assignee.into()];
    let mut cond = vec![
        "tenant_id = $1".to_owned(),
        "assignee_user_id = $2".to_owned(),
        "activity_type = 'task'".to_owned(),
        "completed_at IS NULL".to_owned(),
        "deleted_at IS NULL".to_owned(),
    ];
    if let Some(before) = due_before {
        params.push(before.into());
        cond.push(format!("{DUE} < ${}", params.len()));
    }
    if let Some(r) = reach_sql(reach, "owner_user_id", &mut params) {
        cond.push(r);
    }
    match after {
        Some((Some(due), id)) => {
            params.push(due.into());
            params.push(id.into());
            cond.push(format!(
                "({DUE}, id) > (${}, ${})",
                params.len() - 1,
                params.len()
            ));
        }
        // After a task without a due time come only others without one.
        Some((None, id)) => {
            params.push(id.into());
            cond.push(format!(
                "({DUE}, id) > ('infinity'::timestamptz, ${})",
                params.len()
            ));
        }
        None => {}
    }
    ActivityRow::find_by_statement(stmt(
        &format!(
            "SELECT {ACTIVITY_COLUMNS} FROM timeline.activities WHERE {} ORDER BY {DUE}, id LIMIT {limit}",
            cond.join(" AND ")
        ),
        params,
    ))
    .all(tx.conn())
    .await
}

// ---- timeline entries --------------------------------------------------------------------------

/// One timeline entry as stored.
#[derive(Debug, Clone, FromQueryResult)]
pub struct EntryRow {
    pub id: Uuid,
    pub record_type: String,
    pub record_id: Uuid,
    pub event_type: String,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub before: Option<Json>,
    pub after: Option<Json>,
    pub occurred_at: DateTime<Utc>,
}

/// An entry to write.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub record_type: &'a str,
    pub record_id: Uuid,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Uuid,
    pub action: &'a str,
    pub actor_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub before: Option<&'a Json>,
    pub after: Option<&'a Json>,
    pub occurred_at: DateTime<Utc>,
}

/// Writes an entry unless this event is already on this record's timeline.
pub async fn insert_entry(tx: &TenantTx, e: &NewEntry<'_>) -> Result<bool, DbErr> {
    let r = tx
        .conn()
        .execute_raw(stmt(
            "INSERT INTO timeline.entries (tenant_id, id, record_type, record_id, event_id, event_type, \
             entity_type, entity_id, action, actor_id, owner_user_id, before, after, occurred_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant_id, event_id, record_type, record_id) DO NOTHING",
            [
                t(tx),
                Uuid::now_v7().into(),
                e.record_type.to_owned().into(),
                e.record_id.into(),
                e.event_id.into(),
                e.event_type.to_owned().into(),
                e.entity_type.to_owned().into(),
                e.entity_id.into(),
                e.action.to_owned().into(),
                e.actor_id.into(),
                e.owner_user_id.into(),
                e.before.cloned().into(),
                e.after.cloned().into(),
                e.occurred_at.into(),
            ],
        ))
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Copies the entries of a record's own timeline onto an account's timeline (a contact or
/// opportunity newly related to the account brings its history along).
pub async fn copy_entries_to_account(
    tx: &TenantTx,
    record_type: &str,
    record_id: Uuid,
    account: Uuid,
) -> Result<(), DbErr> {
    // gen_random_uuid: entry ids only break ties within one instant and need not sort by time.
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO timeline.entries (tenant_id, id, record_type, record_id, event_id, event_type, \
             entity_type, entity_id, action, actor_id, owner_user_id, before, after, occurred_at) \
             SELECT tenant_id, gen_random_uuid(), 'account', $4, event_id, event_type, entity_type, \
             entity_id, action, actor_id, owner_user_id, before, after, occurred_at \
             FROM timeline.entries WHERE tenant_id = $1 AND record_type = $2 AND record_id = $3 \
             ON CONFLICT (tenant_id, event_id, record_type, record_id) DO NOTHING",
            [
                t(tx),
                record_type.to_owned().into(),
                record_id.into(),
                account.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// A page of one record's timeline, newest first. `activities` is the reach of the caller's
/// activity grant (None: activity entries are left out).
pub async fn timeline(
    tx: &TenantTx,
    record_type: &str,
    record_id: Uuid,
    activities: Option<&Reach>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u64,
) -> Result<Vec<EntryRow>, DbErr> {
    let mut params: Vec<Value> = vec![t(tx), record_type.to_owned().into(), record_id.into()];
    let mut cond = vec![
        "tenant_id = $1".to_owned(),
        "record_type = $2".to_owned(),
        "record_id = $3".to_owned(),
    ];
    match activities {
        None => cond.push("entity_type <> 'activity'".to_owned()),
        Some(reach) => {
            if let Some(r) = reach_sql(reach, "owner_user_id", &mut params) {
                cond.push(format!("(entity_type <> 'activity' OR {r})"));
            }
        }
    }
    if let Some((at, id)) = after {
        params.push(at.into());
        params.push(id.into());
        cond.push(format!(
            "(occurred_at, id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    EntryRow::find_by_statement(stmt(
        &format!(
            "SELECT id, record_type, record_id, event_type, entity_type, entity_id, action, actor_id, \
             before, after, occurred_at FROM timeline.entries WHERE {} \
             ORDER BY occurred_at DESC, id DESC LIMIT {limit}",
            cond.join(" AND ")
        ),
        params,
    ))
    .all(tx.conn())
    .await
}

// ---- projections -----------------------------------------------------------------------------

/// Replaces the primary account of a record (None: it has none).
pub async fn set_primary_account(
    tx: &TenantTx,
    entity_type: &str,
    id: Uuid,
    account: Option<Uuid>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "DELETE FROM timeline.relations WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3 AND kind = 'primary'",
            [t(tx), entity_type.to_owned().into(), id.into()],
        ))
        .await?;
    if let Some(a) = account {
        link_account(tx, entity_type, id, a, "primary").await?;
    }
    Ok(())
}

/// Relates a record to an account (`kind`: primary or link).
pub async fn link_account(
    tx: &TenantTx,
    entity_type: &str,
    id: Uuid,
    account: Uuid,
    kind: &str,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO timeline.relations (tenant_id, entity_type, entity_id, account_id, kind) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [
                t(tx),
                entity_type.to_owned().into(),
                id.into(),
                account.into(),
                kind.to_owned().into(),
            ],
        ))
        .await?;
    Ok(())
}

/// Removes a many-to-many link of a record to an account.
pub async fn unlink_account(
    tx: &TenantTx,
    entity_type: &str,
    id: Uuid,
    account: Uuid,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "DELETE FROM timeline.relations WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3 \
             AND account_id = $4 AND kind = 'link'",
            [
                t(tx),
                entity_type.to_owned().into(),
                id.into(),
                account.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// The accounts a record belongs to.
pub async fn accounts_of(tx: &TenantTx, entity_type: &str, id: Uuid) -> Result<Vec<Uuid>, DbErr> {
    #[derive(FromQueryResult)]
    struct A {
        account_id: Uuid,
    }
    Ok(A::find_by_statement(stmt(
        "SELECT DISTINCT account_id FROM timeline.relations WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3",
        [t(tx), entity_type.to_owned().into(), id.into()],
    ))
    .all(tx.conn())
    .await?
    .into_iter()
    .map(|a| a.account_id)
    .collect())
}

// ---- audit log -------------------------------------------------------------------------------

/// One audit record.
#[derive(Debug, Clone, FromQueryResult)]
pub struct AuditRow {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub entity_type: String,
    pub entity_id: String,
    pub action: String,
    pub before: Option<Json>,
    pub after: Option<Json>,
    pub occurred_at: DateTime<Utc>,
}

/// Appends an event to the audit log (once per event id).
#[allow(clippy::too_many_arguments)]
pub async fn append_audit(
    tx: &TenantTx,
    id: Uuid,
    actor: Option<Uuid>,
    entity_type: &str,
    entity_id: &str,
    action: &str,
    event_type: &str,
    before: Option<&Json>,
    after: Option<&Json>,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO timeline.audit_log (tenant_id, id, actor_id, entity_type, entity_id, action, \
             event_type, before, after, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
            [
                t(tx),
                id.into(),
                actor.into(),
                entity_type.to_owned().into(),
                entity_id.to_owned().into(),
                action.to_owned().into(),
                event_type.to_owned().into(),
                before.cloned().into(),
                after.cloned().into(),
                at.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// Filters of the audit log.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl AuditFilter {
    /// What page tokens of a list with these filters are bound to.
    pub fn fingerprint(&self) -> String {
        format!(
            "audit|{:?}|{:?}|{:?}|{:?}|{:?}",
            self.entity_type, self.entity_id, self.actor_id, self.from, self.to
        )
    }
}

/// A page of the audit log, newest first.
pub async fn audit_page(
    tx: &TenantTx,
    f: &AuditFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u64,
) -> Result<Vec<AuditRow>, DbErr> {
    let mut params: Vec<Value> = vec![t(tx)];
    let mut cond = vec!["tenant_id = $1".to_owned()];
    let mut add = |sql: &str, v: Value, params: &mut Vec<Value>| {
        params.push(v);
        cond.push(sql.replace('?', &format!("${}", params.len())));
    };
    if let Some(v) = &f.entity_type {
        add("entity_type = ?", v.clone().into(), &mut params);
    }
    if let Some(v) = &f.entity_id {
        add("entity_id = ?", v.clone().into(), &mut params);
    }
    if let Some(v) = f.actor_id {
        add("actor_id = ?", v.into(), &mut params);
    }
    if let Some(v) = f.from {
        add("occurred_at >= ?", v.into(), &mut params);
    }
    if let Some(v) = f.to {
        add("occurred_at < ?", v.into(), &mut params);
    }
    if let Some((at, id)) = after {
        params.push(at.into());
        params.push(id.into());
        cond.push(format!(
            "(occurred_at, id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    AuditRow::find_by_statement(stmt(
        &format!(
            "SELECT id, actor_id, entity_type, entity_id, action, before, after, occurred_at \
             FROM timeline.audit_log WHERE {} ORDER BY occurred_at DESC, id DESC LIMIT {limit}",
            cond.join(" AND ")
        ),
        params,
    ))
    .all(tx.conn())
    .await
}
