//! Errors as problem+json (RFC 9457) from the shared error-code table, and request extractors
//! whose rejections name the offending field instead of answering with plain text.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use crm_kit::{ApiError, ErrorCode, error::FieldViolation};
use serde::de::DeserializeOwned;

/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error on its way out; rendered to problem+json by [`render_problems`], which knows the
/// request id.
#[derive(Debug)]
pub struct GwError(pub ApiError);

impl From<ApiError> for GwError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<tonic::Status> for GwError {
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::Internal || s.code() == tonic::Code::Unknown {
            tracing::error!(code = ?s.code(), message = %s.message(), "backend error");
        }
        Self(crate::dto::rest_fields(ApiError::from_status(&s)))
    }
}

/// Marks a response as an error whose body is still to be rendered.
#[derive(Clone, Debug)]
struct PendingProblem(std::sync::Arc<ApiError>);

impl IntoResponse for GwError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = status.into_response();
        if let Some(d) = self.0.retry_after {
            let secs = d.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res.extensions_mut()
            .insert(PendingProblem(std::sync::Arc::new(self.0)));
        res
    }
}

/// Result of a handler.
pub type GwResult<T> = Result<T, GwError>;

/// Renders pending errors, and any bare 4xx/5xx produced outside the handlers (unknown route,
/// wrong method, timeouts, body limits), as problem+json carrying the request id.
pub async fn render_problems(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    render(next.run(req).await, request_id.as_deref())
}

/// Renders a pending or bare error response as problem+json; other responses pass unchanged.
pub fn render(res: Response, request_id: Option<&str>) -> Response {
    let status = res.status();
    let pending = res.extensions().get::<PendingProblem>().cloned();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let err = match pending {
        Some(p) => (*p.0).clone(),
        None if (status.is_client_error() || status.is_server_error())
            && !is_problem
            && !keeps_own_body(&res) =>
        {
            fallback(status)
        }
        None => return res,
    };
    let (mut parts, _) = res.into_parts();
    parts.extensions.remove::<PendingProblem>();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = err.problem(request_id).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Responses that follow another error format on purpose (OAuth 2.0 token errors, the plain
/// text of the health probes).
fn keeps_own_body(res: &Response) -> bool {
    res.headers().contains_key(header::CONTENT_TYPE)
        && res.extensions().get::<OwnErrorFormat>().is_some()
}

/// Set on responses whose error body is already in its final format, as documented for the route.
#[derive(Clone, Copy, Debug)]
pub struct OwnErrorFormat;

fn fallback(status: StatusCode) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::ValidationFailed,
            "method not allowed on this route",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
        }
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            ApiError::new(ErrorCode::Timeout, "the request took too long")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "unsupported content type")
        }
        StatusCode::TOO_MANY_REQUESTS => ApiError::new(ErrorCode::RateLimited, "too many requests"),
        StatusCode::UNAUTHORIZED => ApiError::unauthenticated("authentication required"),
        StatusCode::FORBIDDEN => ApiError::permission_denied("forbidden"),
        s if s.is_client_error() => ApiError::new(ErrorCode::ValidationFailed, "bad request"),
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::new(ErrorCode::Unavailable, "service unavailable")
        }
        _ => ApiError::new(ErrorCode::Internal, "internal error"),
    }
}

/// Turns a serde error path and message into the name of the field at fault.
fn field_of(path: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    // "missing field `email`" and "unknown field `x`, expected ..." name the field themselves;
    // for unknown fields the path already ends with it, for missing ones it is the parent.
    for marker in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(marker)
            && let Some(end) = rest.find('`')
        {
            let name = &rest[..end];
            return if path.is_empty() {
                name.to_owned()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.to_owned()
            } else {
                format!("{path}.{name}")
            };
        }
    }
    if path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    }
}

/// Readable message for a serde error, without the trailing position.
fn clean(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Parses JSON, naming the field of the first error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de)
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = clean(&inner.to_string());
            if inner.is_syntax() || inner.is_eof() {
                return ApiError::invalid("body", format!("malformed JSON: {message}"));
            }
            ApiError::invalid(field_of(&path, &message), message)
        })
        .and_then(|v| {
            // A NUL can only arrive escaped, so most bodies skip the second parse.
            if bytes.windows(6).any(|w| w == b"\\u0000")
                && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(bytes)
                && let Some(field) = nul_field(&doc, String::new())
            {
                return Err(ApiError::invalid(field, NUL_MESSAGE));
            }
            Ok(v)
        })
}

/// Why text with U+0000 is refused: no partner means it, and PostgreSQL cannot store it.
const NUL_MESSAGE: &str = "must not contain NUL (U+0000) characters";

/// The path of the first string (or object key) holding U+0000, in the notation of
/// serde errors (`permissions[0].objectType`); `body` for the top level.
fn nul_field(v: &serde_json::Value, path: String) -> Option<String> {
    let here = || {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.clone()
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => Some(here()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_field(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, item)| {
            let child = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(here())
            } else {
                nul_field(item, child)
            }
        }),
        _ => None,
    }
}

/// A JSON body: `application/json` required, every error names its field.
pub struct Json<T>(pub T);

