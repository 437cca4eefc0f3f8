//! The pipeline service, served over gRPC as crm.pipeline.v1.
//!
//! Opportunities, tickets and leads share the generic record operations here: permissions
//! (scope as a SQL predicate on the owner, field rules), validation, optimistic concurrency,
//! soft delete, keyset lists and outbox events. Stage moves go through [`crate::rules`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::{NaiveDate, Utc};
use crm_bus::Event;
use crm_kit::{
    ApiError, ApiResult, Caller, Db, ErrorCode, TenantId, TenantTx,
    access::{Access, Permissions, Reach, Scope},
    custom::{self as fields, Definition},
    error::{FieldViolation, Violations},
    filter::{self, Field, Kind as FieldKind, Schema},
    idempotency,
    paging::{PageTokens, page_size},
    rpc::{etag, fingerprint, map_to_struct, parse_etag, path_id, struct_to_map, ts},
};
use crm_proto::{
    accounts::{self as apb, accounts_service_client::AccountsServiceClient},
    identity as idpb,
    pipeline::{self as pb, pipeline_service_server::PipelineService},
};
use regex::Regex;
use sea_orm::Value;
use serde_json::{Map, Value as Json, json};
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    currency,
    custom::Definitions,
    rules::{self, Broken, MoveError, ObjectType, PipelineDef, StageDef, StageKind},
    store::{self, Kind, LeadRow, ListQuery, OppRow, PipelineRow, Row, Set, TicketRow},
};

/// The event source name.
pub const SERVICE: &str = "pipeline";
/// Longest name-like value.
const MAX_TEXT: usize = 200;
/// Longest description.
const MAX_DESCRIPTION: usize = 10_000;
/// Most ids in one bulk call.
pub const MAX_BULK: usize = 1_000;
/// Longest `q`.
const MAX_QUERY: usize = 200;
/// Most stages in a pipeline.
const MAX_STAGES: usize = 50;

/// Fields a deal stage may require.
const DEAL_FIELDS: &[&str] = &[
    "accountId",
    "name",
    "amountCents",
    "currency",
    "closeDate",
    "lostReason",
    "ownerUserId",
];
/// Fields a ticket stage may require.
const TICKET_FIELDS: &[&str] = &[
    "subject",
    "description",
    "contactId",
    "accountId",
    "priority",
    "assigneeUserId",
];

/// The service's state.
#[derive(Clone)]
pub struct Pipelines {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    perms: Permissions,
    accounts: AccountsServiceClient<Channel>,
    definitions: Definitions,
    pages: PageTokens,
    email_re: Regex,
    key_re: Regex,
}

fn check_version(etag_in: &str, version: i64) -> ApiResult<()> {
    match parse_etag(etag_in)? {
        Some(v) if v != version => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("the record changed: it is at version {version}"),
        )),
        _ => Ok(()),
    }
}

/// A broken transition rule: 422 naming `stage` and the rule.
pub fn rule_error(b: Broken) -> ApiError {
    let mut e = ApiError::new(ErrorCode::RuleViolation, b.message.clone()).with_fields(vec![
        FieldViolation {
            field: "stage".into(),
            message: b.message,
        },
    ]);
    e.metadata.insert("rule".into(), b.rule.into());
    e
}

fn move_error(e: MoveError) -> ApiError {
    match e {
        MoveError::UnknownStage => ApiError::invalid("stage", "no such stage in the pipeline"),
        MoveError::Rule(b) => rule_error(b),
    }
}

fn opt_uuid_str(u: Option<Uuid>) -> String {
    u.map(|u| u.to_string()).unwrap_or_default()
}

/// The before and after of the fields that differ between two event states.
fn diff(before: &Json, after: &Json) -> (Json, Json) {
    let (mut b, mut a) = (Map::new(), Map::new());
    if let (Json::Object(x), Json::Object(y)) = (before, after) {
        for (k, v) in y {
            let old = x.get(k).cloned().unwrap_or(Json::Null);
            if &old != v || k == "version" {
                b.insert(k.clone(), old);
                a.insert(k.clone(), v.clone());
            }
        }
    }
    (Json::Object(b), Json::Object(a))
}

/// The before and after of the fields that differ between two states of an opportunity; a
/// custom value is its own field, `custom.<key>`, as field rules name it.
fn opp_diff(before: &OppRow, after: &OppRow) -> (Json, Json) {
    let plain = |r: &OppRow| {
        let mut j = r.to_json();
        if let Some(m) = j.as_object_mut() {
            m.remove("custom");
        }
        j
    };
    let (mut b, mut a) = diff(&plain(before), &plain(after));
    let (x, y) = (before.custom_map(), after.custom_map());
    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    if let (Json::Object(b), Json::Object(a)) = (&mut b, &mut a) {
        for k in keys {
            let (old, new) = (x.get(k), y.get(k));
            if old != new {
                b.insert(format!("custom.{k}"), old.cloned().unwrap_or(Json::Null));
                a.insert(format!("custom.{k}"), new.cloned().unwrap_or(Json::Null));
            }
        }
    }
    (b, a)
}

/// The `custom.<key>` names in a filter or sort, for looking up definitions that cover them.
fn custom_names(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|w| w.strip_prefix("custom."))
        .filter(|k| fields::valid_key(k))
        .map(str::to_owned)
        .collect()
}

// ---- validation helpers --------------------------------------------------------------------

fn text(v: &mut Violations, field: &str, raw: &str, required: bool, max: usize) -> Option<String> {
    v.text(field, raw);
    let s = raw.trim();
    if s.is_empty() {
        v.check(required, field, "is required");
        return None;
    }
    v.check(
        s.chars().count() > max,
        field,
        &format!("must be at most {max} characters"),
    );
    Some(s.to_owned())
}

fn uuid_opt(v: &mut Violations, field: &str, raw: &str) -> Option<Uuid> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let id = Uuid::parse_str(s).ok();
    v.check(id.is_none(), field, "must be an id");
    id
}

fn date_opt(v: &mut Violations, field: &str, raw: &str) -> Option<NaiveDate> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|d| (1900..=9999).contains(&chrono::Datelike::year(d)));
    v.check(d.is_none(), field, "must be a date (YYYY-MM-DD)");
    d
}

fn currency_opt(v: &mut Violations, field: &str, raw: &str) -> Option<String> {
    let s = raw.trim().to_ascii_uppercase();
    if s.is_empty() {
        return None;
    }
    v.check(
        !currency::is_known(&s),
        field,
        "must be an ISO 4217 currency code such as USD or EUR",
    );
    Some(s)
}

fn amount_opt(v: &mut Violations, field: &str, raw: Option<i64>) -> Option<i64> {
    if let Some(a) = raw {
        v.check(a < 0, field, "must be at least 0");
    }
    raw
}

const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
const STATUSES: &[&str] = &["new", "working", "qualified", "disqualified", "converted"];

// ---- conversions ------------------------------------------------------------------------------

fn stage_pb(s: &StageDef) -> pb::Stage {
    pb::Stage {
        key: s.key.clone(),
        name: s.name.clone(),
        probability: s.probability,
        kind: s.kind.as_str().into(),
        required_fields: s.required_fields.clone(),
        retired: s.retired,
    }
}

fn pipeline_pb(p: &PipelineRow) -> pb::Pipeline {
    pb::Pipeline {
        id: p.id.to_string(),
        name: p.name.clone(),
        object_type: p.object_type.clone(),
        is_default: p.is_default,
        stages: p.stage_list().iter().map(stage_pb).collect(),
        allowed_transitions: p
            .transitions()
            .into_iter()
            .map(|(k, keys)| (k, pb::StageKeys { keys }))
            .collect(),
        version: p.version,
        etag: etag(p.version),
        create_time: ts(p.created_at),
        update_time: ts(p.updated_at),
    }
}

/// Blanks the fields the caller's role hides and names them.
struct Redactor<'a> {
    access: &'a Access,
    object: &'static str,
    redacted: Vec<String>,
}

impl<'a> Redactor<'a> {
    fn new(access: &'a Access, object: &'static str) -> Self {
        Self {
            access,
            object,
            redacted: Vec::new(),
        }
    }

    fn show(&mut self, field: &str) -> bool {
        if self.access.is_hidden(self.object, field) {
            self.redacted.push(field.to_owned());
            false
        } else {
            true
        }
    }

    fn s(&mut self, field: &str, v: String) -> String {
        if self.show(field) { v } else { String::new() }
    }
}

fn opp_pb(access: &Access, r: &OppRow) -> pb::Opportunity {
    let mut x = Redactor::new(access, "opportunity");
    let mut o = pb::Opportunity {
        id: r.id.to_string(),
        account_id: x.s("accountId", r.account_id.to_string()),
        account_name: String::new(),
        name: x.s("name", r.name.clone()),
        amount_cents: if x.show("amountCents") {
            r.amount_cents
        } else {
            None
        },
        currency: x.s("currency", r.currency.clone().unwrap_or_default()),
        pipeline_id: r.pipeline_id.to_string(),
        stage: r.stage.clone(),
        close_date: x.s(
            "closeDate",
            r.close_date.map(|d| d.to_string()).unwrap_or_default(),
        ),
        lost_reason: x.s("lostReason", r.lost_reason.clone().unwrap_or_default()),
        owner_user_id: x.s("ownerUserId", opt_uuid_str(r.owner_user_id)),
        version: r.version,
        etag: etag(r.version),
        created_by: opt_uuid_str(r.created_by),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
        stage_enter_time: ts(r.stage_entered_at),
        redacted_fields: vec![],
        custom: None,
    };
    if !o.account_id.is_empty() {
        o.account_name = r.account_name.clone().unwrap_or_default();
    }
    if x.show("custom") {
        let mut m = r.custom_map();
        m.retain(|k, _| x.show(&format!("custom.{k}")));
        o.custom = Some(map_to_struct(&m));
    }
    o.redacted_fields = x.redacted;
    o
}

fn ticket_pb(access: &Access, r: &TicketRow) -> pb::Ticket {
    let mut x = Redactor::new(access, "ticket");
    let mut o = pb::Ticket {
        id: r.id.to_string(),
        subject: x.s("subject", r.subject.clone()),
        description: x.s("description", r.description.clone().unwrap_or_default()),
        contact_id: x.s("contactId", opt_uuid_str(r.contact_id)),
        account_id: x.s("accountId", opt_uuid_str(r.account_id)),
        account_name: String::new(),
        priority: x.s("priority", r.priority.clone()),
        pipeline_id: r.pipeline_id.to_string(),
        stage: r.stage.clone(),
        assignee_user_id: x.s("assigneeUserId", opt_uuid_str(r.assignee_user_id)),
        version: r.version,
        etag: etag(r.version),
        created_by: opt_uuid_str(r.created_by),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
        stage_enter_time: ts(r.stage_entered_at),
        redacted_fields: vec![],
    };
    if !o.account_id.is_empty() {
        o.account_name = r.account_name.clone().unwrap_or_default();
    }
    o.redacted_fields = x.redacted;
    o
}

fn lead_pb(access: &Access, r: &LeadRow) -> pb::Lead {
    let mut x = Redactor::new(access, "lead");
    let mut o = pb::Lead {
        id: r.id.to_string(),
        first_name: x.s("firstName", r.first_name.clone()),
        last_name: x.s("lastName", r.last_name.clone()),
        email: x.s("email", r.email.clone().unwrap_or_default()),
        company: x.s("company", r.company.clone().unwrap_or_default()),
        source: x.s("source", r.source.clone().unwrap_or_default()),
        status: r.status.clone(),
        owner_user_id: x.s("ownerUserId", opt_uuid_str(r.owner_user_id)),
        converted_account_id: opt_uuid_str(r.converted_account_id),
        converted_contact_id: opt_uuid_str(r.converted_contact_id),
        converted_opportunity_id: opt_uuid_str(r.converted_opportunity_id),
        convert_time: r.converted_at.and_then(ts),
        version: r.version,
        etag: etag(r.version),
        created_by: opt_uuid_str(r.created_by),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
        redacted_fields: vec![],
    };
    o.redacted_fields = x.redacted;
    o
}

// ---- lists ------------------------------------------------------------------------------------

/// A sort key: its order_by name, REST field, SQL expression and cursor cast.
struct SortKey {
    name: &'static str,
    rest: &'static str,
    expr: &'static str,
    cast: &'static str,
}

const fn sk(
    name: &'static str,
    rest: &'static str,
    expr: &'static str,
    cast: &'static str,
) -> SortKey {
    SortKey {
        name,
        rest,
        expr,
        cast,
    }
}

