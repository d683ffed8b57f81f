//! License types, the application state machine, licenses and compliance
//! inspections as pure rules.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A clearance a license type needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearanceRequirement {
    pub partner_code: String,
    #[serde(default)]
    pub description: String,
}

/// A kind of license.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseType {
    pub code: String,
    pub name_ar: String,
    pub name_en: String,
    /// Working days on the government calendar.
    pub target_days: u32,
    #[serde(default)]
    pub required_documents: Vec<String>,
    #[serde(default)]
    pub required_clearances: Vec<ClearanceRequirement>,
    #[serde(default)]
    pub required_inspections: Vec<String>,
    pub validity_days: u32,
    pub renewal_window_days: u32,
    pub grace_days: u32,
}

/// Longest validity a license type may give: 100 years. With instants
/// bounded to 2200 it keeps `valid_to` far inside what dates can hold.
pub const MAX_VALIDITY_DAYS: u32 = 36_500;

/// Longest renewal window or grace period: ten years.
pub const MAX_WINDOW_DAYS: u32 = 3_650;

impl LicenseType {
    /// Every problem with the type's numbers, as (field, why). The target is
    /// held to the bound every SLA target is (`worktime::MAX_TARGET`), so an
    /// application's clock never computes past the measured span.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let max_target = baladiya_worktime::MAX_TARGET.days;
        let mut out = Vec::new();
        if !(1..=max_target).contains(&self.target_days) {
            out.push((
                "target_days",
                format!("must be between 1 and {max_target} working days"),
            ));
        }
        if !(1..=MAX_VALIDITY_DAYS).contains(&self.validity_days) {
            out.push((
                "validity_days",
                format!("must be between 1 and {MAX_VALIDITY_DAYS} days"),
            ));
        }
        if self.renewal_window_days > MAX_WINDOW_DAYS.min(self.validity_days) {
            out.push((
                "renewal_window_days",
                format!("must be at most validity_days and at most {MAX_WINDOW_DAYS} days"),
            ));
        }
        if self.grace_days > MAX_WINDOW_DAYS {
            out.push((
                "grace_days",
                format!("must be at most {MAX_WINDOW_DAYS} days"),
            ));
        }
        out
    }
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    UnderReview,
    Returned,
    PendingClearances,
    InspectionScheduled,
    Approved,
    Rejected,
    Issued,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::UnderReview,
        Status::Returned,
        Status::PendingClearances,
        Status::InspectionScheduled,
        Status::Approved,
        Status::Rejected,
        Status::Issued,
    ];
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnderReview => "under_review",
            Self::Returned => "returned",
            Self::PendingClearances => "pending_clearances",
            Self::InspectionScheduled => "inspection_scheduled",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Issued => "issued",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
    /// Whether the application is decided.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Approved | Self::Rejected | Self::Issued)
    }
}

/// A clearance on an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearance {
    pub partner_code: String,
    /// `requested`, `granted` or `refused`.
    pub state: String,
    pub requested_at: DateTime<Utc>,
    pub recorded_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub note: String,
}

/// An inspection on an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspection {
    pub kind: String,
    /// `scheduled`, `passed` or `failed`.
    pub state: String,
    pub scheduled_for: DateTime<Utc>,
    pub recorded_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub notes: String,
}

/// Why a step is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    OutOfOrder(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

fn out_of_order(msg: impl Into<String>) -> StepError {
    StepError::OutOfOrder(msg.into())
}

/// The parts of an application the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub status: Status,
    pub documents: Vec<String>,
    pub clearances: Vec<Clearance>,
    pub inspections: Vec<Inspection>,
}

/// Documents a type requires that are missing.
pub fn missing_documents<'a>(t: &'a LicenseType, documents: &[String]) -> Vec<&'a str> {
    t.required_documents
        .iter()
        .filter(|d| !documents.iter().any(|x| x == *d))
        .map(String::as_str)
        .collect()
}

impl Progress {
    /// The status while under review, from what is outstanding.
    fn settle(&mut self) {
        self.status = if self.clearances.iter().any(|c| c.state == "requested") {
            Status::PendingClearances
        } else if self.inspections.iter().any(|i| i.state == "scheduled") {
            Status::InspectionScheduled
        } else {
            Status::UnderReview
        };
    }

