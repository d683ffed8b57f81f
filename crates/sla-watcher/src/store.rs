//! The `sla` schema: the partner replica, subject event logs, clocks, timers
//! and escalations.

use std::collections::HashMap;

use baladiya_agreements::domain::{AgreementBody, CalendarRecord};
use baladiya_worktime::CalendarSpec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::clock::Input;
use crate::derive::{ApplicationEvent, CaseEvent, CaseEventKind};
use crate::replica_format::{StoredAgreement, StoredCalendar};

// ---------------------------------------------------------------- replica
//
// Bodies and calendars are stored in the watcher's own versioned format
// (`crate::replica_format`), read back into the domain types.

pub async fn put_agreement(
    conn: &mut PgConnection,
    partner: &str,
    version: i64,
    effective_from: DateTime<Utc>,
    body: &AgreementBody,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agreements (partner_code, version, effective_from, body) VALUES ($1, $2, $3, $4)
         ON CONFLICT (partner_code, version) DO NOTHING",
    )
    .bind(partner)
    .bind(version)
    .bind(effective_from)
    .bind(Json(StoredAgreement::from(body)))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The agreement version in force for a partner at an instant.
pub async fn agreement_at(
    conn: &mut PgConnection,
    partner: &str,
    at: DateTime<Utc>,
) -> Result<Option<(i64, AgreementBody)>, sqlx::Error> {
    sqlx::query(
        "SELECT version, body FROM agreements WHERE partner_code = $1 AND effective_from <= $2
         ORDER BY effective_from DESC LIMIT 1",
    )
    .bind(partner)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| {
        let Json(stored) = r.try_get::<Json<StoredAgreement>, _>("body")?;
        let body = stored
            .into_body()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok((r.try_get("version")?, body))
    })
    .transpose()
}

pub async fn put_calendar(
    conn: &mut PgConnection,
    c: &CalendarRecord,
    revision: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO calendars (id, spec, revision) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET spec = EXCLUDED.spec, revision = EXCLUDED.revision
         WHERE calendars.revision < EXCLUDED.revision",
    )
    .bind(&c.id)
    .bind(Json(StoredCalendar::new(&c.spec)))
    .bind(revision)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn calendar(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<CalendarSpec>, sqlx::Error> {
    sqlx::query_scalar::<_, Json<StoredCalendar>>("SELECT spec FROM calendars WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|Json(stored)| {
            stored
                .into_spec()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))
        })
        .transpose()
}

// ---------------------------------------------------------------- subjects

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

/// Asks for the clocks on a calendar to be recomputed (after a change whose
/// first affected instant is `ended_since`, if known): a newer revision
/// restarts a job under way.
pub async fn request_calendar_recompute(
    conn: &mut PgConnection,
    calendar_id: &str,
    revision: i64,
    ended_since: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO calendar_recomputes (calendar_id, revision, ended_since) VALUES ($1, $2, $3)
         ON CONFLICT (calendar_id) DO UPDATE
           SET revision = EXCLUDED.revision, after_kind = '', after_id = '00000000-0000-0000-0000-000000000000',
               ended_since = LEAST(calendar_recomputes.ended_since, EXCLUDED.ended_since),
               requested_at = now()
         WHERE calendar_recomputes.revision <= EXCLUDED.revision",
    )
    .bind(calendar_id)
    .bind(revision)
    .bind(ended_since)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A calendar recomputation under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarRecompute {
    pub calendar_id: String,
    pub ended_since: Option<DateTime<Utc>>,
    pub after: (String, Uuid),
}

