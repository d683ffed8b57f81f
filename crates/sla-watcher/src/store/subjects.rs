//! Subjects (cases and applications): their event logs, the facts their
//! clocks are labelled with, and which subjects a change of terms concerns.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::derive::{ApplicationEvent, CaseEvent, CaseEventKind};

/// Subject fields every event carries (the category is the license type for
/// applications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectFacts {
    pub tracking_number: String,
    pub municipality_code: String,
    pub category_code: String,
    pub priority: i32,
    /// An application's target in working days.
    pub target_days: i32,
}

/// Records a case event once; `false` if it was already recorded.
pub async fn add_case_event(
    conn: &mut PgConnection,
    case_id: Uuid,
    e: &CaseEvent,
    facts: &SubjectFacts,
) -> Result<bool, sqlx::Error> {
    add_event(
        conn,
        "case",
        case_id,
        e.id,
        e.kind.as_str(),
        e.at,
        &e.assignee,
        facts,
        e.report_received_at,
        e.seq,
    )
    .await
}

/// Records an application event once; `false` if it was already recorded.
pub async fn add_application_event(
    conn: &mut PgConnection,
    application_id: Uuid,
    e: &ApplicationEvent,
    facts: &SubjectFacts,
) -> Result<bool, sqlx::Error> {
    add_event(
        conn,
        "application",
        application_id,
        e.id,
        &e.kind,
        e.at,
        &e.partner,
        facts,
        None,
        0,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn add_event(
    conn: &mut PgConnection,
    subject_kind: &str,
    subject_id: Uuid,
    event_id: Uuid,
    kind: &str,
    at: DateTime<Utc>,
    party: &str,
    facts: &SubjectFacts,
    report_received_at: Option<DateTime<Utc>>,
    seq: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO subject_events (event_id, subject_kind, subject_id, kind, at, assignee_code, tracking_number,
                                     municipality_code, category_code, priority, report_received_at, target_days, seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
    )
    .bind(event_id)
    .bind(subject_kind)
    .bind(subject_id)
    .bind(kind)
    .bind(at)
    .bind(party)
    .bind(&facts.tracking_number)
    .bind(&facts.municipality_code)
    .bind(&facts.category_code)
    .bind(facts.priority)
    .bind(report_received_at)
    .bind(facts.target_days)
    .bind(seq)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

fn facts_of(r: &sqlx::postgres::PgRow) -> Result<SubjectFacts, sqlx::Error> {
    Ok(SubjectFacts {
        tracking_number: r.try_get("tracking_number")?,
        municipality_code: r.try_get("municipality_code")?,
        category_code: r.try_get("category_code")?,
        priority: r.try_get("priority")?,
        target_days: r.try_get("target_days")?,
    })
}

/// An application's events and its facts (from its first event, the submission).
pub async fn application_events(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<(Vec<ApplicationEvent>, Option<SubjectFacts>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, kind, at, assignee_code, tracking_number, municipality_code, category_code, priority, target_days
         FROM subject_events WHERE subject_kind = 'application' AND subject_id = $1
         ORDER BY (kind = 'submitted') DESC, at, event_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let facts = rows.first().map(facts_of).transpose()?;
    let events = rows
        .iter()
        .map(|r| {
            Ok(ApplicationEvent {
                id: r.try_get("event_id")?,
                kind: r.try_get("kind")?,
                at: r.try_get("at")?,
                partner: r.try_get("assignee_code")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok((events, facts))
}

/// A case's events and its facts (from its first event).
pub async fn case_events(
    conn: &mut PgConnection,
    case_id: Uuid,
) -> Result<(Vec<CaseEvent>, Option<SubjectFacts>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, kind, at, assignee_code, tracking_number, municipality_code, category_code, priority,
                report_received_at, target_days, seq
         FROM subject_events WHERE subject_kind = 'case' AND subject_id = $1 ORDER BY at, seq, event_id",
    )
    .bind(case_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut facts = None;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let kind: String = r.try_get("kind")?;
        let Some(kind) = CaseEventKind::parse(&kind) else {
            continue;
        };
        if facts.is_none() {
            facts = Some(facts_of(r)?);
        }
        events.push(CaseEvent {
            id: r.try_get("event_id")?,
            kind,
            at: r.try_get("at")?,
            assignee: r.try_get("assignee_code")?,
            report_received_at: r.try_get("report_received_at")?,
            seq: r.try_get("seq")?,
        });
    }
    Ok((events, facts))
}

/// Subjects with a clock of `partner` started at or after `since` under a
/// version older than `version`.
pub async fn subjects_of_partner_since(
    conn: &mut PgConnection,
    partner: &str,
    version: i64,
    since: DateTime<Utc>,
) -> Result<Vec<(String, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT subject_kind, subject_id FROM clocks
         WHERE partner_code = $1 AND agreement_version < $2 AND agreement_version > 0 AND started_at >= $3",
    )
    .bind(partner)
    .bind(version)
    .bind(since)
    .fetch_all(&mut *conn)
    .await
}
