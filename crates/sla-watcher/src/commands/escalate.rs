//! Escalations: raising a level of a breached clock (its row, the partner's
//! webhook, the event) and a partner or operator acknowledging one.

use std::time::Duration;

use baladiya_platform::audit::Audit;
use baladiya_platform::events::{Event, Tx};
use baladiya_proto::convert::timestamp;
use baladiya_proto::sla::events::v1 as ev;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ESCALATION_ACKNOWLEDGED, ESCALATION_RAISED, clock_ref, emit_about_clock};
use crate::domain::CallerScope;
use crate::error::SlaError;
use crate::store::{self, ClockRow, EscalationRow, StoredLevel};

/// Raises escalation `level` of a breached clock at `at`: the row, the
/// partner's webhook delivery if it asked for one, and the event. Returns
/// the event's id (nil when the level stands already).
pub(super) async fn raise(
    tx: &mut Tx,
    c: &ClockRow,
    level: u32,
    at: DateTime<Utc>,
    provisional: bool,
) -> Result<Uuid, SlaError> {
    let stored = c
        .ladder
        .iter()
        .find(|l| l.level == level)
        .cloned()
        .unwrap_or(StoredLevel {
            level,
            delay_secs: 0,
            contact: String::new(),
            webhook_url: String::new(),
        });
    let breach = c.breached_at.unwrap_or(at);
    let escalation = EscalationRow {
        id: Uuid::now_v7(),
        clock_id: c.id,
        level: level as i32,
        partner_code: c.partner_code.clone(),
        subject_kind: c.subject_kind.clone(),
        subject_id: c.subject_id,
        tracking_number: c.tracking_number.clone(),
        metric: c.metric.clone(),
        contact: stored.contact.clone(),
        agreement_version: c.agreement_version,
        raised_at: at,
        overdue_working_secs: stored.delay_secs as i64,
        overdue_wall_secs: (at - breach).num_seconds().max(0),
        acknowledged_at: None,
        acknowledged_by: None,
        note: None,
        webhook: None,
        provisional,
        withdrawn: None,
    };
    if !store::add_escalation(tx, &escalation).await? {
        // The level stands already: nothing more to raise (the timer is
        // marked fired, naming no event of its own).
        tracing::warn!(clock = %c.id, level, "escalation level already stands; not raised twice");
        return Ok(Uuid::nil());
    }
    if !stored.webhook_url.is_empty() {
        let body = escalation_body(
            "escalation.raised",
            c,
            &escalation,
            breach,
            serde_json::json!({
                "overdue_working_seconds": stored.delay_secs,
                "overdue_wall_seconds": escalation.overdue_wall_secs,
            }),
        );
        crate::webhook::enqueue(
            tx,
            escalation.id,
            crate::webhook::Delivery::Raised,
            &stored.webhook_url,
            &body,
        )
        .await?;
    }
    let overdue_working =
        prost_types::Duration::try_from(Duration::from_secs(stored.delay_secs)).ok();
    let overdue_wall =
        prost_types::Duration::try_from(Duration::from_secs(escalation.overdue_wall_secs as u64))
            .ok();
    emit_about_clock(tx, ESCALATION_RAISED, c, at, |meta| ev::EscalationRaised {
        meta,
        escalation_id: escalation.id.to_string(),
        clock: clock_ref(c),
        level,
        contact: stored.contact.clone(),
        overdue_working,
        overdue_wall,
        deadline: Some(timestamp(breach)),
        provisional,
    })
    .await
}

/// Acknowledges escalation `id` for the audited caller, with `note`
/// (checked by the caller): loads it and its clock, checks the caller may
/// act on it and that it is not acknowledged yet, records the
/// acknowledgement, emits it and audits it. Returns the escalation as now
/// stored.
pub async fn acknowledge_escalation(
    tx: &mut Tx,
    audit: &Audit,
    id: Uuid,
    note: &str,
) -> Result<EscalationRow, SlaError> {
    let who = &audit.caller;
    let found = store::escalation(tx, id).await?;
    let clock = match &found {
        Some(e) => store::clock(tx, e.clock_id).await?,
        None => None,
    };
    // Whether it exists is not revealed to those limited to their own.
    let (e, c) = match (found, clock) {
        (Some(e), Some(c))
            if CallerScope::of(who).covers(&e.partner_code, &c.municipality_code) =>
        {
            (e, c)
        }
        (None, _) if who.may_know_absence() => return Err(SlaError::EscalationNotFound),
        (Some(_), None) => return Err(SlaError::EscalationWithoutClock),
        _ => return Err(SlaError::NotYourEscalation),
    };
    if e.acknowledged_at.is_some() {
        return Err(SlaError::AlreadyAcknowledged);
    }
    let now = tx.now();
    store::acknowledge_escalation(tx, id, &who.subject, note, now).await?;
    tx.emit(
        Event::new(ESCALATION_ACKNOWLEDGED, c.id, now).scoped(&[&e.partner_code]),
        |meta| ev::EscalationAcknowledged {
            meta,
            escalation_id: id.to_string(),
            clock: clock_ref(&c),
            level: e.level.max(0) as u32,
            acknowledged_by: who.subject.clone(),
        },
    )
    .await?;
    let updated = store::escalation(tx, id)
        .await?
        .ok_or(SlaError::EscalationNotFound)?;
    audit.record(tx, now, &id.to_string()).await?;
    Ok(updated)
}

/// The webhook body of an escalation's event.
pub(super) fn escalation_body(
    kind: &str,
    c: &ClockRow,
    e: &EscalationRow,
    deadline: DateTime<Utc>,
    extra: serde_json::Value,
) -> Vec<u8> {
    let mut body = serde_json::json!({
        "type": kind,
        "escalation_id": e.id,
        "level": e.level,
        "partner_code": c.partner_code,
        "subject_kind": c.subject_kind,
        "subject_id": c.subject_id,
        "tracking_number": c.tracking_number,
        "metric": c.metric,
        "contact": e.contact,
        "agreement_version": c.agreement_version,
        "deadline": deadline.to_rfc3339(),
        "raised_at": e.raised_at.to_rfc3339(),
        "provisional": e.provisional,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string().into_bytes()
}
