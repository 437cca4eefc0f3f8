//! Shared REST shapes: pages, problems, list parameters, times.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_kit::ApiError;
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoResponses, ToSchema,
    openapi::{ContentBuilder, RefOr, ResponseBuilder, response::Response as OaResponse},
};

/// Largest page.
pub const MAX_LIMIT: i64 = 200;
/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: i64 = 50;

/// An error (RFC 9457 problem details).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable reason: VALIDATION_FAILED, NOT_FOUND, UNAUTHENTICATED, ...
    pub code: String,
    /// The X-Request-Id of the request.
    #[schema(required = true)]
    pub request_id: Option<String>,
    pub errors: Vec<ProblemField>,
    /// For RULE_VIOLATION (422): the business rule that was broken, e.g. `required_fields`,
    /// `manager_required`, `allowed_transitions`, `retired_stage`, `stage_in_use`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub rule: Option<String>,
}

/// One invalid field.
#[derive(Serialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub message: String,
}

/// The error responses every route may give, documented once.
pub struct StdErrors;

impl IntoResponses for StdErrors {
    fn responses() -> BTreeMap<String, RefOr<OaResponse>> {
        [
            ("400", "Invalid input; `errors` names each field"),
            ("401", "Missing or invalid access token"),
            ("403", "The caller's role does not allow this"),
            ("404", "No such record in the caller's tenant"),
            (
                "409",
                "Conflicts with existing data or an in-flight request",
            ),
            ("412", "If-Match does not match the current version"),
            ("413", "Body too large"),
            ("415", "Content-Type must be application/json"),
            (
                "422",
                "Idempotency-Key reused with another body, or a business rule",
            ),
            ("429", "Rate limit exceeded; see Retry-After"),
            ("500", "Internal error"),
            ("503", "A dependency is unavailable"),
            ("504", "The request took too long"),
        ]
        .into_iter()
        .map(|(code, desc)| {
            let r = ResponseBuilder::new()
                .description(desc)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "Problem",
                        ))))
                        .build(),
                )
                .build();
            (code.to_owned(), RefOr::T(r))
        })
        .collect()
    }
}

/// `limit` and `cursor` of a list.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Opaque cursor from the previous page's `nextCursor`.
    pub cursor: Option<String>,
}

impl ListParams {
    /// Validated page size and token for gRPC.
    pub fn grpc(&self) -> Result<(i32, String), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        Ok((limit as i32, self.cursor.clone().unwrap_or_default()))
    }
}

/// The next cursor, or null at the end.
pub fn next_cursor(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

/// RFC 3339 UTC with milliseconds.
pub fn time(ts: Option<prost_types::Timestamp>) -> Option<String> {
    ts.and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Renames gRPC field names in errors to the REST names partners see: snake_case proto
/// paths become camelCase JSON paths, and list, mask and etag fields become the parameters
/// and headers that carry them in REST.
pub fn rest_fields(mut e: ApiError) -> ApiError {
    for f in &mut e.fields {
        f.field = rest_field(&f.field);
    }
    e
}

fn rest_field(field: &str) -> String {
    match field {
        "page_size" => return "limit".into(),
        "page_token" => return "cursor".into(),
        "order_by" => return "sort".into(),
        "query" => return "q".into(),
        "update_mask" => return "body".into(),
        "etag" => return "If-Match".into(),
        "request_id" => return "Idempotency-Key".into(),
        _ => {}
    }
    // Custom field keys are the partner's own names, used as they are.
    if field.starts_with("custom.") {
        return field.to_owned();
    }
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<Option<T>>`: an absent
/// field stays `None`, an explicit JSON `null` becomes `Some(None)`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Largest magnitude up to which every integer is exact in an f64 (2^53).
const EXACT_F64_INT: f64 = 9_007_199_254_740_992.0;

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_to_struct(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(prost_types::NullValue::NullValue as i32),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A `google.protobuf.Struct` as a JSON object; integral numbers print without ".0".
pub fn struct_to_json(s: prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(struct_to_map(s))
}

/// A `google.protobuf.Struct` as a JSON map.
pub fn struct_to_map(s: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() <= EXACT_F64_INT {
                J::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_fields_become_rest_fields() {
        assert_eq!(rest_field("tenant_slug"), "tenantSlug");
        assert_eq!(
            rest_field("permissions[0].object_type"),
            "permissions[0].objectType"
        );
        assert_eq!(rest_field("page_size"), "limit");
        assert_eq!(rest_field("email"), "email");
        assert_eq!(rest_field("order_by"), "sort");
        assert_eq!(rest_field("query"), "q");
        assert_eq!(rest_field("owner_user_id"), "ownerUserId");
        assert_eq!(rest_field("custom.deal_size"), "custom.deal_size");
    }

    #[test]
    fn structs_round_trip_through_json() {
        let doc = serde_json::json!({
            "n": 3, "x": 2.5, "big": 1e300, "neg": -7, "s": "a", "b": true, "z": null,
            "list": [1, "two", {"k": [false]}],
        });
        let serde_json::Value::Object(m) = &doc else {
            unreachable!()
        };
        let back = struct_to_json(json_to_struct(m));
        assert_eq!(back, doc);
        assert_eq!(back["n"].to_string(), "3");
        assert_eq!(back["neg"].to_string(), "-7");
        assert_eq!(back["x"].to_string(), "2.5");
    }

    #[derive(Deserialize)]
    struct Patch {
        #[serde(default, deserialize_with = "present")]
        email: Option<Option<String>>,
    }

    #[test]
    fn absent_and_null_differ() {
        let p: Patch = serde_json::from_str("{}").unwrap();
        assert_eq!(p.email, None);
        let p: Patch = serde_json::from_str(r#"{"email": null}"#).unwrap();
        assert_eq!(p.email, Some(None));
        let p: Patch = serde_json::from_str(r#"{"email": "a@b.c"}"#).unwrap();
        assert_eq!(p.email, Some(Some("a@b.c".into())));
    }
}