    fn open(&self, what: &str) -> Result<(), StepError> {
        if self.status.is_final() || self.status == Status::Returned {
            return Err(out_of_order(format!(
                "cannot {what} an application that is {}",
                self.status.as_str()
            )));
        }
        Ok(())
    }

    pub fn return_for_correction(&mut self) -> Result<(), StepError> {
        self.open("return")?;
        self.status = Status::Returned;
        Ok(())
    }

    pub fn resubmit(&mut self, documents: &[String]) -> Result<(), StepError> {
        if self.status != Status::Returned {
            return Err(out_of_order(format!(
                "only a returned application is resubmitted; it is {}",
                self.status.as_str()
            )));
        }
        for d in documents {
            if !self.documents.contains(d) {
                self.documents.push(d.clone());
            }
        }
        self.settle();
        Ok(())
    }

    pub fn request_clearance(&mut self, partner: &str, at: DateTime<Utc>) -> Result<(), StepError> {
        self.open("request a clearance for")?;
        if self
            .clearances
            .iter()
            .any(|c| c.partner_code == partner && c.state != "refused")
        {
            return Err(out_of_order(format!(
                "a clearance from {partner} is already requested or granted"
            )));
        }
        self.clearances.retain(|c| c.partner_code != partner);
        self.clearances.push(Clearance {
            partner_code: partner.into(),
            state: "requested".into(),
            requested_at: at,
            recorded_at: None,
            note: String::new(),
        });
        self.settle();
        Ok(())
    }

    pub fn record_clearance(
        &mut self,
        partner: &str,
        granted: bool,
        note: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StepError> {
        self.open("record a clearance on")?;
        let c = self
            .clearances
            .iter_mut()
            .find(|c| c.partner_code == partner && c.state == "requested")
            .ok_or_else(|| out_of_order(format!("no clearance from {partner} is awaited")))?;
        c.state = if granted { "granted" } else { "refused" }.into();
        c.recorded_at = Some(at);
        c.note = note.into();
        self.settle();
        Ok(())
    }

    pub fn schedule_inspection(
        &mut self,
        t: &LicenseType,
        kind: &str,
        when: DateTime<Utc>,
    ) -> Result<(), StepError> {
        self.open("schedule an inspection for")?;
        if !t.required_inspections.iter().any(|k| k == kind) {
            return Err(StepError::Field {
                field: "kind".into(),
                message: format!("{} needs no {kind} inspection", t.code),
            });
        }
        if self
            .inspections
            .iter()
            .any(|i| i.kind == kind && i.state != "failed")
        {
            return Err(out_of_order(format!(
                "a {kind} inspection is already scheduled or passed"
            )));
        }
        self.inspections.retain(|i| i.kind != kind);
        self.inspections.push(Inspection {
            kind: kind.into(),
            state: "scheduled".into(),
            scheduled_for: when,
            recorded_at: None,
            notes: String::new(),
        });
        self.settle();
        Ok(())
    }

    pub fn record_inspection(
        &mut self,
        kind: &str,
        passed: bool,
        notes: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StepError> {
        self.open("record an inspection on")?;
        let i = self
            .inspections
            .iter_mut()
            .find(|i| i.kind == kind && i.state == "scheduled")
            .ok_or_else(|| out_of_order(format!("no {kind} inspection is scheduled")))?;
        i.state = if passed { "passed" } else { "failed" }.into();
        i.recorded_at = Some(at);
        i.notes = notes.into();
        self.settle();
        Ok(())
    }

    /// Everything a type requires is in: documents, granted clearances, passed inspections.
    pub fn approve(&mut self, t: &LicenseType) -> Result<(), StepError> {
        self.open("approve")?;
        let mut missing: Vec<String> = missing_documents(t, &self.documents)
            .iter()
            .map(|d| format!("document {d}"))
            .collect();
        for r in &t.required_clearances {
            if !self
                .clearances
                .iter()
                .any(|c| c.partner_code == r.partner_code && c.state == "granted")
            {
                missing.push(format!("clearance from {}", r.partner_code));
            }
        }
        for k in &t.required_inspections {
            if !self
                .inspections
                .iter()
                .any(|i| i.kind == *k && i.state == "passed")
            {
                missing.push(format!("passed {k} inspection"));
            }
        }
        if !missing.is_empty() {
            return Err(out_of_order(format!(
                "cannot approve without: {}",
                missing.join(", ")
            )));
        }
        self.status = Status::Approved;
        Ok(())
    }

    pub fn reject(&mut self) -> Result<(), StepError> {
        self.open("reject")?;
        self.status = Status::Rejected;
        Ok(())
    }

    pub fn issue(&mut self) -> Result<(), StepError> {
        if self.status != Status::Approved {
            return Err(out_of_order(format!(
                "only an approved application is issued a license; it is {}",
                self.status.as_str()
            )));
        }
        self.status = Status::Issued;
        Ok(())
    }
}

/// When a renewal of a license valid to `valid_to` is accepted, and the new validity.
pub fn renewal(
    t: &LicenseType,
    valid_to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), StepError> {
    let opens = valid_to - Duration::days(i64::from(t.renewal_window_days));
    let closes = valid_to + Duration::days(i64::from(t.grace_days));
    if now < opens {
        return Err(out_of_order(format!(
            "renewals open on {}",
            opens.to_rfc3339()
        )));
    }
    if now > closes {
        return Err(out_of_order(format!(
            "the grace period ended on {}; apply for a new license",
            closes.to_rfc3339()
        )));
    }
    let from = valid_to.max(now);
    Ok((from, from + Duration::days(i64::from(t.validity_days))))
}

/// An application as submitted, before it has an id or a tracking number:
/// the text fields trimmed, the applicant already a pseudonym.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApplication {
    pub applicant_key: String,
    pub municipality_code: String,
    pub facility_name: String,
    pub activity: String,
    pub documents: Vec<String>,
}

/// The tracking number of the `seq`th application, submitted in `year`.
pub fn tracking_number(year: i32, seq: i64) -> String {
    format!("APP-{year}-{seq:07}")
}

/// Who inspects for the municipality itself; any other operator code is a
/// private operator.
pub const MUNICIPAL_OPERATOR: &str = "MUNICIPAL";

/// The activities a compliance inspection judges.
pub const INSPECTED_ACTIVITIES: [&str; 2] = ["PUBLIC_HEALTH", "COMMERCIAL_MARKET"];

/// Severity numbers of a failed checklist item, as on the wire
/// (`baladiya.licensing.v1.Severity`) and in the stored items.
pub mod severity {
    pub const MINOR: i32 = 1;
    pub const MAJOR: i32 = 2;
    pub const CRITICAL: i32 = 3;
}

/// One checklist item of a compliance inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecklistItem {
    pub code: String,
    pub passed: bool,
    /// The severity number as given (see [`severity`]); it counts only for a
    /// failed item, and is stored as it came.
    pub severity: i32,
    pub note: String,
}