/// Claims a calendar recomputation no other replica is working on.
pub async fn claim_calendar_recompute(
    conn: &mut PgConnection,
) -> Result<Option<CalendarRecompute>, sqlx::Error> {
    let row: Option<(String, Option<DateTime<Utc>>, String, Uuid)> = sqlx::query_as(
        "SELECT calendar_id, ended_since, after_kind, after_id FROM calendar_recomputes
         ORDER BY requested_at LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(
        row.map(|(calendar_id, ended_since, kind, id)| CalendarRecompute {
            calendar_id,
            ended_since,
            after: (kind, id),
        }),
    )
}

/// The next `limit` subjects of a recomputation: with a clock on its
/// calendar that is open, or ended since its `ended_since`.
pub async fn calendar_subjects(
    conn: &mut PgConnection,
    job: &CalendarRecompute,
    limit: i64,
) -> Result<Vec<(String, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT subject_kind, subject_id FROM clocks
         WHERE calendar_id = $1 AND (ended_at IS NULL OR ended_at >= $2)
           AND (subject_kind, subject_id) > ($3, $4)
         ORDER BY subject_kind, subject_id LIMIT $5",
    )
    .bind(&job.calendar_id)
    .bind(job.ended_since)
    .bind(&job.after.0)
    .bind(job.after.1)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
}

/// Moves a recomputation past `after`, or ends it when `after` is `None`.
pub async fn advance_calendar_recompute(
    conn: &mut PgConnection,
    calendar_id: &str,
    after: Option<&(String, Uuid)>,
) -> Result<(), sqlx::Error> {
    match after {
        Some((kind, id)) => sqlx::query(
            "UPDATE calendar_recomputes SET after_kind = $2, after_id = $3 WHERE calendar_id = $1",
        )
        .bind(calendar_id)
        .bind(kind)
        .bind(id),
        None => {
            sqlx::query("DELETE FROM calendar_recomputes WHERE calendar_id = $1").bind(calendar_id)
        }
    }
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- clocks

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
            .filter_map(|(k, at)| {
                crate::clock::InputKind::parse(k).map(|kind| Input { at: *at, kind })
            })
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

// ---------------------------------------------------------------- timers

/// A timer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRow {
    pub clock_id: Uuid,
    pub kind: String,
    pub seq: i32,
    pub due_at: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    /// Fired (or, when claimed, to fire) without complete knowledge.
    pub provisional: bool,
    /// The event its firing published.
    pub event_id: Option<Uuid>,
}

const TIMER_COLUMNS: &str =
    "t.clock_id, t.kind, t.seq, t.due_at, t.fired_at, t.provisional, t.event_id";

fn timer_row(r: &sqlx::postgres::PgRow) -> Result<TimerRow, sqlx::Error> {
    Ok(TimerRow {
        clock_id: r.try_get("clock_id")?,
        kind: r.try_get("kind")?,
        seq: r.try_get("seq")?,
        due_at: r.try_get("due_at")?,
        fired_at: r.try_get("fired_at")?,
        provisional: r.try_get("provisional")?,
        event_id: r.try_get("event_id")?,
    })
}

pub async fn timers_of(
    conn: &mut PgConnection,
    clock_id: Uuid,
) -> Result<Vec<TimerRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TIMER_COLUMNS} FROM timers t WHERE t.clock_id = $1 FOR UPDATE"
    )))
    .bind(clock_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(timer_row)
    .collect()
}

/// Schedules (or moves) a clock's unfired timers `kinds[i]` (number
/// `seqs[i]`) to `due[i]`, in one statement: a clock has up to six.
pub async fn put_timers(
    conn: &mut PgConnection,
    clock_id: Uuid,
    kinds: &[&str],
    seqs: &[i32],
    due: &[DateTime<Utc>],
) -> Result<(), sqlx::Error> {
    if kinds.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO timers (clock_id, kind, seq, due_at)
         SELECT $1, * FROM UNNEST($2::text[], $3::int4[], $4::timestamptz[])
         ON CONFLICT (clock_id, kind) DO UPDATE SET due_at = EXCLUDED.due_at WHERE timers.fired_at IS NULL",
    )
    .bind(clock_id)
    .bind(kinds)
    .bind(seqs)
    .bind(due)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Drops a clock's unfired timers of these kinds, in one statement.
