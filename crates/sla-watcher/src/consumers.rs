//! What the watcher consumes: case events (which start, pause, resume, stop
//! and cancel clocks) and partner events (the local replica of agreements and
//! calendars that terms come from; a calendar change recomputes the open
//! clocks on it).

use std::sync::Arc;

use baladiya_platform::error::Violations;
use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{InboundEvent, Tx, streams};
use baladiya_platform::wake::Wake;
use baladiya_proto::partners::events::v1 as partners;
use baladiya_proto::routing::events::v1 as routing;
use uuid::Uuid;

use crate::SlaConfig;
use crate::commands;
use crate::domain::derive::{ApplicationEvent, CaseEvent, CaseEventKind};
use crate::store::{self, SubjectFacts};
use baladiya_proto::licensing::events::v1 as licensing;

/// Reads case events.
pub fn cases_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "sla-cases".into(),
        stream: streams::ROUTING,
        subjects: vec![
            "baladiya.routing.case.>".into(),
            "baladiya.routing.watermark".into(),
        ],
    }
}

/// Reads partner events.
pub fn partners_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "sla-partners".into(),
        stream: streams::PARTNERS,
        subjects: vec!["baladiya.partners.>".into()],
    }
}

/// Feeds case events into clocks.
#[derive(Debug, Clone)]
pub struct CaseClocks {
    pub config: Arc<SlaConfig>,
    /// The timer loop's wake-up, signalled after each commit.
    pub timers: Wake,
}

fn case_event(
    event: &InboundEvent,
) -> Result<
    Option<(
        routing::CaseRef,
        CaseEventKind,
        Option<prost_types::Timestamp>,
    )>,
    HandlerError,
> {
    let t = event.ce_type.as_str();
    Ok(Some(match t {
        "sa.baladiya.routing.case.routed.v1" => {
            let e: routing::CaseRouted = event.decode()?;
            (
                e.case.unwrap_or_default(),
                CaseEventKind::Routed,
                e.report_received_at,
            )
        }
        "sa.baladiya.routing.case.acknowledged.v1" => (
            event
                .decode::<routing::CaseAcknowledged>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Acknowledged,
            None,
        ),
        "sa.baladiya.routing.case.work_started.v1" => (
            event
                .decode::<routing::CaseWorkStarted>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::WorkStarted,
            None,
        ),
        "sa.baladiya.routing.case.put_on_hold.v1" => (
            event
                .decode::<routing::CasePutOnHold>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::OnHold,
            None,
        ),
        "sa.baladiya.routing.case.resumed.v1" => (
            event
                .decode::<routing::CaseResumed>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Resumed,
            None,
        ),
        "sa.baladiya.routing.case.resolved.v1" => (
            event
                .decode::<routing::CaseResolved>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Resolved,
            None,
        ),
        "sa.baladiya.routing.case.rejected.v1" => (
            event
                .decode::<routing::CaseRejected>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Rejected,
            None,
        ),
        "sa.baladiya.routing.case.rerouted.v1" => (
            event
                .decode::<routing::CaseRerouted>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Rerouted,
            None,
        ),
        "sa.baladiya.routing.case.reopened.v1" => (
            event
                .decode::<routing::CaseReopened>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Reopened,
            None,
        ),
        "sa.baladiya.routing.case.closed.v1" => (
            event
                .decode::<routing::CaseClosed>()?
                .case
                .unwrap_or_default(),
            CaseEventKind::Closed,
            None,
        ),
        _ => return Ok(None),
    }))
}

impl EventHandler for CaseClocks {
    fn committed(&self) {
        self.timers.signal();
    }

    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        let Some((case, kind, received)) = case_event(event)? else {
            return Ok(());
        };
        let case_id: Uuid = case.case_id.parse().map_err(|_| {
            HandlerError::Reject(format!("case_id '{}' is not a UUID", case.case_id))
        })?;
        let e = CaseEvent {
            id: event.id,
            kind,
            at: event.occurred_at,
            assignee: case.assignee_code.clone(),
            report_received_at: received.as_ref().and_then(baladiya_proto::convert::instant),
            seq: case.version,
        };
        let facts = SubjectFacts {
            tracking_number: case.tracking_number.clone(),
            municipality_code: case.municipality_code.clone(),
            category_code: case.category_code.clone(),
            priority: case.priority,
            target_days: 0,
        };
        if store::add_case_event(tx, case_id, &e, &facts).await? {
            commands::recompute_subject(tx, &self.config, "case", case_id).await?;
        }
        Ok(())
    }
}

