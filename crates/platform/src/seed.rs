//! What every service's seed loader shares: the error it reports and how it
//! reads an editable TOML file from the seed directory. Each service keeps
//! only what its files mean (`<crate>/src/seed.rs`).

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Why seed data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file is missing, does not parse, or holds a record the service's
    /// own rules refuse (each named by its index and field).
    #[error("seed file {file}: {reason}")]
    File { file: String, reason: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl SeedError {
    /// A problem with the file at `path`.
    pub fn file(path: &Path, reason: impl fmt::Display) -> Self {
        Self::File {
            file: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// `what` in the file at `path` was refused by the rule the API applies
    /// to the same write (seed loaders go through the same commands), with
    /// each violated field.
    pub fn refused(path: &Path, what: &str, e: ApiError) -> Self {
        let fields: String = e
            .violations
            .iter()
            .map(|v| format!("\n  - {}: {}", v.field, v.description))
            .collect();
        Self::file(path, format!("{what}: {}{fields}", e.message))
    }
}

/// Reads and parses the TOML file at `path`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|e| SeedError::file(path, e))?;
    toml::from_str(&text).map_err(|e| SeedError::file(path, e))
}
