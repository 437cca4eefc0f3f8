//! The pipeline section of the partner API: pipelines and stages, opportunities (with stage
//! moves, bulk changes and stage history), tickets, leads (with conversion) and the pipeline
//! report, over `crm.pipeline.v1.PipelineService`.

use std::collections::{BTreeMap, HashMap};

use axum::{
    Json as AJson,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use crm_kit::ApiError;
use crm_proto::pipeline as pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    created, custom_changes, if_match, missing, none_if_empty, update_mask, visible_custom,
    with_etag,
};
use crate::{
    app::AppState,
    backends::Ctx,
    dto::{StdErrors, json_to_struct, next_cursor, present, time},
    error::{GwResult, Json, OptionalJson, Query},
};

const IDEMPOTENCY: &str = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours";

// ---- shapes ----------------------------------------------------------------------------

/// What a stage means for the records in it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

/// The records a pipeline holds.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum PipelineObjectType {
    Deal,
    Ticket,
}

/// One stage of a pipeline.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stage {
    /// Lowercase letters, digits and underscores, starting with a letter; unique in the pipeline.
    #[schema(pattern = r"^[a-z][a-z0-9_]{0,49}$", example = "proposal")]
    pub key: String,
    #[schema(example = "Proposal")]
    pub name: String,
    /// 0 to 100; weights amounts in the report.
    #[schema(minimum = 0, maximum = 100)]
    pub probability: i32,
    #[schema(value_type = StageKind)]
    pub kind: String,
    /// Fields a record must have to enter the stage. Deals: accountId, name, amountCents,
    /// currency, closeDate, lostReason, ownerUserId; tickets: subject, description, contactId,
    /// accountId, priority, assigneeUserId. On deal pipelines a won stage always requires
    /// amountCents and closeDate, a lost stage lostReason.
    #[serde(default)]
    pub required_fields: Vec<String>,
    /// A retired stage stays valid for the records in it; nothing new moves into it.
    #[serde(default)]
    pub retired: bool,
}

/// A pipeline of deals or tickets.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub id: String,
    pub name: String,
    #[schema(value_type = PipelineObjectType)]
    pub object_type: String,
    /// Each tenant has one default sales (deal) and one default support (ticket) pipeline.
    pub is_default: bool,
    /// In order.
    pub stages: Vec<Stage>,
    /// When a stage key is listed, records in that stage may only move to the stages it
    /// names; unlisted stages may move anywhere.
    pub allowed_transitions: BTreeMap<String, Vec<String>>,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineList {
    pub items: Vec<Pipeline>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreatePipelineRequest {
    #[schema(example = "Enterprise sales")]
    pub name: String,
    #[schema(value_type = PipelineObjectType)]
    pub object_type: String,
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub allowed_transitions: BTreeMap<String, Vec<String>>,
}

/// Fields left out keep their value. `stages` replaces the list: its order is the new
/// order; a stage with records in it cannot be left out (retire it instead: 422 with rule
/// `stage_in_use`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdatePipelineRequest {
    pub name: Option<String>,
    pub stages: Option<Vec<Stage>>,
    pub allowed_transitions: Option<BTreeMap<String, Vec<String>>>,
}

/// An opportunity (deal). Fields the caller's role hides (e.g. `amountCents` for support
/// agents) are left out of the object (custom values: out of `custom`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Opportunity {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub account_id: Option<String>,
    /// The account's name as last seen; null when not known yet.
    #[schema(required = true)]
    pub account_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub name: Option<String>,
    /// Integer minor units; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i64>, required = false)]
    pub amount_cents: Option<Option<i64>>,
    /// ISO 4217; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub currency: Option<Option<String>>,
    pub pipeline_id: String,
    pub stage: String,
    /// YYYY-MM-DD; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false, format = Date)]
    pub close_date: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub lost_reason: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// Custom field values by key (the tenant's opportunity custom fields).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub custom: Option<Map<String, Value>>,
    pub version: i64,
    /// When it entered its stage (RFC 3339 UTC).
    #[schema(required = true, format = DateTime)]
    pub stage_entered_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    #[schema(required = true)]
    pub created_by: Option<String>,
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
page!(OpportunityPage, Opportunity);
page!(TicketPage, Ticket);
page!(LeadPage, Lead);
page!(StageHistoryPage, StageChange);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateOpportunityRequest {
    /// An account the caller may read (checked with accounts-contacts).
    pub account_id: String,
    #[schema(example = "Acme renewal")]
    pub name: String,
    /// Integer minor units, at least 0.
    #[schema(minimum = 0, example = 125000)]
    pub amount_cents: Option<i64>,
    /// ISO 4217; required with amountCents.
    #[schema(example = "EUR")]
    pub currency: Option<String>,
    /// Default: the tenant's default deal pipeline.
    pub pipeline_id: Option<String>,
    /// Default: the pipeline's first open stage. Entering it follows the transition rules.
    pub stage: Option<String>,
    /// YYYY-MM-DD.
    #[schema(format = Date, example = "2026-06-30")]
    pub close_date: Option<String>,
    /// Default: the caller.
    pub owner_user_id: Option<String>,
    /// Values by custom field key, checked against the tenant's opportunity custom fields
    /// (unknown keys, wrong types and missing required values: 400 naming `custom.<key>`).
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Map<String, Value>>,
}

/// Fields left out keep their value; `null` clears the fields that may be empty. `stage`
/// is refused (400 naming `stage`): stages change only through POST /opportunities/{id}/stage.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateOpportunityRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub account_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, required = false, minimum = 0)]
    pub amount_cents: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub currency: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false, format = Date)]
    pub close_date: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub lost_reason: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// Sets the keys it names (a null value clears that key); other keys keep their values.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object, required = false)]
    pub custom: Option<Option<Map<String, Value>>>,
    /// Refused: use POST /opportunities/{id}/stage.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub stage: Option<Option<Value>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MoveStageRequest {
    /// The target stage key.
    #[schema(example = "closed_won")]
    pub stage: String,
    /// Required to enter a lost stage of a deal pipeline.
    pub lost_reason: Option<String>,
}

/// What a bulk call does to each opportunity.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum BulkOpportunityAction {
    AssignOwner,
    MoveStage,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkOpportunitiesRequest {
    #[schema(value_type = BulkOpportunityAction)]
    pub action: String,
    /// 1 to 1000 distinct opportunity ids.
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
    /// The new owner, for assign_owner.
    pub owner_user_id: Option<String>,
    /// The target stage, for move_stage; each move is checked against the transition rules.
    pub stage: Option<String>,
    /// For moves into a lost stage.
    pub lost_reason: Option<String>,
}

