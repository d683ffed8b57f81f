//! THE module for the watcher's state changes: recomputing a subject's
//! clocks after an event, a calendar change or a late agreement version
//! ([`recompute`]), retiring a clock the event log no longer gives and
//! withdrawing firings that turned out wrong ([`withdraw`]), firing due timers
//! exactly once ([`fire`]) and raising and acknowledging escalations
//! ([`escalate`]). The consumers, the gRPC handlers and the background loops
//! call these; nothing else writes clocks, timers, escalations or their events.
//!
//! Recomputation locks the subject's clocks, derives them again from the whole
//! event log, stores their state, reschedules their unfired timers and emits
//! lifecycle events for what changed. A timer that already fired and that the
//! clock, as now computed, no longer wants at that instant (a late event, an
//! announced holiday, a pause that moved the deadline) is withdrawn in the
//! same transaction and counts as not fired, so it fires again at its
//! corrected instant, once.
//!
//! Firing claims due timers with `FOR UPDATE SKIP LOCKED` (so replicas share
//! the work and never double-fire), only those whose instant the watcher
//! knows to be complete ([`FireRules`]; others wait up to `sla.max_hold_secs`
//! and then fire marked provisional), writes the event (and the escalation)
//! and marks the timer fired in one transaction, each timer in a savepoint so
//! one that fails waits without holding back the others. Timers due while the
//! watcher was down fire at start, earliest first; events carry the instant
//! the timer was due, not when it fired.
//!
//! Commands read the current instant from the transaction's time source
//! ([`Tx::now`]), the service's.

mod escalate;
mod fire;
mod recompute;
mod terms;
mod withdraw;

use std::time::Duration;

use baladiya_platform::events::{Event, EventType, Tx};
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::sla::events::v1 as ev;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::SlaError;
use crate::store::ClockRow;

pub use escalate::acknowledge_escalation;
pub use fire::{Failing, FireRules, fire_due};
pub use recompute::{recompute_calendar_step, recompute_partner_since, recompute_subject};

pub const CLOCK_STARTED: EventType = EventType::new("sla", "clock", "started");
pub const CLOCK_PAUSED: EventType = EventType::new("sla", "clock", "paused");
pub const CLOCK_RESUMED: EventType = EventType::new("sla", "clock", "resumed");
pub const CLOCK_WARNING: EventType = EventType::new("sla", "clock", "warning");
pub const CLOCK_BREACHED: EventType = EventType::new("sla", "clock", "breached");
pub const CLOCK_MET: EventType = EventType::new("sla", "clock", "met");
pub const CLOCK_CANCELLED: EventType = EventType::new("sla", "clock", "cancelled");
pub const CLOCK_WARNING_WITHDRAWN: EventType = EventType::new("sla", "clock", "warning_withdrawn");
pub const CLOCK_BREACH_WITHDRAWN: EventType = EventType::new("sla", "clock", "breach_withdrawn");
pub const ESCALATION_RAISED: EventType = EventType::new("sla", "escalation", "raised");
pub const ESCALATION_ACKNOWLEDGED: EventType = EventType::new("sla", "escalation", "acknowledged");
pub const ESCALATION_WITHDRAWN: EventType = EventType::new("sla", "escalation", "withdrawn");

/// What made a recomputation: the reason a firing it finds wrong is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An event of the subject (one that arrived after something fired).
    SubjectEvent,
    /// A change of the calendar the clock runs on.
    CalendarChanged,
    /// An agreement version published after clocks it governs had started.
    AgreementPublished,
}

impl Cause {
    fn reason(self) -> ev::WithdrawalReason {
        match self {
            Self::SubjectEvent => ev::WithdrawalReason::LateEvent,
            Self::CalendarChanged => ev::WithdrawalReason::CalendarChanged,
            Self::AgreementPublished => ev::WithdrawalReason::AgreementChanged,
        }
    }

    /// The stored and metric name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubjectEvent => "late_event",
            Self::CalendarChanged => "calendar_changed",
            Self::AgreementPublished => "agreement_changed",
        }
    }
}

/// The clock reference events carry.
pub fn clock_ref(c: &ClockRow) -> Option<ev::ClockRef> {
    Some(ev::ClockRef {
        clock_id: c.id.to_string(),
        subject_kind: c.subject_kind.clone(),
        subject_id: c.subject_id.to_string(),
        metric: c.metric.clone(),
        partner_code: c.partner_code.clone(),
        tracking_number: c.tracking_number.clone(),
        agreement_version: c.agreement_version,
        target: prost_types::Duration::try_from(Duration::from_secs(c.target_secs.max(0) as u64))
            .ok(),
        municipality_code: c.municipality_code.clone(),
        category_code: c.category_code.clone(),
    })
}

/// Emits an event of `kind` about clock `c` (its aggregate), scoped by the
/// clock's partner (`_` for a municipal clock).
async fn emit_about_clock<M: prost::Message + prost::Name>(
    tx: &mut Tx,
    kind: EventType,
    c: &ClockRow,
    at: DateTime<Utc>,
    payload: impl FnOnce(Option<EventMeta>) -> M,
) -> Result<Uuid, SlaError> {
    let partner = if c.partner_code.is_empty() {
        "_"
    } else {
        c.partner_code.as_str()
    };
    Ok(tx
        .emit(Event::new(kind, c.id, at).scoped(&[partner]), payload)
        .await?)
}
