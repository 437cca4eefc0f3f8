//! One error-code table for every service: each code maps to a gRPC status code and to an
//! HTTP status, so the gateway turns a gRPC error into problem+json from the same table.

use std::{collections::HashMap, time::Duration};

use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The domain carried in `google.rpc.ErrorInfo`.
pub const ERROR_DOMAIN: &str = "crm";

/// A stable error reason, the `code` of problem+json and the `reason` of `ErrorInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ValidationFailed,
    InvalidCursor,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Conflict,
    PreconditionFailed,
    RuleViolation,
    IdempotencyKeyReused,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Timeout,
    Internal,
}

/// The table: (code, reason, gRPC code, HTTP status, title).
const TABLE: &[(ErrorCode, &str, Code, u16, &str)] = &[
    (
        ErrorCode::ValidationFailed,
        "VALIDATION_FAILED",
        Code::InvalidArgument,
        400,
        "Validation failed",
    ),
    (
        ErrorCode::InvalidCursor,
        "INVALID_CURSOR",
        Code::InvalidArgument,
        400,
        "Invalid cursor",
    ),
    (
        ErrorCode::Unauthenticated,
        "UNAUTHENTICATED",
        Code::Unauthenticated,
        401,
        "Unauthenticated",
    ),
    (
        ErrorCode::PermissionDenied,
        "PERMISSION_DENIED",
        Code::PermissionDenied,
        403,
        "Permission denied",
    ),
    (
        ErrorCode::NotFound,
        "NOT_FOUND",
        Code::NotFound,
        404,
        "Not found",
    ),
    (
        ErrorCode::Conflict,
        "CONFLICT",
        Code::AlreadyExists,
        409,
        "Conflict",
    ),
    (
        ErrorCode::PreconditionFailed,
        "PRECONDITION_FAILED",
        Code::FailedPrecondition,
        412,
        "Precondition failed",
    ),
    (
        ErrorCode::RuleViolation,
        "RULE_VIOLATION",
        Code::FailedPrecondition,
        422,
        "Business rule violated",
    ),
    (
        ErrorCode::IdempotencyKeyReused,
        "IDEMPOTENCY_KEY_REUSED",
        Code::InvalidArgument,
        422,
        "Idempotency key reused with another request",
    ),
    (
        ErrorCode::PayloadTooLarge,
        "PAYLOAD_TOO_LARGE",
        Code::InvalidArgument,
        413,
        "Payload too large",
    ),
    (
        ErrorCode::UnsupportedMediaType,
        "UNSUPPORTED_MEDIA_TYPE",
        Code::InvalidArgument,
        415,
        "Unsupported media type",
    ),
    (
        ErrorCode::RateLimited,
        "RATE_LIMITED",
        Code::ResourceExhausted,
        429,
        "Too many requests",
    ),
    (
        ErrorCode::Unavailable,
        "UNAVAILABLE",
        Code::Unavailable,
        503,
        "Service unavailable",
    ),
    (
        ErrorCode::Timeout,
        "TIMEOUT",
        Code::DeadlineExceeded,
        504,
        "Timed out",
    ),
    (
        ErrorCode::Internal,
        "INTERNAL",
        Code::Internal,
        500,
        "Internal error",
    ),
];

impl ErrorCode {
    fn row(self) -> &'static (ErrorCode, &'static str, Code, u16, &'static str) {
        // The table lists every variant; the fallback is the Internal row.
        TABLE
            .iter()
            .find(|r| r.0 == self)
            .unwrap_or(&TABLE[TABLE.len() - 1])
    }

    /// The stable UPPER_SNAKE reason.
    pub fn as_str(self) -> &'static str {
        self.row().1
    }

    /// The gRPC status code.
    pub fn grpc_code(self) -> Code {
        self.row().2
    }

    /// The HTTP status.
    pub fn http_status(self) -> u16 {
        self.row().3
    }

    /// A short human title for problem+json.
    pub fn title(self) -> &'static str {
        self.row().4
    }

    /// Looks a reason up.
    pub fn from_reason(reason: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.1 == reason).map(|r| r.0)
    }

    /// The code to use for a gRPC status that carries no `ErrorInfo`.
    pub fn from_grpc_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::ValidationFailed,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::PermissionDenied,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists | Code::Aborted => Self::Conflict,
            Code::FailedPrecondition => Self::PreconditionFailed,
            Code::ResourceExhausted => Self::RateLimited,
            Code::Unavailable => Self::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => Self::Timeout,
            _ => Self::Internal,
        }
    }
}

/// A field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

