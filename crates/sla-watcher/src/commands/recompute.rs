//! Recomputing clocks: a subject's after one of its events, the subjects of a
//! partner after a late agreement version, and the subjects on a changed
//! calendar in resumable steps. Each derives the subject's clocks again from
//! its whole event log, stores them, reschedules their timers and emits
//! what changed; what fired and turned out wrong is withdrawn
//! ([`super::withdraw`]).

use std::time::Duration;

use baladiya_platform::events::{Emitter, Tx};
use baladiya_platform::wake::Wake;
use baladiya_proto::convert::timestamp;
use baladiya_proto::sla::events::v1 as ev;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::terms::{ClockTerms, Replica, new_clock_terms, terms_of};
use super::withdraw::{same_party, supersede, superseded, withdraw};
use super::{
    CLOCK_CANCELLED, CLOCK_MET, CLOCK_PAUSED, CLOCK_RESUMED, CLOCK_STARTED, Cause, clock_ref,
    emit_about_clock,
};
use crate::SlaConfig;
use crate::domain::derive::{self, ClockSpec, Metric};
use crate::domain::sla_clock::{self, Computed, InputKind, State};
use crate::domain::{WantedTimer, wanted_timers};
use crate::error::SlaError;
use crate::store::{self, ClockRow, SubjectFacts};

/// Recomputes every clock of a subject (`case` or `application`) from its event log.
pub async fn recompute_subject(
    tx: &mut Tx,
    config: &SlaConfig,
    kind: &str,
    id: Uuid,
) -> Result<(), SlaError> {
    recompute_subject_with(
        tx,
        &mut Replica::default(),
        config,
        kind,
        id,
        Cause::SubjectEvent,
    )
    .await
}

/// Recomputes the clocks of `partner` that started at or after
/// `effective_from` under an older agreement version, after a version
/// effective then was published: each takes the terms in force at its start.
pub async fn recompute_partner_since(
    tx: &mut Tx,
    config: &SlaConfig,
    partner: &str,
    version: i64,
    effective_from: DateTime<Utc>,
) -> Result<usize, SlaError> {
    let subjects = store::subjects_of_partner_since(tx, partner, version, effective_from).await?;
    let mut replica = Replica::default();
    for (kind, id) in &subjects {
        recompute_subject_with(
            tx,
            &mut replica,
            config,
            kind,
            *id,
            Cause::AgreementPublished,
        )
        .await?;
    }
    Ok(subjects.len())
}

/// Subjects a calendar recomputation takes per transaction.
const CALENDAR_BATCH: i64 = 100;

/// Works through one step of a pending calendar recomputation (see
/// [`store::request_calendar_recompute`]): the next batch of subjects on the
/// calendar, recomputed in one transaction that also moves the job's cursor,
/// so a failure redoes at most this batch. Returns how many subjects it
/// recomputed; 0 when no job waits (or another replica holds each).
pub async fn recompute_calendar_step(
    pool: &sqlx::PgPool,
    emitter: &Emitter,
    timers: &Wake,
    config: &SlaConfig,
) -> Result<usize, SlaError> {
    let mut tx = emitter.begin(pool).await?;
    let Some(job) = store::claim_calendar_recompute(&mut tx).await? else {
        return Ok(0);
    };
    let subjects = store::calendar_subjects(&mut tx, &job, CALENDAR_BATCH).await?;
    let mut replica = Replica::default();
    for (kind, id) in &subjects {
        recompute_subject_with(
            &mut tx,
            &mut replica,
            config,
            kind,
            *id,
            Cause::CalendarChanged,
        )
        .await?;
    }
    let last = (subjects.len() as i64 == CALENDAR_BATCH)
        .then(|| subjects.last())
        .flatten();
    store::advance_calendar_recompute(&mut tx, &job.calendar_id, last).await?;
    tx.commit().await?;
    timers.signal();
    if last.is_none() {
        tracing::info!(calendar = %job.calendar_id, "recomputed the clocks on a changed calendar");
    }
    // A finished job with no subjects still counts as progress.
    Ok(subjects.len().max(1))
}