/// The outcome for one id.
#[derive(Serialize, ToSchema)]
pub struct BulkResult {
    pub id: String,
    /// "ok", or the error code: NOT_FOUND, PERMISSION_DENIED, RULE_VIOLATION, VALIDATION_FAILED, ...
    pub status: String,
    /// Why it failed; left out on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub message: Option<String>,
    /// The broken transition rule, for RULE_VIOLATION.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub rule: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkOpportunitiesResponse {
    pub results: Vec<BulkResult>,
}

/// One stage move.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageChange {
    pub id: String,
    /// Null for the stage the record was created in.
    #[schema(required = true)]
    pub from_stage: Option<String>,
    pub to_stage: String,
    /// Who moved it.
    #[schema(required = true)]
    pub actor_id: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub moved_at: Option<String>,
    /// Time the record spent in the previous stage.
    pub seconds_in_previous_stage: i64,
}

/// Priority of a ticket.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

/// A support ticket. Fields the caller's role hides are left out of the object.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub description: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub contact_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub account_id: Option<Option<String>>,
    /// The account's name as last seen; null when none or not known yet.
    #[schema(required = true)]
    pub account_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Priority, required = false)]
    pub priority: Option<String>,
    pub pipeline_id: String,
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub assignee_user_id: Option<Option<String>>,
    pub version: i64,
    #[schema(required = true, format = DateTime)]
    pub stage_entered_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    #[schema(required = true)]
    pub created_by: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTicketRequest {
    #[schema(example = "Cannot log in")]
    pub subject: String,
    pub description: Option<String>,
    pub contact_id: Option<String>,
    pub account_id: Option<String>,
    /// Default normal.
    #[schema(value_type = Option<Priority>)]
    pub priority: Option<String>,
    /// Default: the tenant's default ticket pipeline.
    pub pipeline_id: Option<String>,
    /// Default: the pipeline's first open stage.
    pub stage: Option<String>,
    /// Default: the caller.
    pub assignee_user_id: Option<String>,
}

/// Fields left out keep their value; `null` clears the fields that may be empty. `stage`
/// is refused: stages change only through POST /tickets/{id}/stage.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateTicketRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub subject: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub contact_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub account_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Priority, required = false)]
    pub priority: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub assignee_user_id: Option<Option<String>>,
    /// Refused: use POST /tickets/{id}/stage.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub stage: Option<Option<Value>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MoveTicketStageRequest {
    pub stage: String,
}

/// Status of a lead.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum LeadStatus {
    New,
    Working,
    Qualified,
    Disqualified,
    /// Set only by POST /leads/{id}/convert.
    Converted,
}

/// A lead. Fields the caller's role hides are left out of the object.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lead {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub email: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub company: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub source: Option<Option<String>>,
    #[schema(value_type = LeadStatus)]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub owner_user_id: Option<Option<String>>,
    #[schema(required = true)]
    pub converted_account_id: Option<String>,
    #[schema(required = true)]
    pub converted_contact_id: Option<String>,
    #[schema(required = true)]
    pub converted_opportunity_id: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub converted_at: Option<String>,
    pub version: i64,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    #[schema(required = true)]
    pub created_by: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateLeadRequest {
    #[schema(example = "Grace")]
    pub first_name: Option<String>,
    #[schema(example = "Hopper")]
    pub last_name: String,
    pub email: Option<String>,
    pub company: Option<String>,
    #[schema(example = "web")]
    pub source: Option<String>,
    /// Default new; converted is refused (use POST /leads/{id}/convert).
    #[schema(value_type = Option<LeadStatus>)]
    pub status: Option<String>,
    /// Default: the caller.
    pub owner_user_id: Option<String>,
}

/// Fields left out keep their value; `null` clears the fields that may be empty.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateLeadRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub company: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub source: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = LeadStatus, required = false)]
    pub status: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub owner_user_id: Option<Option<String>>,
}

/// Converts a lead; the body may be left out.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConvertLeadRequest {
    /// An existing account; default: one is created from the lead (its company).
    pub account_id: Option<String>,
    /// An existing contact; default: one is created from the lead.
    pub contact_id: Option<String>,
    /// Also create an opportunity in the default deal pipeline (default false).
    pub create_opportunity: Option<bool>,
    /// Default: "<company> deal".
    pub opportunity_name: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConvertLeadResponse {
    pub account_id: String,
    pub contact_id: String,
    /// Null when no opportunity was created.
    #[schema(required = true)]
    pub opportunity_id: Option<String>,
}

/// Sums in one currency; currencies are never mixed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrencyAmount {
    pub currency: String,
    pub count: i64,
    pub amount_cents: i64,
    /// Sum of amountCents × stage probability / 100, rounded half up to whole cents.
    pub weighted_amount_cents: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageReport {
    pub key: String,
    pub name: String,
    pub probability: i32,
    #[schema(value_type = StageKind)]
    pub kind: String,
    /// Opportunities in the stage (every currency, and those without an amount).
    pub count: i64,
    /// Per currency; empty when the caller's role hides amounts.
    pub amounts: Vec<CurrencyAmount>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonthForecast {
    /// YYYY-MM of the close date.
    pub month: String,
    /// Open opportunities closing that month.
    pub count: i64,
    /// Per currency; empty when the caller's role hides amounts.
    pub amounts: Vec<CurrencyAmount>,
}

/// The pipeline report. Every figure covers the live opportunities of the pipeline that the
/// caller may read whose `closeDate` is between `from` and `to` (inclusive); opportunities
/// without a close date are left out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReport {
    pub pipeline_id: String,
    #[schema(format = Date)]
    pub from: String,
    #[schema(format = Date)]
    pub to: String,
    /// Every stage of the pipeline, in order.
    pub stages: Vec<StageReport>,
    /// Opportunities in won stages.
    pub won_count: i64,
    /// Opportunities in lost stages.
    pub lost_count: i64,
    /// wonCount / (wonCount + lostCount); null when none closed.
    #[schema(required = true)]
    pub win_rate: Option<f64>,
    /// Mean of closeDate − createdAt (UTC dates) in days over won opportunities; null when none.
    #[schema(required = true)]
    pub average_days_to_close: Option<f64>,
    /// Open opportunities by close month, oldest first.
    pub forecast: Vec<MonthForecast>,
    /// True when the caller's role hides amountCents: every `amounts` is then empty.
    pub amounts_hidden: bool,
}

