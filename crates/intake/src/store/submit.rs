//! The submit statements of the `intake` schema.
//!
//! The common submit (no duplicate nearby) is one statement, shared by the
//! submits that arrive together (see `crate::batch`): a data-modifying CTE
//! that, for each, looks for an open duplicate, claims the `request_id`, and
//! only if there is no duplicate and the key is new inserts the report, the
//! reporter's sealed data, the outbox event and the audit record. A single
//! statement is atomic, and the `request_id` claim is a unique-key insert, so
//! concurrent retries store one report. A duplicate takes the slower,
//! explicit-transaction path in [`insert_duplicate`].

use baladiya_platform::audit::Audit;
use baladiya_platform::events::OutboundEvent;
use baladiya_platform::geo::{self, Point};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::{AttachmentRef, Priority};
use crate::pii::SealedReporter;

/// Where to look for an open duplicate.
#[derive(Debug, Clone)]
pub struct DuplicateSearch {
    pub category_code: String,
    pub since: DateTime<Utc>,
    pub point: Option<Point>,
    pub radius_m: f64,
    pub national_address_short: Option<String>,
}

/// A report to insert.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub id: Uuid,
    pub tracking_number: String,
    pub request_id: String,
    pub municipality_code: String,
    pub category_code: String,
    pub priority: Priority,
    pub priority_reason: String,
    pub channel: &'static str,
    pub description: String,
    pub point: Option<Point>,
    pub national_address_short: Option<String>,
    pub observed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub attachments: Vec<AttachmentRef>,
    pub reporter_key: Option<String>,
    pub reporter: Option<SealedReporter>,
}

/// One submit for [`insert_unless_duplicate`]: the report, where its
/// duplicate would be, what a retry of it gets back, its event and its audit.
#[derive(Debug)]
pub struct Submit {
    pub report: NewReport,
    pub search: DuplicateSearch,
    /// SHA-256 of the encoded request, and the encoded response a retry gets.
    pub request_digest: Vec<u8>,
    pub response: Vec<u8>,
    pub event: OutboundEvent,
    pub audit: Audit,
}

/// What the one-statement submit did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Stored.
    New,
    /// Nothing stored: this `request_id` was seen before.
    SeenBefore,
    /// Nothing stored: an open report nearby is its master.
    Duplicate { master: Uuid, distance_m: f64 },
}

/// Great-circle metres from stored report `r` to submitted report `i`.
const HAVERSINE: &str = "2 * 6371008.8 * asin(least(1, sqrt(
    power(sin(radians(r.latitude - i.latitude) / 2), 2)
    + cos(radians(i.latitude)) * cos(radians(r.latitude))
      * power(sin(radians(r.longitude - i.longitude) / 2), 2))))";

