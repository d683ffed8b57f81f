//! The synthetic events of the KPI figures: stories of complaints, license
//! applications and facility inspections, each a run of the events their
//! services publish, from a seeded generator so every run sees the same mix.
//! Both figures draw from it (the projection publishes its events, the load
//! turns them into rows), so it lives apart from either. [`mix`] holds the
//! weights and the random source, [`story`] how one event is built.

use baladiya_platform::events::{EventType, InboundEvent, OutboundEvent};
use baladiya_proto::common::v1::Location;
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::events::v1 as intake_ev;
use baladiya_proto::licensing::events::v1 as licensing_ev;
use baladiya_proto::routing::events::v1 as routing_ev;
use chrono::{DateTime, Utc};
use uuid::Uuid;

mod mix;
mod story;

use mix::{
    ACK_TARGET_HOURS, ACTIVITIES, CATEGORIES, CHANNELS, E2E_TARGET_HOURS, LICENSE_TYPES,
    MUNICIPALITIES, PRIORITIES, Rng, SCORES, TRIAGE, WORKING_DAY_HOURS, YEAR_SECS, secs, wall,
    working_hours,
};
use story::{Case, Clock, Story};

const REPORT_RECEIVED: EventType = EventType::new("intake", "report", "received");
const REPORT_DUPLICATE_LINKED: EventType = EventType::new("intake", "report", "duplicate_linked");
const REPORT_RATED: EventType = EventType::new("intake", "report", "rated");
const LICENSE_ISSUED: EventType = EventType::new("licensing", "license", "issued");
const INSPECTION_RECORDED: EventType =
    EventType::new("licensing", "facility", "inspection_recorded");

/// Stories of the mix, one after another.
pub(super) struct Generator {
    rng: Rng,
    now: DateTime<Utc>,
}

impl Generator {
    pub(super) fn new(seed: u64, now: DateTime<Utc>) -> Self {
        Self {
            rng: Rng(seed),
            now,
        }
    }

    /// The events of the next story: a complaint (70 %), a license
    /// application (15 %) or a facility inspection (15 %).
    pub(super) fn story(&mut self) -> Vec<OutboundEvent> {
        let mut story = Story {
            now: self.now,
            events: Vec::with_capacity(24),
            cut: false,
        };
        match self.rng.below(100) {
            0..70 => self.complaint(&mut story),
            70..85 => self.application(&mut story),
            _ => self.inspection(&mut story),
        }
        story.events
    }

    /// The first `n` events of the stories.
    pub(super) fn take(&mut self, n: u64) -> Vec<OutboundEvent> {
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        while (out.len() as u64) < n {
            let room = usize::try_from(n).unwrap_or(usize::MAX) - out.len();
            out.extend(self.story().into_iter().take(room));
        }
        out
    }

