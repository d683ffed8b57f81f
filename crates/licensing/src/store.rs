//! The `licensing` schema.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{LicenseType, Progress, Status};

const LICENSE_TYPE_COLUMNS: &str = "code, name_ar, name_en, target_days, required_documents,
    required_clearances, required_inspections, validity_days, renewal_window_days, grace_days";

fn license_type_row(r: &PgRow) -> Result<LicenseType, sqlx::Error> {
    let Json(required_documents) = r.try_get("required_documents")?;
    let Json(required_clearances) = r.try_get("required_clearances")?;
    let Json(required_inspections) = r.try_get("required_inspections")?;
    Ok(LicenseType {
        code: r.try_get("code")?,
        name_ar: r.try_get("name_ar")?,
        name_en: r.try_get("name_en")?,
        target_days: r.try_get::<i32, _>("target_days")? as u32,
        required_documents,
        required_clearances,
        required_inspections,
        validity_days: r.try_get::<i32, _>("validity_days")? as u32,
        renewal_window_days: r.try_get::<i32, _>("renewal_window_days")? as u32,
        grace_days: r.try_get::<i32, _>("grace_days")? as u32,
    })
}

pub async fn license_types(conn: &mut PgConnection) -> Result<Vec<LicenseType>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LICENSE_TYPE_COLUMNS} FROM license_types ORDER BY code"
    )))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(license_type_row)
    .collect()
}

pub async fn license_type(
    conn: &mut PgConnection,
    code: &str,
) -> Result<Option<LicenseType>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LICENSE_TYPE_COLUMNS} FROM license_types WHERE code = $1"
    )))
    .bind(code)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(license_type_row)
    .transpose()
}

/// Adds a license type unless it exists (seeding).
pub async fn add_license_type(
    conn: &mut PgConnection,
    t: &LicenseType,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO license_types (code, name_ar, name_en, target_days, required_documents, required_clearances,
                                    required_inspections, validity_days, renewal_window_days, grace_days)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (code) DO NOTHING",
    )
    .bind(&t.code)
    .bind(&t.name_ar)
    .bind(&t.name_en)
    .bind(t.target_days as i32)
    .bind(Json(&t.required_documents))
    .bind(Json(&t.required_clearances))
    .bind(Json(&t.required_inspections))
    .bind(t.validity_days as i32)
    .bind(t.renewal_window_days as i32)
    .bind(t.grace_days as i32)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// An application as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ApplicationRow {
    pub id: Uuid,
    pub tracking_number: String,
    pub license_type_code: String,
    pub applicant_key: String,
    pub municipality_code: String,
    pub facility_name: String,
    pub activity: String,
    pub progress: Progress,
    pub reason: String,
    pub submitted_at: DateTime<Utc>,
    pub last_step_at: DateTime<Utc>,
    pub version: i64,
    pub license_number: Option<String>,
}

const APPLICATION_COLUMNS: &str = "id, tracking_number, license_type_code, applicant_key, municipality_code, facility_name,
    activity, documents, clearances, inspections, status, reason, submitted_at, last_step_at, version, license_number";

fn application_row(r: &sqlx::postgres::PgRow) -> Result<ApplicationRow, sqlx::Error> {
    let status: String = r.try_get("status")?;
    let Json(documents) = r.try_get("documents")?;
    let Json(clearances) = r.try_get("clearances")?;
    let Json(inspections) = r.try_get("inspections")?;
    Ok(ApplicationRow {
        id: r.try_get("id")?,
        tracking_number: r.try_get("tracking_number")?,
        license_type_code: r.try_get("license_type_code")?,
        applicant_key: r.try_get("applicant_key")?,
        municipality_code: r.try_get("municipality_code")?,
        facility_name: r.try_get("facility_name")?,
        activity: r.try_get("activity")?,
        progress: Progress {
            status: Status::parse(&status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown status {status}").into()))?,
            documents,
            clearances,
            inspections,
        },
        reason: r.try_get("reason")?,
        submitted_at: r.try_get("submitted_at")?,
        last_step_at: r.try_get("last_step_at")?,
        version: r.try_get("version")?,
        license_number: r.try_get("license_number")?,
    })
}

pub async fn next_number(
    conn: &mut PgConnection,
    sequence: &'static str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT nextval('{sequence}')")))
        .fetch_one(&mut *conn)
        .await
}

/// The next license number: `<TYPE>-<year>-<seq>`.
pub async fn next_license_number(
    conn: &mut PgConnection,
    type_code: &str,
    at: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    use chrono::Datelike;
    let seq = next_number(conn, "license_seq").await?;
    Ok(format!("{type_code}-{}-{seq:07}", at.year()))
}

pub async fn insert_application(
    conn: &mut PgConnection,
    a: &ApplicationRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO applications ({APPLICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    )))
    .bind(a.id)
    .bind(&a.tracking_number)
    .bind(&a.license_type_code)
    .bind(&a.applicant_key)
    .bind(&a.municipality_code)
    .bind(&a.facility_name)
    .bind(&a.activity)
    .bind(Json(&a.progress.documents))
    .bind(Json(&a.progress.clearances))
    .bind(Json(&a.progress.inspections))
    .bind(a.progress.status.as_str())
    .bind(&a.reason)
    .bind(a.submitted_at)
    .bind(a.last_step_at)
    .bind(a.version)
    .bind(&a.license_number)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn application(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<ApplicationRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {APPLICATION_COLUMNS} FROM applications WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(application_row)
    .transpose()
}

pub async fn update_application(
    conn: &mut PgConnection,
    a: &ApplicationRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE applications SET documents = $2, clearances = $3, inspections = $4, status = $5, reason = $6,
                                 last_step_at = $7, version = $8, license_number = $9 WHERE id = $1",
    )
    .bind(a.id)
    .bind(Json(&a.progress.documents))
    .bind(Json(&a.progress.clearances))
    .bind(Json(&a.progress.inspections))
    .bind(a.progress.status.as_str())
    .bind(&a.reason)
    .bind(a.last_step_at)
    .bind(a.version)
    .bind(&a.license_number)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn applications(
    conn: &mut PgConnection,
    license_type: Option<&str>,
    status: Option<Status>,
    municipality: Option<&str>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ApplicationRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {APPLICATION_COLUMNS} FROM applications
         WHERE ($1::text IS NULL OR license_type_code = $1) AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR municipality_code = $3)
           AND ($4::timestamptz IS NULL OR (submitted_at, id) < ($4, $5))
         ORDER BY submitted_at DESC, id DESC LIMIT $6"
    )))
    .bind(license_type)
    .bind(status.map(Status::as_str))
    .bind(municipality)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(application_row)
    .collect()
}

