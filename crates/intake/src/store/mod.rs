//! The `intake` schema: SQL only. The submit statements (the batched
//! one-statement submit and the duplicate's insert) are in [`submit`].

pub mod submit;

pub use submit::{
    DuplicateSearch, Inserted, NewReport, Submit, insert_duplicate, insert_unless_duplicate,
};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{AttachmentRef, Catalogue, Category, Priority};
use crate::pii::SealedReporter;
use baladiya_platform::geo::ServiceArea;

/// Reads categories, service areas and urgent keywords.
pub async fn load_catalogue(conn: &mut PgConnection) -> Result<Catalogue, sqlx::Error> {
    let categories = sqlx::query(
        "SELECT code, name_ar, name_en, category_group, default_priority, urgent_capable,
                duplicate_radius_meters, duplicate_window_hours, active FROM categories",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(category_row)
    .collect::<Result<Vec<_>, _>>()?;
    let areas = sqlx::query(
        "SELECT municipality_code, name_ar, name_en, tracking_prefix, time_zone, polygon
         FROM service_areas ORDER BY municipality_code",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        let Json(polygon) = r.try_get("polygon")?;
        Ok(ServiceArea {
            municipality_code: r.try_get("municipality_code")?,
            name_ar: r.try_get("name_ar")?,
            name_en: r.try_get("name_en")?,
            tracking_prefix: r.try_get("tracking_prefix")?,
            time_zone: r.try_get("time_zone")?,
            polygon,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let urgent_keywords = sqlx::query_scalar("SELECT lower(keyword) FROM urgent_keywords")
        .fetch_all(&mut *conn)
        .await?;
    Ok(Catalogue {
        categories: categories
            .into_iter()
            .map(|c| (c.code.clone(), c))
            .collect(),
        areas,
        urgent_keywords,
    })
}

fn category_row(r: &sqlx::postgres::PgRow) -> Result<Category, sqlx::Error> {
    let priority: String = r.try_get("default_priority")?;
    Ok(Category {
        code: r.try_get("code")?,
        name_ar: r.try_get("name_ar")?,
        name_en: r.try_get("name_en")?,
        group: r.try_get("category_group")?,
        default_priority: Priority::parse(&priority)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown priority {priority}").into()))?,
        urgent_capable: r.try_get("urgent_capable")?,
        duplicate_radius_meters: r.try_get::<i32, _>("duplicate_radius_meters")? as u32,
        duplicate_window_hours: r.try_get::<i32, _>("duplicate_window_hours")? as u32,
        active: r.try_get("active")?,
    })
}

/// Inserts or replaces a category; `only_new` keeps an existing one (seeding).
pub async fn put_category(
    conn: &mut PgConnection,
    c: &Category,
    now: DateTime<Utc>,
    only_new: bool,
) -> Result<bool, sqlx::Error> {
    let conflict = if only_new {
        "DO NOTHING"
    } else {
        "DO UPDATE SET name_ar = EXCLUDED.name_ar, name_en = EXCLUDED.name_en,
           category_group = EXCLUDED.category_group, default_priority = EXCLUDED.default_priority,
           urgent_capable = EXCLUDED.urgent_capable, duplicate_radius_meters = EXCLUDED.duplicate_radius_meters,
           duplicate_window_hours = EXCLUDED.duplicate_window_hours, active = EXCLUDED.active,
           updated_at = EXCLUDED.updated_at"
    };
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO categories (code, name_ar, name_en, category_group, default_priority, urgent_capable,
                                 duplicate_radius_meters, duplicate_window_hours, active, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (code) {conflict}"
    )))
    .bind(&c.code)
    .bind(&c.name_ar)
    .bind(&c.name_en)
    .bind(&c.group)
    .bind(c.default_priority.as_str())
    .bind(c.urgent_capable)
    .bind(c.duplicate_radius_meters as i32)
    .bind(c.duplicate_window_hours as i32)
    .bind(c.active)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds a service area unless one exists for the municipality.
pub async fn add_area(conn: &mut PgConnection, a: &ServiceArea) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO service_areas (municipality_code, name_ar, name_en, tracking_prefix, time_zone, polygon)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (municipality_code) DO NOTHING",
    )
    .bind(&a.municipality_code)
    .bind(&a.name_ar)
    .bind(&a.name_en)
    .bind(&a.tracking_prefix)
    .bind(&a.time_zone)
    .bind(Json(&a.polygon))
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// Adds urgent keywords that are missing.
pub async fn add_keywords(conn: &mut PgConnection, words: &[String]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO urgent_keywords (keyword) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(words)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Reserves a block of 100 tracking sequence numbers; returns its first.
pub async fn reserve_tracking_block(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT nextval('tracking_seq')")
        .fetch_one(&mut *conn)
        .await
}

/// A stored report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub id: Uuid,
    pub tracking_number: String,
    pub status: String,
    pub status_changed_at: DateTime<Utc>,
    pub municipality_code: String,
    pub category_code: String,
    pub priority: String,
    pub priority_reason: String,
    pub duplicate_of: Option<Uuid>,
    pub channel: String,
    pub description: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub national_address_short: Option<String>,
    pub observed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub assignee_code: Option<String>,
    pub expected_resolution_at: Option<DateTime<Utc>>,
    pub supporters: i32,
    pub attachments: Vec<AttachmentRef>,
    pub reporter_key: Option<String>,
    pub rating_score: Option<i16>,
    pub rating_comment: Option<String>,
    pub rated_at: Option<DateTime<Utc>>,
}

const REPORT_COLUMNS: &str = "id, tracking_number, status, status_changed_at, municipality_code, category_code,
    priority, priority_reason, duplicate_of, channel, description, latitude, longitude, national_address_short,
    observed_at, created_at, assignee_code, expected_resolution_at, supporters, attachments, reporter_key,
    rating_score, rating_comment, rated_at";

fn report_row(r: &sqlx::postgres::PgRow) -> Result<ReportRow, sqlx::Error> {
    let Json(attachments) = r.try_get("attachments")?;
    Ok(ReportRow {
        id: r.try_get("id")?,
        tracking_number: r.try_get("tracking_number")?,
        status: r.try_get("status")?,
        status_changed_at: r.try_get("status_changed_at")?,
        municipality_code: r.try_get("municipality_code")?,
        category_code: r.try_get("category_code")?,
        priority: r.try_get("priority")?,
        priority_reason: r.try_get("priority_reason")?,
        duplicate_of: r.try_get("duplicate_of")?,
        channel: r.try_get("channel")?,
        description: r.try_get("description")?,
        latitude: r.try_get("latitude")?,
        longitude: r.try_get("longitude")?,
        national_address_short: r.try_get("national_address_short")?,
        observed_at: r.try_get("observed_at")?,
        created_at: r.try_get("created_at")?,
        assignee_code: r.try_get("assignee_code")?,
        expected_resolution_at: r.try_get("expected_resolution_at")?,
        supporters: r.try_get("supporters")?,
        attachments,
        reporter_key: r.try_get("reporter_key")?,
        rating_score: r.try_get("rating_score")?,
        rating_comment: r.try_get("rating_comment")?,
        rated_at: r.try_get("rated_at")?,
    })
}

/// A report by id or tracking number.
pub async fn report(
    conn: &mut PgConnection,
    id: Option<Uuid>,
    tracking: Option<&str>,
) -> Result<Option<ReportRow>, sqlx::Error> {
    // One key per statement, so each plan is a plain unique-index lookup.
    let query = match (id, tracking) {
        (Some(id), _) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM reports WHERE id = $1"
        )))
        .bind(id),
        (None, tracking) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REPORT_COLUMNS} FROM reports WHERE tracking_number = $1"
        )))
        .bind(tracking),
    };
    query
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(report_row)
        .transpose()
}