/// The submits of a batch, as one statement: each row looks for its open
/// master (by point inside its box, through `reports_open_masters_near`, else
/// by National Address short code, through `reports_open_masters_at_address`;
/// the gate on `i.latitude` makes the plan run one branch per row), claims
/// its `request_id` when it has none, and only then inserts the report, the
/// sealed reporter, the outbox event and the audit record. One statement is
/// atomic, and a claim is a unique-key insert, so concurrent retries store
/// one report. Submits of one batch do not see each other as duplicates, as
/// concurrent transactions would not.
fn batch_statement() -> String {
    format!(
        "WITH input AS (
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                $11::float8[], $12::float8[], $13::text[], $14::timestamptz[], $15::text[],
                                $16::text[], $17::timestamptz[], $18::float8[], $19::float8[], $20::float8[],
                                $21::float8[], $22::float8[], $23::bytea[], $24::bytea[], $25::text[],
                                $26::bytea[], $27::bytea[], $28::bytea[], $29::uuid[], $30::text[],
                                $31::text[], $32::text[], $33::text[], $34::text[], $35::bytea[],
                                $36::uuid[], $37::text[], $38::text[], $39::text[], $40::text[],
                                $41::text[], $42::text[])
             WITH ORDINALITY AS i(id, tracking_number, request_id, created_at, municipality_code,
                                  category_code, priority, priority_reason, channel, description,
                                  latitude, longitude, national_address_short, observed_at, attachments,
                                  reporter_key, since, radius_m, lat_min, lat_max,
                                  lon_min, lon_max, digest, response, key_id,
                                  name, phone, national_id, event_id, subject,
                                  ce_type, ce_source, dataschema, traceparent, payload,
                                  audit_id, actor, role, partner, municipality,
                                  audit_channel, rpc, n)),
         master AS (
           SELECT i.n, m.id, m.distance FROM input i CROSS JOIN LATERAL (
             (SELECT r.id, {HAVERSINE} AS distance FROM reports r
               WHERE i.latitude IS NOT NULL AND r.latitude IS NOT NULL
                 AND point(r.longitude, r.latitude) <@ box(point(i.lon_min, i.lat_min), point(i.lon_max, i.lat_max))
                 AND {HAVERSINE} <= i.radius_m
                 AND r.category_code = i.category_code AND r.duplicate_of IS NULL
                 AND r.status NOT IN ('resolved', 'closed') AND r.created_at >= i.since
               ORDER BY distance LIMIT 1)
             UNION ALL
             (SELECT r.id, 0::float8 FROM reports r
               WHERE i.latitude IS NULL AND r.national_address_short = i.national_address_short
                 AND r.national_address_short IS NOT NULL
                 AND r.category_code = i.category_code AND r.duplicate_of IS NULL
                 AND r.status NOT IN ('resolved', 'closed') AND r.created_at >= i.since
               LIMIT 1)
             LIMIT 1) m),
         claim AS (
           INSERT INTO idempotency_keys (method, request_id, request, response)
           SELECT 'SubmitReport', i.request_id, i.digest, i.response FROM input i
            WHERE NOT EXISTS (SELECT 1 FROM master m WHERE m.n = i.n) ORDER BY i.n
           ON CONFLICT DO NOTHING RETURNING request_id),
         report AS (
           INSERT INTO reports (id, tracking_number, request_id, status, status_changed_at, municipality_code,
                                category_code, priority, priority_reason, channel, description, latitude, longitude,
                                national_address_short, observed_at, created_at, attachments, reporter_key)
           SELECT i.id, i.tracking_number, i.request_id, 'received', i.created_at, i.municipality_code,
                  i.category_code, i.priority, i.priority_reason, i.channel, i.description, i.latitude, i.longitude,
                  i.national_address_short, i.observed_at, i.created_at, i.attachments::jsonb, i.reporter_key
             FROM input i JOIN claim c ON c.request_id = i.request_id ORDER BY i.n
           RETURNING id),
         reporter AS (
           INSERT INTO reporters (report_id, key_id, name, phone, national_id)
           SELECT i.id, i.key_id, i.name, i.phone, i.national_id
             FROM input i JOIN report r ON r.id = i.id WHERE i.key_id IS NOT NULL),
         event AS (
           INSERT INTO outbox (event_id, subject, ce_type, ce_source, ce_subject, dataschema, occurred_at, traceparent, payload)
           SELECT i.event_id, i.subject, i.ce_type, i.ce_source, i.id::text, i.dataschema, i.created_at, i.traceparent, i.payload
             FROM input i JOIN report r ON r.id = i.id ORDER BY i.n),
         audit AS (
           INSERT INTO audit_events (id, at, actor, role, partner, municipality, channel, rpc, target)
           SELECT i.audit_id, i.created_at, i.actor, i.role, i.partner, i.municipality, i.audit_channel, i.rpc, i.id::text
             FROM input i JOIN report r ON r.id = i.id)
         SELECT i.n, m.id AS master, m.distance, c.request_id IS NOT NULL AS claimed
           FROM input i LEFT JOIN master m ON m.n = i.n LEFT JOIN claim c ON c.request_id = i.request_id
          ORDER BY i.n"
    )
}

