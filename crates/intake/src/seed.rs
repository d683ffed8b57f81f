//! Seed data from the TOML files `intake/categories.toml` and
//! `intake/service_areas.toml` (shipped in the binary from `deploy/seed/`,
//! each replaced by `seed.dir`'s where it has one):
//! `categories.toml` (the catalogue and the urgent keywords) and
//! `service_areas.toml` (each municipality's polygon and tracking prefix).
//! Only missing records are added ([`commands::add_missing_catalogue`]), so
//! operators' edits survive restarts.

use baladiya_platform::error::Violations;
use baladiya_platform::events::Emitter;
use baladiya_platform::geo::ServiceArea;
use baladiya_platform::seed::{SeedError, SeedFiles};
use serde::Deserialize;
use sqlx::PgPool;

use crate::commands;
use crate::domain::Category;
use crate::error::IntakeError;

const CATEGORIES: &str = "intake/categories.toml";
const SHIPPED_CATEGORIES: &str = include_str!("../../../deploy/seed/intake/categories.toml");
const SERVICE_AREAS: &str = "intake/service_areas.toml";
const SHIPPED_SERVICE_AREAS: &str = include_str!("../../../deploy/seed/intake/service_areas.toml");

#[derive(Debug, Deserialize)]
struct CategoriesFile {
    #[serde(default)]
    urgent_keywords: Vec<String>,
    #[serde(default)]
    category: Vec<Category>,
}

#[derive(Debug, Deserialize)]
struct AreasFile {
    #[serde(default)]
    area: Vec<ServiceArea>,
}

/// Adds missing categories, keywords and service areas.
pub async fn load(
    pool: &PgPool,
    emitter: &Emitter,
    files: &SeedFiles,
) -> Result<String, SeedError> {
    let categories_path = files.path(CATEGORIES);
    let areas_path = files.path(SERVICE_AREAS);
    let categories: CategoriesFile = files.read_toml(CATEGORIES, SHIPPED_CATEGORIES)?;
    let areas: AreasFile = files.read_toml(SERVICE_AREAS, SHIPPED_SERVICE_AREAS)?;
    for (i, c) in categories.category.iter().enumerate() {
        let mut v = Violations::new();
        c.check("", &mut v);
        if let Err(e) = v.finish() {
            let problems: Vec<String> = e
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect();
            return Err(SeedError::file(
                &categories_path,
                format!("category[{i}] ({}): {}", c.code, problems.join("; ")),
            ));
        }
    }
    for a in &areas.area {
        if a.polygon.len() < 3
            || a.tracking_prefix.is_empty()
            || a.time_zone.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(SeedError::file(
                &areas_path,
                format!(
                    "area {}: needs a polygon of 3+ points, a tracking_prefix and an IANA time_zone",
                    a.municipality_code
                ),
            ));
        }
    }
    let mut tx = emitter.begin(pool).await?;
    let added = commands::add_missing_catalogue(
        &mut tx,
        &categories.category,
        &categories.urgent_keywords,
        &areas.area,
    )
    .await
    .map_err(|e| match e {
        IntakeError::Db(e) => SeedError::Db(e),
        other => SeedError::refused(&categories_path, "the catalogue", other.into()),
    })?;
    tx.commit().await?;
    Ok(format!(
        "seeded {} categories, {} urgent keywords, {} service areas from {} and {}",
        added.categories,
        added.keywords,
        added.areas,
        categories_path.display(),
        areas_path.display()
    ))
}