/// A license as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseRow {
    pub number: String,
    pub license_type_code: String,
    pub application_id: Uuid,
    pub municipality_code: String,
    pub facility_name: String,
    pub activity: String,
    pub holder_key: String,
    pub status: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    pub renews: Option<String>,
    pub suspension_reason: Option<String>,
    pub submitted_at: DateTime<Utc>,
}

const LICENSE_COLUMNS: &str =
    "number, license_type_code, application_id, municipality_code, facility_name, activity,
    holder_key, status, valid_from, valid_to, renews, suspension_reason, submitted_at";

fn license_row(r: &sqlx::postgres::PgRow) -> Result<LicenseRow, sqlx::Error> {
    Ok(LicenseRow {
        number: r.try_get("number")?,
        license_type_code: r.try_get("license_type_code")?,
        application_id: r.try_get("application_id")?,
        municipality_code: r.try_get("municipality_code")?,
        facility_name: r.try_get("facility_name")?,
        activity: r.try_get("activity")?,
        holder_key: r.try_get("holder_key")?,
        status: r.try_get("status")?,
        valid_from: r.try_get("valid_from")?,
        valid_to: r.try_get("valid_to")?,
        renews: r.try_get("renews")?,
        suspension_reason: r.try_get("suspension_reason")?,
        submitted_at: r.try_get("submitted_at")?,
    })
}

pub async fn insert_license(conn: &mut PgConnection, l: &LicenseRow) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO licenses ({LICENSE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )))
    .bind(&l.number)
    .bind(&l.license_type_code)
    .bind(l.application_id)
    .bind(&l.municipality_code)
    .bind(&l.facility_name)
    .bind(&l.activity)
    .bind(&l.holder_key)
    .bind(&l.status)
    .bind(l.valid_from)
    .bind(l.valid_to)
    .bind(&l.renews)
    .bind(&l.suspension_reason)
    .bind(l.submitted_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn license(
    conn: &mut PgConnection,
    number: &str,
    lock: bool,
) -> Result<Option<LicenseRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses WHERE number = $1{lock}"
    )))
    .bind(number)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(license_row)
    .transpose()
}

pub async fn set_license_status(
    conn: &mut PgConnection,
    number: &str,
    status: &str,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE licenses SET status = $2, suspension_reason = COALESCE($3, suspension_reason) WHERE number = $1")
        .bind(number)
        .bind(status)
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Licenses past their validity and grace, still active or suspended, locked.
pub async fn expired(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<LicenseRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LICENSE_COLUMNS} FROM licenses l
         WHERE status IN ('active', 'suspended')
           AND valid_to + make_interval(days => (SELECT grace_days FROM license_types t WHERE t.code = l.license_type_code)) < $1
         ORDER BY valid_to LIMIT $2 FOR UPDATE SKIP LOCKED"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(license_row)
    .collect()
}

/// Records a compliance inspection that happened at `at` and was recorded at
/// `recorded_at`.
#[allow(clippy::too_many_arguments)]
pub async fn insert_facility_inspection(
    conn: &mut PgConnection,
    id: Uuid,
    license: &LicenseRow,
    activity: &str,
    operator_code: &str,
    private_operator: bool,
    compliant: bool,
    items: &serde_json::Value,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    suspended: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO facility_inspections (id, license_number, activity, operator_code, private_operator, compliant,
                                           items, inspected_at, recorded_at, suspended_license, municipality_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(&license.number)
    .bind(activity)
    .bind(operator_code)
    .bind(private_operator)
    .bind(compliant)
    .bind(items)
    .bind(at)
    .bind(recorded_at)
    .bind(suspended)
    .bind(&license.municipality_code)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