async fn recompute_subject_with(
    tx: &mut Tx,
    replica: &mut Replica,
    config: &SlaConfig,
    kind: &str,
    id: Uuid,
    cause: Cause,
) -> Result<(), SlaError> {
    let existing = store::clocks_of(tx, kind, id, true).await?;
    let (specs, facts) = if kind == "application" {
        let (events, facts) = store::application_events(tx, id).await?;
        (derive::application_clocks(id, &events), facts)
    } else {
        let (events, facts) = store::case_events(tx, id).await?;
        (derive::case_clocks(id, &events), facts)
    };
    let Some(facts) = facts else { return Ok(()) };
    let now = tx.now();
    // A clock the whole log no longer has, or has for another party (a
    // reroute that arrived after the steps it preceded), was never the
    // truth: what it fired is withdrawn and it is cancelled.
    for stale in existing.iter().filter(|c| !superseded(c)) {
        let wanted = specs.iter().find(|s| s.key == stale.key);
        if wanted.is_none_or(|s| !same_party(s, stale)) {
            supersede(tx, stale, cause, now).await?;
        }
    }
    for spec in specs {
        let old = existing
            .iter()
            .find(|c| c.key == spec.key && !superseded(c) && same_party(&spec, c));
        let start = spec.inputs.iter().map(|i| i.at).min().unwrap_or(now);
        let mut row = match old {
            Some(o) => {
                let mut row = o.clone();
                if cause == Cause::AgreementPublished {
                    reterm(tx, replica, config, &spec, &facts, start, &mut row).await?;
                }
                row
            }
            None => {
                let Some(terms) =
                    new_clock_terms(tx, replica, config, &spec, &facts, start).await?
                else {
                    continue;
                };
                new_clock_row(kind, id, &spec, &facts, terms, now)
            }
        };
        row.inputs = spec
            .inputs
            .iter()
            .map(|i| (i.kind.as_str().to_string(), i.at))
            .collect();
        store_computed(tx, replica, old, row, cause).await?;
    }
    Ok(())
}

/// A version published late with an effective instant at or before the
/// clock's start: its terms are the ones in force, and `row` takes them.
async fn reterm(
    tx: &mut Tx,
    replica: &mut Replica,
    config: &SlaConfig,
    spec: &ClockSpec,
    facts: &SubjectFacts,
    start: DateTime<Utc>,
    row: &mut ClockRow,
) -> Result<(), SlaError> {
    if matches!(
        spec.metric,
        Metric::Acknowledge | Metric::Resolve | Metric::Clearance
    ) && let Some(t) = new_clock_terms(tx, replica, config, spec, facts, start).await?
        && t.agreement_version != row.agreement_version
    {
        row.agreement_version = t.agreement_version;
        row.calendar_id = t.calendar_id;
        row.target_secs = t.terms.target.as_secs() as i64;
        row.warn_at = t.terms.warn_at;
        row.ladder = t.ladder;
    }
    Ok(())
}

/// The row of a clock seen for the first time, not yet computed.
fn new_clock_row(
    kind: &str,
    id: Uuid,
    spec: &ClockSpec,
    facts: &SubjectFacts,
    t: ClockTerms,
    now: DateTime<Utc>,
) -> ClockRow {
    ClockRow {
        id: Uuid::now_v7(),
        key: spec.key.clone(),
        subject_kind: kind.into(),
        subject_id: id,
        metric: spec.metric.as_str().into(),
        partner_code: t.partner,
        agreement_version: t.agreement_version,
        calendar_id: t.calendar_id,
        target_secs: t.terms.target.as_secs() as i64,
        warn_at: t.terms.warn_at,
        ladder: t.ladder,
        tracking_number: facts.tracking_number.clone(),
        municipality_code: facts.municipality_code.clone(),
        category_code: facts.category_code.clone(),
        inputs: Vec::new(),
        state: "pending".into(),
        elapsed_secs: 0,
        deadline: None,
        original_deadline: None,
        breached_at: None,
        started_at: None,
        ended_at: None,
        updated_at: now,
    }
}

/// Computes a clock row from its inputs and terms, stores it, reschedules its
/// timers and emits what changed.
async fn store_computed(
    tx: &mut Tx,
    replica: &mut Replica,
    old: Option<&ClockRow>,
    mut row: ClockRow,
    cause: Cause,
) -> Result<(), SlaError> {
    let now = tx.now();
    let calendar = replica.calendar(tx, &row.calendar_id).await?;
    let working_day = calendar.working_day();
    let computed = sla_clock::compute(calendar, &terms_of(&row), &row.engine_inputs(), now);
    row.state = computed.state.as_str().into();
    row.elapsed_secs = computed.elapsed.as_secs() as i64;
    row.deadline = computed.deadline;
    row.original_deadline = computed.original_deadline;
    row.breached_at = computed.breach;
    row.started_at = computed.started_at;
    row.ended_at = computed.ended_at;
    row.updated_at = now;
    store::put_clock(tx, &row).await?;
    reschedule_timers(tx, old.is_some(), &row, &computed, cause, now).await?;
    emit_changes(tx, old, &row, &computed, working_day).await
}

