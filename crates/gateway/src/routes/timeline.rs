//! The activities, timeline and audit section of the partner API: activities and tasks,
//! the timeline of every record, the audit log and its CSV export, over
//! `crm.timeline.v1.TimelineService`.

use axum::{
    Json as AJson,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use crm_kit::ApiError;
use crm_proto::timeline as pb;
use futures::TryStreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{created, if_match, missing, none_if_empty, update_mask, with_etag};
use crate::{
    app::AppState,
    backends::Ctx,
    dto::{ListParams, StdErrors, next_cursor, present, struct_to_map, time},
    error::{GwError, GwResult, Json, Query},
};

// ---- shapes ----------------------------------------------------------------------------

/// The record types activities are about and that have a timeline.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SubjectType {
    Account,
    Contact,
    Opportunity,
    Lead,
    Ticket,
}

/// Kinds of activity.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ActivityType {
    Call,
    Email,
    Meeting,
    Note,
    Task,
}

/// Which tasks: open (not completed) or overdue (open, due before now).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum TaskState {
    Open,
    Overdue,
}

/// A call, e-mail, meeting, note or task about a record.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub id: String,
    #[schema(value_type = SubjectType)]
    pub subject_type: String,
    pub subject_id: String,
    #[schema(value_type = ActivityType)]
    pub activity_type: String,
    /// Null when none.
    #[schema(required = true)]
    pub body: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub occurred_at: Option<String>,
    /// Tasks only; null when none.
    #[schema(required = true, format = DateTime)]
    pub due_at: Option<String>,
    /// Tasks only; null while open.
    #[schema(required = true, format = DateTime)]
    pub completed_at: Option<String>,
    /// Null when none.
    #[schema(required = true)]
    pub assignee_user_id: Option<String>,
    /// The assignee of a task, else the creator: whom the caller's activity scope looks at.
    #[schema(required = true)]
    pub owner_user_id: Option<String>,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    /// Null when unknown.
    #[schema(required = true)]
    pub created_by: Option<String>,
}

/// One entry of a timeline: an activity, or a change of the record (or, on an account's
/// timeline, of one of its contacts or opportunities).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub id: String,
    /// The record whose timeline this is.
    pub record_type: String,
    pub record_id: String,
    /// What changed: the record, a related record, or an activity.
    pub entity_type: String,
    pub entity_id: String,
    /// created, updated, deleted, restored, stage_changed, owner_changed, won, lost, merged,
    /// converted, linked, unlinked, logged, completed, ...
    pub action: String,
    /// The event type, e.g. `opportunity.stage_changed`.
    pub event_type: String,
    /// Null when no user or client made the change.
    #[schema(required = true)]
    pub actor_id: Option<String>,
    /// The fields before the change (fields the caller's role hides are left out); null when none.
    #[schema(value_type = Option<Object>, required = true)]
    pub before: Option<Map<String, Value>>,
    /// The fields after the change; null when none.
    #[schema(value_type = Option<Object>, required = true)]
    pub after: Option<Map<String, Value>>,
    /// RFC 3339 UTC: when the change happened.
    #[schema(required = true, format = DateTime)]
    pub occurred_at: Option<String>,
}

/// One recorded change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// The event id.
    pub id: String,
    /// Null when no user or client made the change.
    #[schema(required = true)]
    pub actor_id: Option<String>,
    pub entity_type: String,
    pub entity_id: String,
    pub action: String,
    #[schema(value_type = Option<Object>, required = true)]
    pub before: Option<Map<String, Value>>,
    #[schema(value_type = Option<Object>, required = true)]
    pub after: Option<Map<String, Value>>,
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
page!(ActivityPage, Activity);
page!(TimelinePage, TimelineEntry);
page!(AuditPage, AuditRecord);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateActivityRequest {
    #[schema(value_type = SubjectType)]
    pub subject_type: String,
    /// The record the activity is about; it must exist and be readable by the caller.
    pub subject_id: String,
    #[schema(value_type = ActivityType)]
    pub activity_type: String,
    #[schema(example = "Discussed the renewal")]
    pub body: Option<String>,
    /// RFC 3339; default now.
    #[schema(format = DateTime)]
    pub occurred_at: Option<String>,
    /// Tasks only; RFC 3339.
    #[schema(format = DateTime)]
    pub due_at: Option<String>,
    /// Tasks only; RFC 3339.
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    /// Tasks: default the caller.
    pub assignee_user_id: Option<String>,
}