// ---- parameters -------------------------------------------------------------------------

/// Sort direction.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SortOrder {
    Asc,
    Desc,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct PipelineListParams {
    /// Only pipelines of this object type.
    #[param(value_type = Option<PipelineObjectType>, inline)]
    pub object_type: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OpportunityListParams {
    /// Partial text over the name.
    pub q: Option<String>,
    /// Only opportunities in this stage (key).
    pub stage: Option<String>,
    /// Only opportunities this user owns (a UUID).
    pub owner_user_id: Option<String>,
    /// Only opportunities of this account (a UUID).
    pub account_id: Option<String>,
    /// Only opportunities of this pipeline (a UUID).
    pub pipeline_id: Option<String>,
    /// created_at (default), updated_at, name, close_date, amount_cents or custom.<key>.
    #[param(
        pattern = r"^(created_at|updated_at|name|close_date|amount_cents|custom\.[a-z][a-z0-9_]*)$"
    )]
    pub sort: Option<String>,
    /// Default: desc for created_at and updated_at, asc for the others.
    #[param(value_type = Option<SortOrder>, inline)]
    pub order: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Advanced: an AIP-160 filter over id, name, currency, stage, account_id,
    /// owner_user_id, pipeline_id, amount_cents, close_date, create_time, update_time and
    /// custom.<key>, e.g. `custom.region = "emea" AND amount_cents >= 100000`; combined with
    /// AND with the other parameters.
    pub filter: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TicketListParams {
    /// Partial text over the subject.
    pub q: Option<String>,
    pub stage: Option<String>,
    /// Only tickets assigned to this user (a UUID).
    pub assignee_user_id: Option<String>,
    pub account_id: Option<String>,
    pub pipeline_id: Option<String>,
    #[param(value_type = Option<Priority>, inline)]
    pub priority: Option<String>,
    /// created_at (default), updated_at or priority.
    #[param(pattern = r"^(created_at|updated_at|priority)$")]
    pub sort: Option<String>,
    #[param(value_type = Option<SortOrder>, inline)]
    pub order: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct LeadListParams {
    /// Partial text over the names, e-mail and company.
    pub q: Option<String>,
    #[param(value_type = Option<LeadStatus>, inline)]
    pub status: Option<String>,
    pub owner_user_id: Option<String>,
    pub source: Option<String>,
    /// created_at (default), updated_at or last_name.
    #[param(pattern = r"^(created_at|updated_at|last_name)$")]
    pub sort: Option<String>,
    #[param(value_type = Option<SortOrder>, inline)]
    pub order: Option<String>,
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Default: the tenant's default deal pipeline.
    pub pipeline_id: Option<String>,
    /// Only opportunities this user owns.
    pub owner_user_id: Option<String>,
    /// First close date included (YYYY-MM-DD).
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last close date included (YYYY-MM-DD).
    #[param(format = Date)]
    pub to: Option<String>,
}

/// `limit` as a gRPC page size: absent is the default, out of range is refused here.
fn page_size(limit: Option<i64>) -> GwResult<i32> {
    match limit {
        None => Ok(0),
        Some(n) if (1..=200).contains(&n) => Ok(n as i32),
        Some(_) => Err(ApiError::invalid("limit", "must be between 1 and 200").into()),
    }
}

/// `sort` and `order` as a gRPC `order_by`; no sort means created_at, newest first.
/// `custom` allows `custom.<key>` too (records with custom fields).
fn order_by(
    sort: Option<&str>,
    order: Option<&str>,
    allowed: &[&str],
    custom: bool,
) -> GwResult<String> {
    let sort = sort.unwrap_or("created_at");
    let custom_key = custom
        && sort
            .strip_prefix("custom.")
            .is_some_and(crm_kit::custom::valid_key);
    if !allowed.contains(&sort) && !custom_key {
        let or_custom = if custom { " or custom.<key>" } else { "" };
        return Err(ApiError::invalid(
            "sort",
            format!("must be one of {}{or_custom}", allowed.join(", ")),
        )
        .into());
    }
    let grpc = match sort {
        "created_at" => "create_time",
        "updated_at" => "update_time",
        s => s,
    };
    let desc = match order {
        None => matches!(sort, "created_at" | "updated_at"),
        Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::invalid("order", "must be asc or desc").into()),
    };
    Ok(if desc {
        format!("{grpc} desc")
    } else {
        grpc.to_owned()
    })
}

// ---- conversions --------------------------------------------------------------------------

struct Redacted(Vec<String>);

impl Redacted {
    fn shows(&self, field: &str) -> bool {
        !self.0.iter().any(|f| f == field)
    }

    fn text(&self, field: &str, v: String) -> Option<String> {
        self.shows(field).then_some(v)
    }

    fn opt(&self, field: &str, v: String) -> Option<Option<String>> {
        self.shows(field).then(|| none_if_empty(v))
    }
}

fn stage_rest(s: pb::Stage) -> Stage {
    Stage {
        key: s.key,
        name: s.name,
        probability: s.probability,
        kind: s.kind,
        required_fields: s.required_fields,
        retired: s.retired,
    }
}

fn stage_pb(s: Stage) -> pb::Stage {
    pb::Stage {
        key: s.key,
        name: s.name,
        probability: s.probability,
        kind: s.kind,
        required_fields: s.required_fields,
        retired: s.retired,
    }
}

fn transitions_pb(t: BTreeMap<String, Vec<String>>) -> HashMap<String, pb::StageKeys> {
    t.into_iter()
        .map(|(k, keys)| (k, pb::StageKeys { keys }))
        .collect()
}

fn pipeline(p: pb::Pipeline) -> Pipeline {
    Pipeline {
        id: p.id,
        name: p.name,
        object_type: p.object_type,
        is_default: p.is_default,
        stages: p.stages.into_iter().map(stage_rest).collect(),
        allowed_transitions: p
            .allowed_transitions
            .into_iter()
            .map(|(k, v)| (k, v.keys))
            .collect(),
        version: p.version,
        created_at: time(p.create_time),
        updated_at: time(p.update_time),
    }
}

