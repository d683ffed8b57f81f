//! The partners crate's errors beyond the API's own.

use baladiya_platform::error::ApiError;

/// What can go wrong outside a request.
#[derive(Debug, thiserror::Error)]
pub enum PartnersError {
    #[error("seed file {file}: {reason}")]
    Seed { file: String, reason: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<PartnersError> for ApiError {
    fn from(e: PartnersError) -> Self {
        match e {
            PartnersError::Db(e) => e.into(),
            other => ApiError::internal(&other),
        }
    }
}