/// Fields left out keep their value; `null` clears those that may be empty.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateActivityRequest {
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub body: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, format = DateTime, required = false)]
    pub occurred_at: Option<Option<String>>,
    /// Tasks only; null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime, required = false)]
    pub due_at: Option<Option<String>>,
    /// Tasks only; setting it completes the task, null reopens it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime, required = false)]
    pub completed_at: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub assignee_user_id: Option<Option<String>>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ActivityListParams {
    #[param(value_type = Option<SubjectType>, inline)]
    pub subject_type: Option<String>,
    /// Only activities about this record (a UUID).
    pub subject_id: Option<String>,
    #[param(value_type = Option<ActivityType>, inline)]
    pub activity_type: Option<String>,
    /// Only activities assigned to this user (a UUID, or `me`).
    pub assignee_user_id: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TaskListParams {
    /// Whose tasks: a user id, or `me` (the default).
    pub assignee_user_id: Option<String>,
    /// open (default) or overdue.
    #[param(value_type = Option<TaskState>, inline)]
    pub state: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// e.g. contact, account, activity, user.
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// Only changes by this user or API client (a UUID).
    pub actor_id: Option<String>,
    /// RFC 3339; changes at or after it.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; changes before it.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditExportParams {
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// A UUID.
    pub actor_id: Option<String>,
    /// RFC 3339; changes at or after it.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339; changes before it.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

// ---- conversions -------------------------------------------------------------------------

/// The REST names of the service's field names that snake-to-camel does not give.
fn renamed(mut e: GwError) -> GwError {
    for f in &mut e.0.fields {
        let rest = match f.field.as_str() {
            "occurTime" => "occurredAt",
            "dueTime" => "dueAt",
            "completeTime" => "completedAt",
            "startTime" => "from",
            "endTime" => "to",
            _ => continue,
        };
        f.field = rest.to_owned();
    }
    e
}

/// An RFC 3339 time for gRPC, or a 400 naming `field`.
fn parse_time(field: &str, s: &str) -> Result<prost_types::Timestamp, ApiError> {
    let t = DateTime::parse_from_rfc3339(s.trim())
        .map_err(|_| {
            ApiError::invalid(
                field,
                "must be an RFC 3339 time such as 2026-01-31T09:30:00Z",
            )
        })?
        .with_timezone(&Utc);
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn opt_time(field: &str, s: Option<String>) -> Result<Option<prost_types::Timestamp>, ApiError> {
    s.map(|s| parse_time(field, &s)).transpose()
}

fn activity(a: pb::Activity) -> Activity {
    Activity {
        id: a.id,
        subject_type: a.subject_type,
        subject_id: a.subject_id,
        activity_type: a.activity_type,
        body: none_if_empty(a.body),
        occurred_at: time(a.occur_time),
        due_at: time(a.due_time),
        completed_at: time(a.complete_time),
        assignee_user_id: none_if_empty(a.assignee_user_id),
        owner_user_id: none_if_empty(a.owner_user_id),
        version: a.version,
        created_at: time(a.create_time),
        updated_at: time(a.update_time),
        created_by: none_if_empty(a.created_by),
    }
}

fn entry(e: pb::TimelineEntry) -> TimelineEntry {
    TimelineEntry {
        id: e.id,
        record_type: e.record_type,
        record_id: e.record_id,
        entity_type: e.entity_type,
        entity_id: e.entity_id,
        action: e.action,
        event_type: e.event_type,
        actor_id: none_if_empty(e.actor_id),
        before: e.before.map(struct_to_map),
        after: e.after.map(struct_to_map),
        occurred_at: time(e.occur_time),
    }
}

fn audit(a: pb::AuditRecord) -> AuditRecord {
    AuditRecord {
        id: a.id,
        actor_id: none_if_empty(a.actor_id),
        entity_type: a.entity_type,
        entity_id: a.entity_id,
        action: a.action,
        before: a.before.map(struct_to_map),
        after: a.after.map(struct_to_map),
        occurred_at: time(a.occur_time),
    }
}

// ---- activities --------------------------------------------------------------------------

/// Activities the caller may read, newest first.
#[utoipa::path(get, path = "/activities", tag = "activities", security(("bearer" = [])), params(ActivityListParams),
    responses((status = 200, description = "A page of activities", body = ActivityPage), StdErrors))]
async fn list_activities(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ActivityListParams>,
) -> GwResult<AJson<ActivityPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let r = cell
        .list_activities(s.backends.request(
            &ctx,
            pb::ListActivitiesRequest {
                page_size,
                page_token,
                subject_type: q.subject_type.unwrap_or_default(),
                subject_id: q.subject_id.unwrap_or_default(),
                activity_type: q.activity_type.unwrap_or_default(),
                assignee_user_id: q.assignee_user_id.unwrap_or_default(),
            },
        ))
        .await
        .map_err(|e| renamed(e.into()))?
        .into_inner();
    Ok(AJson(ActivityPage {
        items: r.activities.into_iter().map(activity).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Logs an activity about a record.
#[utoipa::path(post, path = "/activities", tag = "activities", security(("bearer" = [])), request_body = CreateActivityRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Activity logged", body = Activity,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_activity(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateActivityRequest>,
) -> GwResult<Response> {
    let req = pb::CreateActivityRequest {
        subject_type: b.subject_type,
        subject_id: b.subject_id,
        activity_type: b.activity_type,
        body: b.body.unwrap_or_default(),
        occur_time: opt_time("occurredAt", b.occurred_at)?,
        due_time: opt_time("dueAt", b.due_at)?,
        complete_time: opt_time("completedAt", b.completed_at)?,
        assignee_user_id: b.assignee_user_id.unwrap_or_default(),
        request_id: String::new(),
    };
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let a = cell
        .create_activity(s.backends.request(&ctx, req))
        .await
        .map_err(|e| renamed(e.into()))?
        .into_inner()
        .activity
        .ok_or_else(missing("activity"))?;
    Ok(created(
        format!("/api/v1/activities/{}", a.id),
        Some(a.version),
        AJson(activity(a)),
    ))
}

/// One activity.
#[utoipa::path(get, path = "/activities/{id}", tag = "activities", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The activity", body = Activity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_activity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let a = cell
        .get_activity(s.backends.request(&ctx, pb::GetActivityRequest { id }))
        .await?
        .into_inner()
        .activity
        .ok_or_else(missing("activity"))?;
    Ok(with_etag(a.version, AJson(activity(a))))
}

/// Changes an activity. Honours If-Match. Setting `completedAt` on an open task completes it.
#[utoipa::path(patch, path = "/activities/{id}", tag = "activities", security(("bearer" = [])), request_body = UpdateActivityRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed activity", body = Activity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_activity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateActivityRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateActivityRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(v) = b.body {
        paths.push("body");
        req.body = v.unwrap_or_default();
    }
    if let Some(v) = b.occurred_at {
        paths.push("occur_time");
        match v {
            None => return Err(ApiError::invalid("occurredAt", "must not be null").into()),
            Some(v) => req.occur_time = Some(parse_time("occurredAt", &v)?),
        }
    }
    if let Some(v) = b.due_at {
        paths.push("due_time");
        req.due_time = opt_time("dueAt", v)?;
    }
    if let Some(v) = b.completed_at {
        paths.push("complete_time");
        req.complete_time = opt_time("completedAt", v)?;
    }
    if let Some(v) = b.assignee_user_id {
        paths.push("assignee_user_id");
        req.assignee_user_id = v.unwrap_or_default();
    }
    req.update_mask = Some(update_mask(paths)?);
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let a = cell
        .update_activity(s.backends.request(&ctx, req))
        .await
        .map_err(|e| renamed(e.into()))?
        .into_inner()
        .activity
        .ok_or_else(missing("activity"))?;
    Ok(with_etag(a.version, AJson(activity(a))))
}

