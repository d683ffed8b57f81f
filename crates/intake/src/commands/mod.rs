//! Every state change of intake: the gRPC handlers, the consumers and the
//! seed loader call these, and nothing else writes.
//!
//! Each command takes the caller's [`Tx`] and loads, checks, writes (through
//! [`crate::store`]), audits and emits; the caller commits. Submitting is the
//! exception, because its common case has no transaction to take: a new
//! report goes to the batch writer ([`crate::batch`]), which writes it with
//! the other submits waiting, its event and its audit record in one
//! autocommitted statement. [`Submissions::submit`] ([`submit`]) therefore
//! owns its steps and opens a transaction only for a report that turns out
//! to duplicate an open one.

pub mod submit;

pub use submit::{Submissions, SubmitRequest, Submitter};

use baladiya_platform::audit::Audit;
use baladiya_platform::events::{Event, EventType, Tx};
use baladiya_platform::geo::ServiceArea;
use baladiya_proto::intake::events::v1 as events;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::convert::{caller_channel, channel_proto};
use crate::domain::{self, Category, ReporterData};
use crate::error::IntakeError;
use crate::pii::Vault;
use crate::store::{self, ReportRow};

pub const REPORT_RECEIVED: EventType = EventType::new("intake", "report", "received");
pub const REPORT_DUPLICATE_LINKED: EventType =
    EventType::new("intake", "report", "duplicate_linked");
pub const REPORT_RATED: EventType = EventType::new("intake", "report", "rated");

/// A citizen's rating of their resolved or closed report (once): the report
/// as rated.
pub async fn rate_report(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    score: u32,
    comment: &str,
) -> Result<ReportRow, IntakeError> {
    let now = tx.now();
    let row = store::report_for_update(tx, id)
        .await?
        .ok_or(IntakeError::ReportNotFound)?;
    if !matches!(row.status.as_str(), "resolved" | "closed") {
        return Err(IntakeError::NotRatableYet { status: row.status });
    }
    if row.rating_score.is_some() {
        return Err(IntakeError::AlreadyRated);
    }
    store::rate(tx, id, score, comment, now).await?;
    tx.emit(
        Event::new(REPORT_RATED, id, now).scoped(&[&row.municipality_code, &row.category_code]),
        |meta| events::ReportRated {
            meta,
            report_id: id.to_string(),
            score,
            has_comment: !comment.is_empty(),
            category_code: row.category_code.clone(),
            municipality_code: row.municipality_code.clone(),
            assignee_code: row.assignee_code.clone().unwrap_or_default(),
            channel: channel_proto(&row.channel),
        },
    )
    .await?;
    let rated = store::report_for_update(tx, id)
        .await?
        .ok_or(IntakeError::ReportNotFound)?;
    audit.record(tx, now, &id.to_string()).await?;
    Ok(rated)
}

/// Opens the reporter's contact of report `id` for a caller who may read
/// the report; the read is audited (it is recorded before anything is
/// returned).
pub async fn open_reporter_contact(
    tx: &mut Tx,
    audit: &Audit,
    vault: &Vault,
    id: Uuid,
) -> Result<ReporterData, IntakeError> {
    let who = &audit.caller;
    let report = store::report(tx, Some(id), None).await?;
    let own_channel = caller_channel(who);
    match &report {
        Some(r) if domain::may_read(who, own_channel, &r.municipality_code, &r.channel) => {}
        None if who.may_know_absence() => return Err(IntakeError::ReportNotFound),
        _ => return Err(IntakeError::ReportHidden),
    }
    let sealed = store::sealed_reporter(tx, id)
        .await?
        .ok_or(IntakeError::AnonymousReport)?;
    let contact = vault
        .open_reporter(&sealed)
        .ok_or_else(|| IntakeError::UnknownPiiKey {
            report: id,
            key_id: sealed.key_id.clone(),
        })?;
    let now = tx.now();
    audit.record(tx, now, &id.to_string()).await?;
    Ok(contact)
}

/// Adds or replaces a category (checked by the caller with
/// [`Category::check`]).
pub async fn upsert_category(
    tx: &mut Tx,
    audit: &Audit,
    category: &Category,
) -> Result<(), IntakeError> {
    let now = tx.now();
    store::put_category(tx, category, now, false).await?;
    audit.record(tx, now, &category.code).await?;
    Ok(())
}

/// What [`add_missing_catalogue`] added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueAdded {
    pub categories: usize,
    pub keywords: u64,
    pub areas: usize,
}

/// Adds the categories, urgent keywords and service areas that are missing,
/// keeping every existing one as it is (operators' edits survive a reseed).
pub async fn add_missing_catalogue(
    tx: &mut Tx,
    categories: &[Category],
    urgent_keywords: &[String],
    areas: &[ServiceArea],
) -> Result<CatalogueAdded, IntakeError> {
    let now = tx.now();
    let mut added_categories = 0;
    for c in categories {
        added_categories += usize::from(store::put_category(tx, c, now, true).await?);
    }
    let keywords = store::add_keywords(tx, urgent_keywords).await?;
    let mut added_areas = 0;
    for a in areas {
        added_areas += usize::from(store::add_area(tx, a).await?);
    }
    Ok(CatalogueAdded {
        categories: added_categories,
        keywords,
        areas: added_areas,
    })
}

/// Sets the citizen-facing status of report `report_id` (and the reports
/// linked to it) from its case's event of `at`, unless a later one is
/// already recorded.
pub async fn follow_case_status(
    tx: &mut Tx,
    report_id: Uuid,
    status: &str,
    assignee: Option<&str>,
    case_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), IntakeError> {
    store::set_status(tx, report_id, status, assignee, case_id, at).await?;
    Ok(())
}

/// Sets when resolution of report `tracking_number` (and the reports linked
/// to it) is expected (`None`: not for now) from a resolve clock's event of
/// `at`, unless a later one is already recorded.
pub async fn follow_resolve_deadline(
    tx: &mut Tx,
    tracking_number: &str,
    expected: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Result<(), IntakeError> {
    store::set_expected_resolution(tx, tracking_number, expected, at).await?;
    Ok(())
}