fn opportunity(mut o: pb::Opportunity) -> Opportunity {
    let custom = visible_custom(&o.redacted_fields, o.custom.take());
    let r = Redacted(o.redacted_fields);
    Opportunity {
        id: o.id,
        account_id: r.text("accountId", o.account_id),
        account_name: none_if_empty(o.account_name),
        name: r.text("name", o.name),
        amount_cents: r.shows("amountCents").then_some(o.amount_cents),
        currency: r.opt("currency", o.currency),
        pipeline_id: o.pipeline_id,
        stage: o.stage,
        close_date: r.opt("closeDate", o.close_date),
        lost_reason: r.opt("lostReason", o.lost_reason),
        owner_user_id: r.opt("ownerUserId", o.owner_user_id),
        custom,
        version: o.version,
        stage_entered_at: time(o.stage_enter_time),
        created_at: time(o.create_time),
        updated_at: time(o.update_time),
        created_by: none_if_empty(o.created_by),
    }
}

fn ticket(t: pb::Ticket) -> Ticket {
    let r = Redacted(t.redacted_fields);
    Ticket {
        id: t.id,
        subject: r.text("subject", t.subject),
        description: r.opt("description", t.description),
        contact_id: r.opt("contactId", t.contact_id),
        account_id: r.opt("accountId", t.account_id),
        account_name: none_if_empty(t.account_name),
        priority: r.text("priority", t.priority),
        pipeline_id: t.pipeline_id,
        stage: t.stage,
        assignee_user_id: r.opt("assigneeUserId", t.assignee_user_id),
        version: t.version,
        stage_entered_at: time(t.stage_enter_time),
        created_at: time(t.create_time),
        updated_at: time(t.update_time),
        created_by: none_if_empty(t.created_by),
    }
}

fn lead(l: pb::Lead) -> Lead {
    let r = Redacted(l.redacted_fields);
    Lead {
        id: l.id,
        first_name: r.text("firstName", l.first_name),
        last_name: r.text("lastName", l.last_name),
        email: r.opt("email", l.email),
        company: r.opt("company", l.company),
        source: r.opt("source", l.source),
        status: l.status,
        owner_user_id: r.opt("ownerUserId", l.owner_user_id),
        converted_account_id: none_if_empty(l.converted_account_id),
        converted_contact_id: none_if_empty(l.converted_contact_id),
        converted_opportunity_id: none_if_empty(l.converted_opportunity_id),
        converted_at: time(l.convert_time),
        version: l.version,
        created_at: time(l.create_time),
        updated_at: time(l.update_time),
        created_by: none_if_empty(l.created_by),
    }
}

fn amounts(a: Vec<pb::CurrencyAmount>) -> Vec<CurrencyAmount> {
    a.into_iter()
        .map(|a| CurrencyAmount {
            currency: a.currency,
            count: a.count,
            amount_cents: a.amount_cents,
            weighted_amount_cents: a.weighted_amount_cents,
        })
        .collect()
}

/// The update mask of a PATCH, built field by field.
#[derive(Default)]
struct Mask(Vec<String>);

impl Mask {
    /// A field that must not be empty: `null` is refused.
    fn set(
        &mut self,
        rest: &str,
        grpc: &str,
        v: Option<Option<String>>,
        dst: &mut String,
    ) -> GwResult<()> {
        match v {
            None => {}
            Some(None) => return Err(ApiError::invalid(rest, "must not be null").into()),
            Some(Some(v)) => {
                self.0.push(grpc.to_owned());
                *dst = v;
            }
        }
        Ok(())
    }

    /// A field `null` clears.
    fn set_or_clear(&mut self, grpc: &str, v: Option<Option<String>>, dst: &mut String) {
        if let Some(v) = v {
            self.0.push(grpc.to_owned());
            *dst = v.unwrap_or_default();
        }
    }

    /// A field the service refuses by name (stage).
    fn refuse<T>(&mut self, grpc: &str, v: &Option<T>) {
        if v.is_some() {
            self.0.push(grpc.to_owned());
        }
    }

    fn finish(self) -> GwResult<prost_types::FieldMask> {
        update_mask(self.0)
    }
}

// ---- pipelines ------------------------------------------------------------------------------

/// The tenant's pipelines; a new tenant starts with a default sales and a default support
/// pipeline.
#[utoipa::path(get, path = "/pipelines", tag = "pipeline", security(("bearer" = [])), params(PipelineListParams),
    responses((status = 200, description = "Every pipeline", body = PipelineList), StdErrors))]
async fn list_pipelines(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<PipelineListParams>,
) -> GwResult<AJson<PipelineList>> {
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .list_pipelines(s.backends.request(
            &ctx,
            pb::ListPipelinesRequest {
                object_type: q.object_type.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(PipelineList {
        items: r.pipelines.into_iter().map(pipeline).collect(),
    }))
}

/// Creates a pipeline.
#[utoipa::path(post, path = "/pipelines", tag = "pipeline", security(("bearer" = [])), request_body = CreatePipelineRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 201, description = "Pipeline created", body = Pipeline,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_pipeline(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreatePipelineRequest>,
) -> GwResult<Response> {
    let p = s
        .backends
        .pipeline(ctx.tenant())?
        .create_pipeline(s.backends.request(
            &ctx,
            pb::CreatePipelineRequest {
                name: b.name,
                object_type: b.object_type,
                stages: b.stages.into_iter().map(stage_pb).collect(),
                allowed_transitions: transitions_pb(b.allowed_transitions),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .pipeline
        .ok_or_else(missing("pipeline"))?;
    Ok(created(
        format!("/api/v1/pipelines/{}", p.id),
        Some(p.version),
        AJson(pipeline(p)),
    ))
}

/// One pipeline.
#[utoipa::path(get, path = "/pipelines/{id}", tag = "pipeline", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The pipeline", body = Pipeline,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_pipeline(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let p = s
        .backends
        .pipeline(ctx.tenant())?
        .get_pipeline(s.backends.request(&ctx, pb::GetPipelineRequest { id }))
        .await?
        .into_inner()
        .pipeline
        .ok_or_else(missing("pipeline"))?;
    Ok(with_etag(p.version, AJson(pipeline(p))))
}

/// Renames a pipeline, adds, renames, reorders and retires stages, sets allowed
/// transitions. Honours If-Match.
#[utoipa::path(patch, path = "/pipelines/{id}", tag = "pipeline", security(("bearer" = [])), request_body = UpdatePipelineRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed pipeline", body = Pipeline,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_pipeline(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdatePipelineRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdatePipelineRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(n) = b.name {
        paths.push("name");
        req.name = n;
    }
    if let Some(st) = b.stages {
        paths.push("stages");
        req.stages = st.into_iter().map(stage_pb).collect();
    }
    if let Some(t) = b.allowed_transitions {
        paths.push("allowed_transitions");
        req.allowed_transitions = transitions_pb(t);
    }
    req.update_mask = Some(update_mask(paths)?);
    let p = s
        .backends
        .pipeline(ctx.tenant())?
        .update_pipeline(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .pipeline
        .ok_or_else(missing("pipeline"))?;
    Ok(with_etag(p.version, AJson(pipeline(p))))
}

// ---- opportunities ------------------------------------------------------------------------

/// Opportunities of the tenant the caller may read.
#[utoipa::path(get, path = "/opportunities", tag = "pipeline", security(("bearer" = [])), params(OpportunityListParams),
    responses((status = 200, description = "A page of opportunities", body = OpportunityPage), StdErrors))]