/// Refuses bodies that are not JSON, naming `Content-Type`.
fn require_json(headers: &axum::http::HeaderMap) -> Result<(), GwError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !(mime.starts_with("application/") && mime.ends_with("+json"))
    {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "content-type must be application/json",
        )
        .with_fields(vec![FieldViolation {
            field: "Content-Type".into(),
            message: "must be application/json".into(),
        }])
        .into());
    }
    Ok(())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = GwError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("body", "a JSON body is required").into());
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

/// A JSON body that may be left out: no body (or only whitespace) is `T::default()`, and so
/// is a JSON `null`; a body that is there must be JSON like any other.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = GwError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = require_json(req.headers());
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        is_json?;
        if bytes.trim_ascii() == b"null" {
            return Ok(Self(T::default()));
        }
        Ok(Self(parse_json(&bytes)?))
    }
}

/// Maps a failure to read the body (length limit above all) to an error.
pub fn body_rejection(e: axum::extract::rejection::BytesRejection) -> GwError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large").into()
    } else {
        ApiError::invalid("body", "could not read the request body").into()
    }
}

/// Query parameters; unknown parameters and bad values name the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = GwError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(q));
        let value = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = clean(&e.into_inner().to_string());
            GwError::from(ApiError::invalid(field_of(&path, &message), message))
        })?;
        if let Some((name, _)) =
            form_urlencoded_parse(q).find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            let field = if name.contains('\0') {
                "query".to_owned()
            } else {
                name.into_owned()
            };
            return Err(ApiError::invalid(field, NUL_MESSAGE).into());
        }
        Ok(Query(value))
    }
}

fn form_urlencoded_parse(q: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(q.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        tenant_slug: String,
        count: Option<u32>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"count": 1}"#).unwrap_err();
        assert_eq!(e.fields[0].field, "tenantSlug");
        let e = parse_json::<Body>(br#"{"tenantSlug": "a", "extra": 1}"#).unwrap_err();
        assert_eq!(e.fields[0].field, "extra");
        let e = parse_json::<Body>(br#"{"tenantSlug": "a", "count": "x"}"#).unwrap_err();
        assert_eq!(e.fields[0].field, "count");
        let e = parse_json::<Body>(br#"{"tenantSlug": "#).unwrap_err();
        assert_eq!(e.fields[0].field, "body");
        assert!(e.message.contains("malformed JSON"));
    }

    #[test]
    fn nul_characters_are_refused_by_field() {
        let e = parse_json::<Body>(br#"{"tenantSlug": "a\u0000b"}"#).unwrap_err();
        assert_eq!(e.fields[0].field, "tenantSlug");
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        // An escaped backslash followed by "u0000" is ordinary text.
        assert!(parse_json::<Body>(br#"{"tenantSlug": "a\\u0000b"}"#).is_ok());
        let doc = serde_json::json!({"permissions": [{"scope": "all"}, {"objectType": "a\0"}]});
        assert_eq!(
            nul_field(&doc, String::new()).as_deref(),
            Some("permissions[1].objectType")
        );
        assert_eq!(
            nul_field(&serde_json::json!("\0"), String::new()).as_deref(),
            Some("body")
        );
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        kind: Option<String>,
    }

    async fn query(uri: &str) -> Result<Params, GwError> {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts();
        Query::<Params>::from_request_parts(&mut parts, &())
            .await
            .map(|q| q.0)
    }

    #[tokio::test]
    async fn nul_characters_in_queries_name_the_parameter() {
        let e = query("/x?kind=a%00b").await.unwrap_err();
        assert_eq!(e.0.code, ErrorCode::ValidationFailed);
        assert_eq!(e.0.fields[0].field, "kind");
        assert!(query("/x?kind=login.failed").await.is_ok());
    }

    #[test]
    fn marked_responses_keep_their_own_error_body() {
        let mut own = (StatusCode::SERVICE_UNAVAILABLE, "redis: down").into_response();
        own.extensions_mut().insert(OwnErrorFormat);
        let own = render(own, None);
        assert!(
            own.headers()[header::CONTENT_TYPE]
                .as_bytes()
                .starts_with(b"text/plain")
        );
        let bare = render(
            (StatusCode::SERVICE_UNAVAILABLE, "redis: down").into_response(),
            None,
        );
        assert_eq!(bare.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Link {
        role: Option<String>,
    }

    async fn optional(ct: Option<&str>, body: &'static str) -> Result<Link, GwError> {
        let mut b = axum::http::Request::builder().method("PUT").uri("/x");
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let req = b.body(axum::body::Body::from(body)).unwrap();
        OptionalJson::<Link>::from_request(req, &())
            .await
            .map(|j| j.0)
    }

    #[tokio::test]
    async fn optional_bodies_may_be_left_out() {
        assert_eq!(optional(None, "").await.unwrap(), Link::default());
        assert_eq!(optional(None, " \n").await.unwrap(), Link::default());
        let json = Some("application/json");
        assert_eq!(optional(json, "{}").await.unwrap(), Link::default());
        assert_eq!(optional(json, "null").await.unwrap(), Link::default());
        assert_eq!(
            optional(json, r#"{"role": "billing"}"#)
                .await
                .unwrap()
                .role
                .as_deref(),
            Some("billing")
        );
        let e = optional(None, "{}").await.unwrap_err();
        assert_eq!(e.0.code, ErrorCode::UnsupportedMediaType);
        let e = optional(json, r#"{"rol": 1}"#).await.unwrap_err();
        assert_eq!(e.0.fields[0].field, "rol");
    }
}