/// Reads application steps and license issues.
pub fn applications_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "sla-applications".into(),
        stream: streams::LICENSING,
        subjects: vec![
            "baladiya.licensing.application.>".into(),
            "baladiya.licensing.license.issued.>".into(),
            "baladiya.licensing.watermark".into(),
        ],
    }
}

/// Feeds application steps into decision and clearance clocks.
#[derive(Debug, Clone)]
pub struct ApplicationClocks {
    pub config: Arc<SlaConfig>,
    /// The timer loop's wake-up, signalled after each commit.
    pub timers: Wake,
}

impl EventHandler for ApplicationClocks {
    fn committed(&self) {
        self.timers.signal();
    }

    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        let Some(step) = event
            .ce_type
            .strip_prefix("sa.baladiya.licensing.")
            .and_then(|t| t.strip_suffix(".v1"))
        else {
            return Ok(());
        };
        let (application_id, kind, partner, facts) = if step == "license.issued" {
            let l: licensing::LicenseChanged = event.decode()?;
            // The decision clock's facts come from the submission already recorded.
            let facts = SubjectFacts {
                tracking_number: String::new(),
                municipality_code: l.municipality_code.clone(),
                category_code: l.license_type_code.clone(),
                priority: 0,
                target_days: 0,
            };
            (l.application_id, "issued".to_string(), String::new(), facts)
        } else if let Some(kind) = step.strip_prefix("application.") {
            let s: licensing::ApplicationStep = event.decode()?;
            let a = s.application.unwrap_or_default();
            let facts = SubjectFacts {
                tracking_number: a.tracking_number.clone(),
                municipality_code: a.municipality_code.clone(),
                category_code: a.license_type_code.clone(),
                priority: 0,
                target_days: a.target_days as i32,
            };
            (a.application_id, kind.to_string(), s.partner_code, facts)
        } else {
            return Ok(());
        };
        let id: Uuid = application_id.parse().map_err(|_| {
            HandlerError::Reject(format!("application_id '{application_id}' is not a UUID"))
        })?;
        let e = ApplicationEvent {
            id: event.id,
            kind,
            at: event.occurred_at,
            partner,
        };
        if store::add_application_event(tx, id, &e, &facts).await? {
            commands::recompute_subject(tx, &self.config, "application", id).await?;
        }
        Ok(())
    }
}

/// Keeps the agreement and calendar replica.
#[derive(Debug, Clone)]
pub struct PartnerReplica {
    pub config: Arc<SlaConfig>,
    /// The timer loop's wake-up, signalled after each commit.
    pub timers: Wake,
}

impl EventHandler for PartnerReplica {
    fn committed(&self) {
        self.timers.signal();
    }

    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        match event.ce_type.as_str() {
            "sa.baladiya.partners.agreement.published.v1" => {
                let a = event
                    .decode::<partners::AgreementPublished>()?
                    .agreement
                    .unwrap_or_default();
                let effective = a
                    .effective_from
                    .as_ref()
                    .and_then(baladiya_proto::convert::instant)
                    .ok_or_else(|| {
                        HandlerError::Reject("agreement without effective_from".into())
                    })?;
                let body = baladiya_agreements::convert::body_from_proto(&a);
                store::put_agreement(tx, &a.partner_code, a.version, effective, &body).await?;
                let n = commands::recompute_partner_since(
                    tx,
                    &self.config,
                    &a.partner_code,
                    a.version,
                    effective,
                )
                .await?;
                if n > 0 {
                    tracing::info!(partner = %a.partner_code, version = a.version, subjects = n, "clocks took the terms of a version effective at their start");
                }
            }
            "sa.baladiya.partners.calendar.changed.v1" => {
                let changed: partners::CalendarChanged = event.decode()?;
                let proto = changed.calendar.unwrap_or_default();
                let mut v = Violations::new();
                let record = baladiya_agreements::convert::calendar_from_proto(&proto, &mut v);
                if !v.is_empty() {
                    return Err(HandlerError::Reject(format!(
                        "calendar {} does not convert",
                        proto.id
                    )));
                }
                store::put_calendar(tx, &record, proto.revision).await?;
                // Clocks that ended before the first changed date keep their
                // outcome; later ones (and open ones) are recomputed in steps.
                let ended_since =
                    chrono::NaiveDate::parse_from_str(&changed.affected_start_date, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.pred_opt())
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|d| d.and_utc());
                store::request_calendar_recompute(tx, &record.id, proto.revision, ended_since)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
