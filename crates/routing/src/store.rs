//! The `routing` schema: rules with their versions, cases, history, supporters.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{Rule, Status};

const RULE_COLUMNS: &str =
    "id, category_code, category_group, municipality_code, area, priority, assignee_code,
    description, version, created_at, updated_at, updated_by";

fn rule_row(r: &sqlx::postgres::PgRow) -> Result<Rule, sqlx::Error> {
    let area: Option<Json<Vec<[f64; 2]>>> = r.try_get("area")?;
    Ok(Rule {
        id: r.try_get("id")?,
        category_code: r.try_get("category_code")?,
        category_group: r.try_get("category_group")?,
        municipality_code: r.try_get("municipality_code")?,
        area: area.map(|a| a.0).unwrap_or_default(),
        priority: r.try_get("priority")?,
        assignee_code: r.try_get("assignee_code")?,
        description: r.try_get("description")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        updated_by: r.try_get("updated_by")?,
    })
}

/// The rules in force.
pub async fn rules(conn: &mut PgConnection) -> Result<Vec<Rule>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM rules WHERE NOT deleted"
    )))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(rule_row)
    .collect()
}

/// One rule in force, locked for a change.
pub async fn rule_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Rule>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RULE_COLUMNS} FROM rules WHERE id = $1 AND NOT deleted FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(rule_row)
    .transpose()
}

/// Writes a rule (its `version` already set) and records the version.
pub async fn put_rule(
    conn: &mut PgConnection,
    rule: &Rule,
    action: &str,
    seed_key: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO rules (id, seed_key, category_code, category_group, municipality_code, area, priority,
                            assignee_code, description, version, created_at, updated_at, updated_by, deleted)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (id) DO UPDATE SET category_code = EXCLUDED.category_code,
           category_group = EXCLUDED.category_group, municipality_code = EXCLUDED.municipality_code,
           area = EXCLUDED.area, priority = EXCLUDED.priority, assignee_code = EXCLUDED.assignee_code,
           description = EXCLUDED.description, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at,
           updated_by = EXCLUDED.updated_by, deleted = EXCLUDED.deleted",
    )
    .bind(rule.id)
    .bind(seed_key)
    .bind(&rule.category_code)
    .bind(&rule.category_group)
    .bind(&rule.municipality_code)
    .bind((!rule.area.is_empty()).then_some(Json(&rule.area)))
    .bind(rule.priority)
    .bind(&rule.assignee_code)
    .bind(&rule.description)
    .bind(rule.version)
    .bind(rule.created_at)
    .bind(rule.updated_at)
    .bind(&rule.updated_by)
    .bind(action == "deleted")
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO rule_versions (rule_id, version, action, snapshot, changed_at, changed_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(rule.id)
    .bind(rule.version)
    .bind(action)
    .bind(Json(rule))
    .bind(rule.updated_at)
    .bind(&rule.updated_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether a seeded rule with this key exists (or existed).
pub async fn seeded(conn: &mut PgConnection, seed_key: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM rules WHERE seed_key = $1")
        .bind(seed_key)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

/// A case as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseRow {
    pub id: Uuid,
    pub report_id: Uuid,
    pub tracking_number: String,
    pub municipality_code: String,
    pub category_code: String,
    pub category_group: String,
    pub priority: i32,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub assignee_code: String,
    pub status: Status,
    pub version: i64,
    pub rule_id: Option<Uuid>,
    pub report_received_at: DateTime<Utc>,
    pub last_step_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
    pub proof_uris: Vec<String>,
    pub supporters: i32,
    pub overdue_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const CASE_COLUMNS: &str = "id, report_id, tracking_number, municipality_code, category_code, category_group,
    priority, latitude, longitude, assignee_code, status, version, rule_id, report_received_at, last_step_at,
    resolved_at, resolution, proof_uris, supporters, overdue_since, created_at";

fn case_row(r: &sqlx::postgres::PgRow) -> Result<CaseRow, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let Json(proof_uris) = r.try_get("proof_uris")?;
    Ok(CaseRow {
        id: r.try_get("id")?,
        report_id: r.try_get("report_id")?,
        tracking_number: r.try_get("tracking_number")?,
        municipality_code: r.try_get("municipality_code")?,
        category_code: r.try_get("category_code")?,
        category_group: r.try_get("category_group")?,
        priority: r.try_get("priority")?,
        latitude: r.try_get("latitude")?,
        longitude: r.try_get("longitude")?,
        assignee_code: r.try_get("assignee_code")?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status}").into()))?,
        version: r.try_get("version")?,
        rule_id: r.try_get("rule_id")?,
        report_received_at: r.try_get("report_received_at")?,
        last_step_at: r.try_get("last_step_at")?,
        resolved_at: r.try_get("resolved_at")?,
        resolution: r.try_get("resolution")?,
        proof_uris,
        supporters: r.try_get("supporters")?,
        overdue_since: r.try_get("overdue_since")?,
        created_at: r.try_get("created_at")?,
    })
}

/// A case by id; `lock` takes a row lock for a transition.
pub async fn case(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<CaseRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} FROM cases WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(case_row)
    .transpose()
}

/// The case of a report.
pub async fn case_of_report(
    conn: &mut PgConnection,
    report_id: Uuid,
) -> Result<Option<CaseRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} FROM cases WHERE report_id = $1 FOR UPDATE"
    )))
    .bind(report_id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(case_row)
    .transpose()
}

