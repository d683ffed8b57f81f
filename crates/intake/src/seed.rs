//! Seed data from editable TOML files under `<seed dir>/intake/`:
//! `categories.toml` (the catalogue and the urgent keywords) and
//! `service_areas.toml` (each municipality's polygon and tracking prefix).
//! Only missing records are added, so operators' edits survive restarts.

use std::path::Path;

use baladiya_platform::clock::Clock;
use baladiya_platform::error::Violations;
use serde::Deserialize;
use sqlx::PgPool;

use crate::domain::Category;
use crate::store;
use baladiya_platform::geo::ServiceArea;

/// Why seed data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("seed file {file}: {reason}")]
    File { file: String, reason: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

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

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SeedError> {
    let fail = |reason: String| SeedError::File {
        file: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    toml::from_str(&text).map_err(|e| fail(e.to_string()))
}

/// Adds missing categories, keywords and service areas.
pub async fn load(pool: &PgPool, clock: &Clock, seed_dir: &Path) -> Result<String, SeedError> {
    let dir = seed_dir.join("intake");
    let categories_path = dir.join("categories.toml");
    let areas_path = dir.join("service_areas.toml");
    let categories: CategoriesFile = read(&categories_path)?;
    let areas: AreasFile = read(&areas_path)?;
    for (i, c) in categories.category.iter().enumerate() {
        let mut v = Violations::new();
        c.check("", &mut v);
        if let Err(e) = v.finish() {
            let problems: Vec<String> = e
                .violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect();
            return Err(SeedError::File {
                file: categories_path.display().to_string(),
                reason: format!("category[{i}] ({}): {}", c.code, problems.join("; ")),
            });
        }
    }
    for a in &areas.area {
        if a.polygon.len() < 3
            || a.tracking_prefix.is_empty()
            || a.time_zone.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(SeedError::File {
                file: areas_path.display().to_string(),
                reason: format!(
                    "area {}: needs a polygon of 3+ points, a tracking_prefix and an IANA time_zone",
                    a.municipality_code
                ),
            });
        }
    }
    let now = clock.now();
    let mut tx = pool.begin().await?;
    let mut added_categories = 0;
    for c in &categories.category {
        added_categories += usize::from(store::put_category(&mut tx, c, now, true).await?);
    }
    let keywords = store::add_keywords(&mut tx, &categories.urgent_keywords).await?;
    let mut added_areas = 0;
    for a in &areas.area {
        added_areas += usize::from(store::add_area(&mut tx, a).await?);
    }
    tx.commit().await?;
    Ok(format!(
        "seeded {added_categories} categories, {keywords} urgent keywords, {added_areas} service areas from {}",
        dir.display()
    ))
}