pub async fn drop_timers(
    conn: &mut PgConnection,
    clock_id: Uuid,
    kinds: &[&str],
) -> Result<(), sqlx::Error> {
    if kinds.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM timers WHERE clock_id = $1 AND kind = ANY($2) AND fired_at IS NULL")
        .bind(clock_id)
        .bind(kinds)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How far the watcher knows its producers' streams to be complete: a
/// timer of a case fires once routing's watermark has passed it, one of an
/// application once licensing's has, and neither while an event of its
/// subject is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Known {
    pub cases: Option<DateTime<Utc>>,
    pub applications: Option<DateTime<Utc>>,
}

/// The condition that a timer's instant is covered: its producer's
/// watermark passed it and no input of its subject is parked (`t` timers,
/// `c` clocks; parameters `$cases` and `$cases + 1` are [`Known`]).
fn covered(cases: u8) -> String {
    let applications = cases + 1;
    format!(
        "COALESCE(t.due_at <= CASE c.subject_kind WHEN 'case' THEN ${cases}::timestamptz
                                        WHEN 'application' THEN ${applications}::timestamptz END, false)
         AND NOT EXISTS (SELECT 1 FROM parked_events p
                         WHERE p.replayed_at IS NULL AND p.headers ->> 'ce-subject' = c.subject_id::text)"
    )
}

/// Claims due timers that may fire, earliest first; other replicas skip them.
/// A timer may fire once its instant is covered ([`Known`]), or, marked
/// provisional, once it has waited past `held_until` (its due instant plus
/// `sla.max_hold`). Timers in `skip` (clock, kind) failed lately and wait.
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
    known: Known,
    held_until: DateTime<Utc>,
    skip: &[(Uuid, String)],
) -> Result<Vec<TimerRow>, sqlx::Error> {
    let (skip_clocks, skip_kinds): (Vec<Uuid>, Vec<String>) = skip.iter().cloned().unzip();
    let covered = covered(3);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT t.clock_id, t.kind, t.seq, t.due_at, t.fired_at, NOT ({covered}) AS provisional, t.event_id
         FROM timers t JOIN clocks c ON c.id = t.clock_id
         WHERE t.fired_at IS NULL AND t.due_at <= $1 AND (({covered}) OR t.due_at <= $5)
           AND NOT EXISTS (SELECT 1 FROM unnest($6::uuid[], $7::text[]) AS s(clock_id, kind)
                           WHERE s.clock_id = t.clock_id AND s.kind = t.kind)
         ORDER BY t.due_at, t.seq LIMIT $2 FOR UPDATE OF t SKIP LOCKED"
    )))
    .bind(now)
    .bind(limit)
    .bind(known.cases)
    .bind(known.applications)
    .bind(held_until)
    .bind(&skip_clocks)
    .bind(&skip_kinds)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(timer_row)
    .collect()
}

/// Due timers held back, per subject kind (`case`, `application`).
pub async fn held_counts(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    known: Known,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let covered = covered(2);
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT c.subject_kind, count(*) FROM timers t JOIN clocks c ON c.id = t.clock_id
         WHERE t.fired_at IS NULL AND t.due_at <= $1 AND NOT ({covered})
         GROUP BY c.subject_kind"
    )))
    .bind(now)
    .bind(known.cases)
    .bind(known.applications)
    .fetch_all(&mut *conn)
    .await
}

/// The held timers of these clocks (at most the earliest per clock), with
/// whether their subject has a parked input.
pub async fn held_timers(
    conn: &mut PgConnection,
    clock_ids: &[Uuid],
    now: DateTime<Utc>,
    known: Known,
) -> Result<HashMap<Uuid, (TimerRow, bool)>, sqlx::Error> {
    let covered = covered(3);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (t.clock_id) {TIMER_COLUMNS},
                EXISTS (SELECT 1 FROM parked_events p
                        WHERE p.replayed_at IS NULL AND p.headers ->> 'ce-subject' = c.subject_id::text) AS parked
         FROM timers t JOIN clocks c ON c.id = t.clock_id
         WHERE t.clock_id = ANY($2) AND t.fired_at IS NULL AND t.due_at <= $1 AND NOT ({covered})
         ORDER BY t.clock_id, t.due_at, t.seq"
    )))
    .bind(now)
    .bind(clock_ids)
    .bind(known.cases)
    .bind(known.applications)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("clock_id")?,
                (timer_row(r)?, r.try_get("parked")?),
            ))
        })
        .collect()
}

