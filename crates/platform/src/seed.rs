//! What every service's seed loader shares: where its files come from, the
//! error it reports and how it reads a TOML file. Each service keeps only
//! what its files mean (`<crate>/src/seed.rs`), and ships its files inside
//! the binary (`include_str!` of `deploy/seed/<service>/...`), so a platform
//! started from any directory, or from an image without the checkout, is
//! seeded the same. `seed.dir` names a directory whose files replace the
//! shipped ones of the same path, file by file.

use std::fmt;
use std::path::{Path, PathBuf};

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

/// Where seed files come from: the shipped ones, each replaced by the file of
/// the same path under the configured directory where it has one.
#[derive(Debug, Clone, Default)]
pub struct SeedFiles {
    dir: Option<PathBuf>,
}

impl SeedFiles {
    /// The shipped files only.
    pub fn shipped() -> Self {
        Self::default()
    }

    /// The shipped files, each replaced by `dir`'s of the same path.
    pub fn over(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
        }
    }

    /// As `seed.dir` says: empty for the shipped files only.
    pub fn from_config(config: &crate::config::SeedConfig) -> Self {
        if config.dir.is_empty() {
            Self::shipped()
        } else {
            Self::over(&config.dir)
        }
    }

    /// The file that is read for `relative` (e.g. `partners/calendars.toml`),
    /// as messages name it: the directory's, or the shipped one.
    pub fn path(&self, relative: &str) -> PathBuf {
        match &self.dir {
            Some(dir) if dir.join(relative).is_file() => dir.join(relative),
            _ => PathBuf::from(format!("(shipped) {relative}")),
        }
    }

    /// Parses the file for `relative`: the directory's where it has one,
    /// else `shipped` (the text built into the binary).
    pub fn read_toml<T: DeserializeOwned>(
        &self,
        relative: &str,
        shipped: &str,
    ) -> Result<T, SeedError> {
        let path = self.path(relative);
        if path.is_file() {
            return read_toml(&path);
        }
        toml::from_str(shipped).map_err(|e| SeedError::file(&path, e))
    }
}

/// Reads and parses the TOML file at `path`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|e| SeedError::file(path, e))?;
    toml::from_str(&text).map_err(|e| SeedError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct File {
        name: String,
    }

    #[test]
    fn a_directory_replaces_the_shipped_files_it_has_and_only_those() {
        let dir = std::env::temp_dir().join(format!("seed-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("svc")).expect("dir");
        std::fs::write(dir.join("svc/edited.toml"), "name = \"edited\"").expect("write");
        let files = SeedFiles::over(&dir);
        let edited: File = files
            .read_toml("svc/edited.toml", "name = \"shipped\"")
            .expect("read");
        assert_eq!(edited.name, "edited");
        let kept: File = files
            .read_toml("svc/other.toml", "name = \"shipped\"")
            .expect("read");
        assert_eq!(kept.name, "shipped");
        assert_eq!(files.path("svc/edited.toml"), dir.join("svc/edited.toml"));
        let shipped: File = SeedFiles::shipped()
            .read_toml("svc/edited.toml", "name = \"shipped\"")
            .expect("read");
        assert_eq!(shipped.name, "shipped");
        let broken = SeedFiles::shipped().read_toml::<File>("svc/x.toml", "name = ");
        let message = broken.expect_err("broken").to_string();
        assert!(message.contains("(shipped) svc/x.toml"), "{message}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
