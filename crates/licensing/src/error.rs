//! `LicensingError`: everything licensing can refuse or fail at, in one enum,
//! and the crate's one mapping of it to gRPC codes (through [`ApiError`]).
//!
//! Commands, the scope rule and the request conversions all return it, so a
//! handler converts an outcome once (`baladiya_platform::error::reply`) and
//! the code a caller sees for each refusal is decided here and nowhere else.

use baladiya_platform::error::ApiError;
use baladiya_platform::events::EventError;

use crate::domain::StepError;

/// Why a licensing request or job did not go through.
#[derive(Debug, thiserror::Error)]
pub enum LicensingError {
    /// A request field that does not parse or is missing (an id that is not a
    /// UUID, a blank reason).
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: &'static str,
    },
    /// No such application or license (said only to callers who may know
    /// what does not exist, see `access`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An application or license outside the caller's scope, or missing,
    /// said to a caller who may not learn which.
    #[error("not a {0} you may act on")]
    OutOfScope(&'static str),
    /// The caller's role or partner may not take this action at all.
    #[error("{0}")]
    NotPermitted(&'static str),
    /// The application's state machine (or a renewal's window) refuses the step.
    #[error(transparent)]
    Step(#[from] StepError),
    /// A license that is not active cannot be renewed or suspended.
    #[error("only an active license is {action}; it is {status}")]
    LicenseNotActive {
        /// `renewed` or `suspended`.
        action: &'static str,
        status: String,
    },
    /// A stored application or license names a license type that is not
    /// stored: the data is broken, not the request.
    #[error("license type '{0}' of a stored application or license is missing")]
    MissingLicenseType(String),
    /// Already classified by a platform helper (caller scope, field
    /// violations, paging, idempotency, audit).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventError),
}

impl From<LicensingError> for ApiError {
    fn from(e: LicensingError) -> Self {
        match e {
            LicensingError::InvalidField { field, message } => {
                ApiError::invalid_field(field, message)
            }
            LicensingError::NotFound(what) => ApiError::not_found(what),
            LicensingError::OutOfScope(_) | LicensingError::NotPermitted(_) => {
                ApiError::permission_denied(e.to_string())
            }
            LicensingError::Step(StepError::OutOfOrder(message)) => {
                ApiError::failed_precondition(message)
            }
            LicensingError::Step(StepError::Field { field, message }) => {
                ApiError::invalid_field(field, message)
            }
            LicensingError::LicenseNotActive { .. } => ApiError::failed_precondition(e.to_string()),
            LicensingError::MissingLicenseType(_) => ApiError::internal(&e),
            LicensingError::Api(e) => e,
            LicensingError::Db(e) => e.into(),
            LicensingError::Events(e) => e.into(),
        }
    }
}
