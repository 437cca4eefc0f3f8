//! Small pieces every gRPC service uses the same way: timestamps, etags, path ids and the
//! fingerprint that ties an idempotent create's request id to its content.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{ApiError, ApiResult};

/// A time as a protobuf timestamp.
pub fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

/// What identifies a create request for idempotency: a hash of its encoding (callers clear
/// the request id, and secrets, before hashing).
pub fn fingerprint<M: prost::Message>(m: &M) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(m.encode_to_vec()))
}

/// The etag of a version.
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// Reads an etag back into a version; empty means "no precondition".
pub fn parse_etag(etag: &str) -> ApiResult<Option<i64>> {
    if etag.is_empty() {
        return Ok(None);
    }
    etag.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::invalid("etag", "not an etag of this resource"))
}

/// Ids in paths that are not UUIDs name nothing: "not found", like any other unknown id.
pub fn path_id(what: &str, s: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(s).map_err(|_| ApiError::not_found(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip() {
        assert_eq!(parse_etag(&etag(7)).unwrap(), Some(7));
        assert_eq!(parse_etag("\"7\"").unwrap(), Some(7));
        assert_eq!(parse_etag("").unwrap(), None);
        assert_eq!(parse_etag("W/\"x\"").unwrap_err().fields[0].field, "etag");
        assert_eq!(
            path_id("contact", "nope").unwrap_err().code,
            crate::ErrorCode::NotFound
        );
    }
}
