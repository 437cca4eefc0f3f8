//! REST routes, one module per API.md section, and the helpers they share.

pub mod accounts;
pub mod identity;
pub mod pipeline;
pub mod search;
pub mod timeline;
pub mod webhooks;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use crm_kit::{ApiError, ErrorCode};
use serde_json::{Map, Value};

use crate::{
    dto::{json_to_struct, struct_to_map},
    error::{GwError, GwResult},
};

/// An empty string as `None`.
pub(crate) fn none_if_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The error for a backend answer lacking a part it always sends.
pub(crate) fn missing(what: &str) -> impl FnOnce() -> GwError + '_ {
    move || {
        GwError(ApiError::internal(format!(
            "backend answered without {what}"
        )))
    }
}

/// The fields a PATCH body names, as a gRPC update mask; a body naming none is refused.
pub(crate) fn update_mask<S: Into<String>>(
    paths: impl IntoIterator<Item = S>,
) -> GwResult<prost_types::FieldMask> {
    let paths: Vec<String> = paths.into_iter().map(Into::into).collect();
    if paths.is_empty() {
        return Err(ApiError::invalid("body", "names no field to change").into());
    }
    Ok(prost_types::FieldMask { paths })
}

/// The custom values of a record's answer: none when the caller's role hides them all
/// (`custom` is among the redacted fields), else without the keys it hides (`custom.<key>`).
pub(crate) fn visible_custom(
    redacted: &[String],
    custom: Option<prost_types::Struct>,
) -> Option<Map<String, Value>> {
    let hidden = |f: &str| redacted.iter().any(|r| r == f);
    if hidden("custom") {
        return None;
    }
    let mut m = custom.map(struct_to_map).unwrap_or_default();
    m.retain(|k, _| !hidden(&format!("custom.{k}")));
    Some(m)
}

/// The custom values a PATCH body names, one update-mask path per key (`custom.<key>`) added
/// to `paths`; a null value clears its key, and other keys keep theirs.
pub(crate) fn custom_changes(
    paths: &mut Vec<String>,
    body: Option<Option<Map<String, Value>>>,
) -> GwResult<Option<prost_types::Struct>> {
    match body {
        None => Ok(None),
        Some(None) => Err(ApiError::invalid(
            "custom",
            "must be an object; set a key to null to clear it",
        )
        .into()),
        Some(Some(m)) => {
            let mut kept = Map::new();
            for (k, v) in m {
                paths.push(format!("custom.{k}"));
                if !v.is_null() {
                    kept.insert(k, v);
                }
            }
            Ok(Some(json_to_struct(&kept)))
        }
    }
}

/// A strong entity tag for a version.
pub(crate) fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The If-Match header as the service's etag; `*` matches any version.
pub(crate) fn if_match(headers: &HeaderMap) -> GwResult<String> {
    match headers.get(header::IF_MATCH) {
        None => Ok(String::new()),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::invalid("If-Match", "must be an entity tag"))?
                .trim();
            if s == "*" {
                return Ok(String::new());
            }
            let inner = s.trim_start_matches("W/").trim_matches('"');
            if inner.parse::<i64>().is_err() {
                return Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    "If-Match does not match the current version",
                )
                .into());
            }
            Ok(inner.to_owned())
        }
    }
}

/// A response with the ETag of `version`.
pub(crate) fn with_etag(version: i64, body: impl IntoResponse) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(header::ETAG, etag(version));
    res
}

/// A 201 with Location and, for versioned records, ETag.
pub(crate) fn created(location: String, version: Option<i64>, body: impl IntoResponse) -> Response {
    let mut res = (StatusCode::CREATED, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(v) = version {
        res.headers_mut().insert(header::ETAG, etag(v));
    }
    res
}
