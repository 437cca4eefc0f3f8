//! SQL of the pipeline schema. Every function takes a [`TenantTx`] and filters by its tenant
//! on top of row-level security.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use crm_kit::{TenantTx, access::Reach};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, Statement, Value};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::rules::{ObjectType, PipelineDef, StageDef, default_stages};

/// The schema this service owns.
pub const SCHEMA: &str = "pipeline";

pub(crate) fn stmt<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn t(tx: &TenantTx) -> Value {
    tx.tenant().uuid().into()
}

// ---- pipelines -------------------------------------------------------------------------------

/// A stored pipeline.
#[derive(Clone, Debug, FromQueryResult)]
pub struct PipelineRow {
    pub id: Uuid,
    pub object_type: String,
    pub name: String,
    pub is_default: bool,
    pub stages: Json,
    pub allowed_transitions: Json,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PipelineRow {
    /// The stages.
    pub fn stage_list(&self) -> Vec<StageDef> {
        serde_json::from_value(self.stages.clone()).unwrap_or_default()
    }

    /// The allowed transitions.
    pub fn transitions(&self) -> BTreeMap<String, Vec<String>> {
        serde_json::from_value(self.allowed_transitions.clone()).unwrap_or_default()
    }

    /// What the transition rules need.
    pub fn def(&self) -> PipelineDef {
        PipelineDef {
            object_type: ObjectType::parse(&self.object_type).unwrap_or(ObjectType::Deal),
            stages: self.stage_list(),
            allowed_transitions: self.transitions(),
        }
    }

    /// What events show.
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id, "name": self.name, "objectType": self.object_type,
            "isDefault": self.is_default, "stages": self.stages,
            "allowedTransitions": self.allowed_transitions, "version": self.version,
        })
    }
}

const PIPELINE_SELECT: &str = "SELECT id, object_type, name, is_default, stages, allowed_transitions, version, created_at, updated_at FROM pipeline.pipelines";

