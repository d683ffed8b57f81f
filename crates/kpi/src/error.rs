//! What the KPI service refuses, and why, in one enum: the API (and the
//! dashboard through it) and the consumers map it to their own answers in
//! one place each ([`From<KpiError> for ApiError`] and for `HandlerError`),
//! so no other code chooses a status code or decides what is retried.

use baladiya_platform::error::ApiError;
use baladiya_platform::events::EventError;
use baladiya_platform::events::consumer::HandlerError;

/// Why a KPI read or projection did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    /// An event a projection cannot read (a field missing or malformed).
    #[error("{0}")]
    Unprojectable(String),
    /// A partner asking for an indicator not measured per partner.
    #[error("{0} is not measured per partner")]
    NotMeasuredPerPartner(String),
    /// A caller limited to its own partner or municipality (`what`) asking
    /// for another's.
    #[error("you may read your own {0}'s indicators only")]
    OnlyOwnIndicators(&'static str),
    /// A scorecard the caller's scope does not cover.
    #[error("not a scorecard you may read")]
    ScorecardHidden,
    /// A scorecard indicator its reads did not give (not expected).
    #[error("{0} was not measured")]
    NotMeasured(String),
    /// Already classified by a platform helper (auth, violations, the
    /// request's field checks).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventError),
}

/// The one mapping of the KPI service's refusals to API errors (codes and
/// messages).
impl From<KpiError> for ApiError {
    fn from(e: KpiError) -> Self {
        use KpiError as E;
        match e {
            E::NotMeasuredPerPartner(_) | E::OnlyOwnIndicators(_) | E::ScorecardHidden => {
                ApiError::permission_denied(e.to_string())
            }
            E::Unprojectable(_) | E::NotMeasured(_) => ApiError::internal(&e),
            E::Api(e) => e,
            E::Db(e) => e.into(),
            E::Events(e) => e.into(),
        }
    }
}

/// Consumers (and `baladiya kpi rebuild`): an event that cannot be projected
/// never will be (parked, or skipped by a rebuild); the database may work
/// later (retried); event errors as the platform classifies them (an
/// undecodable payload is parked).
impl From<KpiError> for HandlerError {
    fn from(e: KpiError) -> Self {
        match e {
            KpiError::Db(e) => e.into(),
            KpiError::Events(e) => e.into(),
            other => HandlerError::Reject(other.to_string()),
        }
    }
}
