//! Routing rules as seed data (`routing/rules.toml`, shipped in the binary from
//! `deploy/seed/`, replaced by `seed.dir`'s where it has one). Each
//! seeded rule has a key; a rule whose key was ever seeded is not added again,
//! so operators' edits and deletions survive restarts.

use std::path::Path;

use baladiya_platform::events::Emitter;
use baladiya_platform::seed::{SeedError, SeedFiles};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::commands;
use crate::domain::Rule;
use crate::error::RoutingError;

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

const RULES: &str = "routing/rules.toml";
const SHIPPED_RULES: &str = include_str!("../../../deploy/seed/routing/rules.toml");

#[derive(Debug, Deserialize)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<SeedRule>,
}

/// Adds rules whose keys were never seeded.
pub async fn load(
    pool: &PgPool,
    emitter: &Emitter,
    files: &SeedFiles,
) -> Result<String, SeedError> {
    let path = files.path(RULES);
    let file: RulesFile = files.read_toml(RULES, SHIPPED_RULES)?;
    if !file.rule.iter().any(|r| {
        r.category_code.is_none() && r.category_group.is_none() && r.municipality_code.is_none()
    }) {
        return Err(SeedError::file(
            &path,
            "a triage fallback rule (no category, group or municipality) is required",
        ));
    }
    let now = emitter.clock().now();
    let mut tx = emitter.begin(pool).await?;
    let mut added = 0;
    for s in &file.rule {
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
        let seeded = commands::seed_rule(&mut tx, &s.key, &rule)
            .await
            .map_err(|e| refused(&path, &s.key, e))?;
        if seeded {
            added += 1;
        }
    }
    tx.commit().await?;
    Ok(format!(
        "seeded {added} routing rule(s) from {}",
        path.display()
    ))
}

/// Why the rule with `key` could not be seeded: the database's own error, or
/// the API's words for a refusal.
fn refused(path: &Path, key: &str, e: RoutingError) -> SeedError {
    match e {
        RoutingError::Db(e) => SeedError::Db(e),
        other => SeedError::refused(path, &format!("rule {key}"), other.into()),
    }
}