/// Deletes an activity (soft: restore brings it back). Honours If-Match.
#[utoipa::path(delete, path = "/activities/{id}", tag = "activities", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_activity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<StatusCode> {
    let etag = if_match(&headers)?;
    let mut cell = s.backends.timeline(ctx.tenant())?;
    cell.delete_activity(
        s.backends
            .request(&ctx, pb::DeleteActivityRequest { id, etag }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a deleted activity back.
#[utoipa::path(post, path = "/activities/{id}/restore", tag = "activities", security(("bearer" = [])),
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 200, description = "The restored activity", body = Activity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn restore_activity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let a = cell
        .restore_activity(s.backends.request(&ctx, pb::RestoreActivityRequest { id }))
        .await?
        .into_inner()
        .activity
        .ok_or_else(missing("activity"))?;
    Ok(with_etag(a.version, AJson(activity(a))))
}

/// Completes a task now (a completed task stays as it is). Honours If-Match.
#[utoipa::path(post, path = "/activities/{id}/complete", tag = "activities", security(("bearer" = [])),
    params(("id" = String, Path),
        ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being completed"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 200, description = "The completed task", body = Activity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn complete_activity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let a = cell
        .complete_activity(
            s.backends
                .request(&ctx, pb::CompleteActivityRequest { id, etag }),
        )
        .await?
        .into_inner()
        .activity
        .ok_or_else(missing("activity"))?;
    Ok(with_etag(a.version, AJson(activity(a))))
}

/// Open or overdue tasks of one assignee (default: the caller), soonest due first; tasks
/// without a due time come last. `GET /tasks?assigneeUserId=me&state=overdue`.
#[utoipa::path(get, path = "/tasks", tag = "activities", security(("bearer" = [])), params(TaskListParams),
    responses((status = 200, description = "A page of tasks", body = ActivityPage), StdErrors))]