/// Creates the tenant's default pipelines if missing; returns the ones this call created.
/// Concurrent calls create each default once (a unique index on the default flag).
pub async fn ensure_defaults(
    tx: &TenantTx,
    actor: Option<Uuid>,
) -> Result<Vec<PipelineRow>, DbErr> {
    let have = tx
        .conn()
        .query_one_raw(stmt(
            "SELECT count(*) AS n FROM pipeline.pipelines WHERE tenant_id = $1 AND is_default",
            [t(tx)],
        ))
        .await?
        .map(|r| r.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    if have >= 2 {
        return Ok(vec![]);
    }
    let mut created = Vec::new();
    for (ot, name) in [
        (ObjectType::Deal, "Sales pipeline"),
        (ObjectType::Ticket, "Support pipeline"),
    ] {
        let id = Uuid::now_v7();
        let row = tx
            .conn()
            .query_one_raw(stmt(
                "INSERT INTO pipeline.pipelines (tenant_id, id, object_type, name, is_default, stages, created_by, updated_by) \
                 VALUES ($1, $2, $3, $4, true, $5, $6, $6) \
                 ON CONFLICT (tenant_id, object_type) WHERE is_default DO NOTHING RETURNING id",
                [
                    t(tx),
                    id.into(),
                    ot.as_str().into(),
                    name.into(),
                    serde_json::to_value(default_stages(ot)).unwrap_or_default().into(),
                    actor.into(),
                ],
            ))
            .await?;
        if row.is_some()
            && let Some(p) = pipeline(tx, id).await?
        {
            created.push(p);
        }
    }
    Ok(created)
}

/// The tenant's pipelines, defaults first.
pub async fn pipelines(
    tx: &TenantTx,
    object_type: Option<&str>,
) -> Result<Vec<PipelineRow>, DbErr> {
    PipelineRow::find_by_statement(stmt(
        &format!(
            "{PIPELINE_SELECT} WHERE tenant_id = $1 AND ($2::text IS NULL OR object_type = $2) \
             ORDER BY object_type, is_default DESC, created_at, id"
        ),
        [t(tx), object_type.map(str::to_owned).into()],
    ))
    .all(tx.conn())
    .await
}

/// One pipeline.
pub async fn pipeline(tx: &TenantTx, id: Uuid) -> Result<Option<PipelineRow>, DbErr> {
    PipelineRow::find_by_statement(stmt(
        &format!("{PIPELINE_SELECT} WHERE tenant_id = $1 AND id = $2"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

/// One pipeline, locked for a change of its stages.
pub async fn pipeline_for_update(tx: &TenantTx, id: Uuid) -> Result<Option<PipelineRow>, DbErr> {
    PipelineRow::find_by_statement(stmt(
        &format!("{PIPELINE_SELECT} WHERE tenant_id = $1 AND id = $2 FOR UPDATE"),
        [t(tx), id.into()],
    ))
    .one(tx.conn())
    .await
}

/// The default pipeline of an object type.
pub async fn default_pipeline(tx: &TenantTx, ot: ObjectType) -> Result<Option<PipelineRow>, DbErr> {
    PipelineRow::find_by_statement(stmt(
        &format!("{PIPELINE_SELECT} WHERE tenant_id = $1 AND object_type = $2 AND is_default"),
        [t(tx), ot.as_str().into()],
    ))
    .one(tx.conn())
    .await
}

/// Inserts a pipeline.
pub async fn insert_pipeline(
    tx: &TenantTx,
    id: Uuid,
    ot: ObjectType,
    name: &str,
    stages: &[StageDef],
    transitions: &BTreeMap<String, Vec<String>>,
    actor: Uuid,
) -> Result<PipelineRow, DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO pipeline.pipelines (tenant_id, id, object_type, name, stages, allowed_transitions, created_by, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            [
                t(tx),
                id.into(),
                ot.as_str().into(),
                name.into(),
                json!(stages).into(),
                json!(transitions).into(),
                actor.into(),
            ],
        ))
        .await?;
    pipeline(tx, id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("inserted pipeline".into()))
}

/// Replaces a pipeline's name, stages and transitions, bumping the version.
pub async fn update_pipeline(
    tx: &TenantTx,
    id: Uuid,
    name: &str,
    stages: &[StageDef],
    transitions: &BTreeMap<String, Vec<String>>,
    actor: Uuid,
) -> Result<PipelineRow, DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "UPDATE pipeline.pipelines SET name = $3, stages = $4, allowed_transitions = $5, \
             version = version + 1, updated_at = clock_timestamp(), updated_by = $6 \
             WHERE tenant_id = $1 AND id = $2",
            [
                t(tx),
                id.into(),
                name.into(),
                json!(stages).into(),
                json!(transitions).into(),
                actor.into(),
            ],
        ))
        .await?;
    pipeline(tx, id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("updated pipeline".into()))
}

/// The stages of a pipeline that hold live or deleted records (which restore into them).
pub async fn stages_in_use(
    tx: &TenantTx,
    pipeline: Uuid,
    ot: ObjectType,
) -> Result<Vec<String>, DbErr> {
    let table = match ot {
        ObjectType::Deal => "pipeline.opportunities",
        ObjectType::Ticket => "pipeline.tickets",
    };
    let rows = tx
        .conn()
        .query_all_raw(stmt(
            &format!(
                "SELECT DISTINCT stage FROM {table} WHERE tenant_id = $1 AND pipeline_id = $2"
            ),
            [t(tx), pipeline.into()],
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get::<String>("", "stage"))
        .collect()
}

// ---- records ---------------------------------------------------------------------------------

/// The record types of this service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Opportunity,
    Ticket,
    Lead,
}

