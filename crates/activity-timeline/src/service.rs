//! The activity and timeline service, served over gRPC as crm.timeline.v1: activities with
//! permissions, validation, optimistic concurrency, soft delete, keyset lists and outbox
//! events; timeline and audit log reads; the streamed audit log export.

use std::{pin::Pin, sync::Arc};

use chrono::{DateTime, Datelike, Utc};
use crm_bus::Event;
use crm_kit::{
    ApiError, ApiResult, Caller, Db, ErrorCode, TenantId, TenantTx,
    access::{Access, Permissions, Reach},
    error::{FieldViolation, Violations},
    idempotency,
    paging::{PageTokens, page_size},
    rpc::{etag, fingerprint, map_to_struct, parse_etag, path_id, ts},
};
use crm_proto::{
    identity as idpb,
    timeline::{self as pb, timeline_service_server::TimelineService},
};
use serde_json::{Map, Value as Json, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    csv,
    store::{self, ActivityFilter, ActivityRow, ActivityValues, AuditFilter, AuditRow, EntryRow},
    subjects::{Subjects, subject_type},
};

/// The event source name.
const SERVICE: &str = "activity-timeline";
/// Kinds of activity.
pub const ACTIVITY_TYPES: &[&str] = &["call", "email", "meeting", "note", "task"];
/// Longest activity body.
const MAX_BODY: usize = 20_000;
/// Longest entity type or id filter of the audit log.
const MAX_FILTER: usize = 200;
/// Rows per database round trip of an export.
const EXPORT_BATCH: u64 = 1_000;

/// The service's state.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    perms: Permissions,
    pages: PageTokens,
    subjects: Subjects,
}

/// A page position: the last row's time and id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Position {
    t: DateTime<Utc>,
    id: Uuid,
}

/// A task list position: the last task's due time (none: it had none) and id.
#[derive(serde::Serialize, serde::Deserialize)]
struct TaskPosition {
    t: Option<DateTime<Utc>>,
    id: Uuid,
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

/// A protobuf time as a time PostgreSQL stores, or a violation naming `field`.
fn time_of(t: &prost_types::Timestamp, field: &str, v: &mut Violations) -> Option<DateTime<Utc>> {
    let parsed = u32::try_from(t.nanos)
        .ok()
        .and_then(|n| DateTime::<Utc>::from_timestamp(t.seconds, n))
        .filter(|d| (1900..=9999).contains(&d.year()));
    if parsed.is_none() {
        v.add(field, "must be a time between the years 1900 and 9999");
    }
    parsed
}

fn opt_time(
    t: Option<&prost_types::Timestamp>,
    field: &str,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    t.and_then(|t| time_of(t, field, v))
}

fn opt_uuid(s: &str, field: &str, v: &mut Violations) -> Option<Uuid> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let id = Uuid::parse_str(s).ok();
    v.check(id.is_none(), field, "must be an id");
    id
}

