//! License types as editable seed data (`<seed dir>/licensing/license_types.toml`);
//! only missing codes are added.

use std::path::Path;

use serde::Deserialize;
use sqlx::PgPool;

use crate::domain::LicenseType;
use crate::store;

/// Why seed data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed file {file}: {reason}")]
    File { file: String, reason: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Deserialize)]
struct TypesFile {
    #[serde(default)]
    license_type: Vec<LicenseType>,
}

/// Adds missing license types.
pub async fn load(pool: &PgPool, seed_dir: &Path) -> Result<String, SeedError> {
    let path = seed_dir.join("licensing").join("license_types.toml");
    let fail = |reason: String| SeedError::File {
        file: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let file: TypesFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let problems: Vec<String> = file
        .license_type
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            t.problems()
                .into_iter()
                .map(move |(field, why)| format!("license_type[{i}].{field} ({}): {why}", t.code))
        })
        .collect();
    if !problems.is_empty() {
        return Err(fail(problems.join("; ")));
    }
    let mut tx = pool.begin().await?;
    let mut added = 0;
    for t in &file.license_type {
        added += usize::from(store::add_license_type(&mut tx, t).await?);
    }
    tx.commit().await?;
    Ok(format!(
        "seeded {added} license type(s) from {}",
        path.display()
    ))
}
