//! Event consumers: routing each received report to a case, and marking cases
//! overdue when the SLA watcher says a clock of the current assignee breached.

use baladiya_platform::clock::Clock;
use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{InboundEvent, outbox, streams};
use baladiya_platform::geo::Point;
use baladiya_proto::intake::events::v1::ReportReceived;
use baladiya_proto::routing::events::v1 as ev;
use baladiya_proto::sla::events::v1::{ClockBreachWithdrawn, ClockBreached};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Query, Status};
use crate::lifecycle::{case_ref, emit, meta};
use crate::store::{self, CaseRow, HistoryRow};

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
#[derive(Debug, Clone)]
pub struct RouteReports {
    pub clock: Clock,
}

impl EventHandler for RouteReports {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        self.route(conn, event, &mut None).await
    }

    /// Reads the rules once for all the reports fetched together (they are
    /// the same rules: the batch is one transaction).
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[InboundEvent],
    ) -> Result<(), HandlerError> {
        let mut rules = None;
        for event in events {
            self.route(conn, event, &mut rules).await?;
        }
        Ok(())
    }
}

impl RouteReports {
    /// Routes one report, reading the rules into `rules` if not read yet.
    async fn route(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
        rules: &mut Option<Vec<domain::Rule>>,
    ) -> Result<(), HandlerError> {
        let report: ReportReceived = event.decode()?;
        let report_id = uuid(&report.report_id, "report_id")?;
        let received_at = event.occurred_at;
        // Routing records what happened at the report's receipt now: its
        // events say both, stamped under the outbox fence (see
        // `baladiya_platform::events::watermark`).
        let recorded_at = outbox::fenced_now(conn, &self.clock).await?;
        if !report.duplicate_of.is_empty() {
            let master = uuid(&report.duplicate_of, "duplicate_of")?;
            let case = store::case_of_report(conn, master).await?.ok_or_else(|| {
                HandlerError::Retry(format!("the master report {master} has no case yet"))
            })?;
            if let Some(supporters) = store::add_supporter(conn, case.id, report_id).await? {
                let id = Uuid::now_v7();
                let payload = ev::CaseSupporterAdded {
                    meta: meta(id, case.id, received_at, recorded_at),
                    case: case_ref(&case, &case.assignee_code),
                    supporter_report_id: report_id.to_string(),
                    supporters: supporters.max(0) as u32,
                };
                emit(
                    conn,
                    "supporter_added",
                    &case,
                    &case.assignee_code,
                    id,
                    received_at,
                    recorded_at,
                    &payload,
                )
                .await
                .map_err(|e| HandlerError::Retry(e.message))?;
            }
            return Ok(());
        }
        if store::case_of_report(conn, report_id).await?.is_some() {
            return Ok(());
        }
        let rules = match rules {
            Some(rules) => rules,
            None => rules.insert(store::rules(conn).await?),
        };
        let location = report.location.clone().unwrap_or_default();
        let point = (location.latitude != 0.0 || location.longitude != 0.0).then_some(Point {
            lat: location.latitude,
            lon: location.longitude,
        });
        let query = Query {
            category_code: &report.category_code,
            category_group: &report.category_group,
            municipality_code: &report.municipality_code,
            point,
            priority: report.priority,
        };
        let rule = domain::route(rules, &query);
        let case = CaseRow {
            id: Uuid::now_v7(),
            report_id,
            tracking_number: report.tracking_number.clone(),
            municipality_code: report.municipality_code.clone(),
            category_code: report.category_code.clone(),
            category_group: report.category_group.clone(),
            priority: report.priority,
            latitude: point.map(|p| p.lat),
            longitude: point.map(|p| p.lon),
            assignee_code: rule
                .map_or_else(|| "MUN-TRIAGE".to_string(), |r| r.assignee_code.clone()),
            status: Status::Routed,
            version: 1,
            rule_id: rule.map(|r| r.id),
            report_received_at: received_at,
            last_step_at: received_at,
            resolved_at: None,
            resolution: None,
            proof_uris: Vec::new(),
            supporters: 0,
            overdue_since: None,
            created_at: recorded_at,
        };
        if !store::insert_case(conn, &case).await? {
            return Ok(());
        }
        store::add_history(
            conn,
            case.id,
            &HistoryRow {
                action: "routed".into(),
                from_status: None,
                to_status: Status::Routed,
                assignee_code: case.assignee_code.clone(),
                actor: "system".into(),
                occurred_at: received_at,
                recorded_at: case.created_at,
                note: rule.map_or_else(
                    || "no rule matched; sent to triage".to_string(),
                    |r| format!("rule {}: {}", r.id, r.description),
                ),
            },
        )
        .await?;
        // Routed at the report's receipt, recorded now: no clock of the case
        // existed before this event, so nothing the SLA watcher fired can be
        // wrong for want of it; the recorded instant keeps the relay from
        // counting it late.
        let id = Uuid::now_v7();
        let payload = ev::CaseRouted {
            meta: meta(id, case.id, received_at, recorded_at),
            case: case_ref(&case, &case.assignee_code),
            rule_id: case.rule_id.map(|r| r.to_string()).unwrap_or_default(),
            report_received_at: report.received_at,
        };
        emit(
            conn,
            "routed",
            &case,
            &case.assignee_code,
            id,
            received_at,
            recorded_at,
            &payload,
        )
        .await
        .map_err(|e| HandlerError::Retry(e.message))?;
        Ok(())
    }
}

/// Marks a case overdue when a clock of its current assignee breaches, and
/// clears the mark when the watcher withdraws that breach (it turned out
/// wrong) and no other clock of the assignee stands breached.
#[derive(Debug, Clone, Copy)]
pub struct MarkOverdue;

impl EventHandler for MarkOverdue {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        if event.ce_type == "sa.baladiya.sla.clock.breach_withdrawn.v1" {
            let withdrawn: ClockBreachWithdrawn = event.decode()?;
            let clock = withdrawn.clock.unwrap_or_default();
            if clock.subject_kind != "case" || withdrawn.other_breaches {
                return Ok(());
            }
            let case_id = uuid(&clock.subject_id, "clock.subject_id")?;
            store::clear_overdue(conn, case_id, &clock.partner_code).await?;
            return Ok(());
        }
        let breach: ClockBreached = event.decode()?;
        if breach.subject_kind != "case" {
            return Ok(());
        }
        let case_id = uuid(&breach.subject_id, "subject_id")?;
        store::mark_overdue(conn, case_id, &breach.partner_code, event.occurred_at).await?;
        Ok(())
    }
}