impl Kind {
    /// The object type of permissions and events.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Opportunity => "opportunity",
            Kind::Ticket => "ticket",
            Kind::Lead => "lead",
        }
    }

    /// The table.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Opportunity => "pipeline.opportunities",
            Kind::Ticket => "pipeline.tickets",
            Kind::Lead => "pipeline.leads",
        }
    }

    /// The column a scope reaches records by.
    pub fn owner_column(self) -> &'static str {
        match self {
            Kind::Ticket => "assignee_user_id",
            _ => "owner_user_id",
        }
    }

    /// The REST name of the owner field.
    pub fn owner_field(self) -> &'static str {
        match self {
            Kind::Ticket => "assigneeUserId",
            _ => "ownerUserId",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Kind::Opportunity => {
                "SELECT t.id, t.account_id, n.name AS account_name, t.name, t.amount_cents, t.currency, \
                t.pipeline_id, t.stage, t.stage_entered_at, t.close_date, t.lost_reason, t.won_at, t.owner_user_id, \
                t.custom, t.version, t.created_at, t.updated_at, t.created_by, t.deleted_at \
                FROM pipeline.opportunities t LEFT JOIN pipeline.account_names n \
                ON n.tenant_id = t.tenant_id AND n.account_id = t.account_id AND NOT n.deleted"
            }
            Kind::Ticket => {
                "SELECT t.id, t.subject, t.description, t.contact_id, t.account_id, n.name AS account_name, \
                t.priority, t.pipeline_id, t.stage, t.stage_entered_at, t.assignee_user_id, \
                t.version, t.created_at, t.updated_at, t.created_by, t.deleted_at \
                FROM pipeline.tickets t LEFT JOIN pipeline.account_names n \
                ON n.tenant_id = t.tenant_id AND n.account_id = t.account_id AND NOT n.deleted"
            }
            Kind::Lead => {
                "SELECT t.id, t.first_name, t.last_name, t.email, t.company, t.source, t.status, t.owner_user_id, \
                t.converted_account_id, t.converted_contact_id, t.converted_opportunity_id, t.converted_at, \
                t.version, t.created_at, t.updated_at, t.created_by, t.deleted_at \
                FROM pipeline.leads t"
            }
        }
    }
}

/// An opportunity.
#[derive(Clone, Debug, FromQueryResult)]
pub struct OppRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub account_name: Option<String>,
    pub name: String,
    pub amount_cents: Option<i64>,
    pub currency: Option<String>,
    pub pipeline_id: Uuid,
    pub stage: String,
    pub stage_entered_at: DateTime<Utc>,
    pub close_date: Option<NaiveDate>,
    pub lost_reason: Option<String>,
    pub won_at: Option<DateTime<Utc>>,
    pub owner_user_id: Option<Uuid>,
    /// Custom field values by key (a JSON object).
    pub custom: Json,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl OppRow {
    /// The custom field values by key.
    pub fn custom_map(&self) -> Map<String, Json> {
        self.custom.as_object().cloned().unwrap_or_default()
    }

    /// The record as events show it (REST names).
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id, "accountId": self.account_id, "name": self.name,
            "amountCents": self.amount_cents, "currency": self.currency,
            "pipelineId": self.pipeline_id, "stage": self.stage,
            "closeDate": self.close_date.map(|d| d.to_string()), "lostReason": self.lost_reason,
            "ownerUserId": self.owner_user_id, "custom": self.custom_map(),
            "version": self.version,
        })
    }
}

/// A ticket.
#[derive(Clone, Debug, FromQueryResult)]
pub struct TicketRow {
    pub id: Uuid,
    pub subject: String,
    pub description: Option<String>,
    pub contact_id: Option<Uuid>,
    pub account_id: Option<Uuid>,
    pub account_name: Option<String>,
    pub priority: String,
    pub pipeline_id: Uuid,
    pub stage: String,
    pub stage_entered_at: DateTime<Utc>,
    pub assignee_user_id: Option<Uuid>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl TicketRow {
    /// The record as events show it (REST names).
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id, "subject": self.subject, "description": self.description,
            "contactId": self.contact_id, "accountId": self.account_id, "priority": self.priority,
            "pipelineId": self.pipeline_id, "stage": self.stage,
            "assigneeUserId": self.assignee_user_id, "version": self.version,
        })
    }
}

