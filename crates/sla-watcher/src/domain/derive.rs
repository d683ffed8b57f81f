//! Which clocks a case has, derived from its whole event log sorted by the
//! instants the events carry. Pure, so any delivery order gives the same
//! clocks.
//!
//! - routed or rerouted to A: an acknowledge and a resolve clock for A start;
//!   a reroute cancels the previous assignee's clocks;
//! - acknowledged stops the acknowledge clock; resolved stops both;
//! - on hold pauses and resumed resumes the resolve clock and the citizen's
//!   end-to-end clock;
//! - rejected cancels the assignee's clocks (triage is not measured);
//! - reopened starts a new resolve cycle for the assignee;
//! - closed stops everything.
//!
//! The end-to-end clock runs from the report's receipt to the first resolution.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sla_clock::{Input, InputKind};

/// A case lifecycle event. At equal instants the case's own order of steps
/// ([`CaseEvent::seq`]) decides; this order only where that is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaseEventKind {
    Routed,
    Acknowledged,
    WorkStarted,
    OnHold,
    Resumed,
    Resolved,
    Rejected,
    Rerouted,
    Reopened,
    Closed,
}

impl CaseEventKind {
    /// The stored name (the routing event name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::Acknowledged => "acknowledged",
            Self::WorkStarted => "work_started",
            Self::OnHold => "put_on_hold",
            Self::Resumed => "resumed",
            Self::Resolved => "resolved",
            Self::Rejected => "rejected",
            Self::Rerouted => "rerouted",
            Self::Reopened => "reopened",
            Self::Closed => "closed",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Routed,
            Self::Acknowledged,
            Self::WorkStarted,
            Self::OnHold,
            Self::Resumed,
            Self::Resolved,
            Self::Rejected,
            Self::Rerouted,
            Self::Reopened,
            Self::Closed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One case event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    pub id: Uuid,
    pub kind: CaseEventKind,
    pub at: DateTime<Utc>,
    /// The assignee after the event (for a rejection: the body that rejected).
    pub assignee: String,
    pub report_received_at: Option<DateTime<Utc>>,
    /// The case's version after the event (0: not known): an acknowledgement
    /// stamped with the instant of a reroute belongs to whoever was assignee
    /// when routing applied it.
    pub seq: i64,
}

/// What a clock measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Acknowledge,
    Resolve,
    EndToEnd,
    /// An application's decision, on the license type's target.
    Decision,
    /// A partner body's clearance on an application.
    Clearance,
}

impl Metric {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::Resolve => "resolve",
            Self::EndToEnd => "end_to_end",
            Self::Decision => "decision",
            Self::Clearance => "clearance",
        }
    }
}

/// A clock a case has, with its inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockSpec {
    /// Stable identity: the metric and the event that started it.
    pub key: String,
    pub metric: Metric,
    /// The responsible party (empty for end-to-end: the municipality's).
    pub partner: String,
    pub inputs: Vec<Input>,
}

/// The clocks of a case.
pub fn case_clocks(case_id: Uuid, events: &[CaseEvent]) -> Vec<ClockSpec> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.at, e.seq, e.kind, e.id));
    sorted.dedup_by_key(|e| e.id);
    let mut clocks: BTreeMap<String, ClockSpec> = BTreeMap::new();
    let mut current: Option<(String, String)> = None; // (ack key, resolve key)
    let e2e = format!("{case_id}:end_to_end");
    let push = |clocks: &mut BTreeMap<String, ClockSpec>,
                key: &str,
                kind: InputKind,
                at: DateTime<Utc>| {
        if let Some(c) = clocks.get_mut(key) {
            c.inputs.push(Input { at, kind });
        }
    };
    for e in &sorted {
        match e.kind {
            CaseEventKind::Routed | CaseEventKind::Rerouted => {
                if let Some((ack, resolve)) = current.take() {
                    push(&mut clocks, &ack, InputKind::Cancel, e.at);
                    push(&mut clocks, &resolve, InputKind::Cancel, e.at);
                }
                if e.kind == CaseEventKind::Routed && !clocks.contains_key(&e2e) {
                    let start = e.report_received_at.unwrap_or(e.at);
                    clocks.insert(
                        e2e.clone(),
                        ClockSpec {
                            key: e2e.clone(),
                            metric: Metric::EndToEnd,
                            partner: String::new(),
                            inputs: vec![Input {
                                at: start,
                                kind: InputKind::Start,
                            }],
                        },
                    );
                }
                let ack = format!("{}:acknowledge", e.id);
                let resolve = format!("{}:resolve", e.id);
                for (key, metric) in [(&ack, Metric::Acknowledge), (&resolve, Metric::Resolve)] {
                    clocks.insert(
                        key.clone(),
                        ClockSpec {
                            key: key.clone(),
                            metric,
                            partner: e.assignee.clone(),
                            inputs: vec![Input {
                                at: e.at,
                                kind: InputKind::Start,
                            }],
                        },
                    );
                }
                current = Some((ack, resolve));
            }
            CaseEventKind::Acknowledged => {
                if let Some((ack, _)) = &current {
                    push(&mut clocks, ack, InputKind::Stop, e.at);
                }
            }
            CaseEventKind::WorkStarted => {}
            CaseEventKind::OnHold | CaseEventKind::Resumed => {
                let kind = if e.kind == CaseEventKind::OnHold {
                    InputKind::Pause
                } else {
                    InputKind::Resume
                };
                if let Some((_, resolve)) = &current {
                    push(&mut clocks, resolve, kind, e.at);
                }
                push(&mut clocks, &e2e, kind, e.at);
            }
            CaseEventKind::Resolved => {
                if let Some((ack, resolve)) = &current {
                    push(&mut clocks, ack, InputKind::Stop, e.at);
                    push(&mut clocks, resolve, InputKind::Stop, e.at);
                }
                push(&mut clocks, &e2e, InputKind::Stop, e.at);
            }
            CaseEventKind::Rejected => {
                if let Some((ack, resolve)) = current.take() {
                    push(&mut clocks, &ack, InputKind::Cancel, e.at);
                    push(&mut clocks, &resolve, InputKind::Cancel, e.at);
                }
            }
            CaseEventKind::Reopened => {
                if let Some((ack, _)) = &current {
                    let partner = clocks
                        .get(ack)
                        .map(|c| c.partner.clone())
                        .unwrap_or_default();
                    let resolve = format!("{}:resolve", e.id);
                    clocks.insert(
                        resolve.clone(),
                        ClockSpec {
                            key: resolve.clone(),
                            metric: Metric::Resolve,
                            partner,
                            inputs: vec![Input {
                                at: e.at,
                                kind: InputKind::Start,
                            }],
                        },
                    );
                    current = Some((ack.clone(), resolve));
                }
            }
            CaseEventKind::Closed => {
                let keys: Vec<String> = clocks.keys().cloned().collect();
                for key in keys {
                    push(&mut clocks, &key, InputKind::Stop, e.at);
                }
            }
        }
    }
    clocks.into_values().collect()
}