/// Writes `submits` in one statement (see [`batch_statement`]) and says what
/// became of each, in order. Their `request_id`s must differ. (Long because
/// it binds the statement's 42 arrays, one per column, in its parameters'
/// order; kept in one piece so the binds read against that list.)
pub async fn insert_unless_duplicate(
    conn: &mut PgConnection,
    submits: &[&Submit],
) -> Result<Vec<Inserted>, sqlx::Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(batch_statement);
    fn column<'s, T>(submits: &[&'s Submit], f: impl Fn(&'s Submit) -> T) -> Vec<T> {
        submits.iter().map(|s| f(s)).collect()
    }
    let boxes = column(submits, |s| {
        s.search
            .point
            .map(|p| geo::bounding_box(p, s.search.radius_m))
            .unwrap_or_default()
    });
    let attachments = submits
        .iter()
        .map(|s| serde_json::to_string(&s.report.attachments))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(column(submits, |s| s.report.id))
        .bind(column(submits, |s| s.report.tracking_number.as_str()))
        .bind(column(submits, |s| s.report.request_id.as_str()))
        .bind(column(submits, |s| s.report.created_at))
        .bind(column(submits, |s| s.report.municipality_code.as_str()))
        .bind(column(submits, |s| s.report.category_code.as_str()))
        .bind(column(submits, |s| s.report.priority.as_str()))
        .bind(column(submits, |s| s.report.priority_reason.as_str()))
        .bind(column(submits, |s| s.report.channel))
        .bind(column(submits, |s| s.report.description.as_str()))
        .bind(column(submits, |s| s.report.point.map(|p| p.lat)))
        .bind(column(submits, |s| s.report.point.map(|p| p.lon)))
        .bind(column(submits, |s| {
            s.report.national_address_short.as_deref()
        }))
        .bind(column(submits, |s| s.report.observed_at))
        .bind(attachments)
        .bind(column(submits, |s| s.report.reporter_key.as_deref()))
        .bind(column(submits, |s| s.search.since))
        .bind(column(submits, |s| s.search.radius_m))
        .bind(boxes.iter().map(|b| b.0).collect::<Vec<_>>())
        .bind(boxes.iter().map(|b| b.1).collect::<Vec<_>>())
        .bind(boxes.iter().map(|b| b.2).collect::<Vec<_>>())
        .bind(boxes.iter().map(|b| b.3).collect::<Vec<_>>())
        .bind(column(submits, |s| s.request_digest.as_slice()))
        .bind(column(submits, |s| s.response.as_slice()))
        .bind(column(submits, |s| {
            s.report.reporter.as_ref().map(|r| r.key_id.as_str())
        }))
        .bind(column(submits, |s| {
            s.report.reporter.as_ref().and_then(|r| r.name.as_deref())
        }))
        .bind(column(submits, |s| {
            s.report.reporter.as_ref().and_then(|r| r.phone.as_deref())
        }))
        .bind(column(submits, |s| {
            s.report
                .reporter
                .as_ref()
                .and_then(|r| r.national_id.as_deref())
        }))
        .bind(column(submits, |s| s.event.id))
        .bind(column(submits, |s| s.event.subject.as_str()))
        .bind(column(submits, |s| s.event.ce_type.as_str()))
        .bind(column(submits, |s| s.event.source.as_str()))
        .bind(column(submits, |s| s.event.dataschema.as_str()))
        .bind(column(submits, |s| s.event.traceparent.as_deref()))
        .bind(column(submits, |s| s.event.payload.as_slice()))
        .bind(column(submits, |_| Uuid::now_v7()))
        .bind(column(submits, |s| s.audit.caller.subject.as_str()))
        .bind(column(submits, |s| s.audit.caller.role.to_string()))
        .bind(column(submits, |s| {
            s.audit.caller.partner.as_deref().unwrap_or_default()
        }))
        .bind(column(submits, |s| {
            s.audit.caller.municipality.as_deref().unwrap_or_default()
        }))
        .bind(column(submits, |s| {
            s.audit.caller.channel.as_deref().unwrap_or_default()
        }))
        .bind(column(submits, |s| s.audit.rpc.as_str()))
        .fetch_all(&mut *conn)
        .await?;
    if rows.len() != submits.len() {
        return Err(sqlx::Error::Protocol(format!(
            "a batch of {} submits answered {} rows",
            submits.len(),
            rows.len()
        )));
    }
    rows.iter()
        .map(|row| {
            let master: Option<Uuid> = row.try_get("master")?;
            let claimed: bool = row.try_get("claimed")?;
            Ok(match (master, claimed) {
                (Some(master), _) => Inserted::Duplicate {
                    master,
                    distance_m: row.try_get::<Option<f64>, _>("distance")?.unwrap_or(0.0),
                },
                (None, true) => Inserted::New,
                (None, false) => Inserted::SeenBefore,
            })
        })
        .collect()
}

/// Inserts a report linked to `master` (inside the caller's transaction) and
/// counts it as the master's supporter.
pub async fn insert_duplicate(
    conn: &mut PgConnection,
    report: &NewReport,
    master: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reports (id, tracking_number, request_id, status, status_changed_at, municipality_code,
                             category_code, priority, priority_reason, channel, description, latitude, longitude,
                             national_address_short, observed_at, created_at, attachments, reporter_key, duplicate_of,
                             assignee_code, case_id)
         SELECT $1, $2, $3, m.status, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $4, $15, $16, $17,
                m.assignee_code, m.case_id
         FROM reports m WHERE m.id = $17",
    )
    .bind(report.id)
    .bind(&report.tracking_number)
    .bind(&report.request_id)
    .bind(report.created_at)
    .bind(&report.municipality_code)
    .bind(&report.category_code)
    .bind(report.priority.as_str())
    .bind(&report.priority_reason)
    .bind(report.channel)
    .bind(&report.description)
    .bind(report.point.map(|p| p.lat))
    .bind(report.point.map(|p| p.lon))
    .bind(report.national_address_short.as_deref())
    .bind(report.observed_at)
    .bind(Json(&report.attachments))
    .bind(report.reporter_key.as_deref())
    .bind(master)
    .execute(&mut *conn)
    .await?;
    if let Some(r) = &report.reporter {
        sqlx::query("INSERT INTO reporters (report_id, key_id, name, phone, national_id) VALUES ($1, $2, $3, $4, $5)")
            .bind(report.id)
            .bind(&r.key_id)
            .bind(r.name.as_deref())
            .bind(r.phone.as_deref())
            .bind(r.national_id.as_deref())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE reports SET supporters = supporters + 1 WHERE id = $1")
        .bind(master)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