/// A lead.
#[derive(Clone, Debug, FromQueryResult)]
pub struct LeadRow {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub company: Option<String>,
    pub source: Option<String>,
    pub status: String,
    pub owner_user_id: Option<Uuid>,
    pub converted_account_id: Option<Uuid>,
    pub converted_contact_id: Option<Uuid>,
    pub converted_opportunity_id: Option<Uuid>,
    pub converted_at: Option<DateTime<Utc>>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl LeadRow {
    /// The record as events show it (REST names).
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id, "firstName": self.first_name, "lastName": self.last_name,
            "email": self.email, "company": self.company, "source": self.source,
            "status": self.status, "ownerUserId": self.owner_user_id,
            "convertedAccountId": self.converted_account_id,
            "convertedContactId": self.converted_contact_id,
            "convertedOpportunityId": self.converted_opportunity_id,
            "version": self.version,
        })
    }
}

/// The SQL condition of a reach over alias `t`, appending its parameter.
pub fn reach_sql(kind: Kind, reach: &Reach, params: &mut Vec<Value>) -> Option<String> {
    match reach {
        Reach::All => None,
        Reach::Owners(ids) => {
            params.push(ids.clone().into());
            Some(format!(
                "t.{} = ANY(${})",
                kind.owner_column(),
                params.len()
            ))
        }
    }
}

/// One record by id; deleted ones only when asked; `lock` takes a row lock for an update.
pub async fn fetch<R: FromQueryResult>(
    tx: &TenantTx,
    kind: Kind,
    id: Uuid,
    deleted: bool,
    lock: bool,
) -> Result<Option<R>, DbErr> {
    let sql = format!(
        "{} WHERE t.tenant_id = $1 AND t.id = $2 AND (t.deleted_at IS NULL) <> $3{}",
        kind.select(),
        if lock { " FOR UPDATE OF t" } else { "" }
    );
    R::find_by_statement(stmt(&sql, [t(tx), id.into(), deleted.into()]))
        .one(tx.conn())
        .await
}

/// Several live records by id within a reach.
pub async fn fetch_many<R: FromQueryResult>(
    tx: &TenantTx,
    kind: Kind,
    ids: &[Uuid],
    reach: &Reach,
) -> Result<Vec<R>, DbErr> {
    let mut params = vec![t(tx), ids.to_vec().into()];
    let mut sql = format!(
        "{} WHERE t.tenant_id = $1 AND t.id = ANY($2) AND t.deleted_at IS NULL",
        kind.select()
    );
    if let Some(c) = reach_sql(kind, reach, &mut params) {
        sql.push_str(&format!(" AND {c}"));
    }
    R::find_by_statement(stmt(&sql, params))
        .all(tx.conn())
        .await
}

/// A keyset page of live records.
pub struct ListQuery {
    /// Conditions over alias `t`, joined by AND; their parameters follow `$1` (the tenant).
    pub conditions: Vec<String>,
    pub params: Vec<Value>,
    /// The SQL expression of the sort key and the type its cursor value casts to.
    pub sort_expr: String,
    pub sort_cast: &'static str,
    pub descending: bool,
    /// Resume after this (sort key as text, id).
    pub after: Option<(Option<String>, Uuid)>,
    pub limit: u64,
}

