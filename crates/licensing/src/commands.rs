//! Every state change of licensing, one function each: load, check (the
//! scope rule, the state machine), write, audit, emit, inside the caller's
//! transaction. The gRPC handlers, the expiry sweep and the seed loader all
//! go through here; nothing else writes.
//!
//! Application and license events are stamped with the clock read under the
//! outbox fence (licensing's stream carries watermarks, see
//! `baladiya_platform::events::watermark`). A facility inspection carries the
//! instants its caller gave: when it happened and when it was recorded.
//!
//! Idempotency (`request_id`) stays with the handlers: it claims the encoded
//! request and stores the encoded answer, both protobuf.

use baladiya_platform::audit::Audit;
use baladiya_platform::events::{Event, EventType, Tx};
use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

use crate::access;
use crate::convert::{self, StepFacts};
use crate::domain::{
    self, InspectionReport, LicenseType, NewApplication, Progress, RecordedInspection, Status,
    StepError,
};
use crate::error::LicensingError;
use crate::store::{self, ApplicationRow, LicenseRow};

const fn application_event(event: &'static str) -> EventType {
    EventType::new("licensing", "application", event)
}

const fn license_event(event: &'static str) -> EventType {
    EventType::new("licensing", "license", event)
}

pub const APPLICATION_SUBMITTED: EventType = application_event("submitted");
pub const APPLICATION_RETURNED: EventType = application_event("returned_for_correction");
pub const APPLICATION_RESUBMITTED: EventType = application_event("resubmitted");
pub const CLEARANCE_REQUESTED: EventType = application_event("clearance_requested");
pub const CLEARANCE_RECORDED: EventType = application_event("clearance_recorded");
pub const INSPECTION_SCHEDULED: EventType = application_event("inspection_scheduled");
pub const INSPECTION_RECORDED: EventType = application_event("inspection_recorded");
pub const APPLICATION_APPROVED: EventType = application_event("approved");
pub const APPLICATION_REJECTED: EventType = application_event("rejected");
pub const LICENSE_ISSUED: EventType = license_event("issued");
pub const LICENSE_RENEWED: EventType = license_event("renewed");
pub const LICENSE_SUSPENDED: EventType = license_event("suspended");
pub const LICENSE_EXPIRED: EventType = license_event("expired");
pub const FACILITY_INSPECTION_RECORDED: EventType =
    EventType::new("licensing", "facility", "inspection_recorded");

/// How many expired licenses one sweep marks.
const EXPIRY_BATCH: i64 = 100;

/// Why the suspension of a license by an inspection is recorded.
const CRITICAL_VIOLATION: &str = "critical violation in a compliance inspection";

// ---- license types --------------------------------------------------------

/// Adds license type `t` unless its code exists; whether it was added.
pub async fn add_license_type(tx: &mut Tx, t: &LicenseType) -> Result<bool, LicensingError> {
    Ok(store::add_license_type(tx, t).await?)
}

// ---- applications ---------------------------------------------------------

/// Submits an application of type `t` (checked by the caller against the
/// request): numbered, under review, `submitted` emitted.
pub async fn submit_application(
    tx: &mut Tx,
    audit: &Audit,
    t: &LicenseType,
    new: NewApplication,
) -> Result<ApplicationRow, LicensingError> {
    let now = tx.fenced_now().await?;
    let seq = store::next_number(tx, "application_seq").await?;
    let a = ApplicationRow {
        id: Uuid::now_v7(),
        tracking_number: domain::tracking_number(now.year(), seq),
        license_type_code: t.code.clone(),
        applicant_key: new.applicant_key,
        municipality_code: new.municipality_code,
        facility_name: new.facility_name,
        activity: new.activity,
        progress: Progress {
            status: Status::UnderReview,
            documents: new.documents,
            clearances: vec![],
            inspections: vec![],
        },
        reason: String::new(),
        submitted_at: now,
        last_step_at: now,
        version: 1,
        license_number: None,
    };
    store::insert_application(tx, &a).await?;
    emit_application_event(tx, APPLICATION_SUBMITTED, &a, t, StepFacts::default(), now).await?;
    audit.record(tx, now, &a.id.to_string()).await?;
    Ok(a)
}