async fn list_opportunities(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<OpportunityListParams>,
) -> GwResult<AJson<OpportunityPage>> {
    let order_by = order_by(
        q.sort.as_deref(),
        q.order.as_deref(),
        &[
            "created_at",
            "updated_at",
            "name",
            "close_date",
            "amount_cents",
        ],
        true,
    )?;
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .list_opportunities(s.backends.request(
            &ctx,
            pb::ListOpportunitiesRequest {
                page_size: page_size(q.limit)?,
                page_token: q.cursor.unwrap_or_default(),
                order_by,
                query: q.q.unwrap_or_default(),
                stage: q.stage.unwrap_or_default(),
                owner_user_id: q.owner_user_id.unwrap_or_default(),
                account_id: q.account_id.unwrap_or_default(),
                pipeline_id: q.pipeline_id.unwrap_or_default(),
                filter: q.filter.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(OpportunityPage {
        items: r.opportunities.into_iter().map(opportunity).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates an opportunity; entering its stage follows the transition rules (422 naming the
/// rule when broken).
#[utoipa::path(post, path = "/opportunities", tag = "pipeline", security(("bearer" = [])), request_body = CreateOpportunityRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 201, description = "Opportunity created", body = Opportunity,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_opportunity(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateOpportunityRequest>,
) -> GwResult<Response> {
    let o = s
        .backends
        .pipeline(ctx.tenant())?
        .create_opportunity(s.backends.request(
            &ctx,
            pb::CreateOpportunityRequest {
                account_id: b.account_id,
                name: b.name,
                amount_cents: b.amount_cents,
                currency: b.currency.unwrap_or_default(),
                pipeline_id: b.pipeline_id.unwrap_or_default(),
                stage: b.stage.unwrap_or_default(),
                close_date: b.close_date.unwrap_or_default(),
                owner_user_id: b.owner_user_id.unwrap_or_default(),
                request_id: String::new(),
                custom: b.custom.as_ref().map(json_to_struct),
            },
        ))
        .await?
        .into_inner()
        .opportunity
        .ok_or_else(missing("opportunity"))?;
    Ok(created(
        format!("/api/v1/opportunities/{}", o.id),
        Some(o.version),
        AJson(opportunity(o)),
    ))
}

/// One opportunity.
#[utoipa::path(get, path = "/opportunities/{id}", tag = "pipeline", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The opportunity", body = Opportunity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_opportunity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let o = s
        .backends
        .pipeline(ctx.tenant())?
        .get_opportunity(s.backends.request(&ctx, pb::GetOpportunityRequest { id }))
        .await?
        .into_inner()
        .opportunity
        .ok_or_else(missing("opportunity"))?;
    Ok(with_etag(o.version, AJson(opportunity(o))))
}

/// Changes an opportunity. Honours If-Match. `stage` is refused (400 naming it).
#[utoipa::path(patch, path = "/opportunities/{id}", tag = "pipeline", security(("bearer" = [])), request_body = UpdateOpportunityRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed opportunity", body = Opportunity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_opportunity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateOpportunityRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateOpportunityRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut mask = Mask::default();
    mask.refuse("stage", &b.stage);
    mask.set("accountId", "account_id", b.account_id, &mut req.account_id)?;
    mask.set("name", "name", b.name, &mut req.name)?;
    if let Some(a) = b.amount_cents {
        mask.0.push("amount_cents".into());
        req.amount_cents = a;
    }
    mask.set_or_clear("currency", b.currency, &mut req.currency);
    mask.set_or_clear("close_date", b.close_date, &mut req.close_date);
    mask.set_or_clear("lost_reason", b.lost_reason, &mut req.lost_reason);
    mask.set(
        "ownerUserId",
        "owner_user_id",
        b.owner_user_id,
        &mut req.owner_user_id,
    )?;
    req.custom = custom_changes(&mut mask.0, b.custom)?;
    req.update_mask = Some(mask.finish()?);
    let o = s
        .backends
        .pipeline(ctx.tenant())?
        .update_opportunity(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .opportunity
        .ok_or_else(missing("opportunity"))?;
    Ok(with_etag(o.version, AJson(opportunity(o))))
}

/// Deletes an opportunity (soft: restore brings it back). Honours If-Match.
#[utoipa::path(delete, path = "/opportunities/{id}", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_opportunity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<StatusCode> {
    let etag = if_match(&headers)?;
    s.backends
        .pipeline(ctx.tenant())?
        .delete_opportunity(
            s.backends
                .request(&ctx, pb::DeleteOpportunityRequest { id, etag }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a deleted opportunity back.
#[utoipa::path(post, path = "/opportunities/{id}/restore", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "The restored opportunity", body = Opportunity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn restore_opportunity(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let o = s
        .backends
        .pipeline(ctx.tenant())?
        .restore_opportunity(
            s.backends
                .request(&ctx, pb::RestoreOpportunityRequest { id }),
        )
        .await?
        .into_inner()
        .opportunity
        .ok_or_else(missing("opportunity"))?;
    Ok(with_etag(o.version, AJson(opportunity(o))))
}

/// Moves an opportunity to another stage: the only way to change its stage. Honours
/// If-Match. A broken transition rule is a 422 RULE_VIOLATION whose `rule` is one of
/// `retired_stage`, `allowed_transitions`, `manager_required` (leaving a won or lost stage
/// needs an `opportunity.update` grant with scope all) or `required_fields` (won needs
/// amountCents and closeDate, lost needs lostReason, plus the stage's requiredFields);
/// `errors[0].field` is `stage`. An unknown stage is a 400 naming `stage`.
#[utoipa::path(post, path = "/opportunities/{id}/stage", tag = "pipeline", security(("bearer" = [])), request_body = MoveStageRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "The moved opportunity", body = Opportunity,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn move_opportunity_stage(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<MoveStageRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let o = s
        .backends
        .pipeline(ctx.tenant())?
        .move_opportunity_stage(s.backends.request(
            &ctx,
            pb::MoveOpportunityStageRequest {
                id,
                stage: b.stage,
                lost_reason: b.lost_reason.unwrap_or_default(),
                etag,
            },
        ))
        .await?
        .into_inner()
        .opportunity
        .ok_or_else(missing("opportunity"))?;
    Ok(with_etag(o.version, AJson(opportunity(o))))
}

/// Assigns an owner to, or moves the stage of, up to 1000 opportunities; one result per id
/// (moves are checked against the transition rules one by one). Recorded as one security event.
#[utoipa::path(post, path = "/opportunities/bulk", tag = "pipeline", security(("bearer" = [])), request_body = BulkOpportunitiesRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "The outcome for each id", body = BulkOpportunitiesResponse), StdErrors))]
async fn bulk_opportunities(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<BulkOpportunitiesRequest>,
) -> GwResult<AJson<BulkOpportunitiesResponse>> {
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .bulk_update_opportunities(s.backends.request(
            &ctx,
            pb::BulkUpdateOpportunitiesRequest {
                action: b.action,
                ids: b.ids,
                owner_user_id: b.owner_user_id.unwrap_or_default(),
                stage: b.stage.unwrap_or_default(),
                lost_reason: b.lost_reason.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(BulkOpportunitiesResponse {
        results: r
            .results
            .into_iter()
            .map(|r| BulkResult {
                id: r.id,
                status: r.status,
                message: none_if_empty(r.message),
                rule: none_if_empty(r.rule),
            })
            .collect(),
    }))
}

async fn history(
    s: &AppState,
    ctx: &Ctx,
    entity_type: &str,
    id: String,
    q: HistoryParams,
) -> GwResult<AJson<StageHistoryPage>> {
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .list_stage_history(s.backends.request(
            ctx,
            pb::ListStageHistoryRequest {
                entity_type: entity_type.into(),
                entity_id: id,
                page_size: page_size(q.limit)?,
                page_token: q.cursor.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(StageHistoryPage {
        items: r
            .changes
            .into_iter()
            .map(|c| StageChange {
                id: c.id,
                from_stage: none_if_empty(c.from_stage),
                to_stage: c.to_stage,
                actor_id: none_if_empty(c.actor_id),
                moved_at: time(c.move_time),
                seconds_in_previous_stage: c.seconds_in_previous_stage,
            })
            .collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Every stage move of an opportunity, oldest first: who, when, from, to and the time spent
/// in the previous stage.
#[utoipa::path(get, path = "/opportunities/{id}/stage-history", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path), HistoryParams),
    responses((status = 200, description = "A page of stage moves", body = StageHistoryPage), StdErrors))]
async fn opportunity_history(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<HistoryParams>,
) -> GwResult<AJson<StageHistoryPage>> {
    history(&s, &ctx, "opportunity", id, q).await
}

// ---- tickets ----------------------------------------------------------------------------------

/// Tickets of the tenant the caller may read.
#[utoipa::path(get, path = "/tickets", tag = "pipeline", security(("bearer" = [])), params(TicketListParams),
    responses((status = 200, description = "A page of tickets", body = TicketPage), StdErrors))]
async fn list_tickets(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<TicketListParams>,
) -> GwResult<AJson<TicketPage>> {
    let order_by = order_by(
        q.sort.as_deref(),
        q.order.as_deref(),
        &["created_at", "updated_at", "priority"],
        false,
    )?;
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .list_tickets(s.backends.request(
            &ctx,
            pb::ListTicketsRequest {
                page_size: page_size(q.limit)?,
                page_token: q.cursor.unwrap_or_default(),
                order_by,
                query: q.q.unwrap_or_default(),
                stage: q.stage.unwrap_or_default(),
                assignee_user_id: q.assignee_user_id.unwrap_or_default(),
                account_id: q.account_id.unwrap_or_default(),
                pipeline_id: q.pipeline_id.unwrap_or_default(),
                priority: q.priority.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(TicketPage {
        items: r.tickets.into_iter().map(ticket).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates a ticket on a ticket pipeline.
#[utoipa::path(post, path = "/tickets", tag = "pipeline", security(("bearer" = [])), request_body = CreateTicketRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 201, description = "Ticket created", body = Ticket,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_ticket(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateTicketRequest>,
) -> GwResult<Response> {
    let t = s
        .backends
        .pipeline(ctx.tenant())?
        .create_ticket(s.backends.request(
            &ctx,
            pb::CreateTicketRequest {
                subject: b.subject,
                description: b.description.unwrap_or_default(),
                contact_id: b.contact_id.unwrap_or_default(),
                account_id: b.account_id.unwrap_or_default(),
                priority: b.priority.unwrap_or_default(),
                pipeline_id: b.pipeline_id.unwrap_or_default(),
                stage: b.stage.unwrap_or_default(),
                assignee_user_id: b.assignee_user_id.unwrap_or_default(),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .ticket
        .ok_or_else(missing("ticket"))?;
    Ok(created(
        format!("/api/v1/tickets/{}", t.id),
        Some(t.version),
        AJson(ticket(t)),
    ))
}

/// One ticket.
#[utoipa::path(get, path = "/tickets/{id}", tag = "pipeline", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The ticket", body = Ticket,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_ticket(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let t = s
        .backends
        .pipeline(ctx.tenant())?
        .get_ticket(s.backends.request(&ctx, pb::GetTicketRequest { id }))
        .await?
        .into_inner()
        .ticket
        .ok_or_else(missing("ticket"))?;
    Ok(with_etag(t.version, AJson(ticket(t))))
}

/// Changes a ticket. Honours If-Match. `stage` is refused (400 naming it).
#[utoipa::path(patch, path = "/tickets/{id}", tag = "pipeline", security(("bearer" = [])), request_body = UpdateTicketRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed ticket", body = Ticket,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_ticket(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateTicketRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateTicketRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut mask = Mask::default();
    mask.refuse("stage", &b.stage);
    mask.set("subject", "subject", b.subject, &mut req.subject)?;
    mask.set_or_clear("description", b.description, &mut req.description);
    mask.set_or_clear("contact_id", b.contact_id, &mut req.contact_id);
    mask.set_or_clear("account_id", b.account_id, &mut req.account_id);
    mask.set("priority", "priority", b.priority, &mut req.priority)?;
    mask.set_or_clear(
        "assignee_user_id",
        b.assignee_user_id,
        &mut req.assignee_user_id,
    );
    req.update_mask = Some(mask.finish()?);
    let t = s
        .backends
        .pipeline(ctx.tenant())?
        .update_ticket(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .ticket
        .ok_or_else(missing("ticket"))?;
    Ok(with_etag(t.version, AJson(ticket(t))))
}

/// Deletes a ticket (soft). Honours If-Match.
#[utoipa::path(delete, path = "/tickets/{id}", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_ticket(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<StatusCode> {
    let etag = if_match(&headers)?;
    s.backends
        .pipeline(ctx.tenant())?
        .delete_ticket(
            s.backends
                .request(&ctx, pb::DeleteTicketRequest { id, etag }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a deleted ticket back.
#[utoipa::path(post, path = "/tickets/{id}/restore", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "The restored ticket", body = Ticket,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn restore_ticket(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let t = s
        .backends
        .pipeline(ctx.tenant())?
        .restore_ticket(s.backends.request(&ctx, pb::RestoreTicketRequest { id }))
        .await?
        .into_inner()
        .ticket
        .ok_or_else(missing("ticket"))?;
    Ok(with_etag(t.version, AJson(ticket(t))))
}

/// Moves a ticket to another stage of its pipeline: the only way to change its stage.
/// Honours If-Match; broken rules are 422 RULE_VIOLATION naming the rule.
#[utoipa::path(post, path = "/tickets/{id}/stage", tag = "pipeline", security(("bearer" = [])), request_body = MoveTicketStageRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "The moved ticket", body = Ticket,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn move_ticket_stage(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<MoveTicketStageRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let t = s
        .backends
        .pipeline(ctx.tenant())?
        .move_ticket_stage(s.backends.request(
            &ctx,
            pb::MoveTicketStageRequest {
                id,
                stage: b.stage,
                etag,
            },
        ))
        .await?
        .into_inner()
        .ticket
        .ok_or_else(missing("ticket"))?;
    Ok(with_etag(t.version, AJson(ticket(t))))
}

/// Every stage move of a ticket, oldest first.
#[utoipa::path(get, path = "/tickets/{id}/stage-history", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path), HistoryParams),
    responses((status = 200, description = "A page of stage moves", body = StageHistoryPage), StdErrors))]
async fn ticket_history(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<HistoryParams>,
) -> GwResult<AJson<StageHistoryPage>> {
    history(&s, &ctx, "ticket", id, q).await
}

// ---- leads --------------------------------------------------------------------------------------

/// Leads of the tenant the caller may read.
#[utoipa::path(get, path = "/leads", tag = "pipeline", security(("bearer" = [])), params(LeadListParams),
    responses((status = 200, description = "A page of leads", body = LeadPage), StdErrors))]
async fn list_leads(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<LeadListParams>,
) -> GwResult<AJson<LeadPage>> {
    let order_by = order_by(
        q.sort.as_deref(),
        q.order.as_deref(),
        &["created_at", "updated_at", "last_name"],
        false,
    )?;
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .list_leads(s.backends.request(
            &ctx,
            pb::ListLeadsRequest {
                page_size: page_size(q.limit)?,
                page_token: q.cursor.unwrap_or_default(),
                order_by,
                query: q.q.unwrap_or_default(),
                status: q.status.unwrap_or_default(),
                owner_user_id: q.owner_user_id.unwrap_or_default(),
                source: q.source.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(LeadPage {
        items: r.leads.into_iter().map(lead).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates a lead.
#[utoipa::path(post, path = "/leads", tag = "pipeline", security(("bearer" = [])), request_body = CreateLeadRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 201, description = "Lead created", body = Lead,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_lead(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateLeadRequest>,
) -> GwResult<Response> {
    let l = s
        .backends
        .pipeline(ctx.tenant())?
        .create_lead(s.backends.request(
            &ctx,
            pb::CreateLeadRequest {
                first_name: b.first_name.unwrap_or_default(),
                last_name: b.last_name,
                email: b.email.unwrap_or_default(),
                company: b.company.unwrap_or_default(),
                source: b.source.unwrap_or_default(),
                status: b.status.unwrap_or_default(),
                owner_user_id: b.owner_user_id.unwrap_or_default(),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .lead
        .ok_or_else(missing("lead"))?;
    Ok(created(
        format!("/api/v1/leads/{}", l.id),
        Some(l.version),
        AJson(lead(l)),
    ))
}

/// One lead.
#[utoipa::path(get, path = "/leads/{id}", tag = "pipeline", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The lead", body = Lead,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_lead(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let l = s
        .backends
        .pipeline(ctx.tenant())?
        .get_lead(s.backends.request(&ctx, pb::GetLeadRequest { id }))
        .await?
        .into_inner()
        .lead
        .ok_or_else(missing("lead"))?;
    Ok(with_etag(l.version, AJson(lead(l))))
}

/// Changes a lead. Honours If-Match; `status: converted` is refused (use convert).
#[utoipa::path(patch, path = "/leads/{id}", tag = "pipeline", security(("bearer" = [])), request_body = UpdateLeadRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed lead", body = Lead,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_lead(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateLeadRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateLeadRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut mask = Mask::default();
    mask.set_or_clear("first_name", b.first_name, &mut req.first_name);
    mask.set("lastName", "last_name", b.last_name, &mut req.last_name)?;
    mask.set_or_clear("email", b.email, &mut req.email);
    mask.set_or_clear("company", b.company, &mut req.company);
    mask.set_or_clear("source", b.source, &mut req.source);
    mask.set("status", "status", b.status, &mut req.status)?;
    mask.set(
        "ownerUserId",
        "owner_user_id",
        b.owner_user_id,
        &mut req.owner_user_id,
    )?;
    req.update_mask = Some(mask.finish()?);
    let l = s
        .backends
        .pipeline(ctx.tenant())?
        .update_lead(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .lead
        .ok_or_else(missing("lead"))?;
    Ok(with_etag(l.version, AJson(lead(l))))
}

/// Deletes a lead (soft). Honours If-Match.
#[utoipa::path(delete, path = "/leads/{id}", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_lead(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<StatusCode> {
    let etag = if_match(&headers)?;
    s.backends
        .pipeline(ctx.tenant())?
        .delete_lead(s.backends.request(&ctx, pb::DeleteLeadRequest { id, etag }))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a deleted lead back.
#[utoipa::path(post, path = "/leads/{id}/restore", tag = "pipeline", security(("bearer" = [])),
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "The restored lead", body = Lead,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn restore_lead(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let l = s
        .backends
        .pipeline(ctx.tenant())?
        .restore_lead(s.backends.request(&ctx, pb::RestoreLeadRequest { id }))
        .await?
        .into_inner()
        .lead
        .ok_or_else(missing("lead"))?;
    Ok(with_etag(l.version, AJson(lead(l))))
}

/// Converts a lead: creates (or reuses) an account and a contact in accounts-contacts,
/// optionally an opportunity, and marks the lead converted. A retry after a failure
/// part-way reuses what the first attempt created. Converting twice is a 409.
#[utoipa::path(post, path = "/leads/{id}/convert", tag = "pipeline", security(("bearer" = [])), request_body = Option<ConvertLeadRequest>,
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = IDEMPOTENCY)),
    responses((status = 200, description = "What the lead became", body = ConvertLeadResponse), StdErrors))]
async fn convert_lead(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<ConvertLeadRequest>,
) -> GwResult<AJson<ConvertLeadResponse>> {
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .convert_lead(s.backends.request(
            &ctx,
            pb::ConvertLeadRequest {
                id,
                account_id: b.account_id.unwrap_or_default(),
                contact_id: b.contact_id.unwrap_or_default(),
                create_opportunity: b.create_opportunity.unwrap_or(false),
                opportunity_name: b.opportunity_name.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(ConvertLeadResponse {
        account_id: r.account_id,
        contact_id: r.contact_id,
        opportunity_id: none_if_empty(r.opportunity_id),
    }))
}

// ---- report ---------------------------------------------------------------------------------

/// The pipeline report. `from` and `to` (required, YYYY-MM-DD, inclusive) filter on the
/// opportunities' `closeDate`; opportunities without a close date are left out. Per stage:
/// count, and per currency amount and probability-weighted amount (currencies are never
/// added together); win rate over won and lost; average days from creation to close date
/// of won deals; forecast of open deals by close month per currency. Amounts are left out
/// when the caller's role hides `amountCents`. Needs `report.read`; counts only the
/// opportunities the caller may read.
#[utoipa::path(get, path = "/reports/pipeline", tag = "pipeline", security(("bearer" = [])), params(ReportParams),
    responses((status = 200, description = "The report", body = PipelineReport), StdErrors))]
async fn pipeline_report(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ReportParams>,
) -> GwResult<AJson<PipelineReport>> {
    let r = s
        .backends
        .pipeline(ctx.tenant())?
        .get_pipeline_report(s.backends.request(
            &ctx,
            pb::GetPipelineReportRequest {
                pipeline_id: q.pipeline_id.unwrap_or_default(),
                owner_user_id: q.owner_user_id.unwrap_or_default(),
                from: q.from.unwrap_or_default(),
                to: q.to.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner()
        .report
        .ok_or_else(missing("report"))?;
    Ok(AJson(PipelineReport {
        pipeline_id: r.pipeline_id,
        from: r.from,
        to: r.to,
        stages: r
            .stages
            .into_iter()
            .map(|st| StageReport {
                key: st.key,
                name: st.name,
                probability: st.probability,
                kind: st.kind,
                count: st.count,
                amounts: amounts(st.amounts),
            })
            .collect(),
        won_count: r.won_count,
        lost_count: r.lost_count,
        win_rate: r.win_rate,
        average_days_to_close: r.average_days_to_close,
        forecast: r
            .forecast
            .into_iter()
            .map(|m| MonthForecast {
                month: m.month,
                count: m.count,
                amounts: amounts(m.amounts),
            })
            .collect(),
        amounts_hidden: r.amounts_hidden,
    }))
}

/// The routes of this section.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_pipelines, create_pipeline))
        .routes(routes!(get_pipeline, update_pipeline))
        .routes(routes!(list_opportunities, create_opportunity))
        .routes(routes!(bulk_opportunities))
        .routes(routes!(
            get_opportunity,
            update_opportunity,
            delete_opportunity
        ))
        .routes(routes!(restore_opportunity))
        .routes(routes!(move_opportunity_stage))
        .routes(routes!(opportunity_history))
        .routes(routes!(list_tickets, create_ticket))
        .routes(routes!(get_ticket, update_ticket, delete_ticket))
        .routes(routes!(restore_ticket))
        .routes(routes!(move_ticket_stage))
        .routes(routes!(ticket_history))
        .routes(routes!(list_leads, create_lead))
        .routes(routes!(get_lead, update_lead, delete_lead))
        .routes(routes!(restore_lead))
        .routes(routes!(convert_lead))
        .routes(routes!(pipeline_report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_and_order_become_order_by() {
        let keys = &["created_at", "updated_at", "name"];
        assert_eq!(
            order_by(None, None, keys, false).unwrap(),
            "create_time desc"
        );
        assert_eq!(order_by(Some("name"), None, keys, false).unwrap(), "name");
        assert_eq!(
            order_by(Some("name"), Some("desc"), keys, false).unwrap(),
            "name desc"
        );
        assert_eq!(
            order_by(Some("nope"), None, keys, false)
                .unwrap_err()
                .0
                .fields[0]
                .field,
            "sort"
        );
        assert_eq!(
            order_by(None, Some("up"), keys, false)
                .unwrap_err()
                .0
                .fields[0]
                .field,
            "order"
        );
        assert_eq!(
            order_by(Some("custom.tier"), Some("desc"), keys, true).unwrap(),
            "custom.tier desc"
        );
        assert_eq!(
            order_by(Some("custom.tier"), None, keys, true).unwrap(),
            "custom.tier"
        );
        for bad in ["custom.tier", "custom.", "custom.Tier"] {
            let custom = bad != "custom.tier";
            assert_eq!(
                order_by(Some(bad), None, keys, custom)
                    .unwrap_err()
                    .0
                    .fields[0]
                    .field,
                "sort",
                "{bad}"
            );
        }
        assert_eq!(page_size(Some(0)).unwrap_err().0.fields[0].field, "limit");
        assert_eq!(page_size(Some(500)).unwrap_err().0.fields[0].field, "limit");
        assert_eq!(page_size(None).unwrap(), 0);
    }
}