/// The statement of a page (also run directly by the benchmarks as their baseline).
pub fn list_statement(kind: Kind, tenant: Uuid, q: &ListQuery) -> Statement {
    let mut params = vec![Value::from(tenant)];
    params.extend(q.params.iter().cloned());
    let mut conds = vec![
        "t.tenant_id = $1".to_owned(),
        "t.deleted_at IS NULL".to_owned(),
    ];
    conds.extend(q.conditions.iter().cloned());
    let (cmp, dir) = if q.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((key, id)) = &q.after {
        params.push(key.clone().into());
        let k = params.len();
        params.push((*id).into());
        let i = params.len();
        conds.push(format!(
            "({expr}, t.id) {cmp} (${k}::{cast}, ${i})",
            expr = q.sort_expr,
            cast = q.sort_cast
        ));
    }
    params.push((q.limit as i64).into());
    let select = kind.select().replacen(
        " FROM ",
        &format!(", ({})::text AS sort_key FROM ", q.sort_expr),
        1,
    );
    let sql = format!(
        "{select} WHERE {conds} ORDER BY {expr} {dir}, t.id {dir} LIMIT ${n}",
        expr = q.sort_expr,
        conds = conds.join(" AND "),
        n = params.len(),
    );
    stmt(&sql, params)
}

/// A listed row with its sort key.
pub struct Listed<R> {
    pub row: R,
    pub sort_key: Option<String>,
}

/// A page of live records.
pub async fn list<R: FromQueryResult>(
    tx: &TenantTx,
    kind: Kind,
    q: &ListQuery,
) -> Result<Vec<Listed<R>>, DbErr> {
    let rows = tx
        .conn()
        .query_all_raw(list_statement(kind, tx.tenant().uuid(), q))
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Listed {
                row: R::from_query_result(r, "")?,
                sort_key: r.try_get::<Option<String>>("", "sort_key")?,
            })
        })
        .collect()
}

/// A column value to write, with the cast its placeholder needs.
pub struct Set {
    pub column: &'static str,
    pub value: Value,
    pub cast: &'static str,
}

impl Set {
    /// A value written as is.
    pub fn new(column: &'static str, value: impl Into<Value>) -> Self {
        Self {
            column,
            value: value.into(),
            cast: "",
        }
    }

    /// A value written through a cast (`::date`, `::uuid`).
    pub fn cast(column: &'static str, value: impl Into<Value>, cast: &'static str) -> Self {
        Self {
            column,
            value: value.into(),
            cast,
        }
    }
}

/// Inserts a record of `kind` with these columns besides the system ones.
pub async fn insert(
    tx: &TenantTx,
    kind: Kind,
    id: Uuid,
    sets: Vec<Set>,
    actor: Option<Uuid>,
) -> Result<(), DbErr> {
    let mut cols = vec!["tenant_id", "id", "created_by", "updated_by"];
    let mut params: Vec<Value> = vec![t(tx), id.into(), actor.into(), actor.into()];
    let mut placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
    for s in sets {
        cols.push(s.column);
        params.push(s.value);
        placeholders.push(format!("${}{}", params.len(), s.cast));
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        kind.table(),
        cols.join(", "),
        placeholders.join(", ")
    );
    tx.conn().execute_raw(stmt(&sql, params)).await?;
    Ok(())
}

/// Writes columns, bumping the version.
pub async fn update(
    tx: &TenantTx,
    kind: Kind,
    id: Uuid,
    sets: Vec<Set>,
    actor: Uuid,
) -> Result<(), DbErr> {
    let mut params: Vec<Value> = vec![t(tx), id.into(), actor.into()];
    let mut assigns = vec![
        "version = t.version + 1".to_owned(),
        "updated_at = clock_timestamp()".to_owned(),
        "updated_by = $3".to_owned(),
    ];
    for s in sets {
        params.push(s.value);
        assigns.push(format!("{} = ${}{}", s.column, params.len(), s.cast));
    }
    let sql = format!(
        "UPDATE {} t SET {} WHERE t.tenant_id = $1 AND t.id = $2",
        kind.table(),
        assigns.join(", ")
    );
    tx.conn().execute_raw(stmt(&sql, params)).await?;
    Ok(())
}

