//! The routing rules' changes: an operator's upsert and delete (versioned,
//! audited) and the seed loader's add-once. Apart from the case commands
//! because they touch no case and emit no event: rules take effect for the
//! next report routed.

use baladiya_platform::audit::Audit;
use baladiya_platform::events::Tx;
use uuid::Uuid;

use crate::domain::Rule;
use crate::error::RoutingError;
use crate::store;

/// A routing rule as a caller writes it (already validated).
#[derive(Debug, Clone, Default)]
pub struct RuleDraft {
    /// The rule to change; `None` adds one.
    pub id: Option<Uuid>,
    pub category_code: Option<String>,
    pub category_group: Option<String>,
    pub municipality_code: Option<String>,
    pub area: Vec<[f64; 2]>,
    pub priority: Option<i32>,
    pub assignee_code: String,
    pub description: String,
}

/// Adds a rule or changes one in force (a new version), audited.
pub async fn upsert_rule(
    tx: &mut Tx,
    audit: &Audit,
    draft: RuleDraft,
) -> Result<Rule, RoutingError> {
    let now = tx.now();
    let existing = match draft.id {
        Some(id) => Some(
            store::rule_for_update(tx, id)
                .await?
                .ok_or(RoutingError::RuleNotFound)?,
        ),
        None => None,
    };
    let rule = Rule {
        id: draft.id.unwrap_or_else(Uuid::now_v7),
        category_code: draft.category_code,
        category_group: draft.category_group,
        municipality_code: draft.municipality_code,
        area: draft.area,
        priority: draft.priority,
        assignee_code: draft.assignee_code,
        description: draft.description,
        version: existing.as_ref().map_or(1, |e| e.version + 1),
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
        updated_by: audit.caller.subject.clone(),
    };
    let action = if existing.is_some() {
        "changed"
    } else {
        "created"
    };
    store::put_rule(tx, &rule, action, None).await?;
    audit.record(tx, now, &rule.id.to_string()).await?;
    Ok(rule)
}

/// Deletes a rule in force (its last version says so), audited.
pub async fn delete_rule(tx: &mut Tx, audit: &Audit, id: Uuid) -> Result<(), RoutingError> {
    let mut rule = store::rule_for_update(tx, id)
        .await?
        .ok_or(RoutingError::RuleNotFound)?;
    rule.version += 1;
    rule.updated_at = tx.now();
    rule.updated_by = audit.caller.subject.clone();
    store::put_rule(tx, &rule, "deleted", None).await?;
    audit.record(tx, rule.updated_at, &id.to_string()).await?;
    Ok(())
}

/// Adds a seeded rule unless a rule with its key was ever seeded, so
/// operators' edits and deletions survive restarts; `true` if added.
pub async fn seed_rule(tx: &mut Tx, key: &str, rule: &Rule) -> Result<bool, RoutingError> {
    if store::seeded(tx, key).await? {
        return Ok(false);
    }
    store::put_rule(tx, rule, "created", Some(key)).await?;
    Ok(true)
}
