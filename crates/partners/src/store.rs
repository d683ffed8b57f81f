//! The `partners` schema. Every function takes a connection so callers choose
//! the transaction; JSON columns hold the domain types as they serialize.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::domain::{Agreement, AgreementBody, CalendarRecord, Contact, Partner, PartnerKind};

/// A stored calendar with its revision and change time.
#[derive(Debug, Clone)]
pub struct StoredCalendar {
    pub record: CalendarRecord,
    pub revision: i64,
    pub updated_at: DateTime<Utc>,
}

/// A calendar row. `spec` is `worktime::CalendarSpec` as JSON, here and (with
/// the watcher's `"format"` key beside its fields) in the SLA watcher's
/// replica (`sla.calendars.spec`, `baladiya_sla_watcher::replica_format`).
///
/// No SQL migration came with the weekdays of hours overrides: an override
/// stored before `days` existed has no `days` key, which deserializes (serde
/// default) as "every working weekday of the calendar", exactly the meaning
/// Saudi and Omani offices give Ramadan hours, and the corrected one. Writing
/// `days` into old rows would change nothing and would make a rollback read a
/// key it ignores anyway. Clocks computed before the correction are
/// recomputed by the watcher when the calendar next changes (see
/// docs/operations.md, "Upgrade, with migrations").
fn calendar_row(row: &sqlx::postgres::PgRow) -> Result<StoredCalendar, sqlx::Error> {
    let Json(spec) = row.try_get("spec")?;
    Ok(StoredCalendar {
        record: CalendarRecord {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            spec,
        },
        revision: row.try_get("revision")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub async fn calendar(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<StoredCalendar>, sqlx::Error> {
    sqlx::query("SELECT id, name, spec, revision, updated_at FROM calendars WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(calendar_row)
        .transpose()
}

/// Locks the calendar row for a read-modify-write.
pub async fn calendar_for_update(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<StoredCalendar>, sqlx::Error> {
    sqlx::query(
        "SELECT id, name, spec, revision, updated_at FROM calendars WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(calendar_row)
    .transpose()
}

pub async fn calendars(conn: &mut PgConnection) -> Result<Vec<StoredCalendar>, sqlx::Error> {
    sqlx::query("SELECT id, name, spec, revision, updated_at FROM calendars ORDER BY id")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(calendar_row)
        .collect()
}

pub async fn calendar_ids(conn: &mut PgConnection) -> Result<HashSet<String>, sqlx::Error> {
    Ok(sqlx::query_scalar("SELECT id FROM calendars")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect())
}

/// Inserts or replaces a calendar; returns the new revision.
pub async fn put_calendar(
    conn: &mut PgConnection,
    c: &CalendarRecord,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO calendars (id, name, spec, revision, updated_at) VALUES ($1, $2, $3, 1, $4)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, spec = EXCLUDED.spec,
           revision = calendars.revision + 1, updated_at = EXCLUDED.updated_at
         RETURNING revision",
    )
    .bind(&c.id)
    .bind(&c.name)
    .bind(Json(&c.spec))
    .bind(now)
    .fetch_one(&mut *conn)
    .await
}

fn partner_row(row: &sqlx::postgres::PgRow) -> Result<(Partner, DateTime<Utc>), sqlx::Error> {
    let Json(contacts): Json<Vec<Contact>> = row.try_get("contacts")?;
    let kind: String = row.try_get("kind")?;
    Ok((
        Partner {
            code: row.try_get("code")?,
            name_ar: row.try_get("name_ar")?,
            name_en: row.try_get("name_en")?,
            kind: PartnerKind::parse(&kind).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown partner kind {kind}").into())
            })?,
            contacts,
            calendar_id: row.try_get("calendar_id")?,
            active: row.try_get("active")?,
        },
        row.try_get("updated_at")?,
    ))
}

const PARTNER_COLUMNS: &str =
    "code, name_ar, name_en, kind, contacts, calendar_id, active, updated_at";

pub async fn partner(
    conn: &mut PgConnection,
    code: &str,
) -> Result<Option<(Partner, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PARTNER_COLUMNS} FROM partners WHERE code = $1"
    )))
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(partner_row)
    .transpose()
}

/// Locks a partner row (serialises agreement publication per partner).
pub async fn lock_partner(conn: &mut PgConnection, code: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT 1 FROM partners WHERE code = $1 FOR UPDATE")
            .bind(code)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// A page of partners after `after` (by code).
pub async fn partners(
    conn: &mut PgConnection,
    after: &str,
    kind: Option<PartnerKind>,
    include_inactive: bool,
    limit: i64,
) -> Result<Vec<(Partner, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {PARTNER_COLUMNS} FROM partners
         WHERE code > $1 AND ($2::text IS NULL OR kind = $2) AND (active OR $3)
         ORDER BY code LIMIT $4"
    )))
    .bind(after)
    .bind(kind.map(PartnerKind::as_str))
    .bind(include_inactive)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(partner_row)
    .collect()
}

pub async fn put_partner(
    conn: &mut PgConnection,
    p: &Partner,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO partners (code, name_ar, name_en, kind, contacts, calendar_id, active, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (code) DO UPDATE SET name_ar = EXCLUDED.name_ar, name_en = EXCLUDED.name_en,
           kind = EXCLUDED.kind, contacts = EXCLUDED.contacts, calendar_id = EXCLUDED.calendar_id,
           active = EXCLUDED.active, updated_at = EXCLUDED.updated_at",
    )
    .bind(&p.code)
    .bind(&p.name_ar)
    .bind(&p.name_en)
    .bind(p.kind.as_str())
    .bind(Json(&p.contacts))
    .bind(&p.calendar_id)
    .bind(p.active)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every version of a partner's agreement, newest first.
pub async fn agreements(
    conn: &mut PgConnection,
    code: &str,
) -> Result<Vec<Agreement>, sqlx::Error> {
    sqlx::query(
        "SELECT partner_code, version, effective_from, body, published_at, published_by
         FROM agreements WHERE partner_code = $1 ORDER BY version DESC",
    )
    .bind(code)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| {
        let Json(body): Json<AgreementBody> = row.try_get("body")?;
        Ok(Agreement {
            partner_code: row.try_get("partner_code")?,
            version: row.try_get("version")?,
            effective_from: row.try_get("effective_from")?,
            body,
            published_at: row.try_get("published_at")?,
            published_by: row.try_get("published_by")?,
        })
    })
    .collect()
}

pub async fn insert_agreement(conn: &mut PgConnection, a: &Agreement) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agreements (partner_code, version, effective_from, body, published_at, published_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&a.partner_code)
    .bind(a.version)
    .bind(a.effective_from)
    .bind(Json(&a.body))
    .bind(a.published_at)
    .bind(&a.published_by)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