/// Sets or clears the soft-delete mark, bumping the version.
pub async fn set_deleted(
    tx: &TenantTx,
    kind: Kind,
    id: Uuid,
    deleted: bool,
    actor: Uuid,
) -> Result<(), DbErr> {
    let sql = format!(
        "UPDATE {} t SET deleted_at = CASE WHEN $3 THEN clock_timestamp() END, \
         deleted_by = CASE WHEN $3 THEN $4 END, version = t.version + 1, \
         updated_at = clock_timestamp(), updated_by = $4 \
         WHERE t.tenant_id = $1 AND t.id = $2",
        kind.table()
    );
    tx.conn()
        .execute_raw(stmt(&sql, [t(tx), id.into(), deleted.into(), actor.into()]))
        .await?;
    Ok(())
}

// ---- stage history ---------------------------------------------------------------------------

/// One recorded stage move.
#[derive(Clone, Debug, FromQueryResult)]
pub struct HistoryRow {
    pub id: Uuid,
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub actor_id: Option<Uuid>,
    pub moved_at: DateTime<Utc>,
    pub seconds_in_previous: i64,
}

/// Records a stage move.
#[allow(clippy::too_many_arguments)]
pub async fn record_move(
    tx: &TenantTx,
    kind: Kind,
    entity: Uuid,
    pipeline: Uuid,
    from: Option<&str>,
    to: &str,
    actor: Option<Uuid>,
    at: DateTime<Utc>,
    seconds_in_previous: i64,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO pipeline.stage_history (tenant_id, id, entity_type, entity_id, pipeline_id, from_stage, to_stage, actor_id, moved_at, seconds_in_previous) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [
                t(tx),
                Uuid::now_v7().into(),
                kind.name().into(),
                entity.into(),
                pipeline.into(),
                from.map(str::to_owned).into(),
                to.into(),
                actor.into(),
                at.into(),
                seconds_in_previous.into(),
            ],
        ))
        .await?;
    Ok(())
}