/// Returns application `id` to the applicant for correction, saying why.
pub async fn return_for_correction(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    reason: &str,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, APPLICATION_RETURNED, |a, _, _| {
        a.progress.return_for_correction()?;
        a.reason = reason.to_string();
        Ok(StepFacts {
            note: a.reason.clone(),
            ..Default::default()
        })
    })
    .await
}

/// Resubmits a returned application with `documents` added; with them it
/// must hold every document its type requires.
pub async fn resubmit_application(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    documents: &[String],
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, APPLICATION_RESUBMITTED, |a, t, _| {
        let mut all = a.progress.documents.clone();
        all.extend(documents.iter().cloned());
        if let Some(d) = domain::missing_documents(t, &all).first() {
            return Err(StepError::Field {
                field: format!("documents.{d}"),
                message: "is required for this license type".into(),
            });
        }
        a.progress.resubmit(documents)?;
        Ok(StepFacts::default())
    })
    .await
}

/// Asks partner body `partner` to clear application `id`.
pub async fn request_clearance(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    partner: &str,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, CLEARANCE_REQUESTED, |a, _, now| {
        a.progress.request_clearance(partner, now)?;
        Ok(StepFacts {
            partner_code: partner.to_string(),
            ..Default::default()
        })
    })
    .await
}

/// Records partner body `partner`'s answer on application `id` (the caller
/// checked it is that body's own).
pub async fn record_clearance(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    partner: &str,
    granted: bool,
    note: &str,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, CLEARANCE_RECORDED, |a, _, now| {
        a.progress.record_clearance(partner, granted, note, now)?;
        Ok(StepFacts {
            partner_code: partner.to_string(),
            positive: granted,
            note: note.to_string(),
            ..Default::default()
        })
    })
    .await
}

/// Schedules a `kind` inspection of application `id` for `when`.
pub async fn schedule_inspection(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    kind: &str,
    when: DateTime<Utc>,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, INSPECTION_SCHEDULED, |a, t, _| {
        a.progress.schedule_inspection(t, kind, when)?;
        Ok(StepFacts {
            inspection_kind: kind.to_string(),
            ..Default::default()
        })
    })
    .await
}

/// Records the result of application `id`'s scheduled `kind` inspection.
pub async fn record_inspection(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    kind: &str,
    passed: bool,
    notes: &str,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, INSPECTION_RECORDED, |a, _, now| {
        a.progress.record_inspection(kind, passed, notes, now)?;
        Ok(StepFacts {
            inspection_kind: kind.to_string(),
            positive: passed,
            note: notes.to_string(),
            ..Default::default()
        })
    })
    .await
}

/// Approves application `id`: everything its type requires is in.
pub async fn approve_application(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, APPLICATION_APPROVED, |a, t, _| {
        a.progress.approve(t)?;
        Ok(StepFacts {
            positive: true,
            ..Default::default()
        })
    })
    .await
}

/// Rejects application `id`, saying why.
pub async fn reject_application(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    reason: &str,
) -> Result<ApplicationRow, LicensingError> {
    step(tx, audit, id, APPLICATION_REJECTED, |a, _, _| {
        a.progress.reject()?;
        a.reason = reason.to_string();
        Ok(StepFacts {
            note: a.reason.clone(),
            ..Default::default()
        })
    })
    .await
}

/// One application step: lock the application (in the caller's scope),
/// apply `change` to it, store it a version further, emit `kind`, audit.
async fn step(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    kind: EventType,
    change: impl FnOnce(
        &mut ApplicationRow,
        &LicenseType,
        DateTime<Utc>,
    ) -> Result<StepFacts, StepError>,
) -> Result<ApplicationRow, LicensingError> {
    let now = tx.fenced_now().await?;
    let found = store::application(tx, id, true).await?;
    let mut a = access::application_to_act_on(&audit.caller, found)?;
    let t = license_type_of(tx, &a.license_type_code).await?;
    let facts = change(&mut a, &t, now)?;
    a.version += 1;
    a.last_step_at = now;
    store::update_application(tx, &a).await?;
    emit_application_event(tx, kind, &a, &t, facts, now).await?;
    audit.record(tx, now, &a.id.to_string()).await?;
    Ok(a)
}

