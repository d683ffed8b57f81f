//! Timers: the instants a clock fires at, which of them may fire (the
//! watcher's knowledge of its producers' streams), and what fired.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::ClockRow;

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
