//! The one mapping from errors to gRPC status codes (and HTTP statuses).
//!
//! Each crate keeps its own `thiserror` enum and converts it into an
//! [`ApiError`]; only `ApiError` knows about `tonic::Status`. Bad input is
//! reported with every violated field at once, as `google.rpc.BadRequest`.
//! Internal errors are logged with their cause and returned without it.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Domain of `google.rpc.ErrorInfo` on every error this platform returns.
pub const ERROR_DOMAIN: &str = "baladiya.sa";

/// One invalid request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `location.latitude`.
    pub field: String,
    /// What is wrong, for a person.
    pub description: String,
}

/// Collects field violations so a request is rejected once, listing all of them.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }
    /// The value of a field check done elsewhere (a page token, a page
    /// size), or `None` with its violations recorded here so they are
    /// reported with the request's other fields.
    pub fn absorb<T>(&mut self, checked: Result<T, ApiError>) -> Option<T> {
        match checked {
            Ok(value) => Some(value),
            Err(e) if e.violations.is_empty() => {
                self.add("", e.message);
                None
            }
            Err(e) => {
                self.0.extend(e.violations);
                None
            }
        }
    }
    /// Records a violation of `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, description: &str) {
        if !ok {
            self.add(field, description);
        }
    }
    /// Records `field` as missing when `value` is blank.
    pub fn require(&mut self, value: &str, field: &str) {
        self.check(!value.trim().is_empty(), field, "is required");
    }
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok` when nothing was recorded, else `INVALID_ARGUMENT` with all of them.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.0))
        }
    }
}

/// The outcome classes callers can act on, mirroring `google.rpc.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Aborted,
    ResourceExhausted,
    Unavailable,
    Unauthenticated,
    PermissionDenied,
    DeadlineExceeded,
    Internal,
}

impl ErrorKind {
    /// The gRPC code.
    pub fn grpc_code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Aborted => Code::Aborted,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::Internal => Code::Internal,
        }
    }

    /// The HTTP status for the HTTP facades.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument | Self::FailedPrecondition => 400,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound => 404,
            Self::AlreadyExists | Self::Aborted => 409,
            Self::ResourceExhausted => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::DeadlineExceeded => 504,
        }
    }

    /// `ErrorInfo.reason`, UPPER_SNAKE.
    fn reason(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::Internal => "INTERNAL",
        }
    }
}

/// An error as a caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// Safe to show to the caller.
    pub message: String,
    /// Only for `InvalidArgument`.
    pub violations: Vec<FieldViolation>,
}

impl ApiError {
    /// Any kind with a caller-safe message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            violations: Vec::new(),
        }
    }
    /// `INVALID_ARGUMENT` listing every violated field.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        Self {
            kind: ErrorKind::InvalidArgument,
            message: format!("invalid request: {}", fields.join(", ")),
            violations,
        }
    }
    /// `INVALID_ARGUMENT` for one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }
    /// `NOT_FOUND`.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what} not found"))
    }
    /// `FAILED_PRECONDITION`.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }
    /// `PERMISSION_DENIED`.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }
    /// `INTERNAL`: logs the cause here and hides it from the caller.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorKind::Internal, "internal error")
    }
    /// `UNAVAILABLE`: a dependency is down; logs the cause.
    pub fn unavailable(cause: &dyn fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(
            ErrorKind::Unavailable,
            "temporarily unavailable, retry with backoff",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// What a gRPC handler returns.
pub type Reply<T> = Result<tonic::Response<T>, Status>;

/// The one conversion of a handler's outcome to gRPC: a handler computes with
/// its crate's error type (anything that becomes an [`ApiError`]) and calls
/// this once, so helpers never build a `Status` themselves.
pub fn reply<T, E: Into<ApiError>>(outcome: Result<T, E>) -> Reply<T> {
    outcome
        .map(tonic::Response::new)
        .map_err(|e| Status::from(e.into()))
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let mut details = ErrorDetails::new();
        for v in &e.violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        details.set_error_info(
            e.kind.reason(),
            ERROR_DOMAIN,
            std::collections::HashMap::<String, String>::new(),
        );
        Status::with_error_details(e.kind.grpc_code(), e.message, details)
    }
}

/// Database errors: connection trouble is `UNAVAILABLE` (the pool cannot
/// connect, a connection broke mid-statement, the server is shutting down,
/// starting up or out of connections), serialization conflicts `ABORTED`, the
/// rest `INTERNAL`. A caller may retry an `UNAVAILABLE` call with the same
/// request id: the transaction either committed whole or not at all.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::unavailable(&e),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("40001" | "40P01") => {
                    Self::new(ErrorKind::Aborted, "concurrent update, retry the request")
                }
                // Class 08 connection exceptions, 57P01-57P03 shutdown and
                // start-up, 53300 too many connections.
                Some(code)
                    if code.starts_with("08")
                        || matches!(code, "57P01" | "57P02" | "57P03" | "53300") =>
                {
                    Self::unavailable(&e)
                }
                _ => Self::internal(&e),
            },
            _ => Self::internal(&e),
        }
    }
}