    /// A citizen's report and, unless it duplicates an open one, its case
    /// and clocks from routing to closing.
    fn complaint(&mut self, s: &mut Story) {
        let now = self.now;
        let r = &mut self.rng;
        let municipality = r.pick(&MUNICIPALITIES, |m| m.1).0;
        let category = r.pick(&CATEGORIES, |c| c.weight);
        let assignee = if category.code == "WATER_LEAK" && municipality == "JEDDAH" {
            "NWC"
        } else {
            category.assignee
        };
        let channel = r.pick(&CHANNELS, |c| c.1).0;
        let priority = r.pick(&PRIORITIES, |p| p.1).0;
        let report_id = Uuid::now_v7().to_string();
        let tracking = format!("940-{:09}", r.below(1_000_000_000));
        let reporter_key = if r.chance(0.2) {
            String::new()
        } else {
            format!("{:016x}", r.next_u64())
        };
        let duplicate_of = if r.chance(0.06) {
            Uuid::now_v7().to_string()
        } else {
            String::new()
        };
        let location = Location {
            latitude: 21.0 + 5.0 * r.unit(),
            longitude: 39.0 + 11.0 * r.unit(),
            national_address_short: String::new(),
            municipality_code: municipality.into(),
        };
        let attachments = r.below(4) as u32;
        let received = r.within_year(now);
        let report_scope = [municipality, category.code];
        s.emit(
            REPORT_RECEIVED,
            &report_scope,
            &report_id,
            received,
            |meta| intake_ev::ReportReceived {
                meta,
                report_id: report_id.clone(),
                tracking_number: tracking.clone(),
                category_code: category.code.into(),
                category_group: category.group.into(),
                municipality_code: municipality.into(),
                location: Some(location),
                channel: channel as i32,
                priority: priority as i32,
                observed_at: Some(timestamp(received - secs(7_200))),
                received_at: Some(timestamp(received)),
                reporter_key: reporter_key.clone(),
                duplicate_of: duplicate_of.clone(),
                attachment_count: attachments,
                ..Default::default()
            },
        );
        if !duplicate_of.is_empty() {
            let distance = r.below(150) as u32;
            s.emit(
                REPORT_DUPLICATE_LINKED,
                &report_scope,
                &report_id,
                received + secs(2),
                |meta| intake_ev::ReportLinkedAsDuplicate {
                    meta,
                    report_id: report_id.clone(),
                    master_report_id: duplicate_of.clone(),
                    category_code: category.code.into(),
                    municipality_code: municipality.into(),
                    channel: channel as i32,
                    reporter_key: reporter_key.clone(),
                    distance_meters: distance,
                },
            );
            return;
        }

        // Routed, with its clocks.
        let mut t = received + secs(5 + r.below(600));
        let mut case = Case {
            id: Uuid::now_v7().to_string(),
            report_id: report_id.clone(),
            municipality,
            category: category.code,
            assignee,
            priority,
            tracking,
        };
        s.case("routed", &case, t, |meta, case| routing_ev::CaseRouted {
            meta,
            case,
            rule_id: category.group.into(),
            report_received_at: Some(timestamp(received)),
        });
        let mut ack = Clock::case(&case, "acknowledge", ACK_TARGET_HOURS);
        let mut resolve = Clock::case(&case, "resolve", category.resolve_hours);
        let e2e = Clock {
            partner: "",
            ..Clock::case(&case, "end_to_end", E2E_TARGET_HOURS)
        };
        for c in [&ack, &resolve, &e2e] {
            s.started(c, t);
        }

        // Sometimes the assignee sends it back, and triage takes it.
        if r.chance(0.04) {
            t += wall(0.5 + 3.0 * r.unit());
            s.case("rejected", &case, t, |meta, case| {
                routing_ev::CaseRejected {
                    meta,
                    case,
                    reason: "not in our remit".into(),
                    suggested_assignee_code: String::new(),
                }
            });
            s.cancelled(&ack, t);
            s.cancelled(&resolve, t);
            let previous = case.assignee;
            case.assignee = TRIAGE;
            t += secs(60);
            s.case("rerouted", &case, t, |meta, case| {
                routing_ev::CaseRerouted {
                    meta,
                    case,
                    previous_assignee_code: previous.into(),
                    reason: "rejected by the assignee".into(),
                }
            });
            ack = Clock::case(&case, "acknowledge", ACK_TARGET_HOURS);
            resolve = Clock::case(&case, "resolve", category.resolve_hours);
            s.started(&ack, t);
            s.started(&resolve, t);
        }
        let routed = t;

        // Acknowledged: mostly within the 4 working hours; the ladder's
        // first level an hour after a missed deadline.
        let ack_hours = 0.05 + 5.0 * r.unit().powi(3);
        let ack_breached = ack_hours > ACK_TARGET_HOURS as f64;
        t = routed + wall(ack_hours);
        if ack_breached {
            let deadline = ack.deadline(routed);
            s.breached(&ack, deadline);
            if deadline + wall(1.0) < t {
                s.escalation(&ack, deadline, deadline + wall(1.0), 1);
            }
        }
        s.case("acknowledged", &case, t, |meta, case| {
            routing_ev::CaseAcknowledged { meta, case }
        });
        s.met(&ack, t, ack_breached, ack_hours);
        t += wall(0.5 + 3.5 * r.unit());
        s.case("work_started", &case, t, |meta, case| {
            routing_ev::CaseWorkStarted { meta, case }
        });

        // Sometimes it waits on the citizen.
        let mut held = chrono::Duration::zero();
        if r.chance(0.05) {
            t += secs(600);
            s.case("put_on_hold", &case, t, |meta, case| {
                routing_ev::CasePutOnHold {
                    meta,
                    case,
                    reason: "waiting for the citizen".into(),
                }
            });
            s.paused(&resolve, t);
            held = wall(4.0 + 40.0 * r.unit());
            t += held;
            s.case("resumed", &case, t, |meta, case| routing_ev::CaseResumed {
                meta,
                case,
            });
            s.resumed(&resolve, t, resolve.deadline(routed) + held);
        }

        // A few stay open: the backlog.
        if r.chance(0.03) {
            return;
        }

        // Resolved, about one in five late: warned at 75 %, breached, and
        // escalated two and sixteen working hours after the deadline.
        let target = resolve.target_hours as f64;
        let planned = routed + held + wall(target * (0.1 + 1.3 * r.unit().powf(1.5)));
        let resolved = t.max(planned) + secs(60);
        let resolve_hours = working_hours(resolved - routed - held);
        let resolve_breached = resolve_hours > target;
        if resolve_breached {
            let deadline = resolve.deadline(routed) + held;
            s.warning(&resolve, routed + held + wall(0.75 * target), deadline);
            s.breached(&resolve, deadline);
            for (level, after) in [(1, 2.0), (2, 16.0)] {
                if deadline + wall(after) < resolved {
                    s.escalation(&resolve, deadline, deadline + wall(after), level);
                }
            }
        }
        t = resolved;
        s.case("resolved", &case, t, |meta, case| {
            routing_ev::CaseResolved {
                meta,
                case,
                resolution: "fixed on site".into(),
                proof_uris: vec![],
            }
        });
        s.met(&resolve, t, resolve_breached, resolve_hours);
        let e2e_hours = working_hours(t - received);
        s.met(&e2e, t, e2e_hours > E2E_TARGET_HOURS as f64, e2e_hours);

        // A third of citizens rate the outcome.
        if r.chance(0.35) {
            let score = r.pick(&SCORES, |x| x.1).0;
            let has_comment = r.chance(0.3);
            t += secs(3_600 + r.below(48 * 3_600));
            s.emit(REPORT_RATED, &report_scope, &report_id, t, |meta| {
                intake_ev::ReportRated {
                    meta,
                    report_id: report_id.clone(),
                    score,
                    has_comment,
                    category_code: category.code.into(),
                    municipality_code: municipality.into(),
                    assignee_code: case.assignee.into(),
                    channel: channel as i32,
                }
            });
        }

        // A few are reopened and resolved again.
        if r.chance(0.04) {
            t += secs(6 * 3_600 + r.below(66 * 3_600));
            s.case("reopened", &case, t, |meta, case| {
                routing_ev::CaseReopened {
                    meta,
                    case,
                    reason: "not fixed".into(),
                }
            });
            let again = Clock::case(&case, "resolve", category.resolve_hours);
            s.started(&again, t);
            let again_hours = target * (0.1 + 0.8 * r.unit());
            t += wall(again_hours);
            s.case("resolved", &case, t, |meta, case| {
                routing_ev::CaseResolved {
                    meta,
                    case,
                    resolution: "fixed again".into(),
                    proof_uris: vec![],
                }
            });
            s.met(&again, t, false, again_hours);
        }

        // Closed after the quiet period, mostly automatically.
        if r.chance(0.95) {
            let automatic = r.chance(0.85);
            t += secs(72 * 3_600);
            s.case("closed", &case, t, |meta, case| routing_ev::CaseClosed {
                meta,
                case,
                automatic,
            });
        }
    }