/// A page of a record's stage moves, oldest first.
pub async fn history(
    tx: &TenantTx,
    kind: Kind,
    entity: Uuid,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<HistoryRow>, DbErr> {
    HistoryRow::find_by_statement(stmt(
        "SELECT id, from_stage, to_stage, actor_id, moved_at, seconds_in_previous FROM pipeline.stage_history \
         WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3 AND ($4::uuid IS NULL OR id > $4) \
         ORDER BY id LIMIT $5",
        [
            t(tx),
            kind.name().into(),
            entity.into(),
            after.into(),
            (limit as i64).into(),
        ],
    ))
    .all(tx.conn())
    .await
}

// ---- leads -----------------------------------------------------------------------------------

/// Whether a lead was already made from this event.
pub async fn lead_from_event(tx: &TenantTx, event: Uuid) -> Result<bool, DbErr> {
    Ok(tx
        .conn()
        .query_one_raw(stmt(
            "SELECT 1 AS one FROM pipeline.leads WHERE tenant_id = $1 AND source_event_id = $2",
            [t(tx), event.into()],
        ))
        .await?
        .is_some())
}

// ---- account names ---------------------------------------------------------------------------

/// Records an account's name (or its deletion) unless a later version is already known.
pub async fn observe_account(
    tx: &TenantTx,
    account: Uuid,
    name: Option<&str>,
    version: i64,
    deleted: bool,
) -> Result<(), DbErr> {
    tx.conn()
        .execute_raw(stmt(
            "INSERT INTO pipeline.account_names AS a (tenant_id, account_id, name, version, deleted) \
             VALUES ($1, $2, coalesce($3, ''), $4, $5) \
             ON CONFLICT (tenant_id, account_id) DO UPDATE SET \
               name = coalesce($3, a.name), version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = now() \
             WHERE a.version < EXCLUDED.version",
            [
                t(tx),
                account.into(),
                name.map(str::to_owned).into(),
                version.into(),
                deleted.into(),
            ],
        ))
        .await?;
    Ok(())
}

// ---- custom fields ---------------------------------------------------------------------------

/// Removes the values stored under a deleted opportunity custom field's key from the records
/// last written before the deletion (a record written since holds a value of a field defined
/// again under that key). Versions stay: the definition changed, not the record.
pub async fn remove_custom_key(
    tx: &TenantTx,
    key: &str,
    deleted_at: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let r = tx
        .conn()
        .execute_raw(stmt(
            "UPDATE pipeline.opportunities SET custom = custom - $2 \
             WHERE tenant_id = $1 AND (custom -> $2) IS NOT NULL AND updated_at < $3",
            [t(tx), key.into(), deleted_at.into()],
        ))
        .await?;
    Ok(r.rows_affected())
}

// ---- report ----------------------------------------------------------------------------------

/// One group of the report query.
#[derive(Clone, Debug, FromQueryResult)]
pub struct ReportGroup {
    pub stage: String,
    pub currency: String,
    pub month: String,
    pub n: i64,
    pub amount: i64,
    pub days: i64,
}

/// The statement of the report: live opportunities of a pipeline whose close date is in
/// [from, to], grouped by stage, currency and close month (also run by the benchmarks).
pub fn report_statement(
    tenant: Uuid,
    pipeline: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    owner: Option<Uuid>,
    reach: &Reach,
) -> Statement {
    let mut params: Vec<Value> = vec![tenant.into(), pipeline.into(), from.into(), to.into()];
    let mut conds = vec![
        "t.tenant_id = $1".to_owned(),
        "t.pipeline_id = $2".to_owned(),
        "t.close_date BETWEEN $3 AND $4".to_owned(),
        "t.deleted_at IS NULL".to_owned(),
    ];
    if let Some(o) = owner {
        params.push(o.into());
        conds.push(format!("t.owner_user_id = ${}", params.len()));
    }
    if let Some(c) = reach_sql(Kind::Opportunity, reach, &mut params) {
        conds.push(c);
    }
    // Rows group by the month's first day as a plain timestamp, and only the few groups are
    // formatted: `to_char` and a time-zone-aware truncation on every row cost about a quarter
    // of a report over half a million opportunities.
    stmt(
        &format!(
            "SELECT stage, currency, to_char(m, 'YYYY-MM') AS month, n, amount, days FROM ( \
             SELECT t.stage, coalesce(t.currency, '') AS currency, date_trunc('month', t.close_date::timestamp) AS m, \
             count(*) AS n, coalesce(sum(t.amount_cents), 0)::bigint AS amount, \
             coalesce(sum(t.close_date - (t.created_at AT TIME ZONE 'UTC')::date), 0)::bigint AS days \
             FROM pipeline.opportunities t WHERE {} GROUP BY 1, 2, 3) g",
            conds.join(" AND ")
        ),
        params,
    )
}

/// The report's groups.
pub async fn report(
    tx: &TenantTx,
    pipeline: Uuid,
    from: NaiveDate,
    to: NaiveDate,
    owner: Option<Uuid>,
    reach: &Reach,
) -> Result<Vec<ReportGroup>, DbErr> {
    ReportGroup::find_by_statement(report_statement(
        tx.tenant().uuid(),
        pipeline,
        from,
        to,
        owner,
        reach,
    ))
    .all(tx.conn())
    .await
}

/// What the generic record operations need of a row.
pub trait Row: FromQueryResult + Send + Sync + 'static {
    /// The user the scope reaches the record by.
    fn owner(&self) -> Option<Uuid>;
    /// The record as events show it.
    fn json(&self) -> Json;
}

impl Row for OppRow {
    fn owner(&self) -> Option<Uuid> {
        self.owner_user_id
    }
    fn json(&self) -> Json {
        self.to_json()
    }
}

impl Row for TicketRow {
    fn owner(&self) -> Option<Uuid> {
        self.assignee_user_id
    }
    fn json(&self) -> Json {
        self.to_json()
    }
}

impl Row for LeadRow {
    fn owner(&self) -> Option<Uuid> {
        self.owner_user_id
    }
    fn json(&self) -> Json {
        self.to_json()
    }
}
