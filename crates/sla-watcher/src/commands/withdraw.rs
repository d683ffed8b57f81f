//! Undoing what turned out wrong: withdrawing a firing the clock as now
//! computed no longer wants at that instant, and retiring (superseding) a
//! clock the event log no longer gives, or gives another party.

use baladiya_platform::events::Tx;
use baladiya_proto::convert::timestamp;
use baladiya_proto::sla::events::v1 as ev;
use chrono::{DateTime, Utc};

use super::escalate::escalation_body;
use super::{
    CLOCK_BREACH_WITHDRAWN, CLOCK_CANCELLED, CLOCK_WARNING_WITHDRAWN, Cause, ESCALATION_WITHDRAWN,
    clock_ref, emit_about_clock,
};
use crate::domain::derive::{ClockSpec, Metric};
use crate::domain::sla_clock::State;
use crate::domain::warning_fraction;
use crate::error::SlaError;
use crate::store::{self, ClockRow, TimerRow};

/// What a superseded clock's key gets, so the key is free for the true clock.
const SUPERSEDED: &str = "~superseded~";

/// Whether a clock row was superseded (see [`supersede`]).
pub(super) fn superseded(c: &ClockRow) -> bool {
    c.key.contains(SUPERSEDED)
}

/// Whether a stored clock belongs to the party the log now gives its spec
/// (a municipal clock's party is the municipality, not in the spec).
pub(super) fn same_party(spec: &ClockSpec, c: &ClockRow) -> bool {
    spec.partner.is_empty()
        || matches!(spec.metric, Metric::EndToEnd | Metric::Decision)
        || spec.partner == c.partner_code
}

/// Retires a clock the event log no longer gives (or gives another party):
/// withdraws what it fired, drops what it had yet to fire, and cancels it
/// under a key of its own, so its events and escalations stay accounted for.
pub(super) async fn supersede(
    tx: &mut Tx,
    c: &ClockRow,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<(), SlaError> {
    for t in store::timers_of(tx, c.id).await? {
        if t.fired_at.is_some() {
            withdraw(tx, c, None, &t, cause, now).await?;
        }
    }
    let kinds: Vec<String> = store::timers_of(tx, c.id)
        .await?
        .into_iter()
        .map(|t| t.kind)
        .collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    store::drop_timers(tx, c.id, &kinds).await?;
    let mut retired = c.clone();
    retired.key = format!("{}{SUPERSEDED}{}", c.key, c.id);
    retired.state = State::Cancelled.as_str().into();
    retired.ended_at = Some(now);
    retired.deadline = None;
    retired.breached_at = None;
    retired.updated_at = now;
    store::put_clock(tx, &retired).await?;
    store::rekey_clock(tx, c.id, &retired.key).await?;
    emit_about_clock(tx, CLOCK_CANCELLED, &retired, now, |meta| {
        ev::ClockCancelled {
            meta,
            clock: clock_ref(&retired),
        }
    })
    .await?;
    tracing::info!(clock = %c.id, key = %c.key, partner = %c.partner_code, reason = cause.as_str(), "retired a clock the event log no longer gives");
    Ok(())
}

/// Withdraws what timer `t` of clock `c` fired, which the clock as now
/// computed no longer wants at that instant: the withdrawal event, and for
/// an escalation its row marked and the partner told (see
/// [`crate::webhook::withdraw`]). The caller counts the timer as not fired.
pub(super) async fn withdraw(
    tx: &mut Tx,
    c: &ClockRow,
    corrected_deadline: Option<DateTime<Utc>>,
    t: &TimerRow,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<(), SlaError> {
    let reason = cause.reason() as i32;
    let fired_event = t.event_id.map(|id| id.to_string()).unwrap_or_default();
    if let Some(fraction) = warning_fraction(&c.warn_at, &t.kind) {
        emit_about_clock(tx, CLOCK_WARNING_WITHDRAWN, c, now, |meta| {
            ev::ClockWarningWithdrawn {
                meta,
                clock: clock_ref(c),
                warning_event_id: fired_event,
                fraction,
                reason,
            }
        })
        .await?;
    } else if t.kind == "breach" {
        let other_breaches = store::other_breach_stands(tx, c).await?;
        emit_about_clock(tx, CLOCK_BREACH_WITHDRAWN, c, now, |meta| {
            ev::ClockBreachWithdrawn {
                meta,
                clock: clock_ref(c),
                breach_event_id: fired_event,
                withdrawn_deadline: Some(timestamp(t.due_at)),
                deadline: corrected_deadline.map(timestamp),
                reason,
                other_breaches,
            }
        })
        .await?;
    } else if let Some(level) = t
        .kind
        .strip_prefix("escalation:")
        .and_then(|l| l.parse::<i32>().ok())
    {
        withdraw_escalation(tx, c, level, cause, fired_event, now).await?;
    }
    store::unfire(tx, t).await?;
    tracing::info!(clock = %c.id, kind = %t.kind, due = %t.due_at, reason = cause.as_str(), "withdrew a firing that turned out wrong");
    Ok(())
}

/// Withdraws the standing escalation `level` of clock `c`, if there is one:
/// its row, the partner's webhook, the event.
async fn withdraw_escalation(
    tx: &mut Tx,
    c: &ClockRow,
    level: i32,
    cause: Cause,
    raised_event_id: String,
    now: DateTime<Utc>,
) -> Result<(), SlaError> {
    let Some(e) = store::withdraw_escalation(tx, c.id, level, cause.as_str(), now).await? else {
        return Ok(());
    };
    // The deadline the escalation named: its breach.
    let breach = e.raised_at - chrono::TimeDelta::seconds(e.overdue_wall_secs);
    let body = escalation_body(
        "escalation.withdrawn",
        c,
        &e,
        breach,
        serde_json::json!({
            "withdrawn_at": now.to_rfc3339(),
            "reason": cause.as_str(),
        }),
    );
    crate::webhook::withdraw(tx, e.id, &body).await?;
    let reason = cause.reason() as i32;
    emit_about_clock(tx, ESCALATION_WITHDRAWN, c, now, |meta| {
        ev::EscalationWithdrawn {
            meta,
            escalation_id: e.id.to_string(),
            clock: clock_ref(c),
            level: level as u32,
            contact: e.contact.clone(),
            reason,
            raised_event_id,
        }
    })
    .await?;
    Ok(())
}
