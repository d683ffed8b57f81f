//! Protobuf ↔ domain: request fields parsed (or refused, every violated field
//! at once), rows and domain values as API messages, and the payloads of
//! licensing's events. Kept out of the handlers so they read as what each
//! RPC does.

use baladiya_platform::backdating::BackdatingBound;
use baladiya_platform::error::Violations;
use baladiya_platform::idempotency;
use baladiya_proto::common::v1::LocalizedText;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::licensing::events::v1 as ev;
use baladiya_proto::licensing::v1 as pb;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    ChecklistItem, INSPECTED_ACTIVITIES, InspectionReport, LicenseType, NewApplication,
    RecordedInspection, Status, missing_documents,
};
use crate::error::LicensingError;
use crate::store::{ApplicationRow, LicenseRow};

/// Longest facility name, in characters.
const MAX_FACILITY_NAME: usize = 300;

/// An id field: a UUID.
pub fn id(text: &str, field: &'static str) -> Result<Uuid, LicensingError> {
    text.parse().map_err(|_| LicensingError::InvalidField {
        field,
        message: "must be a UUID",
    })
}

/// A required text field, trimmed.
pub fn required(text: &str, field: &'static str) -> Result<String, LicensingError> {
    match text.trim() {
        "" => Err(LicensingError::InvalidField {
            field,
            message: "is required",
        }),
        trimmed => Ok(trimmed.to_string()),
    }
}

/// The violations of a submission's own fields; the license type and its
/// required documents are checked against the stored type and added to them.
pub fn submission_violations(req: &pb::SubmitApplicationRequest) -> Violations {
    let mut v = Violations::new();
    idempotency::check_request_id(&req.request_id, &mut v);
    v.require(&req.applicant_id, "applicant_id");
    v.require(&req.municipality_code, "municipality_code");
    v.require(&req.facility_name, "facility_name");
    v.check(
        req.facility_name.chars().count() <= MAX_FACILITY_NAME,
        "facility_name",
        "must be at most 300 characters",
    );
    v
}

/// Adds the violations of a submission's license type: it must name a
/// stored type (`found`), and the documents must include every one the type
/// requires.
pub fn check_license_type(
    v: &mut Violations,
    req: &pb::SubmitApplicationRequest,
    found: Option<&LicenseType>,
) {
    match found {
        None if req.license_type_code.trim().is_empty() => {
            v.add("license_type_code", "is required");
        }
        None => v.add(
            "license_type_code",
            format!("'{}' is not a license type", req.license_type_code),
        ),
        Some(t) => {
            for d in missing_documents(t, &req.documents) {
                v.add(
                    format!("documents.{d}"),
                    "is required for this license type",
                );
            }
        }
    }
}

/// The application a submission makes, its applicant already `applicant_key`.
pub fn new_application(
    req: &pb::SubmitApplicationRequest,
    applicant_key: String,
) -> NewApplication {
    NewApplication {
        applicant_key,
        municipality_code: req.municipality_code.trim().to_string(),
        facility_name: req.facility_name.trim().to_string(),
        activity: req.activity.trim().to_string(),
        documents: req.documents.clone(),
    }
}

/// A compliance inspection report, every violated field refused at once.
/// `inspected_at` unset means `now`; a given instant lies within the
/// back-dating bound, so nobody moves a result into a period already
/// reported.
pub fn inspection_report(
    req: &pb::RecordFacilityInspectionRequest,
    now: DateTime<Utc>,
    backdating: BackdatingBound,
) -> Result<InspectionReport, LicensingError> {
    let mut v = Violations::new();
    idempotency::check_request_id(&req.request_id, &mut v);
    v.require(&req.license_number, "license_number");
    v.check(
        INSPECTED_ACTIVITIES.contains(&req.activity.as_str()),
        "activity",
        "must be PUBLIC_HEALTH or COMMERCIAL_MARKET",
    );
    v.require(&req.operator_code, "operator_code");
    v.check(
        !req.items.is_empty(),
        "items",
        "at least one checklist item is required",
    );
    for (i, item) in req.items.iter().enumerate() {
        v.require(&item.code, &format!("items[{i}].code"));
        v.check(
            item.passed
                || pb::Severity::try_from(item.severity)
                    .is_ok_and(|s| s != pb::Severity::Unspecified),
            &format!("items[{i}].severity"),
            "is required for a failed item",
        );
    }
    let inspected_at = match req.inspected_at.as_ref().map(instant) {
        None => now,
        Some(Some(t)) => v
            .absorb(backdating.check("inspected_at", t, now))
            .map_or(now, |()| t),
        Some(None) => {
            v.add("inspected_at", "is not a valid timestamp");
            now
        }
    };
    v.finish()?;
    Ok(InspectionReport {
        license_number: req.license_number.clone(),
        activity: req.activity.clone(),
        operator_code: req.operator_code.clone(),
        items: req.items.iter().map(checklist_item).collect(),
        inspected_at,
    })
}