/// What a compliance inspection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Findings {
    /// Every item passed.
    pub compliant: bool,
    pub minor: u32,
    pub major: u32,
    pub critical: u32,
}

impl Findings {
    /// The findings of `items`: failed items counted by severity.
    pub fn of(items: &[ChecklistItem]) -> Self {
        let failed = |s: i32| {
            items
                .iter()
                .filter(|i| !i.passed && i.severity == s)
                .count() as u32
        };
        Self {
            compliant: items.iter().all(|i| i.passed),
            minor: failed(severity::MINOR),
            major: failed(severity::MAJOR),
            critical: failed(severity::CRITICAL),
        }
    }

    /// Whether these findings suspend a license in `license_status`: a
    /// critical violation does, where the service is configured so, for an
    /// active license.
    pub fn suspend(&self, suspend_on_critical: bool, license_status: &str) -> bool {
        self.critical > 0 && suspend_on_critical && license_status == "active"
    }
}

/// A compliance inspection as reported: which license, which activity, who
/// inspected, the checklist and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InspectionReport {
    pub license_number: String,
    pub activity: String,
    pub operator_code: String,
    pub items: Vec<ChecklistItem>,
    pub inspected_at: DateTime<Utc>,
}

impl InspectionReport {
    /// Whether a private operator (not the municipality) inspected.
    pub fn private_operator(&self) -> bool {
        self.operator_code != MUNICIPAL_OPERATOR
    }
}