const OPP_SORTS: &[SortKey] = &[
    sk("create_time", "createdAt", "t.created_at", "timestamptz"),
    sk("update_time", "updatedAt", "t.updated_at", "timestamptz"),
    sk("name", "name", "t.name", "text"),
    sk(
        "close_date",
        "closeDate",
        "coalesce(t.close_date, '9999-12-31'::date)",
        "date",
    ),
    sk(
        "amount_cents",
        "amountCents",
        "coalesce(t.amount_cents, -1)",
        "bigint",
    ),
];
/// What an opportunity list's AIP-160 filter may name besides `custom.<key>`.
const OPP_FILTERS: &[Field] = &[
    Field {
        name: "id",
        rest: "id",
        column: "id",
        kind: FieldKind::Uuid,
    },
    Field {
        name: "name",
        rest: "name",
        column: "name",
        kind: FieldKind::Text,
    },
    Field {
        name: "currency",
        rest: "currency",
        column: "currency",
        kind: FieldKind::Text,
    },
    Field {
        name: "stage",
        rest: "stage",
        column: "stage",
        kind: FieldKind::Text,
    },
    Field {
        name: "account_id",
        rest: "accountId",
        column: "account_id",
        kind: FieldKind::Uuid,
    },
    Field {
        name: "owner_user_id",
        rest: "ownerUserId",
        column: "owner_user_id",
        kind: FieldKind::Uuid,
    },
    Field {
        name: "pipeline_id",
        rest: "pipelineId",
        column: "pipeline_id",
        kind: FieldKind::Uuid,
    },
    Field {
        name: "amount_cents",
        rest: "amountCents",
        column: "amount_cents",
        kind: FieldKind::Integer,
    },
    Field {
        name: "close_date",
        rest: "closeDate",
        column: "close_date",
        kind: FieldKind::Date,
    },
    Field {
        name: "create_time",
        rest: "createdAt",
        column: "created_at",
        kind: FieldKind::Time,
    },
    Field {
        name: "update_time",
        rest: "updatedAt",
        column: "updated_at",
        kind: FieldKind::Time,
    },
];
const TICKET_SORTS: &[SortKey] = &[
    sk("create_time", "createdAt", "t.created_at", "timestamptz"),
    sk("update_time", "updatedAt", "t.updated_at", "timestamptz"),
    sk(
        "priority",
        "priority",
        "array_position(ARRAY['low','normal','high','urgent'], t.priority)",
        "integer",
    ),
];
const LEAD_SORTS: &[SortKey] = &[
    sk("create_time", "createdAt", "t.created_at", "timestamptz"),
    sk("update_time", "updatedAt", "t.updated_at", "timestamptz"),
    sk("last_name", "lastName", "t.last_name", "text"),
];

/// A page position: the last row's sort key and id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Position {
    k: Option<String>,
    id: Uuid,
}

/// One equality filter of a list: its REST field (for field rules), SQL column and value.
struct Filter {
    field: &'static str,
    rest: &'static str,
    column: &'static str,
    value: Value,
    text: String,
}

fn uuid_filter(
    v: &mut Violations,
    field: &'static str,
    rest: &'static str,
    column: &'static str,
    raw: &str,
) -> Option<Filter> {
    uuid_opt(v, field, raw).map(|id| Filter {
        field,
        rest,
        column,
        value: id.into(),
        text: id.to_string(),
    })
}

fn text_filter(
    field: &'static str,
    rest: &'static str,
    column: &'static str,
    raw: &str,
) -> Option<Filter> {
    let s = raw.trim();
    (!s.is_empty()).then(|| Filter {
        field,
        rest,
        column,
        value: s.to_owned().into(),
        text: s.to_owned(),
    })
}

/// The arguments of a list.
struct ListArgs<'a> {
    page_size: i32,
    page_token: &'a str,
    order_by: &'a str,
    query: &'a str,
    filters: Vec<Filter>,
    /// An AIP-160 filter over `filter_fields` and, for records with custom fields, the keys
    /// of `custom` (which also sort).
    filter: &'a str,
    filter_fields: &'static [Field],
    custom: Option<&'a [Definition]>,
    violations: Violations,
}