async fn list_tasks(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<TaskListParams>,
) -> GwResult<AJson<ActivityPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let r = cell
        .list_tasks(s.backends.request(
            &ctx,
            pb::ListTasksRequest {
                assignee_user_id: q.assignee_user_id.unwrap_or_default(),
                state: q.state.unwrap_or_default(),
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(ActivityPage {
        items: r.tasks.into_iter().map(activity).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

// ---- timelines ---------------------------------------------------------------------------

async fn timeline(
    s: AppState,
    ctx: Ctx,
    record_type: &str,
    record_id: String,
    q: ListParams,
) -> GwResult<AJson<TimelinePage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let r = cell
        .list_timeline(s.backends.request(
            &ctx,
            pb::ListTimelineRequest {
                record_type: record_type.to_owned(),
                record_id,
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(TimelinePage {
        items: r.entries.into_iter().map(entry).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

macro_rules! timeline_route {
    ($fn:ident, $path:literal, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(get, path = $path, tag = "timeline", security(("bearer" = [])),
            params(("id" = String, Path), ListParams),
            responses((status = 200, description = "A page of the timeline, newest first", body = TimelinePage), StdErrors))]
        async fn $fn(
            State(s): State<AppState>,
            ctx: Ctx,
            Path(id): Path<String>,
            Query(q): Query<ListParams>,
        ) -> GwResult<AJson<TimelinePage>> {
            timeline(s, ctx, $kind, id, q).await
        }
    };
}

timeline_route!(
    account_timeline,
    "/accounts/{id}/timeline",
    "account",
    "An account's activities and changes, with those of its contacts and opportunities, newest first."
);
timeline_route!(
    contact_timeline,
    "/contacts/{id}/timeline",
    "contact",
    "A contact's activities and changes, newest first."
);
timeline_route!(
    opportunity_timeline,
    "/opportunities/{id}/timeline",
    "opportunity",
    "An opportunity's activities and changes (stage moves, owner changes, ...), newest first."
);
timeline_route!(
    lead_timeline,
    "/leads/{id}/timeline",
    "lead",
    "A lead's activities and changes, newest first."
);
timeline_route!(
    ticket_timeline,
    "/tickets/{id}/timeline",
    "ticket",
    "A ticket's activities and changes, newest first."
);

// ---- audit -------------------------------------------------------------------------------

/// The tenant's audit log, newest first (needs `audit_log` read: admins).
#[utoipa::path(get, path = "/audit-log", tag = "audit", security(("bearer" = [])), params(AuditParams),
    responses((status = 200, description = "A page of the audit log", body = AuditPage), StdErrors))]
async fn list_audit_log(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<AuditParams>,
) -> GwResult<AJson<AuditPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let req = pb::ListAuditLogRequest {
        page_size,
        page_token,
        entity_type: q.entity_type.unwrap_or_default(),
        entity_id: q.entity_id.unwrap_or_default(),
        actor_id: q.actor_id.unwrap_or_default(),
        start_time: opt_time("from", q.from)?,
        end_time: opt_time("to", q.to)?,
    };
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let r = cell
        .list_audit_log(s.backends.request(&ctx, req))
        .await
        .map_err(|e| renamed(e.into()))?
        .into_inner();
    Ok(AJson(AuditPage {
        items: r.records.into_iter().map(audit).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// The audit log as CSV, streamed (needs `audit_log` export; recorded as a security event).
/// Columns: id, occurredAt, actorId, entityType, entityId, action, before, after (JSON);
/// cells starting with = + - @ TAB or CR are prefixed with `'`.
#[utoipa::path(get, path = "/audit-log/export", tag = "audit", security(("bearer" = [])), params(AuditExportParams),
    responses((status = 200, description = "CSV with a header row", content_type = "text/csv", body = String), StdErrors))]
async fn export_audit_log(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<AuditExportParams>,
) -> GwResult<Response> {
    let req = pb::ExportAuditLogRequest {
        entity_type: q.entity_type.unwrap_or_default(),
        entity_id: q.entity_id.unwrap_or_default(),
        actor_id: q.actor_id.unwrap_or_default(),
        start_time: opt_time("from", q.from)?,
        end_time: opt_time("to", q.to)?,
    };
    let mut cell = s.backends.timeline(ctx.tenant())?;
    let stream = cell
        .export_audit_log(s.backends.request(&ctx, req))
        .await
        .map_err(|e| renamed(e.into()))?
        .into_inner()
        .map_ok(|m| m.chunk);
    let mut res = Body::from_stream(stream).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    res.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit-log.csv\""),
    );
    Ok(res)
}

/// Routes behind authentication.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_activities, create_activity))
        .routes(routes!(get_activity, update_activity, delete_activity))
        .routes(routes!(restore_activity))
        .routes(routes!(complete_activity))
        .routes(routes!(list_tasks))
        .routes(routes!(account_timeline))
        .routes(routes!(contact_timeline))
        .routes(routes!(opportunity_timeline))
        .routes(routes!(lead_timeline))
        .routes(routes!(ticket_timeline))
        .routes(routes!(list_audit_log))
        .routes(routes!(export_audit_log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_name_their_field() {
        assert!(parse_time("dueAt", "2026-01-31T09:30:00Z").is_ok());
        assert!(parse_time("dueAt", "2026-01-31T09:30:00+02:00").is_ok());
        let e = parse_time("dueAt", "tomorrow").unwrap_err();
        assert_eq!(e.fields[0].field, "dueAt");
        let e = renamed(GwError(ApiError::invalid("dueTime", "x")));
        assert_eq!(e.0.fields[0].field, "dueAt");
    }
}