fn checklist_item(i: &pb::ChecklistItem) -> ChecklistItem {
    ChecklistItem {
        code: i.code.clone(),
        passed: i.passed,
        severity: i.severity,
        note: i.note.clone(),
    }
}

fn checklist_item_proto(i: &ChecklistItem) -> pb::ChecklistItem {
    pb::ChecklistItem {
        code: i.code.clone(),
        passed: i.passed,
        severity: i.severity,
        note: i.note.clone(),
    }
}

/// The wire number of an application status.
pub fn status_proto(s: Status) -> i32 {
    (match s {
        Status::UnderReview => pb::ApplicationStatus::UnderReview,
        Status::Returned => pb::ApplicationStatus::Returned,
        Status::PendingClearances => pb::ApplicationStatus::PendingClearances,
        Status::InspectionScheduled => pb::ApplicationStatus::InspectionScheduled,
        Status::Approved => pb::ApplicationStatus::Approved,
        Status::Rejected => pb::ApplicationStatus::Rejected,
        Status::Issued => pb::ApplicationStatus::Issued,
    }) as i32
}

/// A listing's status filter: 0 is none.
pub fn status_filter(number: i32) -> Result<Option<Status>, LicensingError> {
    let status = Status::ALL.into_iter().find(|s| status_proto(*s) == number);
    if number != 0 && status.is_none() {
        return Err(LicensingError::InvalidField {
            field: "status",
            message: "is not an application status",
        });
    }
    Ok(status)
}

pub fn application_proto(a: &ApplicationRow) -> pb::Application {
    pb::Application {
        id: a.id.to_string(),
        tracking_number: a.tracking_number.clone(),
        license_type_code: a.license_type_code.clone(),
        status: status_proto(a.progress.status),
        municipality_code: a.municipality_code.clone(),
        facility_name: a.facility_name.clone(),
        activity: a.activity.clone(),
        documents: a.progress.documents.clone(),
        clearances: a
            .progress
            .clearances
            .iter()
            .map(|c| pb::Clearance {
                partner_code: c.partner_code.clone(),
                state: c.state.clone(),
                requested_at: Some(timestamp(c.requested_at)),
                recorded_at: c.recorded_at.map(timestamp),
                note: c.note.clone(),
            })
            .collect(),
        inspections: a
            .progress
            .inspections
            .iter()
            .map(|i| pb::Inspection {
                kind: i.kind.clone(),
                state: i.state.clone(),
                scheduled_for: Some(timestamp(i.scheduled_for)),
                recorded_at: i.recorded_at.map(timestamp),
                notes: i.notes.clone(),
            })
            .collect(),
        reason: a.reason.clone(),
        submitted_at: Some(timestamp(a.submitted_at)),
        license_number: a.license_number.clone().unwrap_or_default(),
        etag: a.version.to_string(),
    }
}

pub fn license_proto(l: &LicenseRow) -> pb::License {
    let status = match l.status.as_str() {
        "active" => pb::LicenseStatus::Active,
        "suspended" => pb::LicenseStatus::Suspended,
        "expired" => pb::LicenseStatus::Expired,
        "renewed" => pb::LicenseStatus::Renewed,
        _ => pb::LicenseStatus::Unspecified,
    };
    pb::License {
        number: l.number.clone(),
        license_type_code: l.license_type_code.clone(),
        application_id: l.application_id.to_string(),
        municipality_code: l.municipality_code.clone(),
        facility_name: l.facility_name.clone(),
        activity: l.activity.clone(),
        status: status as i32,
        valid_from: Some(timestamp(l.valid_from)),
        valid_to: Some(timestamp(l.valid_to)),
        renews: l.renews.clone().unwrap_or_default(),
        suspension_reason: l.suspension_reason.clone().unwrap_or_default(),
    }
}