/// An application lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationEvent {
    pub id: Uuid,
    /// `submitted`, `returned_for_correction`, `resubmitted`, `clearance_requested`,
    /// `clearance_recorded`, `approved`, `rejected`, `issued`, ...
    pub kind: String,
    pub at: DateTime<Utc>,
    /// The partner, for clearance steps.
    pub partner: String,
}

/// The clocks of an application: the decision clock (submitted to issued or
/// rejected, paused while returned to the applicant) and one clearance clock
/// per request to a partner body (requested to recorded).
pub fn application_clocks(application_id: Uuid, events: &[ApplicationEvent]) -> Vec<ClockSpec> {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| (e.at, order(&e.kind), e.id));
    sorted.dedup_by_key(|e| e.id);
    let decision = format!("{application_id}:decision");
    let mut clocks: BTreeMap<String, ClockSpec> = BTreeMap::new();
    let mut open_clearance: BTreeMap<String, String> = BTreeMap::new();
    for e in &sorted {
        let input = |kind| Input { at: e.at, kind };
        match e.kind.as_str() {
            "submitted" => {
                clocks.entry(decision.clone()).or_insert_with(|| ClockSpec {
                    key: decision.clone(),
                    metric: Metric::Decision,
                    partner: String::new(),
                    inputs: vec![input(InputKind::Start)],
                });
            }
            "returned_for_correction" | "resubmitted" | "issued" | "rejected" => {
                let kind = match e.kind.as_str() {
                    "returned_for_correction" => InputKind::Pause,
                    "resubmitted" => InputKind::Resume,
                    _ => InputKind::Stop,
                };
                if let Some(c) = clocks.get_mut(&decision) {
                    c.inputs.push(input(kind));
                }
            }
            "clearance_requested" => {
                let key = format!("{}:clearance", e.id);
                clocks.insert(
                    key.clone(),
                    ClockSpec {
                        key: key.clone(),
                        metric: Metric::Clearance,
                        partner: e.partner.clone(),
                        inputs: vec![input(InputKind::Start)],
                    },
                );
                open_clearance.insert(e.partner.clone(), key);
            }
            "clearance_recorded" => {
                if let Some(key) = open_clearance.remove(&e.partner)
                    && let Some(c) = clocks.get_mut(&key)
                {
                    c.inputs.push(input(InputKind::Stop));
                }
            }
            _ => {}
        }
    }
    clocks.into_values().collect()
}