    /// A license application from submission to decision, with its decision
    /// clock (and clearance clock, where the type needs one).
    fn application(&mut self, s: &mut Story) {
        let now = self.now;
        let r = &mut self.rng;
        let municipality = r.pick(&MUNICIPALITIES, |m| m.1).0;
        let license = r.pick(&LICENSE_TYPES, |l| l.weight);
        let application = licensing_ev::ApplicationRef {
            application_id: Uuid::now_v7().to_string(),
            tracking_number: format!("LIC-{:09}", r.below(1_000_000_000)),
            license_type_code: license.code.into(),
            municipality_code: municipality.into(),
            applicant_key: format!("{:016x}", r.next_u64()),
            target_days: license.target_days,
        };
        let submitted = r.within_year(now);
        let mut t = submitted;
        s.step("submitted", &application, t, "", true);
        let decision = Clock {
            id: Uuid::now_v7().to_string(),
            subject_kind: "application",
            subject_id: application.application_id.clone(),
            metric: "decision",
            partner: "",
            tracking: application.tracking_number.clone(),
            target_hours: i64::from(license.target_days) * WORKING_DAY_HOURS,
            municipality,
            category: license.code,
        };
        s.started(&decision, t);

        if license.clearance {
            t += secs(3_600);
            s.step("clearance_requested", &application, t, "MOJ", false);
            let clearance = Clock {
                id: Uuid::now_v7().to_string(),
                metric: "clearance",
                partner: "MOJ",
                target_hours: 5 * WORKING_DAY_HOURS,
                ..decision.clone()
            };
            s.started(&clearance, t);
            let clearance_hours = 8.0 + 48.0 * r.unit();
            t += wall(clearance_hours);
            s.step("clearance_recorded", &application, t, "MOJ", true);
            let late = clearance_hours > clearance.target_hours as f64;
            s.met(&clearance, t, late, clearance_hours);
        }

        let mut away = chrono::Duration::zero();
        if r.chance(0.15) {
            t += wall(8.0 + 16.0 * r.unit());
            s.step("returned_for_correction", &application, t, "", false);
            s.paused(&decision, t);
            away = secs(86_400 * (2 + r.below(9)));
            t += away;
            s.step("resubmitted", &application, t, "", true);
            s.resumed(&decision, t, decision.deadline(submitted) + away);
        }

        if license.inspection {
            t += wall(8.0 + 16.0 * r.unit());
            s.step("inspection_scheduled", &application, t, "", false);
            t += wall(8.0 + 24.0 * r.unit());
            s.step("inspection_recorded", &application, t, "", true);
        }

        // Decided in 0.3 to 1.4 times the target, about one in five late.
        let target_days = f64::from(license.target_days);
        let planned = wall(target_days * (0.3 + 1.1 * r.unit()) * WORKING_DAY_HOURS as f64);
        t = t.max(submitted + away + planned) + secs(600);
        let decision_hours = working_hours(t - submitted - away);
        let late = decision_hours > decision.target_hours as f64;
        if late {
            s.breached(&decision, decision.deadline(submitted) + away);
        }
        if r.chance(0.1) {
            s.step("rejected", &application, t, "", false);
            s.met(&decision, t, late, decision_hours);
            return;
        }
        s.step("approved", &application, t, "", true);
        t += secs(300);
        let license_number = format!("L-{:010}", r.below(10_000_000_000));
        let scope = [municipality, license.code];
        s.emit(LICENSE_ISSUED, &scope, &license_number, t, |meta| {
            licensing_ev::LicenseChanged {
                meta,
                license_number: license_number.clone(),
                license_type_code: license.code.into(),
                municipality_code: municipality.into(),
                holder_key: application.applicant_key.clone(),
                application_id: application.application_id.clone(),
                valid_from: Some(timestamp(t)),
                valid_to: Some(timestamp(t + secs(YEAR_SECS))),
                renews: String::new(),
                submitted_at: Some(timestamp(submitted)),
            }
        });
        s.met(&decision, t, late, decision_hours);
    }