fn body_of(raw: &str, v: &mut Violations) -> Option<String> {
    v.text("body", raw);
    v.check(
        raw.chars().count() > MAX_BODY,
        "body",
        "must be at most 20000 characters",
    );
    let s = raw.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A record state as the caller may see it: fields the role hides are left out.
fn visible(access: &Access, entity: &str, v: Option<&Json>) -> Option<prost_types::Struct> {
    let Some(Json::Object(m)) = v else {
        return None;
    };
    let mut m = m.clone();
    m.retain(|k, _| !access.is_hidden(entity, k));
    if let Some(Json::Object(c)) = m.get_mut("custom") {
        c.retain(|k, _| !access.is_hidden(entity, &format!("custom.{k}")));
    }
    Some(map_to_struct(&m))
}

fn opt_string(id: Option<Uuid>) -> String {
    id.map(|u| u.to_string()).unwrap_or_default()
}

fn activity_pb(r: &ActivityRow) -> pb::Activity {
    pb::Activity {
        id: r.id.to_string(),
        subject_type: r.subject_type.clone(),
        subject_id: r.subject_id.to_string(),
        activity_type: r.activity_type.clone(),
        body: r.body.clone().unwrap_or_default(),
        occur_time: ts(r.occurred_at),
        due_time: r.due_at.and_then(ts),
        complete_time: r.completed_at.and_then(ts),
        assignee_user_id: opt_string(r.assignee_user_id),
        owner_user_id: opt_string(r.owner_user_id),
        version: r.version,
        etag: etag(r.version),
        created_by: opt_string(r.created_by),
        create_time: ts(r.created_at),
        update_time: ts(r.updated_at),
    }
}

fn entry_pb(access: &Access, e: EntryRow) -> pb::TimelineEntry {
    pb::TimelineEntry {
        id: e.id.to_string(),
        record_type: e.record_type,
        record_id: e.record_id.to_string(),
        before: visible(access, &e.entity_type, e.before.as_ref()),
        after: visible(access, &e.entity_type, e.after.as_ref()),
        entity_type: e.entity_type,
        entity_id: e.entity_id.to_string(),
        action: e.action,
        event_type: e.event_type,
        actor_id: opt_string(e.actor_id),
        occur_time: ts(e.occurred_at),
    }
}

fn audit_pb(a: AuditRow) -> pb::AuditRecord {
    let obj = |v: Option<Json>| match v {
        Some(Json::Object(m)) => Some(map_to_struct(&m)),
        _ => None,
    };
    pb::AuditRecord {
        id: a.id.to_string(),
        actor_id: opt_string(a.actor_id),
        entity_type: a.entity_type,
        entity_id: a.entity_id,
        action: a.action,
        before: obj(a.before),
        after: obj(a.after),
        occur_time: ts(a.occurred_at),
    }
}

/// The before and after of the fields an update changed, with the fields every activity
/// event carries (subject, owner, version).
fn diff(before: &ActivityRow, after: &ActivityRow) -> (Json, Json) {
    let (Json::Object(b), Json::Object(a)) = (before.to_json(), after.to_json()) else {
        return (Json::Null, Json::Null);
    };
    let always = ["subjectType", "subjectId", "ownerUserId", "version"];
    let mut ob = Map::new();
    let mut oa = Map::new();
    for (k, va) in &a {
        let vb = b.get(k).cloned().unwrap_or(Json::Null);
        if always.contains(&k.as_str()) || vb != *va {
            ob.insert(k.clone(), vb);
            oa.insert(k.clone(), va.clone());
        }
    }
    (Json::Object(ob), Json::Object(oa))
}

/// The audit filters of a list or export, validated.
fn audit_filter(
    entity_type: &str,
    entity_id: &str,
    actor_id: &str,
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
) -> ApiResult<AuditFilter> {
    fn text(field: &str, s: &str, v: &mut Violations) -> Option<String> {
        let s = s.trim();
        v.text(field, s);
        v.check(
            s.chars().count() > MAX_FILTER,
            field,
            "must be at most 200 characters",
        );
        (!s.is_empty()).then(|| s.to_owned())
    }
    let mut v = Violations::new();
    let f = AuditFilter {
        entity_type: text("entity_type", entity_type, &mut v),
        entity_id: text("entity_id", entity_id, &mut v),
        actor_id: opt_uuid(actor_id, "actor_id", &mut v),
        from: opt_time(from, "start_time", &mut v),
        to: opt_time(to, "end_time", &mut v),
    };
    v.finish()?;
    Ok(f)
}

impl Timeline {
    /// The service over its dependencies.
    pub fn new(db: Db, perms: Permissions, pages: PageTokens, subjects: Subjects) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                perms,
                pages,
                subjects,
            }),
        }
    }

    async fn tx(&self, tenant: TenantId) -> ApiResult<TenantTx> {
        Ok(self.inner.db.tenant_tx(tenant).await?)
    }

    async fn access(&self, caller: &Caller) -> ApiResult<Arc<Access>> {
        self.inner.perms.of(caller).await
    }

    fn decode(&self, token: &str, tenant: TenantId, fp: &str) -> ApiResult<Option<Position>> {
        self.inner
            .pages
            .decode(token, tenant, fp, "page_token")?
            .map(|s| serde_json::from_str::<Position>(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))
    }

    fn encode(&self, tenant: TenantId, fp: &str, t: DateTime<Utc>, id: Uuid) -> ApiResult<String> {
        let pos = serde_json::to_string(&Position { t, id }).map_err(ApiError::internal)?;
        Ok(self.inner.pages.encode(tenant, fp, &pos))
    }

    /// Appends an activity event to the outbox.
    async fn emit(
        &self,
        tx: &TenantTx,
        caller: &Caller,
        event_type: &str,
        id: Uuid,
        before: Option<Json>,
        after: Option<Json>,
    ) -> ApiResult<()> {
        let e = Event::new(
            SERVICE,
            event_type,
            caller.tenant,
            Some(caller.subject),
            "activity",
            id,
            before,
            after,
        );
        crm_bus::outbox::append(tx, store::SCHEMA, &e)
            .await
            .map_err(ApiError::internal)
    }

    /// Refuses an assignee the caller may not assign, or who is not a user of the tenant.
    async fn check_assignee(
        &self,
        caller: &Caller,
        reach: &Reach,
        owner: Option<Uuid>,
        assignee: Option<Uuid>,
    ) -> ApiResult<()> {
        if !reach.covers(owner) {
            return Err(ApiError::permission_denied(
                "assignee_user_id: your role may not assign activities to this user",
            )
            .with_fields(vec![FieldViolation {
                field: "assignee_user_id".into(),
                message: "your role may not assign activities to this user".into(),
            }]));
        }
        let Some(assignee) = assignee else {
            return Ok(());
        };
        if assignee == caller.subject {
            return Ok(());
        }
        let res = self
            .inner
            .perms
            .identity()
            .get_user(Permissions::request(
                caller,
                idpb::GetUserRequest {
                    id: assignee.to_string(),
                },
            ))
            .await;
        match res {
            Ok(u) if u.get_ref().user.as_ref().is_some_and(|u| !u.disabled) => Ok(()),
            Ok(_) => Err(ApiError::invalid("assignee_user_id", "is a disabled user")),
            Err(s) if s.code() == tonic::Code::NotFound => {
                Err(ApiError::invalid("assignee_user_id", "no such user"))
            }
            Err(s) => Err(ApiError::from_status(&s)),
        }
    }

    // ---- activities ----------------------------------------------------------------------

    pub async fn create_activity(
        &self,
        caller: &Caller,
        r: pb::CreateActivityRequest,
    ) -> ApiResult<pb::Activity> {
        let access = self.access(caller).await?;
        let reach = access.require("activity", "create")?;
        let fp = fingerprint(&pb::CreateActivityRequest {
            request_id: String::new(),
            ..r.clone()
        });
        let mut v = Violations::new();
        v.check(
            r.request_id.len() > 255,
            "request_id",
            "must be at most 255 characters",
        );
        let kind = subject_type(r.subject_type.trim());
        v.check(
            kind.is_none(),
            "subject_type",
            "must be one of account, contact, opportunity, lead, ticket",
        );
        let subject_id = Uuid::parse_str(r.subject_id.trim()).ok();
        v.check(subject_id.is_none(), "subject_id", "must be an id");
        let activity_type = ACTIVITY_TYPES
            .iter()
            .find(|t| **t == r.activity_type.trim())
            .copied();
        v.check(
            activity_type.is_none(),
            "activity_type",
            "must be one of call, email, meeting, note, task",
        );
        let is_task = activity_type == Some("task");
        let body = body_of(&r.body, &mut v);
        let occurred_at = opt_time(r.occur_time.as_ref(), "occur_time", &mut v);
        let due_at = opt_time(r.due_time.as_ref(), "due_time", &mut v);
        let completed_at = opt_time(r.complete_time.as_ref(), "complete_time", &mut v);
        if !is_task && activity_type.is_some() {
            v.check(
                r.due_time.is_some(),
                "due_time",
                "only tasks have a due time",
            );
            v.check(
                r.complete_time.is_some(),
                "complete_time",
                "only tasks are completed",
            );
        }
        let assignee = match opt_uuid(&r.assignee_user_id, "assignee_user_id", &mut v) {
            Some(a) => Some(a),
            None if is_task && !access.is_client => Some(caller.subject),
            None => None,
        };
        v.finish()?;
        let (Some(kind), Some(subject_id), Some(activity_type)) = (kind, subject_id, activity_type)
        else {
            return Err(ApiError::internal("validated input is missing"));
        };
        let owner = if is_task {
            assignee
        } else {
            Some(caller.subject)
        };
        let values = ActivityValues {
            subject_type: kind.to_owned(),
            subject_id,
            activity_type: activity_type.to_owned(),
            body,
            occurred_at: occurred_at.unwrap_or_else(Utc::now),
            due_at,
            completed_at,
            assignee_user_id: assignee,
            owner_user_id: owner,
        };
        if !r.request_id.is_empty() {
            let tx = self.tx(caller.tenant).await?;
            let found =
                idempotency::find(&tx, store::SCHEMA, "activity", &r.request_id, &fp).await?;
            if let Some(id) = found {
                let row = store::fetch_activity(&tx, id, false, false)
                    .await?
                    .ok_or_else(|| ApiError::not_found("activity"))?;
                tx.commit().await?;
                return Ok(activity_pb(&row));
            }
            tx.commit().await?;
        }
        self.check_assignee(caller, &reach, owner, assignee).await?;
        if !self
            .inner
            .subjects
            .readable(caller, kind, subject_id)
            .await?
        {
            return Err(ApiError::invalid(
                "subject_id",
                format!("no such {kind}, or one you may not read"),
            ));
        }
        let tx = self.tx(caller.tenant).await?;
        let id = Uuid::now_v7();
        let row = store::insert_activity(&tx, id, &values, caller.subject).await?;
        self.emit(
            &tx,
            caller,
            "activity.logged",
            id,
            None,
            Some(row.to_json()),
        )
        .await?;
        if !r.request_id.is_empty() {
            idempotency::remember(&tx, store::SCHEMA, "activity", &r.request_id, &fp, id).await?;
        }
        tx.commit().await?;
        Ok(activity_pb(&row))
    }

    /// A live activity the caller may read, or "not found".
    async fn read_activity(&self, caller: &Caller, id: &str) -> ApiResult<ActivityRow> {
        let access = self.access(caller).await?;
        let reach = access
            .require("activity", "read")
            .map_err(|_| ApiError::not_found("activity"))?;
        let id = path_id("activity", id)?;
        let tx = self.tx(caller.tenant).await?;
        let r = store::fetch_activity(&tx, id, false, false).await?;
        tx.commit().await?;
        match r {
            Some(r) if reach.covers(r.owner_user_id) => Ok(r),
            _ => Err(ApiError::not_found("activity")),
        }
    }

    pub async fn get_activity(&self, caller: &Caller, id: &str) -> ApiResult<pb::Activity> {
        Ok(activity_pb(&self.read_activity(caller, id).await?))
    }

    pub async fn list_activities(
        &self,
        caller: &Caller,
        r: pb::ListActivitiesRequest,
    ) -> ApiResult<pb::ListActivitiesResponse> {
        let access = self.access(caller).await?;
        let reach = access.require("activity", "read")?;
        let size = page_size(r.page_size, "page_size")?;
        let mut v = Violations::new();
        let subject_type = match r.subject_type.trim() {
            "" => None,
            s => {
                let k = subject_type(s);
                v.check(
                    k.is_none(),
                    "subject_type",
                    "must be one of account, contact, opportunity, lead, ticket",
                );
                k.map(str::to_owned)
            }
        };
        let activity_type = match r.activity_type.trim() {
            "" => None,
            s => {
                let k = ACTIVITY_TYPES.iter().find(|t| **t == s);
                v.check(
                    k.is_none(),
                    "activity_type",
                    "must be one of call, email, meeting, note, task",
                );
                k.map(|s| (*s).to_owned())
            }
        };
        let assignee = if r.assignee_user_id.trim() == "me" {
            Some(caller.subject)
        } else {
            opt_uuid(&r.assignee_user_id, "assignee_user_id", &mut v)
        };
        let f = ActivityFilter {
            subject_type,
            subject_id: opt_uuid(&r.subject_id, "subject_id", &mut v),
            activity_type,
            assignee_user_id: assignee,
        };
        v.finish()?;
        let fp = format!(
            "activities|{:?}|{:?}|{:?}|{:?}",
            f.subject_type, f.subject_id, f.activity_type, f.assignee_user_id
        );
        let after = self.decode(&r.page_token, caller.tenant, &fp)?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows =
            store::list_activities(&tx, &f, &reach, after.map(|p| (p.t, p.id)), size + 1).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = self.encode(caller.tenant, &fp, last.occurred_at, last.id)?;
            }
        }
        Ok(pb::ListActivitiesResponse {
            activities: rows.iter().map(activity_pb).collect(),
            next_page_token: next,
        })
    }

    pub async fn update_activity(
        &self,
        caller: &Caller,
        r: pb::UpdateActivityRequest,
    ) -> ApiResult<pb::Activity> {
        let access = self.access(caller).await?;
        let read = access
            .require("activity", "read")
            .map_err(|_| ApiError::not_found("activity"))?;
        let id = path_id("activity", &r.id)?;
        let paths = r.update_mask.clone().map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask", "names no field to change"));
        }
        let mut v = Violations::new();
        for p in &paths {
            if !matches!(
                p.as_str(),
                "body" | "occur_time" | "due_time" | "complete_time" | "assignee_user_id"
            ) {
                v.add("update_mask", format!("unknown field {p:?}"));
            }
        }
        v.finish()?;
        let tx = self.tx(caller.tenant).await?;
        let Some(current) = store::fetch_activity(&tx, id, false, true).await? else {
            return Err(ApiError::not_found("activity"));
        };
        if !read.covers(current.owner_user_id) {
            return Err(ApiError::not_found("activity"));
        }
        let update = access.require("activity", "update")?;
        if !update.covers(current.owner_user_id) {
            return Err(ApiError::permission_denied(
                "your role may not change this activity",
            ));
        }
        check_version(&r.etag, current.version)?;
        let is_task = current.activity_type == "task";
        let mut next = ActivityValues::from(&current);
        let mut v = Violations::new();
        for p in &paths {
            match p.as_str() {
                "body" => next.body = body_of(&r.body, &mut v),
                "occur_time" => match r.occur_time.as_ref() {
                    None => v.add("occur_time", "is required"),
                    Some(t) => {
                        if let Some(t) = time_of(t, "occur_time", &mut v) {
                            next.occurred_at = t;
                        }
                    }
                },
                "due_time" => {
                    if !is_task && r.due_time.is_some() {
                        v.add("due_time", "only tasks have a due time");
                    }
                    next.due_at = opt_time(r.due_time.as_ref(), "due_time", &mut v);
                }
                "complete_time" => {
                    if !is_task && r.complete_time.is_some() {
                        v.add("complete_time", "only tasks are completed");
                    }
                    next.completed_at = opt_time(r.complete_time.as_ref(), "complete_time", &mut v);
                }
                _ => {
                    next.assignee_user_id =
                        opt_uuid(&r.assignee_user_id, "assignee_user_id", &mut v);
                }
            }
        }
        if is_task {
            next.owner_user_id = next.assignee_user_id;
        }
        v.finish()?;
        if next.assignee_user_id != current.assignee_user_id {
            self.check_assignee(caller, &update, next.owner_user_id, next.assignee_user_id)
                .await?;
        }
        if next == ActivityValues::from(&current) {
            tx.commit().await?;
            return Ok(activity_pb(&current));
        }
        let row = store::update_activity(&tx, id, &next, caller.subject).await?;
        let (before, after) = diff(&current, &row);
        self.emit(
            &tx,
            caller,
            "activity.updated",
            id,
            Some(before),
            Some(after),
        )
        .await?;
        if is_task && current.completed_at.is_none() && row.completed_at.is_some() {
            self.emit(&tx, caller, "task.completed", id, None, Some(row.to_json()))
                .await?;
        }
        tx.commit().await?;
        Ok(activity_pb(&row))
    }

    pub async fn complete_activity(
        &self,
        caller: &Caller,
        r: pb::CompleteActivityRequest,
    ) -> ApiResult<pb::Activity> {
        let access = self.access(caller).await?;
        let read = access
            .require("activity", "read")
            .map_err(|_| ApiError::not_found("activity"))?;
        let id = path_id("activity", &r.id)?;
        let tx = self.tx(caller.tenant).await?;
        let Some(current) = store::fetch_activity(&tx, id, false, true).await? else {
            return Err(ApiError::not_found("activity"));
        };
        if !read.covers(current.owner_user_id) {
            return Err(ApiError::not_found("activity"));
        }
        if !access
            .require("activity", "update")?
            .covers(current.owner_user_id)
        {
            return Err(ApiError::permission_denied(
                "your role may not change this activity",
            ));
        }
        check_version(&r.etag, current.version)?;
        if current.activity_type != "task" {
            return Err(ApiError::new(
                ErrorCode::RuleViolation,
                "only tasks are completed",
            ));
        }
        if current.completed_at.is_some() {
            tx.commit().await?;
            return Ok(activity_pb(&current));
        }
        let mut next = ActivityValues::from(&current);
        next.completed_at = Some(Utc::now());
        let row = store::update_activity(&tx, id, &next, caller.subject).await?;
        let (before, after) = diff(&current, &row);
        self.emit(
            &tx,
            caller,
            "activity.updated",
            id,
            Some(before),
            Some(after),
        )
        .await?;
        self.emit(&tx, caller, "task.completed", id, None, Some(row.to_json()))
            .await?;
        tx.commit().await?;
        Ok(activity_pb(&row))
    }

    pub async fn delete_activity(&self, caller: &Caller, id: &str, etag_in: &str) -> ApiResult<()> {
        let access = self.access(caller).await?;
        let read = access
            .require("activity", "read")
            .map_err(|_| ApiError::not_found("activity"))?;
        let id = path_id("activity", id)?;
        let tx = self.tx(caller.tenant).await?;
        let Some(current) = store::fetch_activity(&tx, id, false, true).await? else {
            return Err(ApiError::not_found("activity"));
        };
        if !read.covers(current.owner_user_id) {
            return Err(ApiError::not_found("activity"));
        }
        if !access
            .require("activity", "delete")?
            .covers(current.owner_user_id)
        {
            return Err(ApiError::permission_denied(
                "your role may not delete this activity",
            ));
        }
        check_version(etag_in, current.version)?;
        store::set_activity_deleted(&tx, id, true, caller.subject).await?;
        self.emit(
            &tx,
            caller,
            "activity.deleted",
            id,
            Some(current.to_json()),
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn restore_activity(&self, caller: &Caller, id: &str) -> ApiResult<pb::Activity> {
        let access = self.access(caller).await?;
        let reach = access
            .require("activity", "delete")
            .map_err(|_| ApiError::not_found("activity"))?;
        let id = path_id("activity", id)?;
        let tx = self.tx(caller.tenant).await?;
        let row = match store::fetch_activity(&tx, id, true, true).await? {
            Some(d) if reach.covers(d.owner_user_id) => {
                store::set_activity_deleted(&tx, id, false, caller.subject).await?;
                let r = store::fetch_activity(&tx, id, false, false)
                    .await?
                    .ok_or_else(|| ApiError::not_found("activity"))?;
                self.emit(
                    &tx,
                    caller,
                    "activity.restored",
                    id,
                    None,
                    Some(r.to_json()),
                )
                .await?;
                r
            }
            // Restoring a live activity changes nothing.
            None => match store::fetch_activity(&tx, id, false, false).await? {
                Some(r) if reach.covers(r.owner_user_id) => r,
                _ => return Err(ApiError::not_found("activity")),
            },
            Some(_) => return Err(ApiError::not_found("activity")),
        };
        tx.commit().await?;
        Ok(activity_pb(&row))
    }

    pub async fn list_tasks(
        &self,
        caller: &Caller,
        r: pb::ListTasksRequest,
    ) -> ApiResult<pb::ListTasksResponse> {
        let access = self.access(caller).await?;
        let reach = access.require("activity", "read")?;
        let size = page_size(r.page_size, "page_size")?;
        let mut v = Violations::new();
        let assignee = match r.assignee_user_id.trim() {
            "" | "me" => Some(caller.subject),
            s => opt_uuid(s, "assignee_user_id", &mut v),
        };
        let overdue = match r.state.trim() {
            "" | "open" => false,
            "overdue" => true,
            _ => {
                v.add("state", "must be open or overdue");
                false
            }
        };
        v.finish()?;
        let Some(assignee) = assignee else {
            return Err(ApiError::internal("validated input is missing"));
        };
        let fp = format!("tasks|{assignee}|{overdue}");
        let after = self
            .inner
            .pages
            .decode(&r.page_token, caller.tenant, &fp, "page_token")?
            .map(|s| serde_json::from_str::<TaskPosition>(&s))
            .transpose()
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "page_token: malformed cursor"))?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::open_tasks(
            &tx,
            assignee,
            overdue.then(Utc::now),
            &reach,
            after.map(|p| (p.t, p.id)),
            size + 1,
        )
        .await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                let pos = serde_json::to_string(&TaskPosition {
                    t: last.due_at,
                    id: last.id,
                })
                .map_err(ApiError::internal)?;
                next = self.inner.pages.encode(caller.tenant, &fp, &pos);
            }
        }
        Ok(pb::ListTasksResponse {
            tasks: rows.iter().map(activity_pb).collect(),
            next_page_token: next,
        })
    }

    // ---- timelines and audit ---------------------------------------------------------------

    pub async fn list_timeline(
        &self,
        caller: &Caller,
        r: pb::ListTimelineRequest,
    ) -> ApiResult<pb::ListTimelineResponse> {
        let Some(kind) = subject_type(r.record_type.trim()) else {
            return Err(ApiError::invalid(
                "record_type",
                "must be one of account, contact, opportunity, lead, ticket",
            ));
        };
        let size = page_size(r.page_size, "page_size")?;
        let id = path_id(kind, &r.record_id)?;
        let access = self.access(caller).await?;
        if !self.inner.subjects.readable(caller, kind, id).await? {
            return Err(ApiError::not_found(kind));
        }
        let fp = format!("timeline|{kind}|{id}");
        let after = self.decode(&r.page_token, caller.tenant, &fp)?;
        let activities = access.require("activity", "read").ok();
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::timeline(
            &tx,
            kind,
            id,
            activities.as_ref(),
            after.map(|p| (p.t, p.id)),
            size + 1,
        )
        .await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = self.encode(caller.tenant, &fp, last.occurred_at, last.id)?;
            }
        }
        Ok(pb::ListTimelineResponse {
            entries: rows.into_iter().map(|e| entry_pb(&access, e)).collect(),
            next_page_token: next,
        })
    }

    pub async fn list_audit_log(
        &self,
        caller: &Caller,
        r: pb::ListAuditLogRequest,
    ) -> ApiResult<pb::ListAuditLogResponse> {
        let access = self.access(caller).await?;
        access.require("audit_log", "read")?;
        let size = page_size(r.page_size, "page_size")?;
        let f = audit_filter(
            &r.entity_type,
            &r.entity_id,
            &r.actor_id,
            r.start_time.as_ref(),
            r.end_time.as_ref(),
        )?;
        let fp = f.fingerprint();
        let after = self.decode(&r.page_token, caller.tenant, &fp)?;
        let tx = self.tx(caller.tenant).await?;
        let mut rows = store::audit_page(&tx, &f, after.map(|p| (p.t, p.id)), size + 1).await?;
        tx.commit().await?;
        let mut next = String::new();
        if rows.len() as u64 > size {
            rows.truncate(size as usize);
            if let Some(last) = rows.last() {
                next = self.encode(caller.tenant, &fp, last.occurred_at, last.id)?;
            }
        }
        Ok(pb::ListAuditLogResponse {
            records: rows.into_iter().map(audit_pb).collect(),
            next_page_token: next,
        })
    }

    /// Checks the caller, records the export as a security event, then streams the CSV:
    /// one batch of rows per database round trip, so memory stays flat however long the log.
    pub async fn export_audit_log(
        &self,
        caller: &Caller,
        r: pb::ExportAuditLogRequest,
    ) -> ApiResult<ReceiverStream<Result<pb::ExportAuditLogResponse, Status>>> {
        let access = self.access(caller).await?;
        access.require("audit_log", "export")?;
        let f = audit_filter(
            &r.entity_type,
            &r.entity_id,
            &r.actor_id,
            r.start_time.as_ref(),
            r.end_time.as_ref(),
        )?;
        let detail = json!({
            "entityType": f.entity_type, "entityId": f.entity_id, "actorId": f.actor_id,
            "from": f.from, "to": f.to,
        });
        self.inner
            .perms
            .identity()
            .record_security_event(Permissions::request(
                caller,
                idpb::RecordSecurityEventRequest {
                    kind: "audit_log.exported".into(),
                    detail_json: detail.to_string(),
                    client_address: String::new(),
                },
            ))
            .await
            .map_err(|s| ApiError::from_status(&s))?;
        let (send, recv) = mpsc::channel(4);
        let db = self.inner.db.clone();
        let tenant = caller.tenant;
        tokio::spawn(async move {
            let chunk = |s: String| -> Result<pb::ExportAuditLogResponse, Status> {
                Ok(pb::ExportAuditLogResponse {
                    chunk: s.into_bytes(),
                })
            };
            let header = csv::row([
                "id",
                "occurredAt",
                "actorId",
                "entityType",
                "entityId",
                "action",
                "before",
                "after",
            ]);
            if send.send(chunk(header)).await.is_err() {
                return;
            }
            let mut after = None;
            loop {
                let page = async {
                    let tx = db.tenant_tx(tenant).await?;
                    let rows = store::audit_page(&tx, &f, after, EXPORT_BATCH).await?;
                    tx.commit().await?;
                    Ok::<_, sea_orm::DbErr>(rows)
                }
                .await;
                let rows = match page {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::error!(error = %e, "audit log export failed");
                        let _ = send.send(Err(Status::internal("internal error"))).await;
                        return;
                    }
                };
                let mut out = String::new();
                for a in &rows {
                    let json =
                        |v: &Option<Json>| v.as_ref().map(Json::to_string).unwrap_or_default();
                    out.push_str(&csv::row([
                        a.id.to_string().as_str(),
                        a.occurred_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                            .as_str(),
                        opt_string(a.actor_id).as_str(),
                        a.entity_type.as_str(),
                        a.entity_id.as_str(),
                        a.action.as_str(),
                        json(&a.before).as_str(),
                        json(&a.after).as_str(),
                    ]));
                }
                let done = (rows.len() as u64) < EXPORT_BATCH;
                after = rows.last().map(|a| (a.occurred_at, a.id));
                if !out.is_empty() && send.send(chunk(out)).await.is_err() {
                    return;
                }
                if done {
                    return;
                }
            }
        });
        Ok(ReceiverStream::new(recv))
    }
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    crm_kit::auth::caller(req)
}