/// Makes a computed clock's timers what it wants: withdraws what fired and is
/// no longer wanted at that instant, drops unfired ones no longer wanted,
/// and schedules (or moves) the rest.
async fn reschedule_timers(
    tx: &mut Tx,
    stored_before: bool,
    row: &ClockRow,
    computed: &Computed,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<(), SlaError> {
    let wanted = wanted_timers(computed);
    // A clock stored for the first time has no timers to lock or compare.
    let mut have = if stored_before {
        store::timers_of(tx, row.id).await?
    } else {
        Vec::new()
    };
    // What fired and is no longer wanted at the instant it fired for is
    // withdrawn, and then counts as not fired: if the clock still wants it
    // at a corrected instant, it fires again there, once.
    for t in have.iter_mut().filter(|t| t.fired_at.is_some()) {
        if !wanted
            .iter()
            .any(|(k, _, due)| *k == t.kind && *due == t.due_at)
        {
            withdraw(tx, row, computed.deadline, t, cause, now).await?;
            t.fired_at = None;
        }
    }
    let unwanted: Vec<&str> = have
        .iter()
        .filter(|t| t.fired_at.is_none() && !wanted.iter().any(|(k, _, _)| *k == t.kind))
        .map(|t| t.kind.as_str())
        .collect();
    store::drop_timers(tx, row.id, &unwanted).await?;
    let changed: Vec<&WantedTimer> = wanted
        .iter()
        .filter(|(kind, _, due)| {
            !have
                .iter()
                .find(|t| t.kind == *kind)
                .is_some_and(|t| t.fired_at.is_some() || t.due_at == *due)
        })
        .collect();
    let kinds: Vec<&str> = changed.iter().map(|(k, _, _)| k.as_str()).collect();
    let seqs: Vec<i32> = changed.iter().map(|(_, s, _)| *s).collect();
    let due: Vec<DateTime<Utc>> = changed.iter().map(|(_, _, d)| *d).collect();
    store::put_timers(tx, row.id, &kinds, &seqs, &due).await?;
    Ok(())
}

/// Lifecycle events for a change of state.
async fn emit_changes(
    tx: &mut Tx,
    old: Option<&ClockRow>,
    new: &ClockRow,
    computed: &Computed,
    working_day: Duration,
) -> Result<(), SlaError> {
    let was = old.map(|o| o.state.as_str());
    let last = |kind: InputKind| {
        new.engine_inputs()
            .into_iter()
            .filter(|i| i.kind == kind)
            .map(|i| i.at)
            .max()
    };
    if was.is_none()
        && let Some(at) = computed.started_at
    {
        let deadline = computed.deadline.map(timestamp);
        emit_about_clock(tx, CLOCK_STARTED, new, at, |meta| ev::ClockStarted {
            meta,
            clock: clock_ref(new),
            deadline,
        })
        .await?;
    }
    let now = computed.state;
    let before = was.unwrap_or("running");
    match (before, now) {
        ("running" | "breached", State::Paused) => {
            if let Some(at) = last(InputKind::Pause) {
                emit_about_clock(tx, CLOCK_PAUSED, new, at, |meta| ev::ClockPaused {
                    meta,
                    clock: clock_ref(new),
                })
                .await?;
            }
        }
        ("paused", State::Running | State::Breached) => {
            if let Some(at) = last(InputKind::Resume) {
                let deadline = computed.deadline.map(timestamp);
                emit_about_clock(tx, CLOCK_RESUMED, new, at, |meta| ev::ClockResumed {
                    meta,
                    clock: clock_ref(new),
                    deadline,
                })
                .await?;
            }
        }
        (b, State::Met | State::BreachedThenMet)
            if !matches!(b, "met" | "breached_then_met" | "cancelled") =>
        {
            if let Some(at) = computed.ended_at {
                let elapsed = prost_types::Duration::try_from(computed.elapsed).ok();
                let breached = now == State::BreachedThenMet;
                let elapsed_working_days = if working_day.is_zero() {
                    0.0
                } else {
                    computed.elapsed.as_secs_f64() / working_day.as_secs_f64()
                };
                emit_about_clock(tx, CLOCK_MET, new, at, |meta| ev::ClockMet {
                    meta,
                    clock: clock_ref(new),
                    breached,
                    elapsed,
                    elapsed_working_days,
                })
                .await?;
            }
        }
        (b, State::Cancelled) if b != "cancelled" => {
            if let Some(at) = computed.ended_at {
                emit_about_clock(tx, CLOCK_CANCELLED, new, at, |meta| ev::ClockCancelled {
                    meta,
                    clock: clock_ref(new),
                })
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}