/// A recorded compliance inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInspection {
    pub id: uuid::Uuid,
    pub report: InspectionReport,
    pub municipality_code: String,
    pub findings: Findings,
    /// Whether the inspection suspended the license.
    pub suspended_license: bool,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_type_numbers_are_bounded() {
        let mut t = LicenseType {
            code: "BUILDING".into(),
            name_ar: "رخصة بناء".into(),
            name_en: "Building permit".into(),
            target_days: 15,
            required_documents: vec![],
            required_clearances: vec![],
            required_inspections: vec![],
            validity_days: 365,
            renewal_window_days: 30,
            grace_days: 15,
        };
        assert!(t.problems().is_empty());
        t.target_days = u32::MAX;
        t.validity_days = u32::MAX;
        t.renewal_window_days = u32::MAX;
        t.grace_days = u32::MAX;
        let fields: Vec<&str> = t.problems().into_iter().map(|p| p.0).collect();
        assert_eq!(
            fields,
            [
                "target_days",
                "validity_days",
                "renewal_window_days",
                "grace_days"
            ]
        );
        t.target_days = 0;
        assert_eq!(t.problems()[0].0, "target_days");
    }

    fn permit() -> LicenseType {
        LicenseType {
            code: "BUILDING_PERMIT".into(),
            name_ar: "رخصة بناء".into(),
            name_en: "Building permit".into(),
            target_days: 15,
            required_documents: vec!["site_plan".into(), "deed".into()],
            required_clearances: vec![ClearanceRequirement {
                partner_code: "MOJ".into(),
                description: "deed verification".into(),
            }],
            required_inspections: vec!["SITE".into()],
            validity_days: 365,
            renewal_window_days: 30,
            grace_days: 15,
        }
    }

    fn t(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_775_000_000 + day * 86_400, 0).expect("t")
    }

    #[test]
    fn no_approval_before_clearances_and_inspections_pass() {
        let mut p = Progress {
            status: Status::UnderReview,
            documents: vec!["site_plan".into(), "deed".into()],
            clearances: vec![],
            inspections: vec![],
        };
        let err = p.approve(&permit()).expect_err("nothing in");
        assert!(
            err.to_string().contains("clearance from MOJ")
                && err.to_string().contains("passed SITE inspection"),
            "{err}"
        );
        p.request_clearance("MOJ", t(1)).expect("request");
        assert_eq!(p.status, Status::PendingClearances);
        p.record_clearance("MOJ", true, "", t(2)).expect("granted");
        p.schedule_inspection(&permit(), "SITE", t(3))
            .expect("schedule");
        assert_eq!(p.status, Status::InspectionScheduled);
        p.record_inspection("SITE", true, "ok", t(3))
            .expect("passed");
        assert_eq!(p.status, Status::UnderReview);
        p.approve(&permit()).expect("approved");
        p.issue().expect("issued");
        assert_eq!(
            p.reject(),
            Err(StepError::OutOfOrder(
                "cannot reject an application that is issued".into()
            ))
        );
    }

    #[test]
    fn renewals_open_in_the_window_and_close_after_the_grace() {
        let valid_to = t(365);
        assert!(renewal(&permit(), valid_to, t(300)).is_err(), "too early");
        assert_eq!(
            renewal(&permit(), valid_to, t(340)).expect("in window"),
            (valid_to, valid_to + Duration::days(365))
        );
        assert_eq!(
            renewal(&permit(), valid_to, t(370)).expect("in grace").0,
            t(370)
        );
        assert!(renewal(&permit(), valid_to, t(400)).is_err(), "too late");
    }

    #[test]
    fn failed_items_count_by_severity_and_a_critical_one_suspends() {
        let item = |passed: bool, severity: i32| ChecklistItem {
            code: "X".into(),
            passed,
            severity,
            note: String::new(),
        };
        let found = Findings::of(&[
            item(true, severity::CRITICAL),
            item(false, severity::MINOR),
            item(false, severity::CRITICAL),
        ]);
        assert_eq!(
            found,
            Findings {
                compliant: false,
                minor: 1,
                major: 0,
                critical: 1
            }
        );
        assert!(found.suspend(true, "active"));
        assert!(!found.suspend(false, "active"));
        assert!(!found.suspend(true, "suspended"));
        assert!(Findings::of(&[item(true, 0)]).compliant);
    }
}
