//! Small pieces every gRPC service uses the same way: timestamps, etags, path ids, the
//! fingerprint that ties an idempotent create's request id to its content, and
//! `google.protobuf.Struct` as JSON.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};
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

fn pb_to_json(v: prost_types::Value) -> Json {
    use prost_types::value::Kind as K;
    match v.kind {
        None | Some(K::NullValue(_)) => Json::Null,
        Some(K::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Json::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
            }
        }
        Some(K::StringValue(s)) => Json::String(s),
        Some(K::BoolValue(b)) => Json::Bool(b),
        Some(K::StructValue(s)) => Json::Object(struct_to_map(Some(s))),
        Some(K::ListValue(l)) => Json::Array(l.values.into_iter().map(pb_to_json).collect()),
    }
}

/// A Struct as a JSON object (none: empty); whole numbers become integers.
pub fn struct_to_map(s: Option<prost_types::Struct>) -> Map<String, Json> {
    s.map(|s| {
        s.fields
            .into_iter()
            .map(|(k, v)| (k, pb_to_json(v)))
            .collect()
    })
    .unwrap_or_default()
}

fn json_to_pb(v: &Json) -> prost_types::Value {
    use prost_types::value::Kind as K;
    let kind = match v {
        Json::Null => K::NullValue(0),
        Json::Bool(b) => K::BoolValue(*b),
        Json::Number(n) => K::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => K::StringValue(s.clone()),
        Json::Array(a) => K::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_pb).collect(),
        }),
        Json::Object(m) => K::StructValue(map_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a Struct.
pub fn map_to_struct(m: &Map<String, Json>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), json_to_pb(v))).collect(),
    }
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

    #[test]
    fn structs_round_trip() {
        let m = serde_json::json!({"a": 1, "b": 2.5, "c": "x", "d": [true, null], "e": {"f": "g"}});
        let m = m.as_object().unwrap();
        assert_eq!(&struct_to_map(Some(map_to_struct(m))), m);
        assert!(struct_to_map(None).is_empty());
    }
}