    /// A compliance inspection of a licensed facility, by the municipality or
    /// a private operator.
    fn inspection(&mut self, s: &mut Story) {
        let now = self.now;
        let r = &mut self.rng;
        let municipality = r.pick(&MUNICIPALITIES, |m| m.1).0;
        let activity = r.pick(&ACTIVITIES, |a| a.1).0;
        let private = r.chance(0.65);
        let compliant = r.chance(0.86);
        let (minor, major, critical) = if compliant {
            (r.below(3) as u32, 0, 0)
        } else {
            (
                r.below(5) as u32,
                1 + r.below(3) as u32,
                u32::from(r.chance(0.2)),
            )
        };
        let license_number = format!("L-{:010}", r.below(10_000_000_000));
        let id = Uuid::now_v7().to_string();
        let at = r.within_year(now);
        s.emit(
            INSPECTION_RECORDED,
            &[municipality, activity],
            &id,
            at,
            |meta| licensing_ev::FacilityInspectionRecorded {
                meta,
                inspection_id: id.clone(),
                license_number,
                activity: activity.into(),
                operator_code: if private { "OP-INSPECT" } else { "MUNICIPAL" }.into(),
                private_operator: private,
                compliant,
                minor_violations: minor,
                major_violations: major,
                critical_violations: critical,
                municipality_code: municipality.into(),
            },
        );
    }
}

/// An event as a consumer receives it (what the headers carry, unchanged).
pub(super) fn inbound(e: OutboundEvent) -> InboundEvent {
    InboundEvent {
        id: e.id,
        subject: e.subject,
        ce_type: e.ce_type,
        source: e.source,
        aggregate_id: e.aggregate_id,
        occurred_at: e.occurred_at,
        dataschema: e.dataschema,
        payload: e.payload.into(),
        traceparent: e.traceparent,
        recorded_at: e.recorded_at,
        stream_sequence: 0,
    }
}
