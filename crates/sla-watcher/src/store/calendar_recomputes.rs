//! Calendar recomputation jobs: what a calendar change left to recompute,
//! worked through in batches that move a cursor (see
//! `crate::commands::recompute_calendar_step`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

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