/// Order of application steps at equal instants.
fn order(kind: &str) -> u8 {
    match kind {
        "submitted" => 0,
        "returned_for_correction" => 1,
        "resubmitted" => 2,
        "clearance_requested" => 3,
        "clearance_recorded" => 4,
        "inspection_scheduled" => 5,
        "inspection_recorded" => 6,
        "approved" => 7,
        "rejected" => 8,
        "issued" => 9,
        _ => 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: CaseEventKind, minute: i64, assignee: &str) -> CaseEvent {
        CaseEvent {
            id: Uuid::from_u128(minute as u128 * 1000 + kind as u128),
            kind,
            at: DateTime::from_timestamp(1_775_000_000 + minute * 60, 0).expect("t"),
            assignee: assignee.into(),
            report_received_at: None,
            seq: minute,
        }
    }

    #[test]
    fn at_equal_instants_the_cases_own_order_decides_who_acknowledged() {
        let case = Uuid::from_u128(8);
        // Rerouted to MEWA and acknowledged by MEWA in the same minute: the
        // acknowledgement came second in routing's order, so it is MEWA's,
        // though acknowledgements sort before reroutes by kind.
        let mut ack = event(CaseEventKind::Acknowledged, 10, "MEWA");
        ack.seq = 3;
        let mut reroute = event(CaseEventKind::Rerouted, 10, "MEWA");
        reroute.seq = 2;
        let mut routed = event(CaseEventKind::Routed, 0, "MOTLS");
        routed.seq = 1;
        let clocks = case_clocks(case, &[ack.clone(), reroute.clone(), routed.clone()]);
        let ack_of = |clocks: &[ClockSpec], partner: &str| {
            clocks
                .iter()
                .find(|c| c.metric == Metric::Acknowledge && c.partner == partner)
                .map(|c| c.inputs.iter().map(|i| i.kind).collect::<Vec<_>>())
        };
        assert_eq!(
            ack_of(&clocks, "MOTLS"),
            Some(vec![InputKind::Start, InputKind::Cancel])
        );
        assert_eq!(
            ack_of(&clocks, "MEWA"),
            Some(vec![InputKind::Start, InputKind::Stop])
        );
        // The other way round in routing's order, MOTLS acknowledged first
        // (its clock stops, then the reroute's cancel comes too late to count)
        // and MEWA's clock runs.
        let (mut ack, mut reroute) = (ack, reroute);
        ack.seq = 2;
        ack.assignee = "MOTLS".into();
        reroute.seq = 3;
        let clocks = case_clocks(case, &[reroute, ack, routed]);
        assert_eq!(
            ack_of(&clocks, "MOTLS"),
            Some(vec![InputKind::Start, InputKind::Stop, InputKind::Cancel])
        );
        assert_eq!(ack_of(&clocks, "MEWA"), Some(vec![InputKind::Start]));
    }

    #[test]
    fn reroute_cancels_and_starts_and_any_order_gives_the_same_clocks() {
        let case = Uuid::from_u128(7);
        let events = vec![
            event(CaseEventKind::Routed, 0, "MOTLS"),
            event(CaseEventKind::Rejected, 10, "MOTLS"),
            event(CaseEventKind::Rerouted, 20, "MEWA"),
            event(CaseEventKind::Acknowledged, 30, "MEWA"),
            event(CaseEventKind::OnHold, 40, "MEWA"),
            event(CaseEventKind::Resumed, 50, "MEWA"),
            event(CaseEventKind::Resolved, 60, "MEWA"),
        ];
        let clocks = case_clocks(case, &events);
        let mut shuffled = events.clone();
        shuffled.reverse();
        shuffled.push(events[3].clone());
        assert_eq!(case_clocks(case, &shuffled), clocks);
        let summary: Vec<(Metric, &str, Vec<InputKind>)> = clocks
            .iter()
            .map(|c| {
                (
                    c.metric,
                    c.partner.as_str(),
                    c.inputs.iter().map(|i| i.kind).collect(),
                )
            })
            .collect();
        assert!(summary.contains(&(
            Metric::Acknowledge,
            "MOTLS",
            vec![InputKind::Start, InputKind::Cancel]
        )));
        assert!(summary.contains(&(
            Metric::Resolve,
            "MEWA",
            vec![
                InputKind::Start,
                InputKind::Pause,
                InputKind::Resume,
                InputKind::Stop
            ]
        )));
        assert!(summary.contains(&(
            Metric::EndToEnd,
            "",
            vec![
                InputKind::Start,
                InputKind::Pause,
                InputKind::Resume,
                InputKind::Stop
            ]
        )));
        assert_eq!(clocks.len(), 5);
    }

    #[test]
    fn an_application_pauses_while_returned_and_each_clearance_has_its_clock() {
        let app = Uuid::from_u128(9);
        let e = |kind: &str, minute: i64, partner: &str| ApplicationEvent {
            id: Uuid::from_u128(minute as u128 + 1),
            kind: kind.into(),
            at: DateTime::from_timestamp(1_775_000_000 + minute * 60, 0).expect("t"),
            partner: partner.into(),
        };
        let clocks = application_clocks(
            app,
            &[
                e("submitted", 0, ""),
                e("returned_for_correction", 10, ""),
                e("resubmitted", 20, ""),
                e("clearance_requested", 30, "MOJ"),
                e("clearance_recorded", 40, "MOJ"),
                e("issued", 50, ""),
            ],
        );
        let kinds: Vec<(Metric, Vec<InputKind>)> = clocks
            .iter()
            .map(|c| (c.metric, c.inputs.iter().map(|i| i.kind).collect()))
            .collect();
        assert!(kinds.contains(&(
            Metric::Decision,
            vec![
                InputKind::Start,
                InputKind::Pause,
                InputKind::Resume,
                InputKind::Stop
            ]
        )));
        assert!(kinds.contains(&(Metric::Clearance, vec![InputKind::Start, InputKind::Stop])));
    }
}
