//! Escalations: raised, acknowledged, withdrawn, and listed.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// An escalation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationRow {
    pub id: Uuid,
    pub clock_id: Uuid,
    pub level: i32,
    pub partner_code: String,
    pub subject_kind: String,
    pub subject_id: Uuid,
    pub tracking_number: String,
    pub metric: String,
    pub contact: String,
    pub agreement_version: i64,
    pub raised_at: DateTime<Utc>,
    pub overdue_working_secs: i64,
    pub overdue_wall_secs: i64,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub note: Option<String>,
    /// The webhook delivery's state and attempts, if one was asked for.
    pub webhook: Option<(String, i32)>,
    /// Raised without complete knowledge.
    pub provisional: bool,
    /// When and why it was withdrawn.
    pub withdrawn: Option<(DateTime<Utc>, String)>,
}

const ESCALATION_COLUMNS: &str = "id, clock_id, level, partner_code, subject_kind, subject_id, tracking_number, metric,
    contact, agreement_version, raised_at, overdue_working_secs, overdue_wall_secs, acknowledged_at, acknowledged_by, note,
    provisional, withdrawn_at, withdrawal_reason,
    (SELECT state FROM webhook_deliveries d WHERE d.escalation_id = escalations.id AND d.kind = 'raised') AS webhook_state,
    (SELECT attempts FROM webhook_deliveries d WHERE d.escalation_id = escalations.id AND d.kind = 'raised') AS webhook_attempts";

fn escalation_row(r: &sqlx::postgres::PgRow) -> Result<EscalationRow, sqlx::Error> {
    Ok(EscalationRow {
        id: r.try_get("id")?,
        clock_id: r.try_get("clock_id")?,
        level: r.try_get("level")?,
        partner_code: r.try_get("partner_code")?,
        subject_kind: r.try_get("subject_kind")?,
        subject_id: r.try_get("subject_id")?,
        tracking_number: r.try_get("tracking_number")?,
        metric: r.try_get("metric")?,
        contact: r.try_get("contact")?,
        agreement_version: r.try_get("agreement_version")?,
        raised_at: r.try_get("raised_at")?,
        overdue_working_secs: r.try_get("overdue_working_secs")?,
        overdue_wall_secs: r.try_get("overdue_wall_secs")?,
        acknowledged_at: r.try_get("acknowledged_at")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        note: r.try_get("note")?,
        webhook: r
            .try_get::<Option<String>, _>("webhook_state")?
            .map(|state| {
                Ok::<_, sqlx::Error>((
                    state,
                    r.try_get::<Option<i32>, _>("webhook_attempts")?
                        .unwrap_or(0),
                ))
            })
            .transpose()?,
        provisional: r.try_get("provisional")?,
        withdrawn: r
            .try_get::<Option<DateTime<Utc>>, _>("withdrawn_at")?
            .map(|at| {
                Ok::<_, sqlx::Error>((
                    at,
                    r.try_get::<Option<String>, _>("withdrawal_reason")?
                        .unwrap_or_default(),
                ))
            })
            .transpose()?,
    })
}

/// Records an escalation; `false` if the level was already raised (and stands).
pub async fn add_escalation(
    conn: &mut PgConnection,
    e: &EscalationRow,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO escalations (id, clock_id, level, partner_code, subject_kind, subject_id, tracking_number, metric,
                                  contact, agreement_version, raised_at, overdue_working_secs, overdue_wall_secs, provisional)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (clock_id, level) WHERE withdrawn_at IS NULL DO NOTHING",
    )
    .bind(e.id)
    .bind(e.clock_id)
    .bind(e.level)
    .bind(&e.partner_code)
    .bind(&e.subject_kind)
    .bind(e.subject_id)
    .bind(&e.tracking_number)
    .bind(&e.metric)
    .bind(&e.contact)
    .bind(e.agreement_version)
    .bind(e.raised_at)
    .bind(e.overdue_working_secs)
    .bind(e.overdue_wall_secs)
    .bind(e.provisional)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn escalation(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<EscalationRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ESCALATION_COLUMNS} FROM escalations WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(escalation_row)
    .transpose()
}

pub async fn acknowledge_escalation(
    conn: &mut PgConnection,
    id: Uuid,
    by: &str,
    note: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE escalations SET acknowledged_at = $2, acknowledged_by = $3, note = NULLIF($4, '') WHERE id = $1")
        .bind(id)
        .bind(at)
        .bind(by)
        .bind(note)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Withdraws the standing escalation of a clock's level; returns it, if
/// there was one.
pub async fn withdraw_escalation(
    conn: &mut PgConnection,
    clock_id: Uuid,
    level: i32,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Option<EscalationRow>, sqlx::Error> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE escalations SET withdrawn_at = $3, withdrawal_reason = $4
         WHERE clock_id = $1 AND level = $2 AND withdrawn_at IS NULL RETURNING id",
    )
    .bind(clock_id)
    .bind(level)
    .bind(at)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => escalation(conn, id).await,
        None => Ok(None),
    }
}

/// Which escalations a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationFilter {
    Any,
    /// Standing and not acknowledged.
    Open,
    Acknowledged,
    Withdrawn,
}

impl EscalationFilter {
    fn condition(self) -> &'static str {
        match self {
            Self::Any => "true",
            Self::Open => "acknowledged_at IS NULL AND withdrawn_at IS NULL",
            Self::Acknowledged => "acknowledged_at IS NOT NULL",
            Self::Withdrawn => "withdrawn_at IS NOT NULL",
        }
    }
}

/// Escalations, newest first.
pub async fn escalations(
    conn: &mut PgConnection,
    partner: Option<&str>,
    municipality: Option<&str>,
    level: Option<i32>,
    state: EscalationFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<EscalationRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ESCALATION_COLUMNS} FROM escalations
         WHERE ($1::text IS NULL OR partner_code = $1) AND ($2::int IS NULL OR level = $2)
           AND ({state})
           AND ($3::timestamptz IS NULL OR (raised_at, id) < ($3, $4))
           AND ($6::text IS NULL OR clock_id IN (SELECT id FROM clocks WHERE municipality_code = $6))
         ORDER BY raised_at DESC, id DESC LIMIT $5",
        state = state.condition()
    )))
    .bind(partner)
    .bind(level)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .bind(municipality)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(escalation_row)
    .collect()
}
