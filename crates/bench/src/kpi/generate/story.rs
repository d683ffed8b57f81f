//! How one generated event is built: a case and an SLA clock as their
//! services' events name them, and [`Story`], which stamps each event with
//! its meta, subject and headers as the service's outbox would and stops a
//! story at the present. Apart from the generator so that the generator
//! says what happens and this says how it is written down.

use baladiya_platform::events::{EventType, OutboundEvent};
use baladiya_proto::common::v1::Priority;
use baladiya_proto::convert::timestamp;
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::licensing::events::v1 as licensing_ev;
use baladiya_proto::routing::events::v1 as routing_ev;
use baladiya_proto::sla::events::v1 as sla_ev;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::mix::{WORKING_DAY_HOURS, hours, wall, working_hours};

/// A case, as routing's events name it.
pub(super) struct Case {
    pub(super) id: String,
    pub(super) report_id: String,
    pub(super) municipality: &'static str,
    pub(super) category: &'static str,
    pub(super) assignee: &'static str,
    pub(super) priority: Priority,
    pub(super) tracking: String,
}

impl Case {
    fn reference(&self) -> routing_ev::CaseRef {
        routing_ev::CaseRef {
            case_id: self.id.clone(),
            report_id: self.report_id.clone(),
            assignee_code: self.assignee.into(),
            municipality_code: self.municipality.into(),
            category_code: self.category.into(),
            priority: self.priority as i32,
            tracking_number: self.tracking.clone(),
            version: 0,
        }
    }
}

/// An SLA clock, as the watcher's events name it.
#[derive(Clone)]
pub(super) struct Clock {
    pub(super) id: String,
    pub(super) subject_kind: &'static str,
    pub(super) subject_id: String,
    pub(super) metric: &'static str,
    pub(super) partner: &'static str,
    pub(super) tracking: String,
    pub(super) target_hours: i64,
    pub(super) municipality: &'static str,
    /// The category, or the license type of an application's clock.
    pub(super) category: &'static str,
}

impl Clock {
    /// A clock of `case`'s assignee.
    pub(super) fn case(case: &Case, metric: &'static str, target_hours: i64) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            subject_kind: "case",
            subject_id: case.id.clone(),
            metric,
            partner: case.assignee,
            tracking: case.tracking.clone(),
            target_hours,
            municipality: case.municipality,
            category: case.category,
        }
    }

    pub(super) fn deadline(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        from + wall(self.target_hours as f64)
    }

    fn reference(&self) -> sla_ev::ClockRef {
        sla_ev::ClockRef {
            clock_id: self.id.clone(),
            subject_kind: self.subject_kind.into(),
            subject_id: self.subject_id.clone(),
            metric: self.metric.into(),
            partner_code: self.partner.into(),
            tracking_number: self.tracking.clone(),
            agreement_version: i64::from(!self.partner.is_empty()),
            target: Some(hours(self.target_hours as f64)),
            municipality_code: self.municipality.into(),
            category_code: self.category.into(),
        }
    }
}

/// The events of one story, in the order their services publish them. A
/// story still going on at `now` stops at its first event after it.
pub(super) struct Story {
    pub(super) now: DateTime<Utc>,
    pub(super) events: Vec<OutboundEvent>,
    pub(super) cut: bool,
}

impl Story {
    /// One event, as its service puts it in its outbox.
    pub(super) fn emit<M: prost::Message + prost::Name>(
        &mut self,
        kind: EventType,
        scope: &[&str],
        aggregate: &str,
        at: DateTime<Utc>,
        build: impl FnOnce(Option<EventMeta>) -> M,
    ) {
        if self.cut || at > self.now {
            self.cut = true;
            return;
        }
        let service = if kind.domain == "sla" {
            "sla-watcher"
        } else {
            kind.domain
        };
        let id = Uuid::now_v7();
        let payload = build(Some(EventMeta {
            event_id: id.to_string(),
            occurred_at: Some(timestamp(at)),
            aggregate_id: aggregate.to_string(),
            recorded_at: None,
        }));
        self.events.push(OutboundEvent::new(
            service, kind, scope, id, aggregate, at, &payload,
        ));
    }

    /// A routing event of `case`: `baladiya.routing.case.<event>.<M>.<A>`.
    pub(super) fn case<M: prost::Message + prost::Name>(
        &mut self,
        event: &'static str,
        case: &Case,
        at: DateTime<Utc>,
        build: impl FnOnce(Option<EventMeta>, Option<routing_ev::CaseRef>) -> M,
    ) {
        let scope = [case.municipality, case.assignee];
        self.emit(
            EventType::new("routing", "case", event),
            &scope,
            &case.id,
            at,
            |meta| build(meta, Some(case.reference())),
        );
    }