type R<T> = Result<Response<T>, Status>;

/// The streamed export.
pub type ExportStream = Pin<
    Box<dyn futures::Stream<Item = Result<pb::ExportAuditLogResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl TimelineService for Timeline {
    async fn create_activity(
        &self,
        req: Request<pb::CreateActivityRequest>,
    ) -> R<pb::CreateActivityResponse> {
        let c = caller(&req)?;
        let activity = Timeline::create_activity(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CreateActivityResponse {
            activity: Some(activity),
        }))
    }

    async fn get_activity(
        &self,
        req: Request<pb::GetActivityRequest>,
    ) -> R<pb::GetActivityResponse> {
        let c = caller(&req)?;
        let activity = Timeline::get_activity(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::GetActivityResponse {
            activity: Some(activity),
        }))
    }

    async fn list_activities(
        &self,
        req: Request<pb::ListActivitiesRequest>,
    ) -> R<pb::ListActivitiesResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Timeline::list_activities(self, &c, req.into_inner()).await?,
        ))
    }

    async fn update_activity(
        &self,
        req: Request<pb::UpdateActivityRequest>,
    ) -> R<pb::UpdateActivityResponse> {
        let c = caller(&req)?;
        let activity = Timeline::update_activity(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::UpdateActivityResponse {
            activity: Some(activity),
        }))
    }

    async fn delete_activity(
        &self,
        req: Request<pb::DeleteActivityRequest>,
    ) -> R<pb::DeleteActivityResponse> {
        let c = caller(&req)?;
        let r = req.get_ref();
        Timeline::delete_activity(self, &c, &r.id, &r.etag).await?;
        Ok(Response::new(pb::DeleteActivityResponse {}))
    }

    async fn restore_activity(
        &self,
        req: Request<pb::RestoreActivityRequest>,
    ) -> R<pb::RestoreActivityResponse> {
        let c = caller(&req)?;
        let activity = Timeline::restore_activity(self, &c, &req.get_ref().id).await?;
        Ok(Response::new(pb::RestoreActivityResponse {
            activity: Some(activity),
        }))
    }

    async fn complete_activity(
        &self,
        req: Request<pb::CompleteActivityRequest>,
    ) -> R<pb::CompleteActivityResponse> {
        let c = caller(&req)?;
        let activity = Timeline::complete_activity(self, &c, req.into_inner()).await?;
        Ok(Response::new(pb::CompleteActivityResponse {
            activity: Some(activity),
        }))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> R<pb::ListTasksResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Timeline::list_tasks(self, &c, req.into_inner()).await?,
        ))
    }

    async fn list_timeline(
        &self,
        req: Request<pb::ListTimelineRequest>,
    ) -> R<pb::ListTimelineResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Timeline::list_timeline(self, &c, req.into_inner()).await?,
        ))
    }

    async fn list_audit_log(
        &self,
        req: Request<pb::ListAuditLogRequest>,
    ) -> R<pb::ListAuditLogResponse> {
        let c = caller(&req)?;
        Ok(Response::new(
            Timeline::list_audit_log(self, &c, req.into_inner()).await?,
        ))
    }

    type ExportAuditLogStream = ExportStream;

    async fn export_audit_log(
        &self,
        req: Request<pb::ExportAuditLogRequest>,
    ) -> R<Self::ExportAuditLogStream> {
        let c = caller(&req)?;
        let stream = Timeline::export_audit_log(self, &c, req.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_out_of_range_name_their_field() {
        let mut v = Violations::new();
        assert!(
            time_of(
                &prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0
                },
                "due_time",
                &mut v
            )
            .is_some()
        );
        assert!(
            time_of(
                &prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                },
                "due_time",
                &mut v
            )
            .is_none()
        );
        let e = v.finish().unwrap_err();
        assert_eq!(e.fields[0].field, "due_time");
    }
}