/// Locks a report for a read-modify-write.
pub async fn report_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ReportRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {REPORT_COLUMNS} FROM reports WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(report_row)
    .transpose()
}

/// `ListReports` filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFilter {
    pub municipality_code: Option<String>,
    /// Any of these categories; empty: all.
    pub category_codes: Vec<String>,
    /// Any of these statuses; empty: all.
    pub statuses: Vec<String>,
    pub channel: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

/// A page of reports, newest first, after the keyset `after`.
pub async fn reports(
    conn: &mut PgConnection,
    f: &ReportFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ReportRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {REPORT_COLUMNS} FROM reports
         WHERE ($1::text IS NULL OR municipality_code = $1) AND (cardinality($2::text[]) = 0 OR category_code = ANY($2))
           AND (cardinality($3::text[]) = 0 OR status = ANY($3)) AND ($4::text IS NULL OR channel = $4)
           AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6)
           AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
         ORDER BY created_at DESC, id DESC LIMIT $9"
    )))
    .bind(&f.municipality_code)
    .bind(&f.category_codes)
    .bind(&f.statuses)
    .bind(&f.channel)
    .bind(f.created_from)
    .bind(f.created_to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(report_row)
    .collect()
}

/// Records a rating.
pub async fn rate(
    conn: &mut PgConnection,
    id: Uuid,
    score: u32,
    comment: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE reports SET rating_score = $2, rating_comment = NULLIF($3, ''), rated_at = $4 WHERE id = $1")
        .bind(id)
        .bind(score as i16)
        .bind(comment)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sets when resolution of the report `tracking_number` (and of the reports
/// linked to it) is expected, unless a later change is already recorded.
pub async fn set_expected_resolution(
    conn: &mut PgConnection,
    tracking_number: &str,
    expected: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE reports r SET expected_resolution_at = $2, expected_resolution_event_at = $3
         FROM reports master
         WHERE master.tracking_number = $1 AND (r.id = master.id OR r.duplicate_of = master.id)
           AND (r.expected_resolution_event_at IS NULL OR r.expected_resolution_event_at <= $3)",
    )
    .bind(tracking_number)
    .bind(expected)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Sets the citizen-facing status of a report and of the reports linked to it,
/// unless a later change is already recorded (events may arrive out of order).
pub async fn set_status(
    conn: &mut PgConnection,
    report_id: Uuid,
    status: &str,
    assignee: Option<&str>,
    case_id: Uuid,
    at: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE reports SET status = $2, assignee_code = COALESCE($3, assignee_code), case_id = $4,
                            status_changed_at = $5
         WHERE (id = $1 OR duplicate_of = $1) AND status_changed_at <= $5",
    )
    .bind(report_id)
    .bind(status)
    .bind(assignee)
    .bind(case_id)
    .bind(at)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// A report's sealed reporter fields, if the report was not anonymous.
pub async fn sealed_reporter(
    conn: &mut PgConnection,
    report_id: Uuid,
) -> Result<Option<SealedReporter>, sqlx::Error> {
    let row =
        sqlx::query("SELECT key_id, name, phone, national_id FROM reporters WHERE report_id = $1")
            .bind(report_id)
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|r| {
        Ok(SealedReporter {
            key_id: r.try_get("key_id")?,
            name: r.try_get("name")?,
            phone: r.try_get("phone")?,
            national_id: r.try_get("national_id")?,
        })
    })
    .transpose()
}