async fn emit_application_event(
    tx: &mut Tx,
    kind: EventType,
    a: &ApplicationRow,
    t: &LicenseType,
    facts: StepFacts,
    at: DateTime<Utc>,
) -> Result<(), LicensingError> {
    tx.emit(
        Event::new(kind, a.id, at).scoped(&[&a.municipality_code, &a.license_type_code]),
        |meta| convert::application_step_event(meta, a, t, facts),
    )
    .await?;
    Ok(())
}

/// The license type a stored application or license names.
async fn license_type_of(tx: &mut Tx, code: &str) -> Result<LicenseType, LicensingError> {
    store::license_type(tx, code)
        .await?
        .ok_or_else(|| LicensingError::MissingLicenseType(code.to_string()))
}

// ---- licenses ---------------------------------------------------------------

/// Issues the license of approved application `application_id`, valid for
/// its type's validity from now.
pub async fn issue_license(
    tx: &mut Tx,
    audit: &Audit,
    application_id: Uuid,
) -> Result<LicenseRow, LicensingError> {
    let now = tx.fenced_now().await?;
    let found = store::application(tx, application_id, true).await?;
    let mut a = access::application_to_act_on(&audit.caller, found)?;
    let t = license_type_of(tx, &a.license_type_code).await?;
    a.progress.issue()?;
    let number = store::next_license_number(tx, &t.code, now).await?;
    let l = LicenseRow {
        number,
        license_type_code: t.code.clone(),
        application_id: a.id,
        municipality_code: a.municipality_code.clone(),
        facility_name: a.facility_name.clone(),
        activity: a.activity.clone(),
        holder_key: a.applicant_key.clone(),
        status: "active".into(),
        valid_from: now,
        valid_to: now + chrono::Duration::days(i64::from(t.validity_days)),
        renews: None,
        suspension_reason: None,
        submitted_at: a.submitted_at,
    };
    store::insert_license(tx, &l).await?;
    a.license_number = Some(l.number.clone());
    a.version += 1;
    a.last_step_at = now;
    store::update_application(tx, &a).await?;
    emit_license_event(tx, LICENSE_ISSUED, &l, now, now).await?;
    audit.record(tx, now, &l.number).await?;
    Ok(l)
}

/// Renews active license `number` within its renewal window or grace: a new
/// license continues it, and it becomes `renewed`.
pub async fn renew_license(
    tx: &mut Tx,
    audit: &Audit,
    number: &str,
) -> Result<LicenseRow, LicensingError> {
    let now = tx.fenced_now().await?;
    let old = store::license(tx, number, true)
        .await?
        .ok_or(LicensingError::NotFound("license"))?;
    if old.status != "active" {
        return Err(LicensingError::LicenseNotActive {
            action: "renewed",
            status: old.status,
        });
    }
    let t = license_type_of(tx, &old.license_type_code).await?;
    let (from, to) = domain::renewal(&t, old.valid_to, now)?;
    let number = store::next_license_number(tx, &t.code, now).await?;
    let new = LicenseRow {
        number,
        valid_from: from,
        valid_to: to,
        renews: Some(old.number.clone()),
        status: "active".into(),
        suspension_reason: None,
        ..old.clone()
    };
    store::insert_license(tx, &new).await?;
    store::set_license_status(tx, &old.number, "renewed", None).await?;
    emit_license_event(tx, LICENSE_RENEWED, &new, now, now).await?;
    audit.record(tx, now, &new.number).await?;
    Ok(new)
}