    /// An SLA event of clock `c`: `baladiya.sla.<aggregate>.<event>.<PARTNER>`.
    fn clock<M: prost::Message + prost::Name>(
        &mut self,
        aggregate: &'static str,
        event: &'static str,
        c: &Clock,
        at: DateTime<Utc>,
        build: impl FnOnce(Option<EventMeta>, Option<sla_ev::ClockRef>) -> M,
    ) {
        let partner = if c.partner.is_empty() { "_" } else { c.partner };
        self.emit(
            EventType::new("sla", aggregate, event),
            &[partner],
            &c.id,
            at,
            |meta| build(meta, Some(c.reference())),
        );
    }

    pub(super) fn started(&mut self, c: &Clock, at: DateTime<Utc>) {
        self.clock("clock", "started", c, at, |meta, clock| {
            sla_ev::ClockStarted {
                meta,
                clock,
                deadline: Some(timestamp(c.deadline(at))),
            }
        });
    }

    pub(super) fn paused(&mut self, c: &Clock, at: DateTime<Utc>) {
        self.clock("clock", "paused", c, at, |meta, clock| {
            sla_ev::ClockPaused { meta, clock }
        });
    }

    pub(super) fn resumed(&mut self, c: &Clock, at: DateTime<Utc>, deadline: DateTime<Utc>) {
        self.clock("clock", "resumed", c, at, |meta, clock| {
            sla_ev::ClockResumed {
                meta,
                clock,
                deadline: Some(timestamp(deadline)),
            }
        });
    }

    pub(super) fn cancelled(&mut self, c: &Clock, at: DateTime<Utc>) {
        self.clock("clock", "cancelled", c, at, |meta, clock| {
            sla_ev::ClockCancelled { meta, clock }
        });
    }

    pub(super) fn warning(&mut self, c: &Clock, at: DateTime<Utc>, deadline: DateTime<Utc>) {
        self.clock("clock", "warning", c, at, |meta, clock| {
            sla_ev::ClockWarning {
                meta,
                clock,
                fraction: 0.75,
                deadline: Some(timestamp(deadline)),
                provisional: false,
            }
        });
    }

    pub(super) fn breached(&mut self, c: &Clock, deadline: DateTime<Utc>) {
        self.clock("clock", "breached", c, deadline, |meta, clock| {
            sla_ev::ClockBreached {
                meta,
                clock_id: c.id.clone(),
                subject_kind: c.subject_kind.into(),
                subject_id: c.subject_id.clone(),
                metric: c.metric.into(),
                partner_code: c.partner.into(),
                deadline: Some(timestamp(deadline)),
                clock,
                provisional: false,
            }
        });
    }

    pub(super) fn escalation(
        &mut self,
        c: &Clock,
        deadline: DateTime<Utc>,
        at: DateTime<Utc>,
        level: u32,
    ) {
        let overdue = (at - deadline).num_seconds().max(0);
        self.clock("escalation", "raised", c, at, |meta, clock| {
            sla_ev::EscalationRaised {
                meta,
                escalation_id: Uuid::now_v7().to_string(),
                clock,
                level,
                contact: format!("level {level}"),
                overdue_working: Some(hours(working_hours(at - deadline))),
                overdue_wall: Some(prost_types::Duration {
                    seconds: overdue,
                    nanos: 0,
                }),
                deadline: Some(timestamp(deadline)),
                provisional: false,
            }
        });
    }

    pub(super) fn met(&mut self, c: &Clock, at: DateTime<Utc>, breached: bool, working_hours: f64) {
        self.clock("clock", "met", c, at, |meta, clock| sla_ev::ClockMet {
            meta,
            clock,
            breached,
            elapsed: Some(hours(working_hours)),
            elapsed_working_days: working_hours / WORKING_DAY_HOURS as f64,
        });
    }

    /// A step of application `a`:
    /// `baladiya.licensing.application.<event>.<M>.<TYPE>`.
    pub(super) fn step(
        &mut self,
        event: &'static str,
        a: &licensing_ev::ApplicationRef,
        at: DateTime<Utc>,
        partner: &str,
        positive: bool,
    ) {
        let scope = [a.municipality_code.as_str(), a.license_type_code.as_str()];
        let inspection_kind = if event.starts_with("inspection") {
            "site"
        } else {
            ""
        };
        self.emit(
            EventType::new("licensing", "application", event),
            &scope,
            &a.application_id,
            at,
            |meta| licensing_ev::ApplicationStep {
                meta,
                application: Some(a.clone()),
                partner_code: partner.into(),
                positive,
                inspection_kind: inspection_kind.into(),
                note: String::new(),
            },
        );
    }
}