/// Event failures inside a request: the database ones as [`sqlx::Error`]s,
/// the rest internal.
impl From<crate::events::EventError> for ApiError {
    fn from(e: crate::events::EventError) -> Self {
        match e {
            crate::events::EventError::Db(e) => e.into(),
            other => Self::internal(&other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbed_checks_are_reported_with_the_other_fields() {
        let mut v = Violations::new();
        v.add("status", "is not a case status");
        assert_eq!(v.absorb(Ok::<_, ApiError>(7)), Some(7));
        assert_eq!(
            v.absorb(Err::<i64, _>(ApiError::invalid_field(
                "page_size",
                "must not be negative"
            ))),
            None
        );
        let e = v.finish().expect_err("two violations");
        let fields: Vec<&str> = e.violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["status", "page_size"]);
    }

    #[test]
    fn invalid_argument_lists_every_field_as_bad_request() {
        let mut v = Violations::new();
        v.check(false, "request_id", "is required");
        v.check(true, "channel", "never reported");
        v.add("location.latitude", "must be between -90 and 90");
        let status: Status = v.finish().expect_err("violations").into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .expect("bad request detail")
            .field_violations
            .iter()
            .map(|f| f.field.clone())
            .collect();
        assert_eq!(fields, ["request_id", "location.latitude"]);
        assert_eq!(
            details.error_info().expect("error info").reason,
            "INVALID_ARGUMENT"
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status: Status = ApiError::internal(&"disk on fire at /var/lib/x").into();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn every_kind_maps_to_a_distinct_grpc_code() {
        use ErrorKind::*;
        let kinds = [
            InvalidArgument,
            NotFound,
            AlreadyExists,
            FailedPrecondition,
            Aborted,
            ResourceExhausted,
            Unavailable,
            Unauthenticated,
            PermissionDenied,
            DeadlineExceeded,
            Internal,
        ];
        let codes: std::collections::HashSet<_> =
            kinds.iter().map(|k| k.grpc_code() as i32).collect();
        assert_eq!(codes.len(), kinds.len());
        assert_eq!(NotFound.http_status(), 404);
        assert_eq!(Unavailable.http_status(), 503);
    }

    #[test]
    fn pool_timeouts_are_unavailable() {
        let e: ApiError = sqlx::Error::PoolTimedOut.into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        let broken: ApiError = sqlx::Error::Protocol("unexpected end of stream".into()).into();
        assert_eq!(broken.kind, ErrorKind::Unavailable);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(
            ApiError::from(sqlx::Error::Io(eof)).kind,
            ErrorKind::Unavailable
        );
        let other: ApiError = sqlx::Error::RowNotFound.into();
        assert_eq!(other.kind, ErrorKind::Internal);
    }
}