/// Suspends active license `number` (in the caller's scope), saying why.
pub async fn suspend_license(
    tx: &mut Tx,
    audit: &Audit,
    number: &str,
    reason: &str,
) -> Result<LicenseRow, LicensingError> {
    let now = tx.fenced_now().await?;
    let found = store::license(tx, number, true).await?;
    let l = access::license_in_scope(&audit.caller, found)?;
    if l.status != "active" {
        return Err(LicensingError::LicenseNotActive {
            action: "suspended",
            status: l.status,
        });
    }
    store::set_license_status(tx, &l.number, "suspended", Some(reason)).await?;
    emit_license_event(tx, LICENSE_SUSPENDED, &l, now, now).await?;
    let l = store::license(tx, number, false)
        .await?
        .ok_or(LicensingError::NotFound("license"))?;
    audit.record(tx, now, &l.number).await?;
    Ok(l)
}

/// Marks licenses past validity and grace as expired, each once (a batch
/// at a time); how many.
pub async fn expire_licenses(tx: &mut Tx) -> Result<usize, LicensingError> {
    let now = tx.fenced_now().await?;
    let due = store::expired(tx, now, EXPIRY_BATCH).await?;
    for l in &due {
        store::set_license_status(tx, &l.number, "expired", None).await?;
        emit_license_event(tx, LICENSE_EXPIRED, l, l.valid_to, now).await?;
    }
    Ok(due.len())
}

/// Emits a license event: it happened at `at` and was recorded at
/// `recorded_at` (later for an expiry found by the sweep, a suspension by a
/// back-dated inspection).
async fn emit_license_event(
    tx: &mut Tx,
    kind: EventType,
    l: &LicenseRow,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
) -> Result<(), LicensingError> {
    tx.emit(
        Event::new(kind, &l.number, at)
            .scoped(&[&l.municipality_code, &l.license_type_code])
            .recorded(recorded_at),
        |meta| convert::license_changed_event(meta, l),
    )
    .await?;
    Ok(())
}

// ---- compliance inspections -------------------------------------------------

/// Records a compliance inspection of a license in the caller's scope,
/// reported at `recorded_at`; a critical violation suspends an active
/// license where `suspend_on_critical`.
pub async fn record_facility_inspection(
    tx: &mut Tx,
    audit: &Audit,
    report: InspectionReport,
    suspend_on_critical: bool,
    recorded_at: DateTime<Utc>,
) -> Result<RecordedInspection, LicensingError> {
    let found = store::license(tx, &report.license_number, true).await?;
    let license = access::license_in_scope(&audit.caller, found)?;
    let findings = domain::Findings::of(&report.items);
    let inspection = RecordedInspection {
        id: Uuid::now_v7(),
        suspended_license: findings.suspend(suspend_on_critical, &license.status),
        municipality_code: license.municipality_code.clone(),
        findings,
        report: InspectionReport {
            license_number: license.number.clone(),
            ..report
        },
        recorded_at,
    };
    let at = inspection.report.inspected_at;
    store::insert_facility_inspection(
        tx,
        inspection.id,
        &license,
        &inspection.report.activity,
        &inspection.report.operator_code,
        inspection.report.private_operator(),
        findings.compliant,
        &stored_items(&inspection.report),
        at,
        recorded_at,
        inspection.suspended_license,
    )
    .await?;
    if inspection.suspended_license {
        store::set_license_status(tx, &license.number, "suspended", Some(CRITICAL_VIOLATION))
            .await?;
        emit_license_event(tx, LICENSE_SUSPENDED, &license, at, recorded_at).await?;
    }
    tx.emit(
        Event::new(FACILITY_INSPECTION_RECORDED, inspection.id, at)
            .scoped(&[&license.municipality_code, &inspection.report.activity])
            .recorded(recorded_at),
        |meta| convert::facility_inspection_event(meta, &inspection),
    )
    .await?;
    audit
        .record_action(tx, recorded_at, at, &inspection.id.to_string())
        .await?;
    Ok(inspection)
}

/// The checklist as stored with the inspection.
fn stored_items(report: &InspectionReport) -> serde_json::Value {
    serde_json::Value::Array(
        report
            .items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "code": i.code,
                    "passed": i.passed,
                    "severity": i.severity,
                    "note": i.note,
                })
            })
            .collect(),
    )
}
