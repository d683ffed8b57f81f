//! Event consumers: routing each received report to a case, and marking cases
//! overdue when the SLA watcher says a clock of the current assignee breached.

use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{InboundEvent, Tx, streams};
use baladiya_proto::intake::events::v1::ReportReceived;
use baladiya_proto::sla::events::v1::{ClockBreachWithdrawn, ClockBreached};
use uuid::Uuid;

use crate::commands;
use crate::domain::Rule;

/// Reads received reports.
pub fn reports_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "routing-reports".into(),
        stream: streams::INTAKE,
        subjects: vec!["baladiya.intake.report.received.>".into()],
    }
}

/// Reads SLA breaches.
pub fn breaches_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: "routing-breaches".into(),
        stream: streams::SLA,
        subjects: vec![
            "baladiya.sla.clock.breached.>".into(),
            "baladiya.sla.clock.breach_withdrawn.>".into(),
        ],
    }
}

fn uuid(text: &str, what: &str) -> Result<Uuid, HandlerError> {
    text.parse()
        .map_err(|_| HandlerError::Reject(format!("{what} '{text}' is not a UUID")))
}

/// Creates one case per non-duplicate report; a duplicate adds a supporter to
/// its master's case.
#[derive(Debug, Clone, Copy)]
pub struct RouteReports;

impl EventHandler for RouteReports {
    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        route_one_report(tx, event, &mut None).await
    }

    /// Reads the rules once for all the reports fetched together (they are
    /// the same rules: the batch is one transaction).
    async fn handle_batch(&self, tx: &mut Tx, events: &[InboundEvent]) -> Result<(), HandlerError> {
        let mut rules = None;
        for event in events {
            route_one_report(tx, event, &mut rules).await?;
        }
        Ok(())
    }
}

/// Routes one report (or counts a duplicate's support), reading the rules
/// into `rules` if not read yet.
async fn route_one_report(
    tx: &mut Tx,
    event: &InboundEvent,
    rules: &mut Option<Vec<Rule>>,
) -> Result<(), HandlerError> {
    let report: ReportReceived = event.decode()?;
    let report_id = uuid(&report.report_id, "report_id")?;
    let received_at = event.occurred_at;
    if report.duplicate_of.is_empty() {
        commands::route_report(tx, rules, &report, report_id, received_at).await?;
    } else {
        let master = uuid(&report.duplicate_of, "duplicate_of")?;
        commands::add_supporter(tx, master, report_id, received_at).await?;
    }
    Ok(())
}

/// Marks a case overdue when a clock of its current assignee breaches, and
/// clears the mark when the watcher withdraws that breach (it turned out
/// wrong) and no other clock of the assignee stands breached.
#[derive(Debug, Clone, Copy)]
pub struct MarkOverdue;

impl EventHandler for MarkOverdue {
    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        if event.ce_type == "sa.baladiya.sla.clock.breach_withdrawn.v1" {
            let withdrawn: ClockBreachWithdrawn = event.decode()?;
            let clock = withdrawn.clock.unwrap_or_default();
            if clock.subject_kind != "case" || withdrawn.other_breaches {
                return Ok(());
            }
            let case_id = uuid(&clock.subject_id, "clock.subject_id")?;
            commands::clear_overdue(tx, case_id, &clock.partner_code).await?;
            return Ok(());
        }
        let breach: ClockBreached = event.decode()?;
        if breach.subject_kind != "case" {
            return Ok(());
        }
        let case_id = uuid(&breach.subject_id, "subject_id")?;
        commands::mark_overdue(tx, case_id, &breach.partner_code, event.occurred_at).await?;
        Ok(())
    }
}
