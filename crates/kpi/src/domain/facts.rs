//! What each domain event contributes to the indicators: its facts (one row
//! per event and kind) and the lookups they are read with (a case's report,
//! a report's channel, a license type's target). Pure: a fact depends only
//! on its own event, which is what lets [`crate::consumers::apply`] write them
//! in any order, twice, or interleaved with the other streams.

use baladiya_platform::events::InboundEvent;
use baladiya_proto::intake::events::v1 as intake;
use baladiya_proto::intake::v1::Channel;
use baladiya_proto::licensing::events::v1 as licensing;
use baladiya_proto::routing::events::v1 as routing;
use baladiya_proto::sla::events::v1 as sla;

use crate::catalogue::Fact;
use crate::error::KpiError;

/// One fact row.
#[derive(Debug, Clone, PartialEq)]
pub struct FactRow {
    pub kind: Fact,
    pub subject: String,
    pub municipality: String,
    pub partner: String,
    pub channel: String,
    pub category: String,
    pub license_type: String,
    pub activity: String,
    pub operator: String,
    pub level: i32,
    pub value: f64,
}

impl FactRow {
    fn new(kind: Fact, subject: &str, value: f64) -> Self {
        Self {
            kind,
            subject: subject.to_string(),
            municipality: String::new(),
            partner: String::new(),
            channel: String::new(),
            category: String::new(),
            license_type: String::new(),
            activity: String::new(),
            operator: String::new(),
            level: 0,
            value,
        }
    }
}

/// Everything one event contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    pub facts: Vec<FactRow>,
    /// (case id, report id).
    pub case_report: Option<(String, String)>,
    /// (report id, channel name).
    pub report_channel: Option<(String, String)>,
    /// (license type, target working days).
    pub license_target: Option<(String, i32)>,
    /// The event a withdrawal retracts (an SLA breach or escalation).
    pub withdrawn: Option<uuid::Uuid>,
}

fn channel_name(channel: i32) -> String {
    Channel::try_from(channel)
        .unwrap_or(Channel::Unspecified)
        .as_str_name()
        .to_string()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn case_fact(kind: Fact, case: &routing::CaseRef, value: f64) -> FactRow {
    FactRow {
        municipality: case.municipality_code.clone(),
        partner: case.assignee_code.clone(),
        category: case.category_code.clone(),
        ..FactRow::new(kind, &case.case_id, value)
    }
}

fn clock_fact(kind: Fact, clock: &sla::ClockRef, value: f64) -> FactRow {
    let mut row = FactRow {
        municipality: clock.municipality_code.clone(),
        partner: clock.partner_code.clone(),
        ..FactRow::new(kind, &clock.subject_id, value)
    };
    // An application's clock carries its license type where a case's
    // carries its category.
    if clock.subject_kind == "application" {
        row.license_type = clock.category_code.clone();
    } else {
        row.category = clock.category_code.clone();
    }
    row
}

fn hours(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| {
        d.seconds as f64 / 3600.0 + f64::from(d.nanos) / 3.6e12
    })
}