pub async fn mark_fired(
    conn: &mut PgConnection,
    t: &TimerRow,
    at: DateTime<Utc>,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE timers SET fired_at = $3, provisional = $4, event_id = $5 WHERE clock_id = $1 AND kind = $2",
    )
    .bind(t.clock_id)
    .bind(&t.kind)
    .bind(at)
    .bind(t.provisional)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Counts a fired timer as not fired (it was withdrawn): it may fire again.
pub async fn unfire(conn: &mut PgConnection, t: &TimerRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH counted AS (UPDATE clocks SET withdrawals = withdrawals + 1 WHERE id = $1)
         UPDATE timers SET fired_at = NULL, provisional = false, event_id = NULL
         WHERE clock_id = $1 AND kind = $2",
    )
    .bind(t.clock_id)
    .bind(&t.kind)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The earliest unfired timer due after `now` (the ones due by then are
/// fired or held).
pub async fn next_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM timers WHERE fired_at IS NULL AND due_at > $1")
        .bind(now)
        .fetch_one(&mut *conn)
        .await
}

/// The earliest unfired timer that may fire by `now` (see [`claim_due`]):
/// one still there could not fire. Timers held for knowledge are not counted
/// ([`held_counts`] are).
pub async fn oldest_fireable(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    known: Known,
    held_until: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let covered = covered(2);
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT min(t.due_at) FROM timers t JOIN clocks c ON c.id = t.clock_id
         WHERE t.fired_at IS NULL AND t.due_at <= $1 AND (({covered}) OR t.due_at <= $4)"
    )))
    .bind(now)
    .bind(known.cases)
    .bind(known.applications)
    .bind(held_until)
    .fetch_one(&mut *conn)
    .await
}

/// Whether another clock of the subject and partner than `except` has a
/// breach that fired and stands.
pub async fn other_breach_stands(
    conn: &mut PgConnection,
    c: &ClockRow,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM timers t JOIN clocks c ON c.id = t.clock_id
                        WHERE c.subject_kind = $1 AND c.subject_id = $2 AND c.partner_code = $3
                          AND c.id <> $4 AND t.kind = 'breach' AND t.fired_at IS NOT NULL)",
    )
    .bind(&c.subject_kind)
    .bind(c.subject_id)
    .bind(&c.partner_code)
    .bind(c.id)
    .fetch_one(&mut *conn)
    .await
}

/// What a clock has fired so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fired {
    pub warnings: i64,
    pub escalations: i64,
    /// Firings withdrawn, all kinds.
    pub withdrawals: i64,
    /// Its breach fired provisionally and stands.
    pub breach_provisional: bool,
}

/// What each clock fired so far (one query for a page).
pub async fn fired_counts(
    conn: &mut PgConnection,
    clock_ids: &[Uuid],
) -> Result<HashMap<Uuid, Fired>, sqlx::Error> {
    sqlx::query(
        "SELECT c.id AS clock_id,
                count(t.kind) FILTER (WHERE t.kind LIKE 'warning:%' AND t.fired_at IS NOT NULL) AS warnings,
                count(t.kind) FILTER (WHERE t.kind LIKE 'escalation:%' AND t.fired_at IS NOT NULL) AS escalations,
                c.withdrawals::bigint AS withdrawals,
                bool_or(t.kind = 'breach' AND t.fired_at IS NOT NULL AND t.provisional) AS breach_provisional
         FROM clocks c LEFT JOIN timers t ON t.clock_id = c.id WHERE c.id = ANY($1)
         GROUP BY c.id, c.withdrawals",
    )
    .bind(clock_ids)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("clock_id")?,
            Fired {
                warnings: r.try_get("warnings")?,
                escalations: r.try_get("escalations")?,
                withdrawals: r.try_get("withdrawals")?,
                breach_provisional: r.try_get::<Option<bool>, _>("breach_provisional")?.unwrap_or(false),
            },
        ))
    })
    .collect()
}

// ---------------------------------------------------------------- escalations

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