/// Inserts a new case unless the report already has one; `true` if inserted.
pub async fn insert_case(conn: &mut PgConnection, c: &CaseRow) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO cases (id, report_id, tracking_number, municipality_code, category_code, category_group,
                            priority, latitude, longitude, assignee_code, status, version, rule_id,
                            report_received_at, last_step_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         ON CONFLICT (report_id) DO NOTHING",
    )
    .bind(c.id)
    .bind(c.report_id)
    .bind(&c.tracking_number)
    .bind(&c.municipality_code)
    .bind(&c.category_code)
    .bind(&c.category_group)
    .bind(c.priority)
    .bind(c.latitude)
    .bind(c.longitude)
    .bind(&c.assignee_code)
    .bind(c.status.as_str())
    .bind(c.version)
    .bind(c.rule_id)
    .bind(c.report_received_at)
    .bind(c.last_step_at)
    .bind(c.created_at)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// Writes a transition if the case is still at `expected_version`; `false`
/// when another update won.
pub async fn update_case(
    conn: &mut PgConnection,
    c: &CaseRow,
    expected_version: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE cases SET assignee_code = $3, status = $4, version = $5, last_step_at = $6, resolved_at = $7,
                          resolution = $8, proof_uris = $9, overdue_since = $10
         WHERE id = $1 AND version = $2",
    )
    .bind(c.id)
    .bind(expected_version)
    .bind(&c.assignee_code)
    .bind(c.status.as_str())
    .bind(c.version)
    .bind(c.last_step_at)
    .bind(c.resolved_at)
    .bind(&c.resolution)
    .bind(Json(&c.proof_uris))
    .bind(c.overdue_since)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// One history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub action: String,
    pub from_status: Option<Status>,
    pub to_status: Status,
    pub assignee_code: String,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub note: String,
}

pub async fn add_history(
    conn: &mut PgConnection,
    case_id: Uuid,
    h: &HistoryRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO case_history (case_id, action, from_status, to_status, assignee_code, actor, occurred_at, recorded_at, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(case_id)
    .bind(&h.action)
    .bind(h.from_status.map(Status::as_str))
    .bind(h.to_status.as_str())
    .bind(&h.assignee_code)
    .bind(&h.actor)
    .bind(h.occurred_at)
    .bind(h.recorded_at)
    .bind(&h.note)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn history(
    conn: &mut PgConnection,
    case_id: Uuid,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query(
        "SELECT action, from_status, to_status, assignee_code, actor, occurred_at, recorded_at, note
         FROM case_history WHERE case_id = $1 ORDER BY id",
    )
    .bind(case_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        let from: Option<String> = r.try_get("from_status")?;
        let to: String = r.try_get("to_status")?;
        Ok(HistoryRow {
            action: r.try_get("action")?,
            from_status: from.as_deref().and_then(Status::parse),
            to_status: Status::parse(&to).ok_or_else(|| sqlx::Error::Decode(format!("unknown status {to}").into()))?,
            assignee_code: r.try_get("assignee_code")?,
            actor: r.try_get("actor")?,
            occurred_at: r.try_get("occurred_at")?,
            recorded_at: r.try_get("recorded_at")?,
            note: r.try_get("note")?,
        })
    })
    .collect()
}

/// Counts a duplicate report as a supporter once; returns the new count, or
/// `None` if it was already counted.
pub async fn add_supporter(
    conn: &mut PgConnection,
    case_id: Uuid,
    report_id: Uuid,
) -> Result<Option<i32>, sqlx::Error> {
    let new = sqlx::query(
        "INSERT INTO case_supporters (case_id, report_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(case_id)
    .bind(report_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !new {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_scalar(
            "UPDATE cases SET supporters = supporters + 1 WHERE id = $1 RETURNING supporters",
        )
        .bind(case_id)
        .fetch_one(&mut *conn)
        .await?,
    ))
}

/// `ListCases` filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseFilter {
    pub assignee_code: Option<String>,
    pub municipality_code: Option<String>,
    pub category_code: Option<String>,
    pub status: Option<Status>,
    pub overdue_only: bool,
}

/// A page of cases, newest first, after the keyset `after`.
pub async fn cases(
    conn: &mut PgConnection,
    f: &CaseFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<CaseRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} FROM cases
         WHERE ($1::text IS NULL OR assignee_code = $1) AND ($2::text IS NULL OR municipality_code = $2)
           AND ($3::text IS NULL OR category_code = $3) AND ($4::text IS NULL OR status = $4)
           AND (NOT $5 OR overdue_since IS NOT NULL)
           AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7))
         ORDER BY created_at DESC, id DESC LIMIT $8"
    )))
    .bind(&f.assignee_code)
    .bind(&f.municipality_code)
    .bind(&f.category_code)
    .bind(f.status.map(Status::as_str))
    .bind(f.overdue_only)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(case_row)
    .collect()
}

/// Resolved cases quiet since before `before`.
pub async fn quiet_resolved(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM cases WHERE status = 'resolved' AND resolved_at <= $1 ORDER BY resolved_at LIMIT $2")
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
}

/// Clears a case's overdue mark if `partner` is still its assignee (the
/// breach that set it was withdrawn).
pub async fn clear_overdue(
    conn: &mut PgConnection,
    case_id: Uuid,
    partner: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE cases SET overdue_since = NULL
         WHERE id = $1 AND assignee_code = $2 AND overdue_since IS NOT NULL",
    )
    .bind(case_id)
    .bind(partner)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Marks a case overdue if `partner` is still its assignee and it is open.
pub async fn mark_overdue(
    conn: &mut PgConnection,
    case_id: Uuid,
    partner: &str,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE cases SET overdue_since = COALESCE(overdue_since, $3)
         WHERE id = $1 AND assignee_code = $2 AND status NOT IN ('resolved', 'closed')",
    )
    .bind(case_id)
    .bind(partner)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