/// An error a caller can act on, or an opaque internal one.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub fields: Vec<FieldViolation>,
    pub retry_after: Option<Duration>,
    pub metadata: HashMap<String, String>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: Vec::new(),
            retry_after: None,
            metadata: HashMap::new(),
        }
    }

    /// A validation error naming one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::new(ErrorCode::ValidationFailed, format!("{field}: {message}"))
            .with_fields(vec![FieldViolation { field, message }])
    }

    /// A validation error naming several fields.
    pub fn invalid_fields(fields: Vec<FieldViolation>) -> Self {
        let summary = fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(ErrorCode::ValidationFailed, summary).with_fields(fields)
    }

    /// Not found, worded the same whether the record is missing, of another tenant, or hidden.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// The caller is not authenticated.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// The caller may not do this.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// A conflict with existing state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// An unexpected failure: logged with its context here, returned bare.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// Attaches field violations.
    pub fn with_fields(mut self, fields: Vec<FieldViolation>) -> Self {
        self.fields = fields;
        self
    }

    /// Attaches a retry delay.
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// Reads an error back from a gRPC status (the gateway's side of the table).
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let code = details
            .error_info()
            .and_then(|i| ErrorCode::from_reason(&i.reason))
            .unwrap_or_else(|| ErrorCode::from_grpc_code(status.code()));
        let fields = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| FieldViolation {
                        field: v.field.clone(),
                        message: v.description.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        let metadata = details
            .error_info()
            .map(|i| i.metadata.clone())
            .unwrap_or_default();
        let message = if code == ErrorCode::Internal {
            "internal error".to_owned()
        } else {
            status.message().to_owned()
        };
        Self {
            code,
            message,
            fields,
            retry_after,
            metadata,
        }
    }

    /// The problem+json body (RFC 9457) of this error; a broken business rule also names
    /// the rule (`rule`, from the `ErrorInfo` metadata).
    pub fn problem(&self, request_id: Option<&str>) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": format!("https://errors.crm.dev/{}", self.code.as_str().to_lowercase().replace('_', "-")),
            "title": self.code.title(),
            "status": self.code.http_status(),
            "detail": self.message,
            "code": self.code.as_str(),
            "requestId": request_id,
            "errors": self.fields,
        });
        if let Some(rule) = self.metadata.get("rule")
            && let Some(m) = body.as_object_mut()
        {
            m.insert("rule".into(), rule.clone().into());
        }
        body
    }
}

/// Field violations carried on the wire: status and details travel in HTTP/2 trailers, and
/// trailers beyond the peer's header-list limit break the stream (the caller would see an
/// internal error instead of the violations).
const MAX_WIRE_VIOLATIONS: usize = 20;
/// Longest status message on the wire, in bytes.
const MAX_WIRE_MESSAGE: usize = 1024;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let mut details = ErrorDetails::new();
        details.set_error_info(e.code.as_str(), ERROR_DOMAIN, e.metadata.clone());
        for f in e.fields.iter().take(MAX_WIRE_VIOLATIONS) {
            details.add_bad_request_violation(truncate(&f.field, 200), truncate(&f.message, 300));
        }
        if e.retry_after.is_some() {
            details.set_retry_info(e.retry_after);
        }
        tonic::Status::with_error_details(
            e.code.grpc_code(),
            truncate(&e.message, MAX_WIRE_MESSAGE),
            details,
        )
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        // Text that slipped past validation with a NUL in it is the caller's mistake.
        let text = e.to_string();
        if text.contains("invalid byte sequence") || text.contains("22021") {
            return ApiError::invalid("body", "text must not contain the NUL character");
        }
        ApiError::internal(format!("database: {e}"))
    }
}

/// Result with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

/// Collects field violations and turns them into one error.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Refuses text PostgreSQL cannot store (the NUL character).
    pub fn text(&mut self, field: &str, value: &str) {
        if value.contains('\0') {
            self.add(field, "must not contain the NUL character");
        }
    }

    /// Records a violation when `bad` holds.
    pub fn check(&mut self, bad: bool, field: &str, message: &str) {
        if bad {
            self.add(field, message);
        }
    }

    /// Ok when nothing was recorded.
    pub fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_violations_stay_small_on_the_wire() {
        let fields = (0..500)
            .map(|i| FieldViolation {
                field: format!("fieldRules[{i}].objectType"),
                message: "must name a known object type".into(),
            })
            .collect();
        let s = tonic::Status::from(ApiError::invalid_fields(fields));
        assert!(s.message().len() <= MAX_WIRE_MESSAGE + 3);
        assert!(s.details().len() < 4096, "{}", s.details().len());
        let back = ApiError::from_status(&s);
        assert_eq!(back.code, ErrorCode::ValidationFailed);
        assert_eq!(back.fields.len(), MAX_WIRE_VIOLATIONS);
        assert_eq!(back.fields[0].field, "fieldRules[0].objectType");
    }

    #[test]
    fn round_trips_through_grpc() {
        let e = ApiError::invalid("email", "must be a valid e-mail address");
        let status: tonic::Status = e.into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let back = ApiError::from_status(&status);
        assert_eq!(back.code, ErrorCode::ValidationFailed);
        assert_eq!(back.fields[0].field, "email");
        assert_eq!(back.code.http_status(), 400);
    }

    #[test]
    fn rule_violation_keeps_422_across_grpc() {
        let status: tonic::Status =
            ApiError::new(ErrorCode::RuleViolation, "won needs amount").into();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(ApiError::from_status(&status).code.http_status(), 422);
        let mut e = ApiError::new(ErrorCode::RuleViolation, "won needs amount");
        e.metadata.insert("rule".into(), "required_fields".into());
        let back = ApiError::from_status(&e.into());
        assert_eq!(back.problem(None)["rule"], "required_fields");
        assert!(ApiError::not_found("x").problem(None).get("rule").is_none());
    }

    #[test]
    fn internal_errors_hide_details() {
        let status = tonic::Status::internal("connection refused at 10.0.0.1");
        let e = ApiError::from_status(&status);
        assert_eq!(e.message, "internal error");
        let p = e.problem(Some("r1"));
        assert_eq!(p["status"], 500);
        assert_eq!(p["requestId"], "r1");
    }

    #[test]
    fn every_code_has_a_row() {
        for r in TABLE {
            assert_eq!(ErrorCode::from_reason(r.1), Some(r.0));
        }
    }
}
