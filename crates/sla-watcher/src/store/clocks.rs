//! Clocks as stored: their terms, inputs and computed state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::sla_clock::{Input, InputKind};

/// One escalation level as a clock stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLevel {
    pub level: u32,
    pub delay_secs: u64,
    pub contact: String,
    /// Where the partner wants the escalation POSTed, if anywhere.
    #[serde(default)]
    pub webhook_url: String,
}

/// A clock as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockRow {
    pub id: Uuid,
    pub key: String,
    pub subject_kind: String,
    pub subject_id: Uuid,
    pub metric: String,
    pub partner_code: String,
    pub agreement_version: i64,
    pub calendar_id: String,
    pub target_secs: i64,
    pub warn_at: Vec<f64>,
    pub ladder: Vec<StoredLevel>,
    pub tracking_number: String,
    pub municipality_code: String,
    pub category_code: String,
    pub inputs: Vec<(String, DateTime<Utc>)>,
    pub state: String,
    pub elapsed_secs: i64,
    pub deadline: Option<DateTime<Utc>>,
    pub original_deadline: Option<DateTime<Utc>>,
    pub breached_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl ClockRow {
    /// The inputs as the engine takes them.
    pub fn engine_inputs(&self) -> Vec<Input> {
        self.inputs
            .iter()
            .filter_map(|(k, at)| InputKind::parse(k).map(|kind| Input { at: *at, kind }))
            .collect()
    }
}

const CLOCK_COLUMNS: &str = "id, key, subject_kind, subject_id, metric, partner_code, agreement_version, calendar_id,
    target_secs, warn_at, ladder, tracking_number, municipality_code, category_code, inputs, state, elapsed_secs,
    deadline, original_deadline, breached_at, started_at, ended_at, updated_at";

fn clock_row(r: &sqlx::postgres::PgRow) -> Result<ClockRow, sqlx::Error> {
    let Json(warn_at) = r.try_get("warn_at")?;
    let Json(ladder) = r.try_get("ladder")?;
    let Json(inputs) = r.try_get("inputs")?;
    Ok(ClockRow {
        id: r.try_get("id")?,
        key: r.try_get("key")?,
        subject_kind: r.try_get("subject_kind")?,
        subject_id: r.try_get("subject_id")?,
        metric: r.try_get("metric")?,
        partner_code: r.try_get("partner_code")?,
        agreement_version: r.try_get("agreement_version")?,
        calendar_id: r.try_get("calendar_id")?,
        target_secs: r.try_get("target_secs")?,
        warn_at,
        ladder,
        tracking_number: r.try_get("tracking_number")?,
        municipality_code: r.try_get("municipality_code")?,
        category_code: r.try_get("category_code")?,
        inputs,
        state: r.try_get("state")?,
        elapsed_secs: r.try_get("elapsed_secs")?,
        deadline: r.try_get("deadline")?,
        original_deadline: r.try_get("original_deadline")?,
        breached_at: r.try_get("breached_at")?,
        started_at: r.try_get("started_at")?,
        ended_at: r.try_get("ended_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A subject's clocks, locked for a recomputation when `lock`.
pub async fn clocks_of(
    conn: &mut PgConnection,
    kind: &str,
    subject: Uuid,
    lock: bool,
) -> Result<Vec<ClockRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLOCK_COLUMNS} FROM clocks WHERE subject_kind = $1 AND subject_id = $2 ORDER BY started_at, key{lock}"
    )))
    .bind(kind)
    .bind(subject)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(clock_row)
    .collect()
}

pub async fn clock(conn: &mut PgConnection, id: Uuid) -> Result<Option<ClockRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLOCK_COLUMNS} FROM clocks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(clock_row)
    .transpose()
}

pub async fn put_clock(conn: &mut PgConnection, c: &ClockRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO clocks (id, key, subject_kind, subject_id, metric, partner_code, agreement_version, calendar_id,
                             target_secs, warn_at, ladder, tracking_number, municipality_code, category_code, inputs,
                             state, elapsed_secs, deadline, original_deadline, breached_at, started_at, ended_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)
         ON CONFLICT (id) DO UPDATE SET inputs = EXCLUDED.inputs, state = EXCLUDED.state,
           agreement_version = EXCLUDED.agreement_version, calendar_id = EXCLUDED.calendar_id,
           target_secs = EXCLUDED.target_secs, warn_at = EXCLUDED.warn_at, ladder = EXCLUDED.ladder,
           elapsed_secs = EXCLUDED.elapsed_secs, deadline = EXCLUDED.deadline,
           original_deadline = EXCLUDED.original_deadline, breached_at = EXCLUDED.breached_at,
           started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, updated_at = EXCLUDED.updated_at",
    )
    .bind(c.id)
    .bind(&c.key)
    .bind(&c.subject_kind)
    .bind(c.subject_id)
    .bind(&c.metric)
    .bind(&c.partner_code)
    .bind(c.agreement_version)
    .bind(&c.calendar_id)
    .bind(c.target_secs)
    .bind(Json(&c.warn_at))
    .bind(Json(&c.ladder))
    .bind(&c.tracking_number)
    .bind(&c.municipality_code)
    .bind(&c.category_code)
    .bind(Json(&c.inputs))
    .bind(&c.state)
    .bind(c.elapsed_secs)
    .bind(c.deadline)
    .bind(c.original_deadline)
    .bind(c.breached_at)
    .bind(c.started_at)
    .bind(c.ended_at)
    .bind(c.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Gives a clock a new key (a superseded clock frees its key).
pub async fn rekey_clock(conn: &mut PgConnection, id: Uuid, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE clocks SET key = $2 WHERE id = $1")
        .bind(id)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Breached clocks, newest breach first, breached by `as_of`.
pub async fn breaches(
    conn: &mut PgConnection,
    partner: Option<&str>,
    municipality: Option<&str>,
    as_of: DateTime<Utc>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ClockRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CLOCK_COLUMNS} FROM clocks
         WHERE breached_at IS NOT NULL AND breached_at <= $2 AND ($1::text IS NULL OR partner_code = $1)
           AND ($3::timestamptz IS NULL OR (breached_at, id) < ($3, $4))
           AND ($6::text IS NULL OR municipality_code = $6)
         ORDER BY breached_at DESC, id DESC LIMIT $5"
    )))
    .bind(partner)
    .bind(as_of)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .bind(municipality)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(clock_row)
    .collect()
}