fn event_id(text: &str, what: &str) -> Result<uuid::Uuid, KpiError> {
    text.parse()
        .map_err(|_| KpiError::Unprojectable(format!("the event's {what} '{text}' is not a UUID")))
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, KpiError> {
    value.ok_or_else(|| KpiError::Unprojectable(format!("the event has no {what}")))
}

/// The facts and lookups of one event; events that feed no indicator give
/// an empty projection.
pub fn facts_of(event: &InboundEvent) -> Result<Projection, KpiError> {
    let name = event
        .ce_type
        .strip_prefix("sa.baladiya.")
        .and_then(|t| t.strip_suffix(".v1"))
        .unwrap_or_default();
    let mut p = Projection::default();
    match name {
        "intake.report.received" => {
            let r: intake::ReportReceived = event.decode()?;
            let channel = channel_name(r.channel);
            p.facts.push(FactRow {
                municipality: r.municipality_code.clone(),
                channel: channel.clone(),
                category: r.category_code.clone(),
                ..FactRow::new(
                    Fact::ReportReceived,
                    &r.report_id,
                    flag(!r.duplicate_of.is_empty()),
                )
            });
            p.report_channel = Some((r.report_id, channel));
        }
        "intake.report.duplicate_linked" => {
            let r: intake::ReportLinkedAsDuplicate = event.decode()?;
            p.report_channel = Some((r.report_id, channel_name(r.channel)));
        }
        "intake.report.rated" => {
            let r: intake::ReportRated = event.decode()?;
            let channel = channel_name(r.channel);
            p.facts.push(FactRow {
                municipality: r.municipality_code.clone(),
                partner: r.assignee_code.clone(),
                channel: channel.clone(),
                category: r.category_code.clone(),
                ..FactRow::new(Fact::Rating, &r.report_id, f64::from(r.score))
            });
            p.report_channel = Some((r.report_id, channel));
        }
        routing_event if routing_event.starts_with("routing.case.") => {
            let event_name = &routing_event["routing.case.".len()..];
            let case = routing_case(event, event_name)?;
            let Some(case) = case else {
                return Ok(p);
            };
            let open = !matches!(event_name, "resolved" | "closed");
            p.facts.push(case_fact(Fact::CaseStatus, &case, flag(open)));
            match event_name {
                "resolved" => p.facts.push(case_fact(Fact::CaseResolved, &case, 1.0)),
                "reopened" => p.facts.push(case_fact(Fact::CaseReopened, &case, 1.0)),
                _ => {}
            }
            p.case_report = Some((case.case_id.clone(), case.report_id.clone()));
        }
        "sla.clock.met" => {
            let m: sla::ClockMet = event.decode()?;
            let clock = required(m.clock.as_ref(), "clock")?;
            let within = flag(!m.breached);
            let (share, amount, value) = match clock.metric.as_str() {
                "acknowledge" => (Fact::AckClock, Fact::AckHours, hours(m.elapsed.as_ref())),
                "resolve" => (
                    Fact::ResolveClock,
                    Fact::ResolveHours,
                    hours(m.elapsed.as_ref()),
                ),
                "decision" => (
                    Fact::DecisionClock,
                    Fact::DecisionDays,
                    m.elapsed_working_days,
                ),
                _ => return Ok(p),
            };
            p.facts.push(clock_fact(share, clock, within));
            p.facts.push(clock_fact(amount, clock, value));
            if clock.metric == "resolve" {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 0.0));
            }
        }
        "sla.clock.breached" => {
            let b: sla::ClockBreached = event.decode()?;
            let clock = required(b.clock.as_ref(), "clock")?;
            p.facts.push(clock_fact(Fact::ClockBreached, clock, 1.0));
            if clock.metric == "resolve" {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 1.0));
            }
        }
        "sla.clock.started" | "sla.clock.cancelled" => {
            let clock = if name == "sla.clock.started" {
                event.decode::<sla::ClockStarted>()?.clock
            } else {
                event.decode::<sla::ClockCancelled>()?.clock
            };
            let clock = required(clock.as_ref(), "clock")?;
            if clock.metric == "resolve" {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 0.0));
            }
        }
        "sla.clock.breach_withdrawn" => {
            let w: sla::ClockBreachWithdrawn = event.decode()?;
            let clock = required(w.clock.as_ref(), "clock")?;
            p.withdrawn = Some(event_id(&w.breach_event_id, "breach_event_id")?);
            if clock.metric == "resolve" && !w.other_breaches {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 0.0));
            }
        }
        "sla.escalation.withdrawn" => {
            let w: sla::EscalationWithdrawn = event.decode()?;
            p.withdrawn = Some(event_id(&w.raised_event_id, "raised_event_id")?);
        }
        "sla.escalation.raised" => {
            let e: sla::EscalationRaised = event.decode()?;
            let clock = required(e.clock.as_ref(), "clock")?;
            let mut row = clock_fact(Fact::Escalation, clock, 1.0);
            row.level = i32::try_from(e.level).unwrap_or(i32::MAX);
            p.facts.push(row);
        }
        "licensing.application.submitted" | "licensing.application.rejected" => {
            let step: licensing::ApplicationStep = event.decode()?;
            let a = required(step.application.as_ref(), "application")?;
            let kind = if name.ends_with("submitted") {
                Fact::ApplicationReceived
            } else {
                Fact::ApplicationRejected
            };
            p.facts.push(FactRow {
                municipality: a.municipality_code.clone(),
                license_type: a.license_type_code.clone(),
                ..FactRow::new(kind, &a.application_id, 1.0)
            });
            p.license_target = Some((
                a.license_type_code.clone(),
                i32::try_from(a.target_days).unwrap_or(i32::MAX),
            ));
        }
        "licensing.license.issued" => {
            let l: licensing::LicenseChanged = event.decode()?;
            p.facts.push(FactRow {
                municipality: l.municipality_code.clone(),
                license_type: l.license_type_code.clone(),
                ..FactRow::new(Fact::LicenseIssued, &l.application_id, 1.0)
            });
        }
        "licensing.facility.inspection_recorded" => {
            let i: licensing::FacilityInspectionRecorded = event.decode()?;
            let row = |kind, value| FactRow {
                municipality: i.municipality_code.clone(),
                activity: i.activity.clone(),
                operator: i.operator_code.clone(),
                ..FactRow::new(kind, &i.inspection_id, value)
            };
            p.facts
                .push(row(Fact::FacilityInspection, flag(i.compliant)));
            p.facts.push(row(
                Fact::InspectionByPrivateOperator,
                flag(i.private_operator),
            ));
        }
        _ => {}
    }
    Ok(p)
}

/// The case a routing event is about; `None` for events that change no
/// status (a supporter added).
fn routing_case(event: &InboundEvent, name: &str) -> Result<Option<routing::CaseRef>, KpiError> {
    let case = match name {
        "routed" => event.decode::<routing::CaseRouted>()?.case,
        "acknowledged" => event.decode::<routing::CaseAcknowledged>()?.case,
        "work_started" => event.decode::<routing::CaseWorkStarted>()?.case,
        "put_on_hold" => event.decode::<routing::CasePutOnHold>()?.case,
        "resumed" => event.decode::<routing::CaseResumed>()?.case,
        "resolved" => event.decode::<routing::CaseResolved>()?.case,
        "rejected" => event.decode::<routing::CaseRejected>()?.case,
        "rerouted" => event.decode::<routing::CaseRerouted>()?.case,
        "reopened" => event.decode::<routing::CaseReopened>()?.case,
        "closed" => event.decode::<routing::CaseClosed>()?.case,
        _ => return Ok(None),
    };
    required(case, "case").map(Some)
}
