//! The partners crate's one error type. Commands and the API's work return
//! it; the gRPC edge converts it once (`baladiya_platform::error::reply`).

use baladiya_platform::error::ApiError;
use baladiya_platform::events::EventError;

/// What a partners operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PartnersError {
    /// Refused for the caller (bad fields, missing object, auth), already in
    /// the API's terms.
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventError),
}

impl From<PartnersError> for ApiError {
    fn from(e: PartnersError) -> Self {
        match e {
            PartnersError::Api(e) => e,
            PartnersError::Db(e) => e.into(),
            PartnersError::Events(e) => e.into(),
        }
    }
}