impl Pipelines {
    /// The service over its dependencies.
    pub fn new(
        db: Db,
        perms: Permissions,
        accounts: AccountsServiceClient<Channel>,
        pages: PageTokens,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                perms,
                definitions: Definitions::new(accounts.clone()),
                accounts,
                pages,
                email_re: Regex::new(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")?,
                key_re: Regex::new(r"^[a-z][a-z0-9_]{0,49}$")?,
            }),
        })
    }

    async fn tx(&self, tenant: TenantId) -> ApiResult<TenantTx> {
        Ok(self.inner.db.tenant_tx(tenant).await?)
    }

    async fn access(&self, caller: &Caller) -> ApiResult<Arc<Access>> {
        self.inner.perms.of(caller).await
    }

    /// Appends an event to the outbox; the entity type is the event type's prefix.
    async fn emit(
        &self,
        tx: &TenantTx,
        actor: Option<Uuid>,
        event_type: &str,
        id: Uuid,
        before: Option<Json>,
        after: Option<Json>,
    ) -> ApiResult<()> {
        emit(tx, actor, event_type, id, before, after).await
    }

    /// Whether the caller counts as a manager for the transition rules: its
    /// `opportunity.update` grant has scope all.
    fn is_manager(access: &Access) -> bool {
        access.scope("opportunity", "update") == Some(Scope::All)
    }

    /// Refuses an owner the caller may not assign, or who is not a user of the tenant.
    async fn check_owner(
        &self,
        caller: &Caller,
        reach: &Reach,
        field: &str,
        owner: Option<Uuid>,
    ) -> ApiResult<()> {
        self.inner
            .perms
            .check_assignable(caller, reach, field, owner)
            .await
    }

    /// Checks with accounts-contacts, as the caller, that an account exists and is readable;
    /// remembers its name for lists.
    async fn check_account(&self, caller: &Caller, field: &str, id: Uuid) -> ApiResult<()> {
        let res = self
            .inner
            .accounts
            .clone()
            .get_account(Permissions::request(
                caller,
                apb::GetAccountRequest { id: id.to_string() },
            ))
            .await;
        match res {
            Ok(r) => {
                if let Some(a) = r.into_inner().account
                    && !a.redacted_fields.iter().any(|f| f == "name")
                {
                    let tx = self.tx(caller.tenant).await?;
                    store::observe_account(&tx, id, Some(&a.name), a.version, false).await?;
                    tx.commit().await?;
                }
                Ok(())
            }
            Err(s) if s.code() == tonic::Code::NotFound => {
                Err(ApiError::invalid(field, "no such account"))
            }
            Err(s) => Err(upstream(&s)),
        }
    }

    /// Checks with accounts-contacts, as the caller, that a contact exists and is readable.
    async fn check_contact(&self, caller: &Caller, field: &str, id: Uuid) -> ApiResult<()> {
        let res = self
            .inner
            .accounts
            .clone()
            .get_contact(Permissions::request(
                caller,
                apb::GetContactRequest { id: id.to_string() },
            ))
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Err(ApiError::invalid(field, "no such contact"))
            }
            Err(s) => Err(upstream(&s)),
        }
    }

    // ---- generic record operations ----------------------------------------------------

    /// A live record the caller may read, or "not found".
    async fn read<R: Row>(
        &self,
        caller: &Caller,
        kind: Kind,
        id: &str,
    ) -> ApiResult<(Arc<Access>, R)> {
        let access = self.access(caller).await?;
        let reach = access
            .require(kind.name(), "read")
            .map_err(|_| ApiError::not_found(kind.name()))?;
        let id = path_id(kind.name(), id)?;
        let tx = self.tx(caller.tenant).await?;
        let r: Option<R> = store::fetch(&tx, kind, id, false, false).await?;
        tx.commit().await?;
        match r {
            Some(r) if reach.covers(r.owner()) => Ok((access, r)),
            _ => Err(ApiError::not_found(kind.name())),
        }
    }

    /// A live record locked for a change: readable (else not found) and changeable with
    /// `action` (else permission denied).
    async fn lock<R: Row>(
        &self,
        tx: &TenantTx,
        access: &Access,
        kind: Kind,
        id: Uuid,
        action: &str,
    ) -> ApiResult<R> {
        let read = access
            .require(kind.name(), "read")
            .map_err(|_| ApiError::not_found(kind.name()))?;
        let Some(current) = store::fetch::<R>(tx, kind, id, false, true).await? else {
            return Err(ApiError::not_found(kind.name()));
        };
        if !read.covers(current.owner()) {
            return Err(ApiError::not_found(kind.name()));
        }
        if !access.require(kind.name(), action)?.covers(current.owner()) {
            return Err(ApiError::permission_denied(format!(
                "your role may not {action} this {}",
                kind.name()
            )));
        }
        Ok(current)
    }

    async fn list<R: Row>(
        &self,
        caller: &Caller,
        kind: Kind,
        sorts: &'static [SortKey],
        search: &'static str,
        a: ListArgs<'_>,
    ) -> ApiResult<(Arc<Access>, Vec<R>, String)> {
        let access = self.access(caller).await?;
        let reach = access.require(kind.name(), "read")?;
        let size = page_size(a.page_size, "page_size")?;
        let mut v = a.violations;
        let query = a.query.trim();
        v.text("query", query);
        v.check(
            query.chars().count() > MAX_QUERY,
            "query",
            "must be at most 200 characters",
        );
        v.text("order_by", a.order_by);
        for f in &a.filters {
            v.text(f.field, &f.text);
            if access.is_hidden(kind.name(), f.rest) {
                v.add(f.field, "your role may not filter by this field");
            }
        }
        let mut words = a.order_by.split_whitespace();
        let name = words.next().unwrap_or("create_time");
        let descending = match words.next() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                v.add("order_by", "direction must be asc or desc");
                false
            }
        };
        v.check(words.next().is_some(), "order_by", "sorts by one field");
        let mut sort: Option<(String, &'static str)> = None;
        match (name.strip_prefix("custom."), a.custom) {
            (Some(key), Some(defs)) => {
                if !defs.iter().any(|d| d.key == key) {
                    v.add("order_by", format!("unknown custom field {key:?}"));
                } else if access.is_hidden(kind.name(), name) {
                    v.add("order_by", "your role may not sort by this field");
                } else {
                    // Keys are validated identifiers, safe to inline; missing values sort first.
                    sort = Some((
                        format!("COALESCE(t.custom -> '{key}', 'null'::jsonb)"),
                        "jsonb",
                    ));
                }
            }
            _ => match sorts.iter().find(|s| s.name == name) {
                None => v.add(
                    "order_by",
                    format!(
                        "one of {}{}",
                        sorts.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                        if a.custom.is_some() {
                            ", custom.<key>"
                        } else {
                            ""
                        }
                    ),
                ),
                Some(s) if access.is_hidden(kind.name(), s.rest) => {
                    v.add("order_by", "your role may not sort by this field")
                }
                Some(s) => sort = Some((s.expr.to_owned(), s.cast)),
            },
        }
        v.finish()?;
        let (sort_expr, sort_cast) =
            sort.unwrap_or_else(|| (sorts[0].expr.to_owned(), sorts[0].cast));
        let fp = format!(
            "{}|{}|{}|{}|{}",
            kind.name(),
            a.order_by.trim(),
            query,
            a.filters
                .iter()
                .map(|f| format!("{}={}", f.field, f.text))
                .collect::<Vec<_>>()
                .join("&"),
            a.filter.trim(),
        );
        let after = self
            .inner
            .pages
            .decode(a.page_token, caller.tenant, &fp, "page_token")?
            .map(|s| serde_json::from_str::<Position>(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))?;
        let mut params: Vec<Value> = vec![caller.tenant.uuid().into()];
        let mut conditions = Vec::new();
        for f in a.filters {
            params.push(f.value);
            conditions.push(format!("t.{} = ${}", f.column, params.len()));
        }
        if let Some(e) = filter::parse(a.filter)? {
            let hidden = |f: &str| access.is_hidden(kind.name(), f);
            let schema = Schema {
                fields: a.filter_fields,
                custom: a.custom.unwrap_or_default(),
                hidden: &hidden,
                custom_index: None,
            };
            conditions.push(filter::compile(&e, &schema, &mut params)?);
        }
        if !query.is_empty() {
            let escaped = query
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            params.push(format!("%{escaped}%").into());
            conditions.push(format!("{search} ILIKE ${}", params.len()));
        }
        if let Some(c) = store::reach_sql(kind, &reach, &mut params) {
            conditions.push(c);
        }
        let q = ListQuery {
            conditions,
            params: params[1..].to_vec(),
            sort_expr,
            sort_cast,
            descending,
            after: after.map(|p| (p.k, p.id)),
            limit: size + 1,
        };
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::list::<R>(&tx, kind, &q).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                let id = match last.row.json().get("id").and_then(Json::as_str) {
                    Some(s) => Uuid::parse_str(s).map_err(ApiError::internal)?,
                    None => return Err(ApiError::internal("listed row without id")),
                };
                let pos = serde_json::to_string(&Position {
                    k: last.sort_key.clone(),
                    id,
                })
                .map_err(ApiError::internal)?;
                next = self.inner.pages.encode(caller.tenant, &fp, &pos);
            }
        }
        Ok((access, rows.into_iter().map(|l| l.row).collect(), next))
    }

    async fn delete<R: Row>(
        &self,
        caller: &Caller,
        kind: Kind,
        id: &str,
        etag_in: &str,
    ) -> ApiResult<()> {
        let access = self.access(caller).await?;
        let id = path_id(kind.name(), id)?;
        let tx = self.tx(caller.tenant).await?;
        let current: R = self.lock(&tx, &access, kind, id, "delete").await?;
        check_version(etag_in, version_of(&current.json()))?;
        store::set_deleted(&tx, kind, id, true, caller.subject).await?;
        self.emit(
            &tx,
            Some(caller.subject),
            &format!("{}.deleted", kind.name()),
            id,
            Some(current.json()),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn restore<R: Row>(
        &self,
        caller: &Caller,
        kind: Kind,
        id: &str,
    ) -> ApiResult<(Arc<Access>, R)> {
        let access = self.access(caller).await?;
        let reach = access
            .require(kind.name(), "delete")
            .map_err(|_| ApiError::not_found(kind.name()))?;
        let id = path_id(kind.name(), id)?;
        let tx = self.tx(caller.tenant).await?;
        let deleted: Option<R> = store::fetch(&tx, kind, id, true, true).await?;
        let r = match deleted {
            Some(d) if reach.covers(d.owner()) => {
                store::set_deleted(&tx, kind, id, false, caller.subject).await?;
                let r: R = store::fetch(&tx, kind, id, false, false)
                    .await?
                    .ok_or_else(|| ApiError::not_found(kind.name()))?;
                self.emit(
                    &tx,
                    Some(caller.subject),
                    &format!("{}.restored", kind.name()),
                    id,
                    None,
                    Some(r.json()),
                )
                .await?;
                r
            }
            // Restoring a live record changes nothing.
            None => match store::fetch::<R>(&tx, kind, id, false, false).await? {
                Some(r) if reach.covers(r.owner()) => r,
                _ => return Err(ApiError::not_found(kind.name())),
            },
            Some(_) => return Err(ApiError::not_found(kind.name())),
        };
        tx.commit().await?;
        Ok((access, r))
    }

    async fn fetch_live<R: Row>(tx: &TenantTx, kind: Kind, id: Uuid) -> ApiResult<R> {
        store::fetch(tx, kind, id, false, false)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{} vanished", kind.name())))
    }
}

fn version_of(j: &Json) -> i64 {
    j.get("version").and_then(Json::as_i64).unwrap_or_default()
}

/// An error of another service, as this service's answer: internal ones stay opaque.
fn upstream(s: &Status) -> ApiError {
    let e = ApiError::from_status(s);
    if e.code == ErrorCode::Internal {
        ApiError::new(ErrorCode::Unavailable, "accounts-contacts is unavailable")
    } else {
        e
    }
}

/// Appends an event to the outbox of the pipeline schema.
pub async fn emit(
    tx: &TenantTx,
    actor: Option<Uuid>,
    event_type: &str,
    id: Uuid,
    before: Option<Json>,
    after: Option<Json>,
) -> ApiResult<()> {
    let entity_type = event_type.split('.').next().unwrap_or(event_type);
    let e = Event::new(
        SERVICE,
        event_type,
        tx.tenant(),
        actor,
        entity_type,
        id,
        before,
        after,
    );
    crm_bus::outbox::append(tx, store::SCHEMA, &e)
        .await
        .map_err(ApiError::internal)
}

// ---- pipelines -------------------------------------------------------------------------------

impl Pipelines {
    fn check_stages(
        &self,
        v: &mut Violations,
        ot: ObjectType,
        stages: &[pb::Stage],
    ) -> Vec<StageDef> {
        v.check(stages.is_empty(), "stages", "must list at least one stage");
        v.check(
            stages.len() > MAX_STAGES,
            "stages",
            &format!("at most {MAX_STAGES} stages"),
        );
        let allowed = match ot {
            ObjectType::Deal => DEAL_FIELDS,
            ObjectType::Ticket => TICKET_FIELDS,
        };
        let mut out: Vec<StageDef> = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let f = |name: &str| format!("stages[{i}].{name}");
            let key = s.key.trim().to_owned();
            if !self.inner.key_re.is_match(&key) {
                v.add(
                    f("key"),
                    "lowercase letters, digits and underscores, starting with a letter (at most 50)",
                );
            } else if out.iter().any(|o| o.key == key) {
                v.add(f("key"), "is listed twice");
            }
            let name = text(v, &f("name"), &s.name, true, MAX_TEXT).unwrap_or_default();
            v.check(
                !(0..=100).contains(&s.probability),
                &f("probability"),
                "must be between 0 and 100",
            );
            let kind = StageKind::parse(s.kind.trim());
            v.check(kind.is_none(), &f("kind"), "must be open, won or lost");
            for (j, r) in s.required_fields.iter().enumerate() {
                if !allowed.contains(&r.as_str()) {
                    v.add(
                        format!("stages[{i}].required_fields[{j}]"),
                        format!("must be one of {}", allowed.join(", ")),
                    );
                }
            }
            out.push(StageDef {
                key,
                name,
                probability: s.probability,
                kind: kind.unwrap_or(StageKind::Open),
                required_fields: s.required_fields.clone(),
                retired: s.retired,
            });
        }
        if !out.is_empty() && !out.iter().any(|s| s.kind == StageKind::Open && !s.retired) {
            v.add(
                "stages",
                "needs at least one open stage that is not retired",
            );
        }
        out
    }

    fn check_transitions(
        v: &mut Violations,
        stages: &[StageDef],
        t: &HashMap<String, pb::StageKeys>,
    ) -> BTreeMap<String, Vec<String>> {
        let known = |k: &str| stages.iter().any(|s| s.key == k);
        let mut out = BTreeMap::new();
        for (from, to) in t {
            if !known(from) {
                v.add(
                    format!("allowed_transitions.{from}"),
                    "names no stage of the pipeline",
                );
                continue;
            }
            for k in &to.keys {
                v.check(
                    !known(k),
                    &format!("allowed_transitions.{from}"),
                    &format!("{k:?} names no stage of the pipeline"),
                );
            }
            out.insert(from.clone(), to.keys.clone());
        }
        out
    }

    pub async fn list_pipelines(
        &self,
        caller: &Caller,
        object_type: &str,
    ) -> ApiResult<Vec<pb::Pipeline>> {
        let access = self.access(caller).await?;
        access.require("pipeline", "read")?;
        let ot = object_type.trim();
        if !ot.is_empty() && ObjectType::parse(ot).is_none() {
            return Err(ApiError::invalid("object_type", "must be deal or ticket"));
        }
        let tx = self.tx(caller.tenant).await?;
        self.defaults(&tx, caller).await?;
        let rows = store::pipelines(&tx, (!ot.is_empty()).then_some(ot)).await?;
        tx.commit().await?;
        Ok(rows.iter().map(pipeline_pb).collect())
    }

    /// Creates the tenant's default pipelines on first use, with their events.
    async fn defaults(&self, tx: &TenantTx, caller: &Caller) -> ApiResult<()> {
        for p in store::ensure_defaults(tx, Some(caller.subject)).await? {
            self.emit(
                tx,
                Some(caller.subject),
                "pipeline.created",
                p.id,
                None,
                Some(p.to_json()),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn get_pipeline(&self, caller: &Caller, id: &str) -> ApiResult<pb::Pipeline> {
        let access = self.access(caller).await?;
        access
            .require("pipeline", "read")
            .map_err(|_| ApiError::not_found("pipeline"))?;
        let id = path_id("pipeline", id)?;
        let tx = self.tx(caller.tenant).await?;
        let p = store::pipeline(&tx, id).await?;
        tx.commit().await?;
        p.map(|p| pipeline_pb(&p))
            .ok_or_else(|| ApiError::not_found("pipeline"))
    }

    pub async fn create_pipeline(
        &self,
        caller: &Caller,
        r: pb::CreatePipelineRequest,
    ) -> ApiResult<pb::Pipeline> {
        let fp = fingerprint(&pb::CreatePipelineRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let access = self.access(caller).await?;
        access.require("pipeline", "create")?;
        let mut v = Violations::new();
        let name = text(&mut v, "name", &r.name, true, MAX_TEXT).unwrap_or_default();
        let ot = ObjectType::parse(r.object_type.trim());
        v.check(ot.is_none(), "object_type", "must be deal or ticket");
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        let ot = ot.unwrap_or(ObjectType::Deal);
        let stages = self.check_stages(&mut v, ot, &r.stages);
        let transitions = Self::check_transitions(&mut v, &stages, &r.allowed_transitions);
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        if !r.request_id.is_empty()
            && let Some(id) =
                idempotency::find(&tx, store::SCHEMA, "pipeline", &r.request_id, &fp).await?
        {
            let p = store::pipeline(&tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("pipeline"))?;
            tx.commit().await?;
            return Ok(pipeline_pb(&p));
        }
        self.defaults(&tx, caller).await?;
        let id = Uuid::now_v7();
        let p = store::insert_pipeline(&tx, id, ot, &name, &stages, &transitions, caller.subject)
            .await?;
        self.emit(
            &tx,
            Some(caller.subject),
            "pipeline.created",
            id,
            None,
            Some(p.to_json()),
        )
        .await?;
        if !r.request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, "pipeline", &r.request_id, &fp, id).await?;
        }
        tx.commit().await?;
        Ok(pipeline_pb(&p))
    }

    pub async fn update_pipeline(
        &self,
        caller: &Caller,
        r: pb::UpdatePipelineRequest,
    ) -> ApiResult<pb::Pipeline> {
        let access = self.access(caller).await?;
        access
            .require("pipeline", "read")
            .map_err(|_| ApiError::not_found("pipeline"))?;
        let id = path_id("pipeline", &r.id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.check(paths.is_empty(), "update_mask", "names no field to change");
        for p in &paths {
            if !matches!(p.as_str(), "name" | "stages" | "allowed_transitions") {
                v.add(
                    "update_mask",
                    format!("{p:?} cannot change; name, stages and allowed_transitions can"),
                );
            }
        }
        v.finish()?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let tx = self.tx(caller.tenant).await?;
        let current = store::pipeline_for_update(&tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("pipeline"))?;
        access.require("pipeline", "update")?;
        check_version(&r.etag, current.version)?;
        let ot = ObjectType::parse(&current.object_type).unwrap_or(ObjectType::Deal);
        let mut v = Violations::new();
        let name = if has("name") {
            text(&mut v, "name", &r.name, true, MAX_TEXT).unwrap_or_default()
        } else {
            current.name.clone()
        };
        let stages = if has("stages") {
            self.check_stages(&mut v, ot, &r.stages)
        } else {
            current.stage_list()
        };
        let transitions = if has("allowed_transitions") {
            Self::check_transitions(&mut v, &stages, &r.allowed_transitions)
        } else {
            // Transitions naming removed stages go with them.
            current
                .transitions()
                .into_iter()
                .filter(|(k, _)| stages.iter().any(|s| &s.key == k))
                .map(|(k, to)| {
                    let to = to
                        .into_iter()
                        .filter(|t| stages.iter().any(|s| &s.key == t))
                        .collect();
                    (k, to)
                })
                .collect()
        };
        v.finish()?;
        if has("stages") {
            let in_use = store::stages_in_use(&tx, id, ot).await?;
            let gone: Vec<&String> = in_use
                .iter()
                .filter(|k| !stages.iter().any(|s| &&s.key == k))
                .collect();
            if let Some(k) = gone.first() {
                return Err(rule_error(Broken {
                    rule: "stage_in_use",
                    message: format!(
                        "stage {k:?} has records in it: retire it (retired: true) instead of removing it"
                    ),
                })
                .with_fields(vec![FieldViolation {
                    field: "stages".into(),
                    message: format!("stage {k:?} has records in it: retire it instead of removing it"),
                }]));
            }
        }
        let p =
            store::update_pipeline(&tx, id, &name, &stages, &transitions, caller.subject).await?;
        let (before, after) = diff(&current.to_json(), &p.to_json());
        self.emit(
            &tx,
            Some(caller.subject),
            "pipeline.updated",
            id,
            Some(before),
            Some(after),
        )
        .await?;
        tx.commit().await?;
        Ok(pipeline_pb(&p))
    }

    /// The pipeline a record goes into: the named one (of the right object type) or the
    /// tenant's default.
    async fn target_pipeline(
        &self,
        tx: &TenantTx,
        caller: &Caller,
        ot: ObjectType,
        id: Option<Uuid>,
    ) -> ApiResult<PipelineRow> {
        match id {
            Some(id) => store::pipeline(tx, id)
                .await?
                .filter(|p| p.object_type == ot.as_str())
                .ok_or_else(|| {
                    ApiError::invalid("pipeline_id", format!("no such {} pipeline", ot.as_str()))
                }),
            None => {
                self.defaults(tx, caller).await?;
                store::default_pipeline(tx, ot)
                    .await?
                    .ok_or_else(|| ApiError::internal("default pipeline missing"))
            }
        }
    }
}

// ---- opportunities ---------------------------------------------------------------------------

/// Whether an opportunity has a field (REST name), with a move's lost reason applied.
fn opp_has<'a>(r: &'a OppRow, lost_reason: Option<&str>) -> impl Fn(&str) -> bool + 'a {
    let lost = lost_reason.is_some() || r.lost_reason.is_some();
    move |f: &str| match f {
        "amountCents" => r.amount_cents.is_some(),
        "currency" => r.currency.is_some(),
        "closeDate" => r.close_date.is_some(),
        "lostReason" => lost,
        "ownerUserId" => r.owner_user_id.is_some(),
        _ => true,
    }
}

impl Pipelines {
    pub async fn list_opportunities(
        &self,
        caller: &Caller,
        r: pb::ListOpportunitiesRequest,
    ) -> ApiResult<pb::ListOpportunitiesResponse> {
        let mut v = Violations::new();
        let filters = [
            text_filter("stage", "stage", "stage", &r.stage),
            uuid_filter(
                &mut v,
                "owner_user_id",
                "ownerUserId",
                "owner_user_id",
                &r.owner_user_id,
            ),
            uuid_filter(
                &mut v,
                "account_id",
                "accountId",
                "account_id",
                &r.account_id,
            ),
            uuid_filter(
                &mut v,
                "pipeline_id",
                "pipelineId",
                "pipeline_id",
                &r.pipeline_id,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        // Definitions only when the filter or sort names a custom field.
        let named: Vec<String> = [r.filter.as_str(), r.order_by.as_str()]
            .iter()
            .flat_map(|t| custom_names(t))
            .collect();
        let defs = if named.is_empty() {
            Arc::new(Vec::new())
        } else {
            self.inner.definitions.covering(caller, &named).await?
        };
        let (access, rows, next) = self
            .list::<OppRow>(
                caller,
                Kind::Opportunity,
                OPP_SORTS,
                "t.name",
                ListArgs {
                    page_size: r.page_size,
                    page_token: &r.page_token,
                    order_by: &r.order_by,
                    query: &r.query,
                    filters,
                    filter: &r.filter,
                    filter_fields: OPP_FILTERS,
                    custom: Some(&defs),
                    violations: v,
                },
            )
            .await?;
        Ok(pb::ListOpportunitiesResponse {
            opportunities: rows.iter().map(|r| opp_pb(&access, r)).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_opportunity(&self, caller: &Caller, id: &str) -> ApiResult<pb::Opportunity> {
        let (access, r) = self.read::<OppRow>(caller, Kind::Opportunity, id).await?;
        Ok(opp_pb(&access, &r))
    }

    pub async fn create_opportunity(
        &self,
        caller: &Caller,
        r: pb::CreateOpportunityRequest,
    ) -> ApiResult<pb::Opportunity> {
        let fp = fingerprint(&pb::CreateOpportunityRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let access = self.access(caller).await?;
        let reach = access.require("opportunity", "create")?;
        let mut given = vec!["accountId", "name"];
        for (f, set) in [
            ("amountCents", r.amount_cents.is_some()),
            ("currency", !r.currency.trim().is_empty()),
            ("closeDate", !r.close_date.trim().is_empty()),
            ("ownerUserId", !r.owner_user_id.trim().is_empty()),
        ] {
            if set {
                given.push(f);
            }
        }
        let custom_in = struct_to_map(r.custom.clone());
        let custom_fields: Vec<String> = custom_in.keys().map(|k| format!("custom.{k}")).collect();
        access.check_writable(
            "opportunity",
            given
                .into_iter()
                .chain(custom_fields.iter().map(String::as_str)),
        )?;
        let mut v = Violations::new();
        v.check(r.account_id.trim().is_empty(), "account_id", "is required");
        let account = uuid_opt(&mut v, "account_id", &r.account_id);
        let name = text(&mut v, "name", &r.name, true, MAX_TEXT).unwrap_or_default();
        let amount = amount_opt(&mut v, "amount_cents", r.amount_cents);
        let cur = currency_opt(&mut v, "currency", &r.currency);
        v.check(
            amount.is_some() && cur.is_none() && r.currency.trim().is_empty(),
            "currency",
            "is required with amount_cents",
        );
        let close = date_opt(&mut v, "close_date", &r.close_date);
        let pipeline_id = uuid_opt(&mut v, "pipeline_id", &r.pipeline_id);
        let owner = uuid_opt(&mut v, "owner_user_id", &r.owner_user_id);
        v.text("stage", &r.stage);
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        let defs = self
            .inner
            .definitions
            .covering(caller, custom_in.keys())
            .await?;
        let custom = fields::apply(&defs, &Map::new(), &custom_in, &mut v);
        v.finish()?;
        let owner = owner.or((!access.is_client).then_some(caller.subject));
        let account = account.ok_or_else(|| ApiError::invalid("account_id", "is required"))?;
        {
            let tx = self.tx(caller.tenant).await?;
            if !r.request_id.is_empty()
                && let Some(id) =
                    idempotency::find(&tx, store::SCHEMA, "opportunity", &r.request_id, &fp).await?
            {
                let o: OppRow = Self::fetch_live(&tx, Kind::Opportunity, id).await?;
                tx.commit().await?;
                return Ok(opp_pb(&access, &o));
            }
            tx.commit().await?;
        }
        self.check_account(caller, "account_id", account).await?;
        self.check_owner(caller, &reach, "owner_user_id", owner)
            .await?;
        let tx = self.tx(caller.tenant).await?;
        let p = self
            .target_pipeline(&tx, caller, ObjectType::Deal, pipeline_id)
            .await?;
        let def = p.def();
        let stage = match r.stage.trim() {
            "" => def
                .first_open()
                .map(|s| s.key.clone())
                .ok_or_else(|| ApiError::internal("pipeline without an open stage"))?,
            s => s.to_owned(),
        };
        let probe = OppRow {
            id: Uuid::nil(),
            account_id: account,
            account_name: None,
            name: name.clone(),
            amount_cents: amount,
            currency: cur.clone(),
            pipeline_id: p.id,
            stage: String::new(),
            stage_entered_at: Utc::now(),
            close_date: close,
            lost_reason: None,
            won_at: None,
            owner_user_id: owner,
            custom: Json::Object(custom.clone()),
            version: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            created_by: None,
            deleted_at: None,
        };
        let has = opp_has(&probe, None);
        rules::check(
            &def,
            &rules::Move {
                from: "",
                to: &stage,
                manager: Self::is_manager(&access),
                has: &has,
            },
        )
        .map_err(move_error)?;
        let won = def.stage(&stage).is_some_and(|s| s.kind == StageKind::Won);
        let id = Uuid::now_v7();
        let now = Utc::now();
        store::insert(
            &tx,
            Kind::Opportunity,
            id,
            vec![
                Set::new("account_id", account),
                Set::new("name", name),
                Set::new("amount_cents", amount),
                Set::new("currency", cur),
                Set::new("pipeline_id", p.id),
                Set::new("stage", stage.clone()),
                Set::new("stage_entered_at", now),
                Set::new("close_date", close),
                Set::new("won_at", won.then_some(now)),
                Set::new("owner_user_id", owner),
                Set::new("custom", Json::Object(custom)),
            ],
            Some(caller.subject),
        )
        .await?;
        store::record_move(
            &tx,
            Kind::Opportunity,
            id,
            p.id,
            None,
            &stage,
            Some(caller.subject),
            now,
            0,
        )
        .await?;
        let o: OppRow = Self::fetch_live(&tx, Kind::Opportunity, id).await?;
        self.emit(
            &tx,
            Some(caller.subject),
            "opportunity.created",
            id,
            None,
            Some(o.to_json()),
        )
        .await?;
        if !r.request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, "opportunity", &r.request_id, &fp, id)
                .await?;
        }
        tx.commit().await?;
        Ok(opp_pb(&access, &o))
    }

    pub async fn update_opportunity(
        &self,
        caller: &Caller,
        r: pb::UpdateOpportunityRequest,
    ) -> ApiResult<pb::Opportunity> {
        let access = self.access(caller).await?;
        access
            .require("opportunity", "read")
            .map_err(|_| ApiError::not_found("opportunity"))?;
        let id = path_id("opportunity", &r.id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.check(paths.is_empty(), "update_mask", "names no field to change");
        let custom_in = struct_to_map(r.custom.clone());
        let mut custom_changes = Map::new();
        let mut replace_custom = false;
        let mut rest: Vec<String> = Vec::new();
        for p in &paths {
            match p.as_str() {
                "custom" => {
                    replace_custom = true;
                    rest.push("custom".into());
                    rest.extend(custom_in.keys().map(|k| format!("custom.{k}")));
                }
                field if field.starts_with("custom.") => {
                    let key = &field["custom.".len()..];
                    custom_changes.insert(
                        key.to_owned(),
                        custom_in.get(key).cloned().unwrap_or(Json::Null),
                    );
                    rest.push(field.to_owned());
                }
                "stage" => v.add(
                    "stage",
                    "changes only through POST /opportunities/{id}/stage (MoveOpportunityStage)",
                ),
                "pipeline_id" => v.add("pipeline_id", "cannot change"),
                "account_id" => rest.push("accountId".into()),
                "name" => rest.push("name".into()),
                "amount_cents" => rest.push("amountCents".into()),
                "currency" => rest.push("currency".into()),
                "close_date" => rest.push("closeDate".into()),
                "owner_user_id" => rest.push("ownerUserId".into()),
                "lost_reason" => rest.push("lostReason".into()),
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        v.finish()?;
        access.check_writable("opportunity", rest.iter().map(String::as_str))?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut v = Violations::new();
        let mut sets = Vec::new();
        let mut account = None;
        let mut owner = None;
        if has("account_id") {
            v.check(r.account_id.trim().is_empty(), "account_id", "is required");
            account = uuid_opt(&mut v, "account_id", &r.account_id);
            if let Some(a) = account {
                sets.push(Set::new("account_id", a));
            }
        }
        if has("name") {
            sets.push(Set::new(
                "name",
                text(&mut v, "name", &r.name, true, MAX_TEXT),
            ));
        }
        if has("amount_cents") {
            sets.push(Set::new(
                "amount_cents",
                amount_opt(&mut v, "amount_cents", r.amount_cents),
            ));
        }
        if has("currency") {
            sets.push(Set::new(
                "currency",
                currency_opt(&mut v, "currency", &r.currency),
            ));
        }
        if has("close_date") {
            sets.push(Set::new(
                "close_date",
                date_opt(&mut v, "close_date", &r.close_date),
            ));
        }
        if has("lost_reason") {
            sets.push(Set::new(
                "lost_reason",
                text(
                    &mut v,
                    "lost_reason",
                    &r.lost_reason,
                    false,
                    MAX_DESCRIPTION,
                ),
            ));
        }
        if has("owner_user_id") {
            owner = uuid_opt(&mut v, "owner_user_id", &r.owner_user_id);
            sets.push(Set::new("owner_user_id", owner));
        }
        v.finish()?;
        if let Some(a) = account {
            self.check_account(caller, "account_id", a).await?;
        }
        let tx = self.tx(caller.tenant).await?;
        let current: OppRow = self
            .lock(&tx, &access, Kind::Opportunity, id, "update")
            .await?;
        check_version(&r.etag, current.version)?;
        // Every write checks the values against the definitions, as accounts and contacts
        // do: a field made required since must be filled before anything else changes.
        let current_custom = current.custom_map();
        if replace_custom {
            for k in current_custom.keys() {
                // Values the caller may not change stay; the others absent from `custom` go.
                if !custom_in.contains_key(k)
                    && !access.is_locked("opportunity", &format!("custom.{k}"))
                {
                    custom_changes.insert(k.clone(), Json::Null);
                }
            }
            for (k, val) in &custom_in {
                custom_changes.insert(k.clone(), val.clone());
            }
        }
        let defs = self
            .inner
            .definitions
            .covering(caller, current_custom.keys().chain(custom_changes.keys()))
            .await?;
        let mut v = Violations::new();
        let custom = fields::apply(&defs, &current_custom, &custom_changes, &mut v);
        v.finish()?;
        if custom != current_custom {
            sets.push(Set::new("custom", Json::Object(custom)));
        }
        if has("owner_user_id") && owner != current.owner_user_id {
            let reach = access.require("opportunity", "update")?;
            self.check_owner(caller, &reach, "owner_user_id", owner)
                .await?;
        }
        store::update(&tx, Kind::Opportunity, id, sets, caller.subject).await?;
        let after: OppRow = Self::fetch_live(&tx, Kind::Opportunity, id).await?;
        if after.amount_cents.is_some() && after.currency.is_none() {
            return Err(ApiError::invalid(
                "currency",
                "is required with amount_cents",
            ));
        }
        let (b, a) = opp_diff(&current, &after);
        self.emit(
            &tx,
            Some(caller.subject),
            "opportunity.updated",
            id,
            Some(b),
            Some(a),
        )
        .await?;
        if after.owner_user_id != current.owner_user_id {
            self.emit(
                &tx,
                Some(caller.subject),
                "opportunity.owner_changed",
                id,
                Some(json!({"ownerUserId": current.owner_user_id})),
                Some(json!({"ownerUserId": after.owner_user_id, "accountId": after.account_id})),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(opp_pb(&access, &after))
    }

    /// Moves an opportunity (locked, changeable by the caller) to `to`, recording the move
    /// and its events; `None` when it is already there.
    #[allow(clippy::too_many_arguments)]
    async fn move_opportunity(
        &self,
        tx: &TenantTx,
        caller: &Caller,
        access: &Access,
        current: &OppRow,
        p: &PipelineRow,
        to: &str,
        lost_reason: Option<&str>,
    ) -> ApiResult<Option<OppRow>> {
        let def: PipelineDef = p.def();
        let has = opp_has(current, lost_reason);
        let moves = rules::check(
            &def,
            &rules::Move {
                from: &current.stage,
                to,
                manager: Self::is_manager(access),
                has: &has,
            },
        )
        .map_err(move_error)?;
        if !moves {
            return Ok(None);
        }
        let kind = def.stage(to).map(|s| s.kind).unwrap_or(StageKind::Open);
        let now = Utc::now();
        let mut sets = vec![
            Set::new("stage", to.to_owned()),
            Set::new("stage_entered_at", now),
            Set::new("won_at", (kind == StageKind::Won).then_some(now)),
        ];
        if let Some(reason) = lost_reason {
            sets.push(Set::new("lost_reason", reason.to_owned()));
        }
        store::update(tx, Kind::Opportunity, current.id, sets, caller.subject).await?;
        let seconds = (now - current.stage_entered_at).num_seconds().max(0);
        store::record_move(
            tx,
            Kind::Opportunity,
            current.id,
            p.id,
            Some(&current.stage),
            to,
            Some(caller.subject),
            now,
            seconds,
        )
        .await?;
        let after: OppRow = Self::fetch_live(tx, Kind::Opportunity, current.id).await?;
        self.emit(
            tx,
            Some(caller.subject),
            "opportunity.stage_changed",
            current.id,
            Some(json!({"stage": current.stage, "pipelineId": p.id, "version": current.version})),
            Some(json!({
                "stage": to, "pipelineId": p.id, "accountId": after.account_id,
                "secondsInPreviousStage": seconds, "version": after.version,
            })),
        )
        .await?;
        match kind {
            StageKind::Won => {
                self.emit(
                    tx,
                    Some(caller.subject),
                    "opportunity.won",
                    current.id,
                    None,
                    Some(after.to_json()),
                )
                .await?
            }
            StageKind::Lost => {
                self.emit(
                    tx,
                    Some(caller.subject),
                    "opportunity.lost",
                    current.id,
                    None,
                    Some(after.to_json()),
                )
                .await?
            }
            StageKind::Open => {}
        }
        Ok(Some(after))
    }

    pub async fn move_opportunity_stage(
        &self,
        caller: &Caller,
        r: pb::MoveOpportunityStageRequest,
    ) -> ApiResult<pb::Opportunity> {
        let access = self.access(caller).await?;
        let id = path_id("opportunity", &r.id)?;
        let mut v = Violations::new();
        v.check(r.stage.trim().is_empty(), "stage", "is required");
        v.text("stage", &r.stage);
        let lost = text(
            &mut v,
            "lost_reason",
            &r.lost_reason,
            false,
            MAX_DESCRIPTION,
        );
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let current: OppRow = self
            .lock(&tx, &access, Kind::Opportunity, id, "update")
            .await?;
        check_version(&r.etag, current.version)?;
        let p = store::pipeline(&tx, current.pipeline_id)
            .await?
            .ok_or_else(|| ApiError::internal("pipeline of an opportunity missing"))?;
        let moved = self
            .move_opportunity(
                &tx,
                caller,
                &access,
                &current,
                &p,
                r.stage.trim(),
                lost.as_deref(),
            )
            .await?;
        tx.commit().await?;
        Ok(opp_pb(&access, moved.as_ref().unwrap_or(&current)))
    }

    pub async fn bulk_update_opportunities(
        &self,
        caller: &Caller,
        r: pb::BulkUpdateOpportunitiesRequest,
    ) -> ApiResult<Vec<pb::BulkResult>> {
        let mut v = Violations::new();
        let action = r.action.trim();
        v.check(
            !matches!(action, "assign_owner" | "move_stage"),
            "action",
            "must be assign_owner or move_stage",
        );
        v.check(
            r.ids.is_empty() || r.ids.len() > MAX_BULK,
            "ids",
            "must list 1 to 1000 ids",
        );
        let mut ids = Vec::new();
        for (i, s) in r.ids.iter().enumerate() {
            match Uuid::parse_str(s.trim()) {
                Ok(id) if ids.contains(&id) => v.add(format!("ids[{i}]"), "is listed twice"),
                Ok(id) => ids.push(id),
                Err(_) => v.add(format!("ids[{i}]"), "must be an id"),
            }
        }
        let owner = if action == "assign_owner" {
            let o = Uuid::parse_str(r.owner_user_id.trim()).ok();
            v.check(o.is_none(), "owner_user_id", "must be an id");
            o
        } else {
            None
        };
        if action == "move_stage" {
            v.check(r.stage.trim().is_empty(), "stage", "is required");
            v.text("stage", &r.stage);
        }
        let lost = text(
            &mut v,
            "lost_reason",
            &r.lost_reason,
            false,
            MAX_DESCRIPTION,
        );
        v.finish()?;
        let access = self.access(caller).await?;
        let read = access.require("opportunity", "read")?;
        let write = access.require("opportunity", "update")?;
        if owner.is_some() {
            access.check_writable("opportunity", ["ownerUserId"])?;
            self.check_owner(caller, &write, "owner_user_id", owner)
                .await?;
        }
        let tx = self.tx(caller.tenant).await?;
        let found: HashMap<Uuid, OppRow> =
            store::fetch_many::<OppRow>(&tx, Kind::Opportunity, &ids, &read)
                .await?
                .into_iter()
                .map(|r| (r.id, r))
                .collect();
        let mut pipelines: HashMap<Uuid, PipelineRow> = HashMap::new();
        let mut results = Vec::with_capacity(ids.len());
        let mut done = Vec::new();
        for id in &ids {
            let result = |status: &str, message: &str, rule: &str| pb::BulkResult {
                id: id.to_string(),
                status: status.into(),
                message: message.into(),
                rule: rule.into(),
            };
            let Some(current) = found.get(id) else {
                results.push(result("NOT_FOUND", "opportunity not found", ""));
                continue;
            };
            if !write.covers(current.owner_user_id) {
                results.push(result(
                    "PERMISSION_DENIED",
                    "your role may not update this opportunity",
                    "",
                ));
                continue;
            }
            if let Some(owner) = owner {
                if current.owner_user_id != Some(owner) {
                    store::update(
                        &tx,
                        Kind::Opportunity,
                        *id,
                        vec![Set::new("owner_user_id", owner)],
                        caller.subject,
                    )
                    .await?;
                    let after: OppRow = Self::fetch_live(&tx, Kind::Opportunity, *id).await?;
                    let (b, a) = opp_diff(current, &after);
                    self.emit(
                        &tx,
                        Some(caller.subject),
                        "opportunity.updated",
                        *id,
                        Some(b),
                        Some(a),
                    )
                    .await?;
                    self.emit(
                        &tx,
                        Some(caller.subject),
                        "opportunity.owner_changed",
                        *id,
                        Some(json!({"ownerUserId": current.owner_user_id})),
                        Some(json!({"ownerUserId": owner, "accountId": current.account_id})),
                    )
                    .await?;
                }
            } else {
                if !pipelines.contains_key(&current.pipeline_id)
                    && let Some(p) = store::pipeline(&tx, current.pipeline_id).await?
                {
                    pipelines.insert(p.id, p);
                }
                let Some(p) = pipelines.get(&current.pipeline_id) else {
                    return Err(ApiError::internal("pipeline of an opportunity missing"));
                };
                match self
                    .move_opportunity(
                        &tx,
                        caller,
                        &access,
                        current,
                        p,
                        r.stage.trim(),
                        lost.as_deref(),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == ErrorCode::Internal => return Err(e),
                    Err(e) => {
                        let rule = e.metadata.get("rule").cloned().unwrap_or_default();
                        results.push(result(e.code.as_str(), &e.message, &rule));
                        continue;
                    }
                }
            }
            done.push(id.to_string());
            results.push(result("ok", "", ""));
        }
        let kind = if owner.is_some() {
            "opportunity.bulk_assign_owner"
        } else {
            "opportunity.bulk_move_stage"
        };
        let detail = json!({
            "requested": ids.len(),
            "succeeded": done.len(),
            "ids": done,
            "ownerUserId": owner,
            "stage": (action == "move_stage").then(|| r.stage.trim().to_owned()),
        });
        // One security event for the whole call, recorded before the change commits: a
        // bulk change that cannot be recorded does not happen.
        self.inner
            .perms
            .identity()
            .record_security_event(Permissions::request(
                caller,
                idpb::RecordSecurityEventRequest {
                    kind: kind.into(),
                    detail_json: detail.to_string(),
                    client_address: String::new(),
                },
            ))
            .await
            .map_err(|s| ApiError::from_status(&s))?;
        tx.commit().await?;
        Ok(results)
    }

    pub async fn list_stage_history(
        &self,
        caller: &Caller,
        r: pb::ListStageHistoryRequest,
    ) -> ApiResult<pb::ListStageHistoryResponse> {
        let kind = match r.entity_type.trim() {
            "" | "opportunity" => Kind::Opportunity,
            "ticket" => Kind::Ticket,
            _ => {
                return Err(ApiError::invalid(
                    "entity_type",
                    "must be opportunity or ticket",
                ));
            }
        };
        let size = page_size(r.page_size, "page_size")?;
        let owner = match kind {
            Kind::Ticket => self
                .read::<TicketRow>(caller, kind, &r.entity_id)
                .await?
                .1
                .owner(),
            _ => self
                .read::<OppRow>(caller, kind, &r.entity_id)
                .await?
                .1
                .owner(),
        };
        let _ = owner;
        let id = path_id(kind.name(), &r.entity_id)?;
        let fp = format!("history|{}|{id}", kind.name());
        let after = self
            .inner
            .pages
            .decode(&r.page_token, caller.tenant, &fp, "page_token")?
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::history(&tx, kind, id, after, size + 1).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = self
                    .inner
                    .pages
                    .encode(caller.tenant, &fp, &last.id.to_string());
            }
        }
        Ok(pb::ListStageHistoryResponse {
            changes: rows
                .iter()
                .map(|h| pb::StageChange {
                    id: h.id.to_string(),
                    from_stage: h.from_stage.clone().unwrap_or_default(),
                    to_stage: h.to_stage.clone(),
                    actor_id: opt_uuid_str(h.actor_id),
                    move_time: ts(h.moved_at),
                    seconds_in_previous_stage: h.seconds_in_previous,
                })
                .collect(),
            next_page_token: next,
        })
    }
}

// ---- tickets ---------------------------------------------------------------------------------

fn ticket_has(r: &TicketRow) -> impl Fn(&str) -> bool + '_ {
    move |f: &str| match f {
        "description" => r.description.is_some(),
        "contactId" => r.contact_id.is_some(),
        "accountId" => r.account_id.is_some(),
        "assigneeUserId" => r.assignee_user_id.is_some(),
        _ => true,
    }
}

impl Pipelines {
    pub async fn list_tickets(
        &self,
        caller: &Caller,
        r: pb::ListTicketsRequest,
    ) -> ApiResult<pb::ListTicketsResponse> {
        let mut v = Violations::new();
        let priority = r.priority.trim();
        v.check(
            !priority.is_empty() && !PRIORITIES.contains(&priority),
            "priority",
            "must be low, normal, high or urgent",
        );
        let filters = [
            text_filter("stage", "stage", "stage", &r.stage),
            text_filter("priority", "priority", "priority", priority),
            uuid_filter(
                &mut v,
                "assignee_user_id",
                "assigneeUserId",
                "assignee_user_id",
                &r.assignee_user_id,
            ),
            uuid_filter(
                &mut v,
                "account_id",
                "accountId",
                "account_id",
                &r.account_id,
            ),
            uuid_filter(
                &mut v,
                "pipeline_id",
                "pipelineId",
                "pipeline_id",
                &r.pipeline_id,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        let (access, rows, next) = self
            .list::<TicketRow>(
                caller,
                Kind::Ticket,
                TICKET_SORTS,
                "t.subject",
                ListArgs {
                    page_size: r.page_size,
                    page_token: &r.page_token,
                    order_by: &r.order_by,
                    query: &r.query,
                    filters,
                    filter: "",
                    filter_fields: &[],
                    custom: None,
                    violations: v,
                },
            )
            .await?;
        Ok(pb::ListTicketsResponse {
            tickets: rows.iter().map(|r| ticket_pb(&access, r)).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_ticket(&self, caller: &Caller, id: &str) -> ApiResult<pb::Ticket> {
        let (access, r) = self.read::<TicketRow>(caller, Kind::Ticket, id).await?;
        Ok(ticket_pb(&access, &r))
    }

    pub async fn create_ticket(
        &self,
        caller: &Caller,
        r: pb::CreateTicketRequest,
    ) -> ApiResult<pb::Ticket> {
        let fp = fingerprint(&pb::CreateTicketRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let access = self.access(caller).await?;
        let reach = access.require("ticket", "create")?;
        let mut given = vec!["subject", "priority"];
        for (f, raw) in [
            ("description", &r.description),
            ("contactId", &r.contact_id),
            ("accountId", &r.account_id),
            ("assigneeUserId", &r.assignee_user_id),
        ] {
            if !raw.trim().is_empty() {
                given.push(f);
            }
        }
        access.check_writable("ticket", given)?;
        let mut v = Violations::new();
        let subject = text(&mut v, "subject", &r.subject, true, MAX_TEXT).unwrap_or_default();
        let description = text(
            &mut v,
            "description",
            &r.description,
            false,
            MAX_DESCRIPTION,
        );
        let contact = uuid_opt(&mut v, "contact_id", &r.contact_id);
        let account = uuid_opt(&mut v, "account_id", &r.account_id);
        let priority = match r.priority.trim() {
            "" => "normal".to_owned(),
            p if PRIORITIES.contains(&p) => p.to_owned(),
            _ => {
                v.add("priority", "must be low, normal, high or urgent");
                String::new()
            }
        };
        let pipeline_id = uuid_opt(&mut v, "pipeline_id", &r.pipeline_id);
        let assignee = uuid_opt(&mut v, "assignee_user_id", &r.assignee_user_id);
        v.text("stage", &r.stage);
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        v.finish()?;
        let assignee = assignee.or((!access.is_client).then_some(caller.subject));
        {
            let tx = self.tx(caller.tenant).await?;
            if !r.request_id.is_empty()
                && let Some(id) =
                    idempotency::find(&tx, store::SCHEMA, "ticket", &r.request_id, &fp).await?
            {
                let t: TicketRow = Self::fetch_live(&tx, Kind::Ticket, id).await?;
                tx.commit().await?;
                return Ok(ticket_pb(&access, &t));
            }
            tx.commit().await?;
        }
        if let Some(a) = account {
            self.check_account(caller, "account_id", a).await?;
        }
        if let Some(c) = contact {
            self.check_contact(caller, "contact_id", c).await?;
        }
        self.check_owner(caller, &reach, "assignee_user_id", assignee)
            .await?;
        let tx = self.tx(caller.tenant).await?;
        let p = self
            .target_pipeline(&tx, caller, ObjectType::Ticket, pipeline_id)
            .await?;
        let def = p.def();
        let stage = match r.stage.trim() {
            "" => def
                .first_open()
                .map(|s| s.key.clone())
                .ok_or_else(|| ApiError::internal("pipeline without an open stage"))?,
            s => s.to_owned(),
        };
        let has = |f: &str| match f {
            "description" => description.is_some(),
            "contactId" => contact.is_some(),
            "accountId" => account.is_some(),
            "assigneeUserId" => assignee.is_some(),
            _ => true,
        };
        rules::check(
            &def,
            &rules::Move {
                from: "",
                to: &stage,
                manager: Self::is_manager(&access),
                has: &has,
            },
        )
        .map_err(move_error)?;
        let id = Uuid::now_v7();
        let now = Utc::now();
        store::insert(
            &tx,
            Kind::Ticket,
            id,
            vec![
                Set::new("subject", subject),
                Set::new("description", description),
                Set::new("contact_id", contact),
                Set::new("account_id", account),
                Set::new("priority", priority),
                Set::new("pipeline_id", p.id),
                Set::new("stage", stage.clone()),
                Set::new("stage_entered_at", now),
                Set::new("assignee_user_id", assignee),
            ],
            Some(caller.subject),
        )
        .await?;
        store::record_move(
            &tx,
            Kind::Ticket,
            id,
            p.id,
            None,
            &stage,
            Some(caller.subject),
            now,
            0,
        )
        .await?;
        let t: TicketRow = Self::fetch_live(&tx, Kind::Ticket, id).await?;
        self.emit(
            &tx,
            Some(caller.subject),
            "ticket.created",
            id,
            None,
            Some(t.to_json()),
        )
        .await?;
        if !r.request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, "ticket", &r.request_id, &fp, id).await?;
        }
        tx.commit().await?;
        Ok(ticket_pb(&access, &t))
    }

    pub async fn update_ticket(
        &self,
        caller: &Caller,
        r: pb::UpdateTicketRequest,
    ) -> ApiResult<pb::Ticket> {
        let access = self.access(caller).await?;
        access
            .require("ticket", "read")
            .map_err(|_| ApiError::not_found("ticket"))?;
        let id = path_id("ticket", &r.id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.check(paths.is_empty(), "update_mask", "names no field to change");
        let mut rest = Vec::new();
        for p in &paths {
            match p.as_str() {
                "stage" => v.add(
                    "stage",
                    "changes only through POST /tickets/{id}/stage (MoveTicketStage)",
                ),
                "pipeline_id" => v.add("pipeline_id", "cannot change"),
                "subject" => rest.push("subject"),
                "description" => rest.push("description"),
                "contact_id" => rest.push("contactId"),
                "account_id" => rest.push("accountId"),
                "priority" => rest.push("priority"),
                "assignee_user_id" => rest.push("assigneeUserId"),
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        v.finish()?;
        access.check_writable("ticket", rest.iter().copied())?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut v = Violations::new();
        let mut sets = Vec::new();
        let (mut account, mut contact, mut assignee) = (None, None, None);
        if has("subject") {
            sets.push(Set::new(
                "subject",
                text(&mut v, "subject", &r.subject, true, MAX_TEXT),
            ));
        }
        if has("description") {
            sets.push(Set::new(
                "description",
                text(
                    &mut v,
                    "description",
                    &r.description,
                    false,
                    MAX_DESCRIPTION,
                ),
            ));
        }
        if has("contact_id") {
            contact = uuid_opt(&mut v, "contact_id", &r.contact_id);
            sets.push(Set::new("contact_id", contact));
        }
        if has("account_id") {
            account = uuid_opt(&mut v, "account_id", &r.account_id);
            sets.push(Set::new("account_id", account));
        }
        if has("priority") {
            let p = r.priority.trim();
            v.check(
                !PRIORITIES.contains(&p),
                "priority",
                "must be low, normal, high or urgent",
            );
            sets.push(Set::new("priority", p.to_owned()));
        }
        if has("assignee_user_id") {
            assignee = uuid_opt(&mut v, "assignee_user_id", &r.assignee_user_id);
            sets.push(Set::new("assignee_user_id", assignee));
        }
        v.finish()?;
        if let Some(a) = account {
            self.check_account(caller, "account_id", a).await?;
        }
        if let Some(c) = contact {
            self.check_contact(caller, "contact_id", c).await?;
        }
        let tx = self.tx(caller.tenant).await?;
        let current: TicketRow = self.lock(&tx, &access, Kind::Ticket, id, "update").await?;
        check_version(&r.etag, current.version)?;
        if has("assignee_user_id") && assignee != current.assignee_user_id {
            let reach = access.require("ticket", "update")?;
            self.check_owner(caller, &reach, "assignee_user_id", assignee)
                .await?;
        }
        store::update(&tx, Kind::Ticket, id, sets, caller.subject).await?;
        let after: TicketRow = Self::fetch_live(&tx, Kind::Ticket, id).await?;
        let (b, a) = diff(&current.to_json(), &after.to_json());
        self.emit(
            &tx,
            Some(caller.subject),
            "ticket.updated",
            id,
            Some(b),
            Some(a),
        )
        .await?;
        tx.commit().await?;
        Ok(ticket_pb(&access, &after))
    }

    pub async fn move_ticket_stage(
        &self,
        caller: &Caller,
        r: pb::MoveTicketStageRequest,
    ) -> ApiResult<pb::Ticket> {
        let access = self.access(caller).await?;
        let id = path_id("ticket", &r.id)?;
        let mut v = Violations::new();
        v.check(r.stage.trim().is_empty(), "stage", "is required");
        v.text("stage", &r.stage);
        v.finish()?;
        let to = r.stage.trim();
        let tx = self.tx(caller.tenant).await?;
        let current: TicketRow = self.lock(&tx, &access, Kind::Ticket, id, "update").await?;
        check_version(&r.etag, current.version)?;
        let p = store::pipeline(&tx, current.pipeline_id)
            .await?
            .ok_or_else(|| ApiError::internal("pipeline of a ticket missing"))?;
        let has = ticket_has(&current);
        let moves = rules::check(
            &p.def(),
            &rules::Move {
                from: &current.stage,
                to,
                manager: Self::is_manager(&access),
                has: &has,
            },
        )
        .map_err(move_error)?;
        if !moves {
            tx.commit().await?;
            return Ok(ticket_pb(&access, &current));
        }
        let now = Utc::now();
        store::update(
            &tx,
            Kind::Ticket,
            id,
            vec![
                Set::new("stage", to.to_owned()),
                Set::new("stage_entered_at", now),
            ],
            caller.subject,
        )
        .await?;
        let seconds = (now - current.stage_entered_at).num_seconds().max(0);
        store::record_move(
            &tx,
            Kind::Ticket,
            id,
            p.id,
            Some(&current.stage),
            to,
            Some(caller.subject),
            now,
            seconds,
        )
        .await?;
        let after: TicketRow = Self::fetch_live(&tx, Kind::Ticket, id).await?;
        self.emit(
            &tx,
            Some(caller.subject),
            "ticket.stage_changed",
            id,
            Some(json!({"stage": current.stage, "pipelineId": p.id, "version": current.version})),
            Some(json!({
                "stage": to, "pipelineId": p.id, "accountId": after.account_id,
                "secondsInPreviousStage": seconds, "version": after.version,
            })),
        )
        .await?;
        tx.commit().await?;
        Ok(ticket_pb(&access, &after))
    }
}

// ---- leads -----------------------------------------------------------------------------------

impl Pipelines {
    fn email(&self, v: &mut Violations, field: &str, raw: &str) -> Option<String> {
        v.text(field, raw);
        let e = raw.trim().to_lowercase();
        if e.is_empty() {
            return None;
        }
        v.check(
            e.len() > 254 || !self.inner.email_re.is_match(&e),
            field,
            "must be a valid e-mail address",
        );
        Some(e)
    }

    pub async fn list_leads(
        &self,
        caller: &Caller,
        r: pb::ListLeadsRequest,
    ) -> ApiResult<pb::ListLeadsResponse> {
        let mut v = Violations::new();
        let status = r.status.trim();
        v.check(
            !status.is_empty() && !STATUSES.contains(&status),
            "status",
            "must be new, working, qualified, disqualified or converted",
        );
        let filters = [
            text_filter("status", "status", "status", status),
            text_filter("source", "source", "source", &r.source),
            uuid_filter(
                &mut v,
                "owner_user_id",
                "ownerUserId",
                "owner_user_id",
                &r.owner_user_id,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        let (access, rows, next) = self
            .list::<LeadRow>(
                caller,
                Kind::Lead,
                LEAD_SORTS,
                "t.search",
                ListArgs {
                    page_size: r.page_size,
                    page_token: &r.page_token,
                    order_by: &r.order_by,
                    query: &r.query,
                    filters,
                    filter: "",
                    filter_fields: &[],
                    custom: None,
                    violations: v,
                },
            )
            .await?;
        Ok(pb::ListLeadsResponse {
            leads: rows.iter().map(|r| lead_pb(&access, r)).collect(),
            next_page_token: next,
        })
    }

    pub async fn get_lead(&self, caller: &Caller, id: &str) -> ApiResult<pb::Lead> {
        let (access, r) = self.read::<LeadRow>(caller, Kind::Lead, id).await?;
        Ok(lead_pb(&access, &r))
    }

    pub async fn create_lead(
        &self,
        caller: &Caller,
        r: pb::CreateLeadRequest,
    ) -> ApiResult<pb::Lead> {
        let fp = fingerprint(&pb::CreateLeadRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let access = self.access(caller).await?;
        let reach = access.require("lead", "create")?;
        let mut given = vec!["lastName", "status"];
        for (f, raw) in [
            ("firstName", &r.first_name),
            ("email", &r.email),
            ("company", &r.company),
            ("source", &r.source),
            ("ownerUserId", &r.owner_user_id),
        ] {
            if !raw.trim().is_empty() {
                given.push(f);
            }
        }
        access.check_writable("lead", given)?;
        let mut v = Violations::new();
        let first = text(&mut v, "first_name", &r.first_name, false, MAX_TEXT).unwrap_or_default();
        let last = text(&mut v, "last_name", &r.last_name, true, MAX_TEXT).unwrap_or_default();
        let email = self.email(&mut v, "email", &r.email);
        let company = text(&mut v, "company", &r.company, false, MAX_TEXT);
        let source = text(&mut v, "source", &r.source, false, 100);
        let status = match r.status.trim() {
            "" => "new".to_owned(),
            "converted" => {
                v.add(
                    "status",
                    "becomes converted only through POST /leads/{id}/convert",
                );
                String::new()
            }
            s if STATUSES.contains(&s) => s.to_owned(),
            _ => {
                v.add("status", "must be new, working, qualified or disqualified");
                String::new()
            }
        };
        let owner = uuid_opt(&mut v, "owner_user_id", &r.owner_user_id);
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        v.finish()?;
        let owner = owner.or((!access.is_client).then_some(caller.subject));
        {
            let tx = self.tx(caller.tenant).await?;
            if !r.request_id.is_empty()
                && let Some(id) =
                    idempotency::find(&tx, store::SCHEMA, "lead", &r.request_id, &fp).await?
            {
                let l: LeadRow = Self::fetch_live(&tx, Kind::Lead, id).await?;
                tx.commit().await?;
                return Ok(lead_pb(&access, &l));
            }
            tx.commit().await?;
        }
        self.check_owner(caller, &reach, "owner_user_id", owner)
            .await?;
        let tx = self.tx(caller.tenant).await?;
        let id = Uuid::now_v7();
        store::insert(
            &tx,
            Kind::Lead,
            id,
            vec![
                Set::new("first_name", first),
                Set::new("last_name", last),
                Set::new("email", email),
                Set::new("company", company),
                Set::new("source", source),
                Set::new("status", status),
                Set::new("owner_user_id", owner),
            ],
            Some(caller.subject),
        )
        .await?;
        let l: LeadRow = Self::fetch_live(&tx, Kind::Lead, id).await?;
        self.emit(
            &tx,
            Some(caller.subject),
            "lead.created",
            id,
            None,
            Some(l.to_json()),
        )
        .await?;
        if !r.request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, "lead", &r.request_id, &fp, id).await?;
        }
        tx.commit().await?;
        Ok(lead_pb(&access, &l))
    }

    pub async fn update_lead(
        &self,
        caller: &Caller,
        r: pb::UpdateLeadRequest,
    ) -> ApiResult<pb::Lead> {
        let access = self.access(caller).await?;
        access
            .require("lead", "read")
            .map_err(|_| ApiError::not_found("lead"))?;
        let id = path_id("lead", &r.id)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.check(paths.is_empty(), "update_mask", "names no field to change");
        let mut rest = Vec::new();
        for p in &paths {
            match p.as_str() {
                "first_name" => rest.push("firstName"),
                "last_name" => rest.push("lastName"),
                "email" => rest.push("email"),
                "company" => rest.push("company"),
                "source" => rest.push("source"),
                "status" => rest.push("status"),
                "owner_user_id" => rest.push("ownerUserId"),
                other => v.add("update_mask", format!("unknown field {other:?}")),
            }
        }
        v.finish()?;
        access.check_writable("lead", rest.iter().copied())?;
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut v = Violations::new();
        let mut sets = Vec::new();
        let mut owner = None;
        if has("first_name") {
            sets.push(Set::new(
                "first_name",
                text(&mut v, "first_name", &r.first_name, false, MAX_TEXT).unwrap_or_default(),
            ));
        }
        if has("last_name") {
            sets.push(Set::new(
                "last_name",
                text(&mut v, "last_name", &r.last_name, true, MAX_TEXT),
            ));
        }
        if has("email") {
            sets.push(Set::new("email", self.email(&mut v, "email", &r.email)));
        }
        if has("company") {
            sets.push(Set::new(
                "company",
                text(&mut v, "company", &r.company, false, MAX_TEXT),
            ));
        }
        if has("source") {
            sets.push(Set::new(
                "source",
                text(&mut v, "source", &r.source, false, 100),
            ));
        }
        let status = r.status.trim();
        if has("status") {
            if status == "converted" {
                v.add(
                    "status",
                    "becomes converted only through POST /leads/{id}/convert",
                );
            } else {
                v.check(
                    !STATUSES.contains(&status),
                    "status",
                    "must be new, working, qualified or disqualified",
                );
            }
            sets.push(Set::new("status", status.to_owned()));
        }
        if has("owner_user_id") {
            owner = uuid_opt(&mut v, "owner_user_id", &r.owner_user_id);
            sets.push(Set::new("owner_user_id", owner));
        }
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let current: LeadRow = self.lock(&tx, &access, Kind::Lead, id, "update").await?;
        check_version(&r.etag, current.version)?;
        if has("status") && current.status == "converted" && status != "converted" {
            return Err(ApiError::conflict("a converted lead keeps its status"));
        }
        if has("owner_user_id") && owner != current.owner_user_id {
            let reach = access.require("lead", "update")?;
            self.check_owner(caller, &reach, "owner_user_id", owner)
                .await?;
        }
        store::update(&tx, Kind::Lead, id, sets, caller.subject).await?;
        let after: LeadRow = Self::fetch_live(&tx, Kind::Lead, id).await?;
        let (b, a) = diff(&current.to_json(), &after.to_json());
        self.emit(
            &tx,
            Some(caller.subject),
            "lead.updated",
            id,
            Some(b),
            Some(a),
        )
        .await?;
        tx.commit().await?;
        Ok(lead_pb(&access, &after))
    }

    /// Converts a lead. The account and contact are made in accounts-contacts with request
    /// ids derived from the lead, so a retry after a failure part-way reuses what the first
    /// attempt made; the opportunity and the lead's new state commit together.
    pub async fn convert_lead(
        &self,
        caller: &Caller,
        r: pb::ConvertLeadRequest,
    ) -> ApiResult<pb::ConvertLeadResponse> {
        let access = self.access(caller).await?;
        let id = path_id("lead", &r.id)?;
        let mut v = Violations::new();
        let account_given = uuid_opt(&mut v, "account_id", &r.account_id);
        let contact_given = uuid_opt(&mut v, "contact_id", &r.contact_id);
        let opp_name = text(
            &mut v,
            "opportunity_name",
            &r.opportunity_name,
            false,
            MAX_TEXT,
        );
        v.finish()?;
        let lead: LeadRow = {
            let tx = self.tx(caller.tenant).await?;
            let l = self.lock(&tx, &access, Kind::Lead, id, "update").await?;
            tx.commit().await?;
            l
        };
        if lead.status == "converted" {
            return Err(ApiError::conflict("the lead is already converted"));
        }
        if r.create_opportunity {
            access.require("opportunity", "create")?;
            // The new opportunity has no custom values: refused before anything is made when
            // the tenant requires some.
            let defs = self.inner.definitions.covering(caller, []).await?;
            let mut v = Violations::new();
            fields::apply(&defs, &Map::new(), &Map::new(), &mut v);
            v.finish()?;
        }
        let mut accounts = self.inner.accounts.clone();
        let account_name = lead
            .company
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| {
                format!("{} {}", lead.first_name, lead.last_name)
                    .trim()
                    .to_owned()
            });
        let account_id = match account_given {
            Some(a) => {
                self.check_account(caller, "account_id", a).await?;
                a
            }
            None => {
                let a = accounts
                    .create_account(Permissions::request(
                        caller,
                        apb::CreateAccountRequest {
                            name: account_name.clone(),
                            request_id: format!("lead-convert:{id}:account"),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(|s| upstream(&s))?
                    .into_inner()
                    .account
                    .ok_or_else(|| {
                        ApiError::internal("accounts-contacts answered without an account")
                    })?;
                let aid = path_id("account", &a.id)?;
                let tx = self.tx(caller.tenant).await?;
                store::observe_account(&tx, aid, Some(&a.name), a.version, false).await?;
                tx.commit().await?;
                aid
            }
        };
        let contact_id = match contact_given {
            Some(c) => {
                self.check_contact(caller, "contact_id", c).await?;
                c
            }
            None => {
                let first = if lead.first_name.is_empty() {
                    "Unknown".to_owned()
                } else {
                    lead.first_name.clone()
                };
                let c = accounts
                    .create_contact(Permissions::request(
                        caller,
                        apb::CreateContactRequest {
                            first_name: first,
                            last_name: lead.last_name.clone(),
                            email: lead.email.clone().unwrap_or_default(),
                            account_id: account_id.to_string(),
                            request_id: format!("lead-convert:{id}:contact"),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map_err(|s| upstream(&s))?
                    .into_inner()
                    .contact
                    .ok_or_else(|| {
                        ApiError::internal("accounts-contacts answered without a contact")
                    })?;
                path_id("contact", &c.id)?
            }
        };
        let tx = self.tx(caller.tenant).await?;
        let current: LeadRow = self.lock(&tx, &access, Kind::Lead, id, "update").await?;
        if current.status == "converted" {
            return Err(ApiError::conflict("the lead is already converted"));
        }
        let mut opportunity = None;
        if r.create_opportunity {
            let p = self
                .target_pipeline(&tx, caller, ObjectType::Deal, None)
                .await?;
            let stage = p
                .def()
                .first_open()
                .map(|s| s.key.clone())
                .ok_or_else(|| ApiError::internal("pipeline without an open stage"))?;
            let oid = Uuid::now_v7();
            let now = Utc::now();
            let owner = (!access.is_client).then_some(caller.subject);
            store::insert(
                &tx,
                Kind::Opportunity,
                oid,
                vec![
                    Set::new("account_id", account_id),
                    Set::new(
                        "name",
                        opp_name.unwrap_or_else(|| format!("{account_name} deal")),
                    ),
                    Set::new("pipeline_id", p.id),
                    Set::new("stage", stage.clone()),
                    Set::new("stage_entered_at", now),
                    Set::new("owner_user_id", owner),
                ],
                Some(caller.subject),
            )
            .await?;
            store::record_move(
                &tx,
                Kind::Opportunity,
                oid,
                p.id,
                None,
                &stage,
                Some(caller.subject),
                now,
                0,
            )
            .await?;
            let o: OppRow = Self::fetch_live(&tx, Kind::Opportunity, oid).await?;
            self.emit(
                &tx,
                Some(caller.subject),
                "opportunity.created",
                oid,
                None,
                Some(o.to_json()),
            )
            .await?;
            opportunity = Some(oid);
        }
        store::update(
            &tx,
            Kind::Lead,
            id,
            vec![
                Set::new("status", "converted"),
                Set::new("converted_account_id", account_id),
                Set::new("converted_contact_id", contact_id),
                Set::new("converted_opportunity_id", opportunity),
                Set::new("converted_at", Utc::now()),
            ],
            caller.subject,
        )
        .await?;
        let after: LeadRow = Self::fetch_live(&tx, Kind::Lead, id).await?;
        let (b, a) = diff(&current.to_json(), &after.to_json());
        self.emit(
            &tx,
            Some(caller.subject),
            "lead.converted",
            id,
            Some(b),
            Some(a),
        )
        .await?;
        tx.commit().await?;
        Ok(pb::ConvertLeadResponse {
            account_id: account_id.to_string(),
            contact_id: contact_id.to_string(),
            opportunity_id: opt_uuid_str(opportunity),
        })
    }
}

// ---- report ----------------------------------------------------------------------------------

/// Sums in one currency: count, amount, and amount × probability (in hundredths of a cent).
#[derive(Default, Clone, Copy)]
struct Sums {
    count: i64,
    amount: i64,
    weighted_x100: i128,
}

impl Sums {
    fn add(&mut self, n: i64, amount: i64, probability: i32) {
        self.count += n;
        self.amount += amount;
        self.weighted_x100 += i128::from(amount) * i128::from(probability);
    }

    fn pb(self, currency: &str) -> pb::CurrencyAmount {
        pb::CurrencyAmount {
            currency: currency.to_owned(),
            amount_cents: self.amount,
            // Half up, to whole cents.
            weighted_amount_cents: ((self.weighted_x100 + 50) / 100) as i64,
            count: self.count,
        }
    }
}

fn amounts(m: &BTreeMap<String, Sums>, hidden: bool) -> Vec<pb::CurrencyAmount> {
    if hidden {
        return vec![];
    }
    m.iter()
        .filter(|(c, _)| !c.is_empty())
        .map(|(c, s)| s.pb(c))
        .collect()
}

impl Pipelines {
    pub async fn pipeline_report(
        &self,
        caller: &Caller,
        r: pb::GetPipelineReportRequest,
    ) -> ApiResult<pb::PipelineReport> {
        let access = self.access(caller).await?;
        access.require("report", "read")?;
        let reach = access.require("opportunity", "read")?;
        let mut v = Violations::new();
        v.check(r.from.trim().is_empty(), "from", "is required");
        v.check(r.to.trim().is_empty(), "to", "is required");
        let from = date_opt(&mut v, "from", &r.from);
        let to = date_opt(&mut v, "to", &r.to);
        if let (Some(f), Some(t)) = (from, to) {
            v.check(t < f, "to", "must not be before from");
        }
        let owner = uuid_opt(&mut v, "owner_user_id", &r.owner_user_id);
        let pipeline_id = uuid_opt(&mut v, "pipeline_id", &r.pipeline_id);
        v.finish()?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(ApiError::invalid("from", "is required"));
        };
        let hidden = access.is_hidden("opportunity", "amountCents");
        let tx = self.tx(caller.tenant).await?;
        let p = self
            .target_pipeline(&tx, caller, ObjectType::Deal, pipeline_id)
            .await?;
        let groups = store::report(&tx, p.id, from, to, owner, &reach).await?;
        tx.commit().await?;
        Ok(build_report(&p, from, to, &groups, hidden))
    }
}

/// The report from the grouped rows of [`store::report`].
pub fn build_report(
    p: &PipelineRow,
    from: NaiveDate,
    to: NaiveDate,
    groups: &[store::ReportGroup],
    hidden: bool,
) -> pb::PipelineReport {
    let def = p.def();
    let mut per_stage: HashMap<&str, (i64, BTreeMap<String, Sums>)> = HashMap::new();
    let mut months: BTreeMap<&str, (i64, BTreeMap<String, Sums>)> = BTreeMap::new();
    let (mut won, mut lost, mut won_days) = (0i64, 0i64, 0i64);
    for g in groups {
        let Some(stage) = def.stage(&g.stage) else {
            continue;
        };
        let e = per_stage.entry(stage.key.as_str()).or_default();
        e.0 += g.n;
        e.1.entry(g.currency.clone())
            .or_default()
            .add(g.n, g.amount, stage.probability);
        match stage.kind {
            StageKind::Won => {
                won += g.n;
                won_days += g.days;
            }
            StageKind::Lost => lost += g.n,
            StageKind::Open => {
                let m = months.entry(g.month.as_str()).or_default();
                m.0 += g.n;
                m.1.entry(g.currency.clone())
                    .or_default()
                    .add(g.n, g.amount, stage.probability);
            }
        }
    }
    pb::PipelineReport {
        pipeline_id: p.id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        stages: def
            .stages
            .iter()
            .map(|s| {
                let (count, sums) = per_stage.get(s.key.as_str()).cloned().unwrap_or_default();
                pb::StageReport {
                    key: s.key.clone(),
                    name: s.name.clone(),
                    probability: s.probability,
                    kind: s.kind.as_str().into(),
                    count,
                    amounts: amounts(&sums, hidden),
                }
            })
            .collect(),
        won_count: won,
        lost_count: lost,
        win_rate: (won + lost > 0).then(|| won as f64 / (won + lost) as f64),
        average_days_to_close: (won > 0).then(|| won_days as f64 / won as f64),
        forecast: months
            .iter()
            .map(|(m, (count, sums))| pb::MonthForecast {
                month: (*m).to_owned(),
                count: *count,
                amounts: amounts(sums, hidden),
            })
            .collect(),
        amounts_hidden: hidden,
    }
}

// ---- gRPC ------------------------------------------------------------------------------------

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    crm_kit::auth::caller(req)
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl PipelineService for Pipelines {
    async fn list_pipelines(
        &self,
        req: Request<pb::ListPipelinesRequest>,
    ) -> R<pb::ListPipelinesResponse> {
        let c = caller(&req)?;
        let pipelines = Pipelines::list_pipelines(self, &c, &req.get_ref().object_type).await?;
        Ok(Response::new(pb::ListPipelinesResponse { pipelines }))
    }

    async fn get_pipeline(
        &self,
        req: Request<pb::GetPipelineRequest>,
    ) -> R<pb::GetPipelineResponse> {
        let c = caller(&req)?;
        let p = Pipelines::get_pipeline(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetPipelineResponse { pipeline: Some(p) }))
    }

    async fn create_pipeline(
        &self,
        req: Request<pb::CreatePipelineRequest>,
    ) -> R<pb::CreatePipelineResponse> {
        let c = caller(&req)?;
        let p = Pipelines::create_pipeline(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreatePipelineResponse {
            pipeline: Some(p),
        }))
    }

    async fn update_pipeline(
        &self,
        req: Request<pb::UpdatePipelineRequest>,
    ) -> R<pb::UpdatePipelineResponse> {
        let c = caller(&req)?;
        let p = Pipelines::update_pipeline(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdatePipelineResponse {
            pipeline: Some(p),
        }))
    }

    async fn list_opportunities(
        &self,
        req: Request<pb::ListOpportunitiesRequest>,
    ) -> R<pb::ListOpportunitiesResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Pipelines::list_opportunities(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_opportunity(
        &self,
        req: Request<pb::GetOpportunityRequest>,
    ) -> R<pb::GetOpportunityResponse> {
        let c = caller(&req)?;
        let o = Pipelines::get_opportunity(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetOpportunityResponse {
            opportunity: Some(o),
        }))
    }

    async fn create_opportunity(
        &self,
        req: Request<pb::CreateOpportunityRequest>,
    ) -> R<pb::CreateOpportunityResponse> {
        let c = caller(&req)?;
        let o = Pipelines::create_opportunity(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateOpportunityResponse {
            opportunity: Some(o),
        }))
    }

    async fn update_opportunity(
        &self,
        req: Request<pb::UpdateOpportunityRequest>,
    ) -> R<pb::UpdateOpportunityResponse> {
        let c = caller(&req)?;
        let o = Pipelines::update_opportunity(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateOpportunityResponse {
            opportunity: Some(o),
        }))
    }

    async fn delete_opportunity(
        &self,
        req: Request<pb::DeleteOpportunityRequest>,
    ) -> R<pb::DeleteOpportunityResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        self.delete::<OppRow>(&c, Kind::Opportunity, &r.id, &r.etag)
            .await?;
        Ok(Response::new(pb::DeleteOpportunityResponse {}))
    }

    async fn restore_opportunity(
        &self,
        req: Request<pb::RestoreOpportunityRequest>,
    ) -> R<pb::RestoreOpportunityResponse> {
        let c = caller(&req)?;
        let (access, r) = self
            .restore::<OppRow>(&c, Kind::Opportunity, &req.get_ref().id)
            .await?;
        Ok(Response::new(pb::RestoreOpportunityResponse {
            opportunity: Some(opp_pb(&access, &r)),
        }))
    }

    async fn move_opportunity_stage(
        &self,
        req: Request<pb::MoveOpportunityStageRequest>,
    ) -> R<pb::MoveOpportunityStageResponse> {
        let c = caller(&req)?;
        let o = Pipelines::move_opportunity_stage(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::MoveOpportunityStageResponse {
            opportunity: Some(o),
        }))
    }

    async fn bulk_update_opportunities(
        &self,
        req: Request<pb::BulkUpdateOpportunitiesRequest>,
    ) -> R<pb::BulkUpdateOpportunitiesResponse> {
        let c = caller(&req)?;
        let results = Pipelines::bulk_update_opportunities(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::BulkUpdateOpportunitiesResponse {
            results,
        }))
    }

    async fn list_stage_history(
        &self,
        req: Request<pb::ListStageHistoryRequest>,
    ) -> R<pb::ListStageHistoryResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Pipelines::list_stage_history(self, &c, req.into_inner()).await?,
        ))
    }

    async fn list_tickets(
        &self,
        req: Request<pb::ListTicketsRequest>,
    ) -> R<pb::ListTicketsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Pipelines::list_tickets(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_ticket(&self, req: Request<pb::GetTicketRequest>) -> R<pb::GetTicketResponse> {
        let c = caller(&req)?;
        let t = Pipelines::get_ticket(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetTicketResponse { ticket: Some(t) }))
    }

    async fn create_ticket(
        &self,
        req: Request<pb::CreateTicketRequest>,
    ) -> R<pb::CreateTicketResponse> {
        let c = caller(&req)?;
        let t = Pipelines::create_ticket(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateTicketResponse { ticket: Some(t) }))
    }

    async fn update_ticket(
        &self,
        req: Request<pb::UpdateTicketRequest>,
    ) -> R<pb::UpdateTicketResponse> {
        let c = caller(&req)?;
        let t = Pipelines::update_ticket(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateTicketResponse { ticket: Some(t) }))
    }

    async fn delete_ticket(
        &self,
        req: Request<pb::DeleteTicketRequest>,
    ) -> R<pb::DeleteTicketResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        self.delete::<TicketRow>(&c, Kind::Ticket, &r.id, &r.etag)
            .await?;
        Ok(Response::new(pb::DeleteTicketResponse {}))
    }

    async fn restore_ticket(
        &self,
        req: Request<pb::RestoreTicketRequest>,
    ) -> R<pb::RestoreTicketResponse> {
        let c = caller(&req)?;
        let (access, r) = self
            .restore::<TicketRow>(&c, Kind::Ticket, &req.get_ref().id)
            .await?;
        Ok(Response::new(pb::RestoreTicketResponse {
            ticket: Some(ticket_pb(&access, &r)),
        }))
    }

    async fn move_ticket_stage(
        &self,
        req: Request<pb::MoveTicketStageRequest>,
    ) -> R<pb::MoveTicketStageResponse> {
        let c = caller(&req)?;
        let t = Pipelines::move_ticket_stage(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::MoveTicketStageResponse {
            ticket: Some(t),
        }))
    }

    async fn list_leads(&self, req: Request<pb::ListLeadsRequest>) -> R<pb::ListLeadsResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Pipelines::list_leads(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_lead(&self, req: Request<pb::GetLeadRequest>) -> R<pb::GetLeadResponse> {
        let c = caller(&req)?;
        let l = Pipelines::get_lead(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetLeadResponse { lead: Some(l) }))
    }

    async fn create_lead(&self, req: Request<pb::CreateLeadRequest>) -> R<pb::CreateLeadResponse> {
        let c = caller(&req)?;
        let l = Pipelines::create_lead(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateLeadResponse { lead: Some(l) }))
    }

    async fn update_lead(&self, req: Request<pb::UpdateLeadRequest>) -> R<pb::UpdateLeadResponse> {
        let c = caller(&req)?;
        let l = Pipelines::update_lead(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateLeadResponse { lead: Some(l) }))
    }

    async fn delete_lead(&self, req: Request<pb::DeleteLeadRequest>) -> R<pb::DeleteLeadResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        self.delete::<LeadRow>(&c, Kind::Lead, &r.id, &r.etag)
            .await?;
        Ok(Response::new(pb::DeleteLeadResponse {}))
    }

    async fn restore_lead(
        &self,
        req: Request<pb::RestoreLeadRequest>,
    ) -> R<pb::RestoreLeadResponse> {
        let c = caller(&req)?;
        let (access, r) = self
            .restore::<LeadRow>(&c, Kind::Lead, &req.get_ref().id)
            .await?;
        Ok(Response::new(pb::RestoreLeadResponse {
            lead: Some(lead_pb(&access, &r)),
        }))
    }

    async fn convert_lead(
        &self,
        req: Request<pb::ConvertLeadRequest>,
    ) -> R<pb::ConvertLeadResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Pipelines::convert_lead(self, &c, req.into_inner()).await?,
        ))
    }

    async fn get_pipeline_report(
        &self,
        req: Request<pb::GetPipelineReportRequest>,
    ) -> R<pb::GetPipelineReportResponse> {
        let c = caller(&req)?;
        let report = Pipelines::pipeline_report(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::GetPipelineReportResponse {
            report: Some(report),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_names_are_found_in_filters_and_sorts() {
        assert_eq!(
            custom_names(r#"custom.region = "emea" AND (custom.seats>3 OR name:"custom.x")"#),
            ["region", "seats", "x"]
        );
        assert_eq!(custom_names("custom.seats desc"), ["seats"]);
        assert!(custom_names("create_time desc").is_empty());
        assert!(custom_names("custom. = 1 AND custom.Bad = 2").is_empty());
    }
}
