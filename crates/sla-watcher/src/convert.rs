//! Stored and computed clocks and escalations as the API shows them
//! (`baladiya.sla.v1`), and the listing filters it accepts.

use std::time::Duration;

use baladiya_platform::error::ApiError;
use baladiya_proto::convert::timestamp;
use baladiya_proto::sla::v1 as pb;
use chrono::{DateTime, Utc};

use crate::domain::sla_clock::{Computed, State};
use crate::store::{self, ClockRow, EscalationRow, TimerRow};

/// A stored state's API value.
fn state_proto(s: &str) -> i32 {
    (match s {
        "running" => pb::ClockState::Running,
        "paused" => pb::ClockState::Paused,
        "met" => pb::ClockState::Met,
        "breached" => pb::ClockState::Breached,
        "breached_then_met" => pb::ClockState::BreachedThenMet,
        "cancelled" => pb::ClockState::Cancelled,
        _ => pb::ClockState::Unspecified,
    }) as i32
}

/// A computed state's API value.
fn computed_state_proto(s: State) -> pb::ClockState {
    match s {
        State::Pending => pb::ClockState::Unspecified,
        State::Running => pb::ClockState::Running,
        State::Paused => pb::ClockState::Paused,
        State::Met => pb::ClockState::Met,
        State::Breached => pb::ClockState::Breached,
        State::BreachedThenMet => pb::ClockState::BreachedThenMet,
        State::Cancelled => pb::ClockState::Cancelled,
    }
}

fn duration(secs: i64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_secs(secs.max(0) as u64)).ok()
}

/// A stored clock as of `now`, with what it fired.
pub fn clock_proto(c: &ClockRow, fired: store::Fired, now: DateTime<Utc>) -> pb::Clock {
    // A running clock past its deadline is breached even before the next recomputation.
    let state = match c.state.as_str() {
        "running" if c.breached_at.is_some_and(|b| b <= now) => "breached",
        s => s,
    };
    pb::Clock {
        id: c.id.to_string(),
        subject_kind: c.subject_kind.clone(),
        subject_id: c.subject_id.to_string(),
        metric: c.metric.clone(),
        partner_code: c.partner_code.clone(),
        agreement_version: c.agreement_version,
        calendar_id: c.calendar_id.clone(),
        target: duration(c.target_secs),
        state: state_proto(state),
        elapsed: duration(c.elapsed_secs),
        deadline: c.deadline.map(timestamp),
        original_deadline: c.original_deadline.map(timestamp),
        warnings_fired: fired.warnings.max(0) as u32,
        escalation_levels_fired: fired.escalations.max(0) as u32,
        started_at: c.started_at.map(timestamp),
        ended_at: c.ended_at.map(timestamp),
        tracking_number: c.tracking_number.clone(),
        breached_at: c.breached_at.filter(|b| *b <= now).map(timestamp),
        held: None,
        breach_provisional: fired.breach_provisional,
        withdrawals: fired.withdrawals.max(0) as u32,
    }
}

/// The timer of clock `c` that waits for knowledge (`input_parked`: an
/// input of its subject is parked), with whose watermark it waits on and
/// when it fires anyway.
pub fn held_timer_proto(
    c: &ClockRow,
    t: &TimerRow,
    input_parked: bool,
    known: store::Known,
    max_hold: Duration,
) -> pb::HeldTimer {
    let (waiting_on, known_until) = if c.subject_kind == "application" {
        ("licensing", known.applications)
    } else {
        ("routing", known.cases)
    };
    pb::HeldTimer {
        kind: t.kind.clone(),
        due_at: Some(timestamp(t.due_at)),
        waiting_on: waiting_on.into(),
        known_until: known_until.map(timestamp),
        input_parked,
        fires_by: chrono::TimeDelta::from_std(max_hold)
            .ok()
            .map(|hold| timestamp(t.due_at + hold)),
    }
}

pub fn escalation_proto(e: &EscalationRow) -> pb::Escalation {
    pb::Escalation {
        id: e.id.to_string(),
        clock_id: e.clock_id.to_string(),
        level: e.level.max(0) as u32,
        partner_code: e.partner_code.clone(),
        subject_kind: e.subject_kind.clone(),
        subject_id: e.subject_id.to_string(),
        tracking_number: e.tracking_number.clone(),
        contact: e.contact.clone(),
        agreement_version: e.agreement_version,
        raised_at: Some(timestamp(e.raised_at)),
        overdue_working: duration(e.overdue_working_secs),
        overdue_wall: duration(e.overdue_wall_secs),
        acknowledged_at: e.acknowledged_at.map(timestamp),
        acknowledged_by: e.acknowledged_by.clone().unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
        metric: e.metric.clone(),
        webhook_state: e.webhook.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
        webhook_attempts: e.webhook.as_ref().map_or(0, |w| w.1.max(0) as u32),
        provisional: e.provisional,
        withdrawn_at: e.withdrawn.as_ref().map(|w| timestamp(w.0)),
        withdrawal_reason: e
            .withdrawn
            .as_ref()
            .map(|w| w.1.clone())
            .unwrap_or_default(),
    }
}

/// The escalations a `ListEscalations` state asks for.
pub fn escalation_filter(state: i32) -> Result<store::EscalationFilter, ApiError> {
    match pb::EscalationState::try_from(state) {
        Ok(pb::EscalationState::Open) => Ok(store::EscalationFilter::Open),
        Ok(pb::EscalationState::Acknowledged) => Ok(store::EscalationFilter::Acknowledged),
        Ok(pb::EscalationState::Withdrawn) => Ok(store::EscalationFilter::Withdrawn),
        Ok(pb::EscalationState::Unspecified) => Ok(store::EscalationFilter::Any),
        Err(_) => Err(ApiError::invalid_field(
            "state",
            "is not an escalation state",
        )),
    }
}

/// A previewed clock.
pub fn preview_proto(c: &Computed) -> pb::PreviewClockResponse {
    let unset = prost_types::Timestamp::default;
    pb::PreviewClockResponse {
        state: computed_state_proto(c.state) as i32,
        deadline: c.deadline.map(timestamp),
        original_deadline: c.original_deadline.map(timestamp),
        warnings: c
            .warnings
            .iter()
            .map(|w| w.map_or_else(unset, timestamp))
            .collect(),
        breach: c.breach.map(timestamp),
        escalations: c
            .escalations
            .iter()
            .map(|w| w.map_or_else(unset, timestamp))
            .collect(),
        elapsed: prost_types::Duration::try_from(c.elapsed).ok(),
    }
}
