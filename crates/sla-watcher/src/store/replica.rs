//! The partner replica: agreement versions and calendars as the watcher keeps
//! them, in its own versioned format (`crate::replica_format`), read back
//! into the domain types.

use baladiya_agreements::domain::{AgreementBody, CalendarRecord};
use baladiya_worktime::CalendarSpec;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::replica_format::{StoredAgreement, StoredCalendar};

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
