//! The one error path of the adapter: every refusal and failure, from a
//! form's parameters to an intake call, becomes an [`Open311Error`] (the
//! HTTP status and the specification's error items), rendered once.
//!
//! gRPC outcomes become the specification's errors: a field violation names
//! the Open311 parameter (400, or 404 for an unknown `service_code` or
//! `jurisdiction_id`), a bad or missing `api_key` is 403, an unknown request
//! or token is 404 (also when the read identity may not see it, so the feed
//! does not reveal what exists), and a dependency that is down is 503 with
//! `Retry-After`, never a hang: every call carries a deadline.

use axum::http::{StatusCode, header};
use axum::response::Response;
use tonic_types::StatusExt;

use crate::georeport::{self, bad, not_found};
use crate::routes::reply;
use crate::wire::{self, ErrorItem, Format};

/// Which kind of call failed, for the error it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Read,
    Submit,
}

/// An error answer: the HTTP status and the specification's error items.
#[derive(Debug)]
pub struct Open311Error {
    status: StatusCode,
    items: Vec<ErrorItem>,
}

impl Open311Error {
    pub(crate) fn new(status: StatusCode, items: Vec<ErrorItem>) -> Self {
        Self { status, items }
    }

    /// 404 when any item is an unknown resource, else 400.
    pub(crate) fn invalid(items: Vec<ErrorItem>) -> Self {
        let status = if items.iter().any(|e| e.code == 404) {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        Self { status, items }
    }

    pub(crate) fn not_found(description: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, vec![not_found(description)])
    }

    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            vec![ErrorItem {
                code: 500,
                description: "the endpoint failed; the operators have the details".into(),
            }],
        )
    }

    pub(crate) fn from_status(status: &tonic::Status, call: Call) -> Self {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument => {
                let details = status.get_details_bad_request();
                let items: Vec<ErrorItem> = details
                    .map(|d| d.field_violations)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| {
                        let (parameter, code) = georeport::parameter_of(&v.field, &v.description);
                        ErrorItem {
                            code,
                            description: format!("{parameter}: {}", v.description),
                        }
                    })
                    .collect();
                if items.is_empty() {
                    Self::invalid(vec![bad(format!("request: {}", status.message()))])
                } else {
                    Self::invalid(items)
                }
            }
            Code::NotFound => Self::not_found(format!("not found: {}", status.message())),
            Code::PermissionDenied | Code::Unauthenticated if call == Call::Submit => Self::new(
                StatusCode::FORBIDDEN,
                vec![ErrorItem {
                    code: 403,
                    description: format!(
                        "api_key: this client may not create requests ({})",
                        status.message()
                    ),
                }],
            ),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![ErrorItem {
                    code: 503,
                    description: "the service is unavailable for a moment; try again".into(),
                }],
            ),
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "open311: intake call failed");
                Self::internal()
            }
        }
    }

    pub(crate) fn render(self, format: Format) -> Response {
        let mut response = reply(format, self.status, &wire::errors(&self.items));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
