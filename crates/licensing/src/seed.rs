//! License types as seed data (`licensing/license_types.toml`, shipped in the
//! binary from `deploy/seed/`, replaced by `seed.dir`'s where it has one);
//! only missing codes are added, so operators' later edits survive restarts.
//! Every type is checked before any is written, and each is added through
//! [`commands::add_license_type`] in one transaction.

use std::path::Path;

use baladiya_platform::events::Emitter;
use baladiya_platform::seed::{SeedError, SeedFiles};
use serde::Deserialize;
use sqlx::PgPool;

use crate::commands;
use crate::domain::LicenseType;
use crate::error::LicensingError;

const LICENSE_TYPES: &str = "licensing/license_types.toml";
const SHIPPED_LICENSE_TYPES: &str =
    include_str!("../../../deploy/seed/licensing/license_types.toml");

#[derive(Debug, Deserialize)]
struct TypesFile {
    #[serde(default)]
    license_type: Vec<LicenseType>,
}

/// Adds missing license types.
pub async fn load(
    pool: &PgPool,
    emitter: &Emitter,
    files: &SeedFiles,
) -> Result<String, SeedError> {
    let path = files.path(LICENSE_TYPES);
    let file: TypesFile = files.read_toml(LICENSE_TYPES, SHIPPED_LICENSE_TYPES)?;
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
        return Err(SeedError::file(&path, problems.join("; ")));
    }
    let mut tx = emitter.begin(pool).await?;
    let mut added = 0;
    for t in &file.license_type {
        let is_new = commands::add_license_type(&mut tx, t)
            .await
            .map_err(|e| refused(&path, &t.code, e))?;
        added += usize::from(is_new);
    }
    tx.commit().await?;
    Ok(format!(
        "seeded {added} license type(s) from {}",
        path.display()
    ))
}

/// A license type the command did not add: the database's failures stay
/// database failures, the rest say why as the API would.
fn refused(path: &Path, code: &str, e: LicensingError) -> SeedError {
    match e {
        LicensingError::Db(e) => SeedError::Db(e),
        other => SeedError::refused(path, &format!("license type {code}"), other.into()),
    }
}
