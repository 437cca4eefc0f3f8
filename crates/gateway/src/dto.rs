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
        "update_mask" => return "body".into(),
        "etag" => return "If-Match".into(),
        "request_id" => return "Idempotency-Key".into(),
        _ => {}
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
    }
}
