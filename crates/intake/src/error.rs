//! What intake refuses, and why, in one enum. The API maps it to codes in
//! one place (`From<IntakeError> for ApiError`), the consumers to retry or
//! park (`From<IntakeError> for HandlerError`); no other code chooses a
//! status code.

use baladiya_platform::error::ApiError;
use baladiya_platform::events::EventError;
use baladiya_platform::events::consumer::HandlerError;
use uuid::Uuid;

/// Why an intake command or read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A report id field that is not a UUID.
    #[error("{field} must be a report id (UUID)")]
    NotAReportId { field: &'static str },
    /// `GetReport` named neither an id nor a tracking number.
    #[error("an id or a tracking_number is required")]
    NoReportKey,
    /// A required message field is absent.
    #[error("{0} is required")]
    Required(&'static str),
    /// A submission refused without a violation to name (not expected: the
    /// rules name every field they refuse).
    #[error("the request is invalid")]
    InvalidRequest,
    #[error("report not found")]
    ReportNotFound,
    /// The report exists, or may, but is not the caller's to read; a caller
    /// who may not learn what exists gets this for a missing report too.
    #[error("not a report you may read")]
    ReportHidden,
    /// A channel front-end submitting as another channel.
    #[error("a channel may submit only as itself")]
    SubmitAsOtherChannel,
    /// A channel caller whose token names no channel, listing reports.
    #[error("the token names no channel")]
    TokenNamesNoChannel,
    /// A channel listing another channel's reports.
    #[error("a channel lists its own reports")]
    ListOtherChannel,
    /// An operator listing another municipality's reports.
    #[error("operators see their own municipality only")]
    ListOtherMunicipality,
    /// A rating before the report is resolved or closed.
    #[error("a report can be rated once it is resolved or closed; it is {status}")]
    NotRatableYet { status: String },
    #[error("this report was already rated")]
    AlreadyRated,
    /// `GetReporterContact` on an anonymous report.
    #[error("reporter contact (the report is anonymous) not found")]
    AnonymousReport,
    /// The reporter was sealed under a key this process was not given.
    #[error("reporter of {report} is sealed under key {key_id}, which this process does not have")]
    UnknownPiiKey { report: Uuid, key_id: String },
    /// A validated municipality without a service area (the catalogue
    /// changed between the check and the lookup).
    #[error("validated municipality has no area")]
    NoServiceArea,
    /// The batch writer is gone: the process is stopping.
    #[error("intake is shutting down")]
    ShuttingDown,
    /// Already classified by a platform helper (auth, violations, paging,
    /// idempotency, audit).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventError),
}

/// The one mapping of intake's refusals to API errors (codes and messages).
impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        use IntakeError as E;
        match e {
            E::NotAReportId { field } => {
                ApiError::invalid_field(field, "must be a report id (UUID)")
            }
            E::NoReportKey => {
                ApiError::invalid_field("key", "an id or a tracking_number is required")
            }
            E::Required(field) => ApiError::invalid_field(field, "is required"),
            E::InvalidRequest => ApiError::invalid_field("request", "is invalid"),
            E::ReportNotFound => ApiError::not_found("report"),
            E::AnonymousReport => ApiError::not_found("reporter contact (the report is anonymous)"),
            E::ReportHidden
            | E::SubmitAsOtherChannel
            | E::TokenNamesNoChannel
            | E::ListOtherChannel
            | E::ListOtherMunicipality => ApiError::permission_denied(e.to_string()),
            E::NotRatableYet { .. } | E::AlreadyRated => {
                ApiError::failed_precondition(e.to_string())
            }
            E::UnknownPiiKey { .. } | E::NoServiceArea => ApiError::internal(&e),
            E::ShuttingDown => ApiError::unavailable(&e),
            E::Api(e) => e,
            E::Db(e) => e.into(),
            E::Events(e) => e.into(),
        }
    }
}

/// Consumers: the database and the outbox may work later (retried); an event
/// intake's rules refuse never will (parked).
impl From<IntakeError> for HandlerError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Db(e) => e.into(),
            IntakeError::Events(e) => e.into(),
            other => HandlerError::Reject(other.to_string()),
        }
    }
}
