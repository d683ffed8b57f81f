//! The event handlers: each decodes what another service announced and
//! calls a command ([`crate::commands`]).
//!
//! Keeps each report's citizen-facing status current from routing's case
//! events: routed to whom, acknowledged, in progress, on hold, resolved,
//! reopened, closed; and when resolution is expected, from the SLA watcher's
//! resolve clock (started, resumed and warned deadlines; none while paused).
//! Reports linked as duplicates follow their master. Events may arrive late
//! or out of order; a change older than the recorded one is ignored.

use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{InboundEvent, Tx, streams};
use baladiya_proto::convert::instant;
use baladiya_proto::routing::events::v1 as routing;
use baladiya_proto::sla::events::v1 as sla;
use uuid::Uuid;

use crate::commands;

/// The durable consumer reading case events.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "intake-case-status".into(),
        stream: streams::ROUTING,
        subjects: vec!["baladiya.routing.case.>".into()],
    }
}

/// Applies case events to report statuses.
#[derive(Debug, Clone, Copy)]
pub struct StatusFromCases;

/// The status an event leads to, and whether it names a (new) assignee.
fn decode(
    event: &InboundEvent,
) -> Result<Option<(routing::CaseRef, &'static str, bool)>, HandlerError> {
    let (case, status, assigns) = match event.ce_type.as_str() {
        "sa.baladiya.routing.case.routed.v1" => {
            (event.decode::<routing::CaseRouted>()?.case, "routed", true)
        }
        "sa.baladiya.routing.case.acknowledged.v1" => (
            event.decode::<routing::CaseAcknowledged>()?.case,
            "acknowledged",
            false,
        ),
        "sa.baladiya.routing.case.work_started.v1" => (
            event.decode::<routing::CaseWorkStarted>()?.case,
            "in_progress",
            false,
        ),
        "sa.baladiya.routing.case.put_on_hold.v1" => (
            event.decode::<routing::CasePutOnHold>()?.case,
            "on_hold",
            false,
        ),
        "sa.baladiya.routing.case.resumed.v1" => (
            event.decode::<routing::CaseResumed>()?.case,
            "in_progress",
            false,
        ),
        "sa.baladiya.routing.case.resolved.v1" => (
            event.decode::<routing::CaseResolved>()?.case,
            "resolved",
            false,
        ),
        // Sent back: being routed again, by nobody yet.
        "sa.baladiya.routing.case.rejected.v1" => (
            event.decode::<routing::CaseRejected>()?.case,
            "received",
            false,
        ),
        "sa.baladiya.routing.case.rerouted.v1" => (
            event.decode::<routing::CaseRerouted>()?.case,
            "routed",
            true,
        ),
        "sa.baladiya.routing.case.reopened.v1" => (
            event.decode::<routing::CaseReopened>()?.case,
            "reopened",
            false,
        ),
        "sa.baladiya.routing.case.closed.v1" => {
            (event.decode::<routing::CaseClosed>()?.case, "closed", false)
        }
        _ => return Ok(None),
    };
    Ok(Some((case.unwrap_or_default(), status, assigns)))
}

impl EventHandler for StatusFromCases {
    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        let Some((case, status, assigns)) = decode(event)? else {
            return Ok(());
        };
        let report_id: Uuid = case.report_id.parse().map_err(|_| {
            HandlerError::Reject(format!("report_id '{}' is not a UUID", case.report_id))
        })?;
        let case_id: Uuid = case.case_id.parse().map_err(|_| {
            HandlerError::Reject(format!("case_id '{}' is not a UUID", case.case_id))
        })?;
        let assignee = assigns
            .then_some(case.assignee_code.as_str())
            .filter(|a| !a.is_empty());
        commands::follow_case_status(tx, report_id, status, assignee, case_id, event.occurred_at)
            .await?;
        Ok(())
    }
}

/// The durable consumer reading resolve clocks' deadlines.
pub fn deadline_consumer_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "intake-resolve-deadline".into(),
        stream: streams::SLA,
        subjects: vec!["baladiya.sla.clock.>".into()],
    }
}

/// Applies resolve clocks' deadlines to reports' expected resolution.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineFromClocks;

/// What a clock event says about a case's resolve deadline: `Some(Some(t))`
/// a deadline, `Some(None)` none for now (paused), `None` nothing.
fn deadline(
    event: &InboundEvent,
) -> Result<Option<(sla::ClockRef, Option<prost_types::Timestamp>)>, HandlerError> {
    let (clock, deadline) = match event.ce_type.as_str() {
        "sa.baladiya.sla.clock.started.v1" => {
            let e = event.decode::<sla::ClockStarted>()?;
            (e.clock, e.deadline)
        }
        "sa.baladiya.sla.clock.resumed.v1" => {
            let e = event.decode::<sla::ClockResumed>()?;
            (e.clock, e.deadline)
        }
        "sa.baladiya.sla.clock.warning.v1" => {
            let e = event.decode::<sla::ClockWarning>()?;
            (e.clock, e.deadline)
        }
        "sa.baladiya.sla.clock.paused.v1" => (event.decode::<sla::ClockPaused>()?.clock, None),
        // A breach withdrawn names the corrected deadline (none if the clock
        // stopped in time or is paused).
        "sa.baladiya.sla.clock.breach_withdrawn.v1" => {
            let e = event.decode::<sla::ClockBreachWithdrawn>()?;
            (e.clock, e.deadline)
        }
        _ => return Ok(None),
    };
    let clock = clock.unwrap_or_default();
    if clock.subject_kind != "case" || clock.metric != "resolve" || clock.tracking_number.is_empty()
    {
        return Ok(None);
    }
    Ok(Some((clock, deadline)))
}

impl EventHandler for DeadlineFromClocks {
    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        let Some((clock, deadline)) = deadline(event)? else {
            return Ok(());
        };
        let at = match deadline {
            None => None,
            Some(t) => Some(instant(&t).ok_or_else(|| {
                HandlerError::Reject("the clock's deadline is not a valid timestamp".into())
            })?),
        };
        commands::follow_resolve_deadline(tx, &clock.tracking_number, at, event.occurred_at)
            .await?;
        Ok(())
    }
}
