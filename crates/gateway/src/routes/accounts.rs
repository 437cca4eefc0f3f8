//! The accounts and contacts section of the partner API: contacts, accounts, the links
//! between them, bulk contact changes and custom field definitions, over
//! `crm.accounts.v1.AccountsService`.

use axum::{
    Json as AJson,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use crm_kit::ApiError;
use crm_proto::accounts as pb;
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
    dto::{ListParams, StdErrors, json_to_struct, next_cursor, present, time},
    error::{GwResult, Json, OptionalJson, Query},
};

// ---- shapes ----------------------------------------------------------------------------

/// Sort direction.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// A contact in a list. Fields the caller's role hides are left out of the object.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactSummary {
    pub id: String,
    /// The primary account; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub account_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub last_name: Option<String>,
    /// Trimmed and lower-cased; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub email: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

/// A contact. Fields the caller's role hides are left out of the object (custom values:
/// out of `custom`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    pub id: String,
    /// The primary account; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub account_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub last_name: Option<String>,
    /// Trimmed and lower-cased; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub email: Option<Option<String>>,
    /// As entered; null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub phone: Option<Option<String>>,
    /// `phone` in E.164 form; null when it does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub phone_e164: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub title: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// Custom field values by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub custom: Option<Map<String, Value>>,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    /// The user who created the contact; null when unknown.
    #[schema(required = true)]
    pub created_by: Option<String>,
}

/// An account. Fields the caller's role hides are left out of the object (custom values:
/// out of `custom`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub name: Option<String>,
    /// Null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub website: Option<Option<String>>,
    /// Null when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub industry: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// Custom field values by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, required = false)]
    pub custom: Option<Map<String, Value>>,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
    /// The user who created the account; null when unknown.
    #[schema(required = true)]
    pub created_by: Option<String>,
}

/// A contact linked to an account.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountContact {
    #[serde(flatten)]
    pub contact: ContactSummary,
    /// The role of the link; null when none (or when the account is only the primary one).
    #[schema(required = true)]
    pub role: Option<String>,
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
page!(ContactPage, ContactSummary);
page!(AccountPage, Account);
page!(AccountContactPage, AccountContact);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateContactRequest {
    #[schema(example = "Ada")]
    pub first_name: String,
    #[schema(example = "Lovelace")]
    pub last_name: String,
    #[schema(example = "ada@example.com")]
    pub email: Option<String>,
    #[schema(example = "+44 20 7946 0958")]
    pub phone: Option<String>,
    pub title: Option<String>,
    /// The primary account.
    pub account_id: Option<String>,
    /// Default: the caller.
    pub owner_user_id: Option<String>,
    /// Values by custom field key, checked against the tenant's definitions.
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Map<String, Value>>,
}

/// Fields left out keep their value; `null` clears the fields that may be empty.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateContactRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub last_name: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub email: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub phone: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub title: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub account_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// Sets the keys it names (a null value clears that key); other keys keep their values.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object, required = false)]
    pub custom: Option<Option<Map<String, Value>>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateAccountRequest {
    #[schema(example = "Acme Corp")]
    pub name: String,
    #[schema(example = "https://acme.example")]
    pub website: Option<String>,
    #[schema(example = "manufacturing")]
    pub industry: Option<String>,
    /// Default: the caller.
    pub owner_user_id: Option<String>,
    /// Values by custom field key, checked against the tenant's definitions.
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Map<String, Value>>,
}

/// Fields left out keep their value; `null` clears the fields that may be empty.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateAccountRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub name: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub website: Option<Option<String>>,
    /// Null clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = false)]
    pub industry: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, required = false)]
    pub owner_user_id: Option<Option<String>>,
    /// Sets the keys it names (a null value clears that key); other keys keep their values.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Object, required = false)]
    pub custom: Option<Option<Map<String, Value>>>,
}

/// What a bulk call does to each contact.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum BulkAction {
    AssignOwner,
    Delete,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BulkContactsRequest {
    #[schema(value_type = BulkAction)]
    pub action: String,
    /// 1 to 1000 distinct contact ids.
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
    /// The new owner, for assign_owner.
    pub owner_user_id: Option<String>,
}