pub fn license_type_proto(t: &LicenseType) -> pb::LicenseType {
    pb::LicenseType {
        code: t.code.clone(),
        name: Some(LocalizedText {
            ar: t.name_ar.clone(),
            en: t.name_en.clone(),
        }),
        target_days: t.target_days,
        required_documents: t.required_documents.clone(),
        required_clearances: t
            .required_clearances
            .iter()
            .map(|c| pb::ClearanceRequirement {
                partner_code: c.partner_code.clone(),
                description: c.description.clone(),
            })
            .collect(),
        required_inspections: t.required_inspections.clone(),
        validity_days: t.validity_days,
        renewal_window_days: t.renewal_window_days,
        grace_days: t.grace_days,
    }
}

pub fn facility_inspection_proto(r: &RecordedInspection) -> pb::FacilityInspection {
    pb::FacilityInspection {
        id: r.id.to_string(),
        license_number: r.report.license_number.clone(),
        activity: r.report.activity.clone(),
        operator_code: r.report.operator_code.clone(),
        private_operator: r.report.private_operator(),
        compliant: r.findings.compliant,
        items: r.report.items.iter().map(checklist_item_proto).collect(),
        inspected_at: Some(timestamp(r.report.inspected_at)),
        suspended_license: r.suspended_license,
        municipality_code: r.municipality_code.clone(),
        recorded_at: Some(timestamp(r.recorded_at)),
    }
}

/// What a step event says besides its name.
#[derive(Debug, Default)]
pub struct StepFacts {
    pub partner_code: String,
    pub positive: bool,
    pub inspection_kind: String,
    pub note: String,
}

/// The payload of an application event (submitted, or one of its steps).
pub fn application_step_event(
    meta: Option<EventMeta>,
    a: &ApplicationRow,
    t: &LicenseType,
    facts: StepFacts,
) -> ev::ApplicationStep {
    ev::ApplicationStep {
        meta,
        application: Some(ev::ApplicationRef {
            application_id: a.id.to_string(),
            tracking_number: a.tracking_number.clone(),
            license_type_code: a.license_type_code.clone(),
            municipality_code: a.municipality_code.clone(),
            applicant_key: a.applicant_key.clone(),
            target_days: t.target_days,
        }),
        partner_code: facts.partner_code,
        positive: facts.positive,
        inspection_kind: facts.inspection_kind,
        note: facts.note,
    }
}

/// The payload of a license event (issued, renewed, suspended, expired).
pub fn license_changed_event(meta: Option<EventMeta>, l: &LicenseRow) -> ev::LicenseChanged {
    ev::LicenseChanged {
        meta,
        license_number: l.number.clone(),
        license_type_code: l.license_type_code.clone(),
        municipality_code: l.municipality_code.clone(),
        holder_key: l.holder_key.clone(),
        application_id: l.application_id.to_string(),
        valid_from: Some(timestamp(l.valid_from)),
        valid_to: Some(timestamp(l.valid_to)),
        renews: l.renews.clone().unwrap_or_default(),
        submitted_at: Some(timestamp(l.submitted_at)),
    }
}

/// The payload of a recorded compliance inspection.
pub fn facility_inspection_event(
    meta: Option<EventMeta>,
    r: &RecordedInspection,
) -> ev::FacilityInspectionRecorded {
    ev::FacilityInspectionRecorded {
        meta,
        inspection_id: r.id.to_string(),
        license_number: r.report.license_number.clone(),
        activity: r.report.activity.clone(),
        operator_code: r.report.operator_code.clone(),
        private_operator: r.report.private_operator(),
        compliant: r.findings.compliant,
        minor_violations: r.findings.minor,
        major_violations: r.findings.major,
        critical_violations: r.findings.critical,
        municipality_code: r.municipality_code.clone(),
    }
}
