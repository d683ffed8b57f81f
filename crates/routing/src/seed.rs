//! Routing rules as editable seed data (`<seed dir>/routing/rules.toml`). Each
//! seeded rule has a key; a rule whose key was ever seeded is not added again,
//! so operators' edits and deletions survive restarts.

use std::path::Path;

use baladiya_platform::clock::Clock;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::Rule;
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
struct SeedRule {
    key: String,
    #[serde(default)]
    category_code: Option<String>,
    #[serde(default)]
    category_group: Option<String>,
    #[serde(default)]
    municipality_code: Option<String>,
    assignee_code: String,
    description: String,
}

#[derive(Debug, Deserialize)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<SeedRule>,
}

/// Adds rules whose keys were never seeded.
pub async fn load(pool: &PgPool, clock: &Clock, seed_dir: &Path) -> Result<String, SeedError> {
    let path = seed_dir.join("routing").join("rules.toml");
    let fail = |reason: String| SeedError::File {
        file: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
    let file: RulesFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if !file.rule.iter().any(|r| {
        r.category_code.is_none() && r.category_group.is_none() && r.municipality_code.is_none()
    }) {
        return Err(fail(
            "a triage fallback rule (no category, group or municipality) is required".into(),
        ));
    }
    let now = clock.now();
    let mut tx = pool.begin().await?;
    let mut added = 0;
    for s in &file.rule {
        if store::seeded(&mut tx, &s.key).await? {
            continue;
        }
        let rule = Rule {
            id: Uuid::now_v7(),
            category_code: s.category_code.clone(),
            category_group: s.category_group.clone(),
            municipality_code: s.municipality_code.clone(),
            area: Vec::new(),
            priority: None,
            assignee_code: s.assignee_code.clone(),
            description: s.description.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
            updated_by: "seed".into(),
        };
        store::put_rule(&mut tx, &rule, "created", Some(&s.key)).await?;
        added += 1;
    }
    tx.commit().await?;
    Ok(format!(
        "seeded {added} routing rule(s) from {}",
        path.display()
    ))
}