/// The outcome for one id.
#[derive(Serialize, ToSchema)]
pub struct BulkResult {
    pub id: String,
    /// "ok", or the error code: NOT_FOUND, PERMISSION_DENIED, ...
    pub status: String,
    /// Why it failed; left out on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false)]
    pub message: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkContactsResponse {
    pub results: Vec<BulkResult>,
}

/// The optional body of a link.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LinkContactRequest {
    /// "decision maker", "billing", ...; absent or null for none. Linking again changes it.
    #[schema(example = "decision maker")]
    pub role: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactLink {
    pub account_id: String,
    pub contact_id: String,
    /// Null when none.
    #[schema(required = true)]
    pub role: Option<String>,
}

/// The type of a custom field's values.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum CustomFieldType {
    Text,
    Number,
    /// "YYYY-MM-DD".
    Date,
    Boolean,
    /// One of `options`.
    Select,
    /// Distinct values of `options`.
    Multiselect,
}

/// The records a custom field belongs to.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ObjectType {
    Account,
    Contact,
    Opportunity,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomField {
    pub id: String,
    #[schema(value_type = ObjectType)]
    pub object_type: String,
    pub key: String,
    pub label: String,
    #[serde(rename = "type")]
    #[schema(value_type = CustomFieldType)]
    pub kind: String,
    pub options: Vec<String>,
    pub required: bool,
    pub version: i64,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// RFC 3339 UTC.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CustomFieldList {
    pub items: Vec<CustomField>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateCustomFieldRequest {
    #[schema(value_type = ObjectType)]
    pub object_type: String,
    /// Lowercase letters, digits and underscores, starting with a letter; unique per object type.
    #[schema(pattern = r"^[a-z][a-z0-9_]*$", example = "deal_size")]
    pub key: String,
    #[schema(example = "Deal size")]
    pub label: String,
    #[serde(rename = "type")]
    #[schema(value_type = CustomFieldType)]
    pub kind: String,
    /// The allowed values of select and multiselect fields.
    pub options: Option<Vec<String>>,
    /// Default false.
    pub required: Option<bool>,
}

/// Fields left out keep their value; the key and type never change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateCustomFieldRequest {
    pub label: Option<String>,
    /// Replaces every option.
    pub options: Option<Vec<String>>,
    pub required: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ContactListParams {
    /// Partial text over first name, last name and e-mail.
    pub q: Option<String>,
    /// Only contacts whose primary account is this one (a UUID).
    pub account_id: Option<String>,
    /// Only contacts this user owns (a UUID).
    pub owner_user_id: Option<String>,
    /// created_at (default), last_name, updated_at or custom.<key>.
    #[param(pattern = r"^(created_at|last_name|updated_at|custom\.[a-z][a-z0-9_]*)$")]
    pub sort: Option<String>,
    /// Default: desc for created_at and updated_at, asc for the others.
    #[param(value_type = Option<SortOrder>, inline)]
    pub order: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Advanced: an AIP-160 filter over id, first_name, last_name, email, phone, title,
    /// account_id, owner_user_id, create_time, update_time and custom.<key>, e.g.
    /// `title = "CFO" AND create_time > "2024-01-01T00:00:00Z"`; combined with AND with
    /// the other parameters.
    pub filter: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AccountListParams {
    /// Partial text over name and website.
    pub q: Option<String>,
    /// Only accounts this user owns (a UUID).
    pub owner_user_id: Option<String>,
    /// Only accounts of this industry (exact match).
    pub industry: Option<String>,
    /// created_at (default), name, updated_at or custom.<key>.
    #[param(pattern = r"^(created_at|name|updated_at|custom\.[a-z][a-z0-9_]*)$")]
    pub sort: Option<String>,
    /// Default: desc for created_at and updated_at, asc for the others.
    #[param(value_type = Option<SortOrder>, inline)]
    pub order: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
    /// Advanced: an AIP-160 filter over id, name, website, industry, owner_user_id,
    /// create_time, update_time and custom.<key>, e.g. `website = "https://acme.example"`;
    /// combined with AND with the other parameters.
    pub filter: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CustomFieldParams {
    /// Only the fields of this object type; every type when absent.
    #[param(value_type = Option<ObjectType>, inline)]
    pub object_type: Option<String>,
}

// ---- list parameters -----------------------------------------------------------------------

/// A REST sort name: its gRPC name and whether it sorts descending unless told.
struct SortKey {
    rest: &'static str,
    grpc: &'static str,
    desc_by_default: bool,
}

const CONTACT_SORTS: &[SortKey] = &[
    SortKey {
        rest: "created_at",
        grpc: "create_time",
        desc_by_default: true,
    },
    SortKey {
        rest: "last_name",
        grpc: "last_name",
        desc_by_default: false,
    },
    SortKey {
        rest: "updated_at",
        grpc: "update_time",
        desc_by_default: true,
    },
];

const ACCOUNT_SORTS: &[SortKey] = &[
    SortKey {
        rest: "created_at",
        grpc: "create_time",
        desc_by_default: true,
    },
    SortKey {
        rest: "name",
        grpc: "name",
        desc_by_default: false,
    },
    SortKey {
        rest: "updated_at",
        grpc: "update_time",
        desc_by_default: true,
    },
];

fn is_custom_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `sort` and `order` as a gRPC `order_by`; no sort means created_at.
fn order_by(sort: Option<&str>, order: Option<&str>, keys: &[SortKey]) -> Result<String, ApiError> {
    let sort = sort.unwrap_or("created_at");
    let (grpc, desc_by_default) = match sort.strip_prefix("custom.") {
        Some(key) if is_custom_key(key) => (sort, false),
        _ => match keys.iter().find(|k| k.rest == sort) {
            Some(k) => (k.grpc, k.desc_by_default),
            None => {
                let names: Vec<&str> = keys.iter().map(|k| k.rest).collect();
                return Err(ApiError::invalid(
                    "sort",
                    format!("must be one of {} or custom.<key>", names.join(", ")),
                ));
            }
        },
    };
    let desc = match order {
        None => desc_by_default,
        Some("asc") => false,
        Some("desc") => true,
        Some(_) => return Err(ApiError::invalid("order", "must be asc or desc")),
    };
    Ok(if desc {
        format!("{grpc} desc")
    } else {
        grpc.to_owned()
    })
}

/// A UUID query parameter in canonical form.
fn uuid_param(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|v| {
        uuid::Uuid::parse_str(v.trim())
            .map(|u| u.to_string())
            .map_err(|_| ApiError::invalid(name, "must be a UUID"))
    })
    .transpose()
}

/// A string literal of the filter language.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `field = "value"` terms and the caller's own filter, joined by AND.
fn filter(terms: Vec<(&str, String)>, raw: Option<String>) -> String {
    let mut parts: Vec<String> = terms
        .into_iter()
        .map(|(field, value)| format!("{field} = {}", quote(&value)))
        .collect();
    if let Some(raw) = raw.filter(|r| !r.trim().is_empty()) {
        parts.push(format!("({raw})"));
    }
    parts.join(" AND ")
}

// ---- conversions -------------------------------------------------------------------------

/// The fields a record's answer left out because the caller's role hides them.
struct Redacted(Vec<String>);

impl Redacted {
    fn shows(&self, field: &str) -> bool {
        !self.0.iter().any(|f| f == field)
    }

    /// A field that always has a value.
    fn text(&self, field: &str, v: String) -> Option<String> {
        self.shows(field).then_some(v)
    }

    /// A field that may be empty: null then.
    fn opt(&self, field: &str, v: String) -> Option<Option<String>> {
        self.shows(field).then(|| none_if_empty(v))
    }

    fn custom(&self, s: Option<prost_types::Struct>) -> Option<Map<String, Value>> {
        visible_custom(&self.0, s)
    }
}

fn contact_summary(c: pb::Contact) -> ContactSummary {
    let r = Redacted(c.redacted_fields);
    ContactSummary {
        id: c.id,
        account_id: r.opt("accountId", c.account_id),
        first_name: r.text("firstName", c.first_name),
        last_name: r.text("lastName", c.last_name),
        email: r.opt("email", c.email),
        owner_user_id: r.opt("ownerUserId", c.owner_user_id),
        updated_at: time(c.update_time),
    }
}

fn contact(c: pb::Contact) -> Contact {
    let r = Redacted(c.redacted_fields);
    Contact {
        id: c.id,
        account_id: r.opt("accountId", c.account_id),
        first_name: r.text("firstName", c.first_name),
        last_name: r.text("lastName", c.last_name),
        email: r.opt("email", c.email),
        phone: r.opt("phone", c.phone),
        phone_e164: r.opt("phoneE164", c.phone_e164),
        title: r.opt("title", c.title),
        owner_user_id: r.opt("ownerUserId", c.owner_user_id),
        custom: r.custom(c.custom),
        version: c.version,
        created_at: time(c.create_time),
        updated_at: time(c.update_time),
        created_by: none_if_empty(c.created_by),
    }
}

fn account(a: pb::Account) -> Account {
    let r = Redacted(a.redacted_fields);
    Account {
        id: a.id,
        name: r.text("name", a.name),
        website: r.opt("website", a.website),
        industry: r.opt("industry", a.industry),
        owner_user_id: r.opt("ownerUserId", a.owner_user_id),
        custom: r.custom(a.custom),
        version: a.version,
        created_at: time(a.create_time),
        updated_at: time(a.update_time),
        created_by: none_if_empty(a.created_by),
    }
}

fn field_type_str(t: i32) -> String {
    match pb::CustomFieldType::try_from(t) {
        Ok(pb::CustomFieldType::Text) => "text",
        Ok(pb::CustomFieldType::Number) => "number",
        Ok(pb::CustomFieldType::Date) => "date",
        Ok(pb::CustomFieldType::Boolean) => "boolean",
        Ok(pb::CustomFieldType::Select) => "select",
        Ok(pb::CustomFieldType::Multiselect) => "multiselect",
        _ => "unspecified",
    }
    .into()
}

fn field_type_pb(t: &str) -> Result<pb::CustomFieldType, ApiError> {
    Ok(match t {
        "text" => pb::CustomFieldType::Text,
        "number" => pb::CustomFieldType::Number,
        "date" => pb::CustomFieldType::Date,
        "boolean" => pb::CustomFieldType::Boolean,
        "select" => pb::CustomFieldType::Select,
        "multiselect" => pb::CustomFieldType::Multiselect,
        _ => {
            return Err(ApiError::invalid(
                "type",
                "must be text, number, date, boolean, select or multiselect",
            ));
        }
    })
}

fn custom_field(f: pb::CustomField) -> CustomField {
    CustomField {
        id: f.id,
        object_type: f.object_type,
        key: f.key,
        label: f.label,
        kind: field_type_str(f.r#type),
        options: f.options,
        required: f.required,
        version: f.version,
        created_at: time(f.create_time),
        updated_at: time(f.update_time),
    }
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

    /// The custom values a body names, one mask path per key; null values clear their key.
    fn custom(
        &mut self,
        v: Option<Option<Map<String, Value>>>,
    ) -> GwResult<Option<prost_types::Struct>> {
        custom_changes(&mut self.0, v)
    }

    fn finish(self) -> GwResult<prost_types::FieldMask> {
        update_mask(self.0)
    }
}

// ---- contacts ----------------------------------------------------------------------------

/// Contacts of the tenant the caller may read.
///
/// Sorted by `sort` (default created_at); `order` defaults to desc for created_at and
/// updated_at, asc for last_name and custom fields.
#[utoipa::path(get, path = "/contacts", tag = "contacts", security(("bearer" = [])), params(ContactListParams),
    responses((status = 200, description = "A page of contacts", body = ContactPage), StdErrors))]
async fn list_contacts(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ContactListParams>,
) -> GwResult<AJson<ContactPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let mut terms = Vec::new();
    if let Some(id) = uuid_param("accountId", q.account_id)? {
        terms.push(("account_id", id));
    }
    if let Some(id) = uuid_param("ownerUserId", q.owner_user_id)? {
        terms.push(("owner_user_id", id));
    }
    let order_by = order_by(q.sort.as_deref(), q.order.as_deref(), CONTACT_SORTS)?;
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let r = cell
        .list_contacts(s.backends.request(
            &ctx,
            pb::ListContactsRequest {
                page_size,
                page_token,
                filter: filter(terms, q.filter),
                order_by,
                query: q.q.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(ContactPage {
        items: r.contacts.into_iter().map(contact_summary).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates a contact.
#[utoipa::path(post, path = "/contacts", tag = "contacts", security(("bearer" = [])), request_body = CreateContactRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Contact created", body = Contact,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateContactRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let c = cell
        .create_contact(s.backends.request(
            &ctx,
            pb::CreateContactRequest {
                first_name: b.first_name,
                last_name: b.last_name,
                email: b.email.unwrap_or_default(),
                phone: b.phone.unwrap_or_default(),
                title: b.title.unwrap_or_default(),
                account_id: b.account_id.unwrap_or_default(),
                owner_user_id: b.owner_user_id.unwrap_or_default(),
                custom: b.custom.as_ref().map(json_to_struct),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .contact
        .ok_or_else(missing("contact"))?;
    Ok(created(
        format!("/api/v1/contacts/{}", c.id),
        Some(c.version),
        AJson(contact(c)),
    ))
}

/// One contact.
#[utoipa::path(get, path = "/contacts/{id}", tag = "contacts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The contact", body = Contact,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let c = cell
        .get_contact(s.backends.request(&ctx, pb::GetContactRequest { id }))
        .await?
        .into_inner()
        .contact
        .ok_or_else(missing("contact"))?;
    Ok(with_etag(c.version, AJson(contact(c))))
}

/// Changes a contact. Honours If-Match.
#[utoipa::path(patch, path = "/contacts/{id}", tag = "contacts", security(("bearer" = [])), request_body = UpdateContactRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed contact", body = Contact,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateContactRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateContactRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut mask = Mask::default();
    mask.set("firstName", "first_name", b.first_name, &mut req.first_name)?;
    mask.set("lastName", "last_name", b.last_name, &mut req.last_name)?;
    mask.set_or_clear("email", b.email, &mut req.email);
    mask.set_or_clear("phone", b.phone, &mut req.phone);
    mask.set_or_clear("title", b.title, &mut req.title);
    mask.set_or_clear("account_id", b.account_id, &mut req.account_id);
    mask.set(
        "ownerUserId",
        "owner_user_id",
        b.owner_user_id,
        &mut req.owner_user_id,
    )?;
    req.custom = mask.custom(b.custom)?;
    req.update_mask = Some(mask.finish()?);
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let c = cell
        .update_contact(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .contact
        .ok_or_else(missing("contact"))?;
    Ok(with_etag(c.version, AJson(contact(c))))
}

/// Deletes a contact (soft: restore brings it back). Honours If-Match.
#[utoipa::path(delete, path = "/contacts/{id}", tag = "contacts", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<StatusCode> {
    let etag = if_match(&headers)?;
    let mut cell = s.backends.accounts(ctx.tenant())?;
    cell.delete_contact(
        s.backends
            .request(&ctx, pb::DeleteContactRequest { id, etag }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a deleted contact back.
#[utoipa::path(post, path = "/contacts/{id}/restore", tag = "contacts", security(("bearer" = [])),
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 200, description = "The restored contact", body = Contact,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn restore_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let c = cell
        .restore_contact(s.backends.request(&ctx, pb::RestoreContactRequest { id }))
        .await?
        .into_inner()
        .contact
        .ok_or_else(missing("contact"))?;
    Ok(with_etag(c.version, AJson(contact(c))))
}

/// Assigns an owner to, or deletes, up to 1000 contacts; one result per id.
#[utoipa::path(post, path = "/contacts/bulk", tag = "contacts", security(("bearer" = [])), request_body = BulkContactsRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 200, description = "The outcome for each id", body = BulkContactsResponse), StdErrors))]
async fn bulk_contacts(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<BulkContactsRequest>,
) -> GwResult<AJson<BulkContactsResponse>> {
    let action = match b.action.as_str() {
        "assign_owner" => pb::BulkAction::AssignOwner,
        "delete" => pb::BulkAction::Delete,
        _ => return Err(ApiError::invalid("action", "must be assign_owner or delete").into()),
    };
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let r = cell
        .bulk_update_contacts(s.backends.request(
            &ctx,
            pb::BulkUpdateContactsRequest {
                action: action as i32,
                ids: b.ids,
                owner_user_id: b.owner_user_id.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(BulkContactsResponse {
        results: r
            .results
            .into_iter()
            .map(|r| BulkResult {
                id: r.id,
                status: r.status,
                message: none_if_empty(r.message),
            })
            .collect(),
    }))
}

// ---- accounts ----------------------------------------------------------------------------

/// Accounts of the tenant the caller may read.
///
/// Sorted by `sort` (default created_at); `order` defaults to desc for created_at and
/// updated_at, asc for name and custom fields.
#[utoipa::path(get, path = "/accounts", tag = "accounts", security(("bearer" = [])), params(AccountListParams),
    responses((status = 200, description = "A page of accounts", body = AccountPage), StdErrors))]
async fn list_accounts(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<AccountListParams>,
) -> GwResult<AJson<AccountPage>> {
    let (page_size, page_token) = ListParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .grpc()?;
    let mut terms = Vec::new();
    if let Some(id) = uuid_param("ownerUserId", q.owner_user_id)? {
        terms.push(("owner_user_id", id));
    }
    if let Some(industry) = q.industry {
        terms.push(("industry", industry));
    }
    let order_by = order_by(q.sort.as_deref(), q.order.as_deref(), ACCOUNT_SORTS)?;
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let r = cell
        .list_accounts(s.backends.request(
            &ctx,
            pb::ListAccountsRequest {
                page_size,
                page_token,
                filter: filter(terms, q.filter),
                order_by,
                query: q.q.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(AccountPage {
        items: r.accounts.into_iter().map(account).collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Creates an account.
#[utoipa::path(post, path = "/accounts", tag = "accounts", security(("bearer" = [])), request_body = CreateAccountRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Account created", body = Account,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_account(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateAccountRequest>,
) -> GwResult<Response> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let a = cell
        .create_account(s.backends.request(
            &ctx,
            pb::CreateAccountRequest {
                name: b.name,
                website: b.website.unwrap_or_default(),
                industry: b.industry.unwrap_or_default(),
                owner_user_id: b.owner_user_id.unwrap_or_default(),
                custom: b.custom.as_ref().map(json_to_struct),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .account
        .ok_or_else(missing("account"))?;
    Ok(created(
        format!("/api/v1/accounts/{}", a.id),
        Some(a.version),
        AJson(account(a)),
    ))
}

/// One account.
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The account", body = Account,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn get_account(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let a = cell
        .get_account(s.backends.request(&ctx, pb::GetAccountRequest { id }))
        .await?
        .into_inner()
        .account
        .ok_or_else(missing("account"))?;
    Ok(with_etag(a.version, AJson(account(a))))
}

/// Changes an account. Honours If-Match.
#[utoipa::path(patch, path = "/accounts/{id}", tag = "accounts", security(("bearer" = [])), request_body = UpdateAccountRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed account", body = Account,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_account(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateAccountRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateAccountRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut mask = Mask::default();
    mask.set("name", "name", b.name, &mut req.name)?;
    mask.set_or_clear("website", b.website, &mut req.website);
    mask.set_or_clear("industry", b.industry, &mut req.industry);
    mask.set(
        "ownerUserId",
        "owner_user_id",
        b.owner_user_id,
        &mut req.owner_user_id,
    )?;
    req.custom = mask.custom(b.custom)?;
    req.update_mask = Some(mask.finish()?);
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let a = cell
        .update_account(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .account
        .ok_or_else(missing("account"))?;
    Ok(with_etag(a.version, AJson(account(a))))
}

/// Deletes an account (soft: restore brings it back). Honours If-Match.
#[utoipa::path(delete, path = "/accounts/{id}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being deleted")),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_account(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> GwResult<StatusCode> {
    let etag = if_match(&headers)?;
    let mut cell = s.backends.accounts(ctx.tenant())?;
    cell.delete_account(
        s.backends
            .request(&ctx, pb::DeleteAccountRequest { id, etag }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Brings a deleted account back.
#[utoipa::path(post, path = "/accounts/{id}/restore", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 200, description = "The restored account", body = Account,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn restore_account(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<Response> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let a = cell
        .restore_account(s.backends.request(&ctx, pb::RestoreAccountRequest { id }))
        .await?
        .into_inner()
        .account
        .ok_or_else(missing("account"))?;
    Ok(with_etag(a.version, AJson(account(a))))
}

/// Contacts linked to an account, by a link or as their primary account.
#[utoipa::path(get, path = "/accounts/{id}/contacts", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path), ListParams),
    responses((status = 200, description = "A page of linked contacts", body = AccountContactPage), StdErrors))]
async fn list_account_contacts(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<ListParams>,
) -> GwResult<AJson<AccountContactPage>> {
    let (page_size, page_token) = q.grpc()?;
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let r = cell
        .list_account_contacts(s.backends.request(
            &ctx,
            pb::ListAccountContactsRequest {
                account_id: id,
                page_size,
                page_token,
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(AccountContactPage {
        items: r
            .contacts
            .into_iter()
            .map(|mut c| {
                let role = none_if_empty(std::mem::take(&mut c.link_role));
                AccountContact {
                    contact: contact_summary(c),
                    role,
                }
            })
            .collect(),
        next_cursor: next_cursor(r.next_page_token),
    }))
}

/// Links a contact to an account with an optional role; linking again changes the role.
/// The body may be left out.
#[utoipa::path(put, path = "/accounts/{id}/contacts/{contactId}", tag = "accounts", security(("bearer" = [])),
    request_body = Option<LinkContactRequest>,
    params(("id" = String, Path), ("contactId" = String, Path)),
    responses((status = 200, description = "The link", body = ContactLink), StdErrors))]
async fn link_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Path((account_id, contact_id)): Path<(String, String)>,
    OptionalJson(b): OptionalJson<LinkContactRequest>,
) -> GwResult<AJson<ContactLink>> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let r = cell
        .link_contact(s.backends.request(
            &ctx,
            pb::LinkContactRequest {
                account_id,
                contact_id,
                role: b.role.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(ContactLink {
        account_id: r.account_id,
        contact_id: r.contact_id,
        role: none_if_empty(r.role),
    }))
}

/// Removes the link between a contact and an account.
#[utoipa::path(delete, path = "/accounts/{id}/contacts/{contactId}", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path), ("contactId" = String, Path)),
    responses((status = 204, description = "Unlinked"), StdErrors))]
async fn unlink_contact(
    State(s): State<AppState>,
    ctx: Ctx,
    Path((account_id, contact_id)): Path<(String, String)>,
) -> GwResult<StatusCode> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    cell.unlink_contact(s.backends.request(
        &ctx,
        pb::UnlinkContactRequest {
            account_id,
            contact_id,
        },
    ))
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- custom fields -----------------------------------------------------------------------

/// Custom field definitions of the tenant.
#[utoipa::path(get, path = "/custom-fields", tag = "custom-fields", security(("bearer" = [])), params(CustomFieldParams),
    responses((status = 200, description = "Every definition", body = CustomFieldList), StdErrors))]
async fn list_custom_fields(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<CustomFieldParams>,
) -> GwResult<AJson<CustomFieldList>> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let r = cell
        .list_custom_fields(s.backends.request(
            &ctx,
            pb::ListCustomFieldsRequest {
                object_type: q.object_type.unwrap_or_default(),
            },
        ))
        .await?
        .into_inner();
    Ok(AJson(CustomFieldList {
        items: r.custom_fields.into_iter().map(custom_field).collect(),
    }))
}

/// Defines a custom field of accounts, contacts or opportunities.
#[utoipa::path(post, path = "/custom-fields", tag = "custom-fields", security(("bearer" = [])), request_body = CreateCustomFieldRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$",
        description = "1 to 255 visible ASCII characters; the same key and body replay the first response for 24 hours")),
    responses((status = 201, description = "Custom field created", body = CustomField,
        headers(("Location" = String, description = "URL of the new record"), ("ETag" = String, description = "The version, for If-Match"))),
        StdErrors))]
async fn create_custom_field(
    State(s): State<AppState>,
    ctx: Ctx,
    Json(b): Json<CreateCustomFieldRequest>,
) -> GwResult<Response> {
    let kind = field_type_pb(&b.kind)?;
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let f = cell
        .create_custom_field(s.backends.request(
            &ctx,
            pb::CreateCustomFieldRequest {
                object_type: b.object_type,
                key: b.key,
                label: b.label,
                r#type: kind as i32,
                options: b.options.unwrap_or_default(),
                required: b.required.unwrap_or_default(),
                request_id: String::new(),
            },
        ))
        .await?
        .into_inner()
        .custom_field
        .ok_or_else(missing("custom field"))?;
    Ok(created(
        format!("/api/v1/custom-fields/{}", f.id),
        Some(f.version),
        AJson(custom_field(f)),
    ))
}

/// Changes a custom field's label, options or whether it is required. Honours If-Match.
#[utoipa::path(patch, path = "/custom-fields/{id}", tag = "custom-fields", security(("bearer" = [])), request_body = UpdateCustomFieldRequest,
    params(("id" = String, Path), ("If-Match" = Option<String>, Header, nullable = false, description = "ETag of the version being changed")),
    responses((status = 200, description = "The changed custom field", body = CustomField,
        headers(("ETag" = String, description = "The version, for If-Match"))), StdErrors))]
async fn update_custom_field(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(b): Json<UpdateCustomFieldRequest>,
) -> GwResult<Response> {
    let etag = if_match(&headers)?;
    let mut req = pb::UpdateCustomFieldRequest {
        id,
        etag,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(v) = b.label {
        paths.push("label");
        req.label = v;
    }
    if let Some(v) = b.options {
        paths.push("options");
        req.options = v;
    }
    if let Some(v) = b.required {
        paths.push("required");
        req.required = v;
    }
    req.update_mask = Some(update_mask(paths)?);
    let mut cell = s.backends.accounts(ctx.tenant())?;
    let f = cell
        .update_custom_field(s.backends.request(&ctx, req))
        .await?
        .into_inner()
        .custom_field
        .ok_or_else(missing("custom field"))?;
    Ok(with_etag(f.version, AJson(custom_field(f))))
}

/// Deletes a custom field definition and the values stored under its key.
#[utoipa::path(delete, path = "/custom-fields/{id}", tag = "custom-fields", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), StdErrors))]
async fn delete_custom_field(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> GwResult<StatusCode> {
    let mut cell = s.backends.accounts(ctx.tenant())?;
    cell.delete_custom_field(
        s.backends
            .request(&ctx, pb::DeleteCustomFieldRequest { id }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Routes behind authentication.
pub fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(bulk_contacts))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(restore_contact))
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account, delete_account))
        .routes(routes!(restore_account))
        .routes(routes!(list_account_contacts))
        .routes(routes!(link_contact, unlink_contact))
        .routes(routes!(list_custom_fields, create_custom_field))
        .routes(routes!(update_custom_field, delete_custom_field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_and_order_become_order_by() {
        let ob = |s: Option<&str>, o: Option<&str>| order_by(s, o, CONTACT_SORTS);
        assert_eq!(ob(None, None).unwrap(), "create_time desc");
        assert_eq!(ob(None, Some("asc")).unwrap(), "create_time");
        assert_eq!(ob(Some("last_name"), None).unwrap(), "last_name");
        assert_eq!(
            ob(Some("last_name"), Some("desc")).unwrap(),
            "last_name desc"
        );
        assert_eq!(ob(Some("updated_at"), None).unwrap(), "update_time desc");
        assert_eq!(ob(Some("custom.tier_2"), None).unwrap(), "custom.tier_2");
        assert_eq!(ob(Some("name"), None).unwrap_err().fields[0].field, "sort");
        assert_eq!(
            ob(Some("custom."), None).unwrap_err().fields[0].field,
            "sort"
        );
        assert_eq!(ob(None, Some("up")).unwrap_err().fields[0].field, "order");
        assert_eq!(order_by(Some("name"), None, ACCOUNT_SORTS).unwrap(), "name");
    }

    #[test]
    fn filters_are_joined_and_quoted() {
        assert_eq!(filter(vec![], None), "");
        assert_eq!(filter(vec![], Some("  ".into())), "");
        assert_eq!(
            filter(
                vec![("industry", r#"a "b" \c"#.into())],
                Some("name = \"x\" OR name = \"y\"".into())
            ),
            r#"industry = "a \"b\" \\c" AND (name = "x" OR name = "y")"#
        );
        let id = uuid_param(
            "accountId",
            Some("6F9619FF-8B86-D011-B42D-00C04FC964FF".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(id, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert_eq!(
            uuid_param("accountId", Some("nope".into()))
                .unwrap_err()
                .fields[0]
                .field,
            "accountId"
        );
    }

    #[test]
    fn hidden_fields_are_left_out() {
        let c = pb::Contact {
            id: "c1".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            custom: Some(prost_types::Struct {
                fields: [
                    (
                        "tier".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::NumberValue(2.0)),
                        },
                    ),
                    (
                        "secret".to_owned(),
                        prost_types::Value {
                            kind: Some(prost_types::value::Kind::StringValue("x".into())),
                        },
                    ),
                ]
                .into(),
            }),
            version: 3,
            redacted_fields: vec!["email".into(), "phone".into(), "custom.secret".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(contact(c)).unwrap();
        let o = json.as_object().unwrap();
        assert!(!o.contains_key("email"));
        assert!(!o.contains_key("phone"));
        assert_eq!(o["title"], Value::Null);
        assert_eq!(o["accountId"], Value::Null);
        assert_eq!(o["firstName"], "Ada");
        assert_eq!(json["custom"], serde_json::json!({"tier": 2}));
        let a = pb::Account {
            id: "a1".into(),
            name: "Acme".into(),
            redacted_fields: vec!["custom".into(), "website".into()],
            ..Default::default()
        };
        let json = serde_json::to_value(account(a)).unwrap();
        assert!(!json.as_object().unwrap().contains_key("custom"));
        assert!(!json.as_object().unwrap().contains_key("website"));
        assert_eq!(json["industry"], Value::Null);
    }

    #[test]
    fn patch_masks_name_set_and_cleared_fields() {
        let b: UpdateContactRequest = serde_json::from_str(
            r#"{"email": null, "title": "CFO", "custom": {"tier": 1, "old": null}}"#,
        )
        .unwrap();
        let mut req = pb::UpdateContactRequest::default();
        let mut mask = Mask::default();
        mask.set("firstName", "first_name", b.first_name, &mut req.first_name)
            .unwrap();
        mask.set_or_clear("email", b.email, &mut req.email);
        mask.set_or_clear("title", b.title, &mut req.title);
        let custom = mask.custom(b.custom).unwrap().unwrap();
        let mut paths = mask.finish().unwrap().paths;
        paths.sort();
        assert_eq!(paths, ["custom.old", "custom.tier", "email", "title"]);
        assert_eq!(req.title, "CFO");
        assert_eq!(req.email, "");
        assert_eq!(custom.fields.keys().collect::<Vec<_>>(), ["tier"]);
        let b: UpdateContactRequest = serde_json::from_str(r#"{"firstName": null}"#).unwrap();
        let err = Mask::default()
            .set("firstName", "first_name", b.first_name, &mut req.first_name)
            .unwrap_err();
        assert_eq!(err.0.fields[0].field, "firstName");
        assert!(Mask::default().finish().is_err());
    }
}
