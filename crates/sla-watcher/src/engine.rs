//! Running clocks: recomputing a subject's clocks after an event (or a
//! calendar change), and firing due timers exactly once.
//!
//! Recomputation locks the subject's clocks, derives them again from the whole
//! event log, stores their state, reschedules their unfired timers and emits
//! lifecycle events for what changed. A timer that already fired and that the
//! clock, as now computed, no longer wants at that instant (a late event, an
//! announced holiday, a pause that moved the deadline) is withdrawn in the
//! same transaction ([`withdraw`]) and counts as not fired, so it fires again
//! at its corrected instant, once.
//!
//! Firing claims due timers with `FOR UPDATE SKIP LOCKED` (so replicas share
//! the work and never double-fire), only those whose instant the watcher
//! knows to be complete ([`FireRules`]; others wait up to `sla.max_hold_secs`
//! and then fire marked provisional), writes the event (and the escalation)
//! and marks the timer fired in one transaction, each timer in a savepoint so
//! one that fails waits without holding back the others. Timers due while the
//! watcher was down fire at start, earliest first; events carry the instant
//! the timer was due, not when it fired.

use std::collections::HashMap;
use std::time::Duration;

use baladiya_partners::convert::priority_from_proto;
use baladiya_partners::domain::AgreementBody;
use baladiya_platform::clock::Clock;
use baladiya_platform::events::consumer::HandlerError;
use baladiya_platform::events::{EventType, OutboundEvent, outbox};
use baladiya_platform::metrics::Metrics;
use baladiya_proto::convert::timestamp;
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::sla::events::v1 as ev;
use baladiya_worktime::Calendar;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::SlaConfig;
use crate::clock::{self, Computed, InputKind, State, Terms};
use crate::derive::{self, Metric};
use crate::store::{self, ClockRow, EscalationRow, StoredLevel, TimerRow};

const SERVICE: &str = "sla-watcher";
/// The wake-up topic of this process's timer loop (see [`baladiya_platform::wake`]).
pub const TIMERS_TOPIC: &str = "sla_watcher.timers";

/// Wakes this process's timer loop: call it after a commit that may have
/// changed timers.
pub fn timers_changed() {
    baladiya_platform::wake::signal(TIMERS_TOPIC);
}

fn retry(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Retry(e.to_string())
}

/// What a recomputation reads from the partner replica, read once: calendars
/// (built once; a calendar change recomputes every open subject on it) and
/// the agreements in force (a case's clocks mostly share one).
#[derive(Default)]
struct Replica {
    calendars: HashMap<String, Calendar>,
    /// By (partner, instant): the version and body in force then, if any.
    agreements: HashMap<(String, DateTime<Utc>), Option<Agreement>>,
}

/// An agreement's version and body.
type Agreement = (i64, AgreementBody);

impl Replica {
    async fn calendar(
        &mut self,
        conn: &mut PgConnection,
        id: &str,
    ) -> Result<&Calendar, HandlerError> {
        if !self.calendars.contains_key(id) {
            let spec = store::calendar(conn, id)
                .await?
                .ok_or_else(|| retry(format!("calendar {id} is not in the replica yet")))?;
            let built = spec
                .build()
                .map_err(|v| HandlerError::Reject(format!("calendar {id} is invalid: {v:?}")))?;
            self.calendars.insert(id.to_string(), built);
        }
        Ok(&self.calendars[id])
    }

    /// The version and body of `partner`'s agreement in force at `at`.
    async fn agreement_at(
        &mut self,
        conn: &mut PgConnection,
        partner: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<&Agreement>, HandlerError> {
        let key = (partner.to_string(), at);
        if !self.agreements.contains_key(&key) {
            let found = store::agreement_at(conn, partner, at).await?;
            self.agreements.insert(key.clone(), found);
        }
        Ok(self.agreements[&key].as_ref())
    }
}

fn terms_of(row: &ClockRow) -> Terms {
    Terms {
        target: Duration::from_secs(row.target_secs.max(0) as u64),
        warn_at: row.warn_at.clone(),
        ladder: row
            .ladder
            .iter()
            .map(|l| Duration::from_secs(l.delay_secs))
            .collect(),
    }
}

/// What a new clock runs under: (partner, agreement version, calendar, terms, ladder).
type NewClock = (String, i64, String, Terms, Vec<StoredLevel>);

/// The terms a new clock runs under; `None` when the partner's agreement has
/// no terms for it (no clock is kept then).
async fn new_clock(
    conn: &mut PgConnection,
    replica: &mut Replica,
    config: &SlaConfig,
    spec: &derive::ClockSpec,
    facts: &store::SubjectFacts,
    start: DateTime<Utc>,
) -> Result<Option<NewClock>, HandlerError> {
    let default_warn = || baladiya_partners::domain::DEFAULT_WARN_AT.to_vec();
    if matches!(spec.metric, Metric::EndToEnd | Metric::Decision) {
        // The municipality's own promise, on its government calendar.
        let calendar_id = config.end_to_end_calendar_of(&facts.municipality_code);
        let cal = replica.calendar(conn, &calendar_id).await?;
        let days = if spec.metric == Metric::Decision {
            facts.target_days.max(1) as u32
        } else {
            config.end_to_end_days
        };
        let target = cal.duration(baladiya_worktime::WorkingDuration { days, minutes: 0 });
        let terms = Terms {
            target,
            warn_at: default_warn(),
            ladder: Vec::new(),
        };
        return Ok(Some((
            facts.municipality_code.clone(),
            0,
            calendar_id,
            terms,
            Vec::new(),
        )));
    }
    let (version, body) = replica
        .agreement_at(conn, &spec.partner, start)
        .await?
        .cloned()
        .ok_or_else(|| {
            retry(format!(
                "no agreement of {} in force at {start} in the replica yet",
                spec.partner
            ))
        })?;
    let (target, calendar_id, warn_at) = if spec.metric == Metric::Clearance {
        let Some(c) = body.clearance_for(&facts.category_code) else {
            tracing::warn!(partner = %spec.partner, license_type = %facts.category_code, "no clearance terms; no clock");
            return Ok(None);
        };
        (c.within, c.calendar_id.clone(), c.warn_at.clone())
    } else {
        let (terms, _) = body
            .terms_for(&facts.category_code, priority_from_proto(facts.priority))
            .ok_or_else(|| {
                HandlerError::Reject(format!(
                    "agreement {version} of {} has no terms for {}",
                    spec.partner, facts.category_code
                ))
            })?;
        let target = if spec.metric == Metric::Acknowledge {
            terms.acknowledge_within
        } else {
            terms.resolve_within
        };
        (target, terms.calendar_id.clone(), terms.warn_at.clone())
    };
    let cal = replica.calendar(conn, &calendar_id).await?;
    let ladder: Vec<StoredLevel> = body
        .ladder
        .iter()
        .map(|l| StoredLevel {
            level: l.level,
            delay_secs: cal.duration(l.delay_after_breach).as_secs(),
            contact: l.contact.clone(),
            webhook_url: l.webhook_url.clone(),
        })
        .collect();
    let terms = Terms {
        target: cal.duration(target),
        warn_at: baladiya_partners::domain::warn_at_or_default(&warn_at),
        ladder: ladder
            .iter()
            .map(|l| Duration::from_secs(l.delay_secs))
            .collect(),
    };
    Ok(Some((
        spec.partner.clone(),
        version,
        calendar_id,
        terms,
        ladder,
    )))
}

/// The timers a computed clock needs: (kind, order at equal instants, due).
fn wanted_timers(c: &Computed) -> Vec<(String, i32, DateTime<Utc>)> {
    let mut out = Vec::new();
    for (i, w) in c.warnings.iter().enumerate() {
        if let Some(due) = w {
            out.push((format!("warning:{i}"), i as i32, *due));
        }
    }
    if let Some(due) = c.breach {
        out.push(("breach".to_string(), 100, due));
    }
    for (i, e) in c.escalations.iter().enumerate() {
        if let Some(due) = e {
            out.push((format!("escalation:{}", i + 1), 200 + i as i32, *due));
        }
    }
    out
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

fn meta(id: Uuid, clock: Uuid, at: DateTime<Utc>) -> Option<EventMeta> {
    Some(EventMeta {
        event_id: id.to_string(),
        occurred_at: Some(timestamp(at)),
        aggregate_id: clock.to_string(),
        recorded_at: None,
    })
}

async fn emit<M: prost::Message + prost::Name>(
    conn: &mut PgConnection,
    aggregate: &'static str,
    event: &'static str,
    c: &ClockRow,
    at: DateTime<Utc>,
    payload: impl FnOnce(Option<EventMeta>) -> M,
) -> Result<Uuid, HandlerError> {
    let id = Uuid::now_v7();
    let message = payload(meta(id, c.id, at));
    let partner = if c.partner_code.is_empty() {
        "_"
    } else {
        c.partner_code.as_str()
    };
    let out = OutboundEvent::new(
        SERVICE,
        EventType::new("sla", aggregate, event),
        &[partner],
        id,
        c.id.to_string(),
        at,
        &message,
    );
    outbox::enqueue(conn, &out).await.map_err(retry)?;
    Ok(id)
}

/// Lifecycle events for a change of state.
async fn emit_changes(
    conn: &mut PgConnection,
    old: Option<&ClockRow>,
    new: &ClockRow,
    computed: &Computed,
    working_day: Duration,
) -> Result<(), HandlerError> {
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
        emit(conn, "clock", "started", new, at, |meta| ev::ClockStarted {
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
                emit(conn, "clock", "paused", new, at, |meta| ev::ClockPaused {
                    meta,
                    clock: clock_ref(new),
                })
                .await?;
            }
        }
        ("paused", State::Running | State::Breached) => {
            if let Some(at) = last(InputKind::Resume) {
                let deadline = computed.deadline.map(timestamp);
                emit(conn, "clock", "resumed", new, at, |meta| ev::ClockResumed {
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
                emit(conn, "clock", "met", new, at, |meta| ev::ClockMet {
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
                emit(conn, "clock", "cancelled", new, at, |meta| {
                    ev::ClockCancelled {
                        meta,
                        clock: clock_ref(new),
                    }
                })
                .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Recomputes every clock of a subject (`case` or `application`) from its event log.
pub async fn recompute_subject(
    conn: &mut PgConnection,
    clock: &Clock,
    config: &SlaConfig,
    kind: &str,
    id: Uuid,
) -> Result<(), HandlerError> {
    recompute_subject_with(
        conn,
        &mut Replica::default(),
        clock,
        config,
        kind,
        id,
        Cause::SubjectEvent,
    )
    .await
}

async fn recompute_subject_with(
    conn: &mut PgConnection,
    replica: &mut Replica,
    clock: &Clock,
    config: &SlaConfig,
    kind: &str,
    id: Uuid,
    cause: Cause,
) -> Result<(), HandlerError> {
    let existing = store::clocks_of(conn, kind, id, true).await?;
    let (specs, facts) = if kind == "application" {
        let (events, facts) = store::application_events(conn, id).await?;
        (derive::application_clocks(id, &events), facts)
    } else {
        let (events, facts) = store::case_events(conn, id).await?;
        (derive::case_clocks(id, &events), facts)
    };
    let Some(facts) = facts else { return Ok(()) };
    let now = clock.now();
    // A clock the whole log no longer has, or has for another party (a
    // reroute that arrived after the steps it preceded), was never the
    // truth: what it fired is withdrawn and it is cancelled.
    for stale in existing.iter().filter(|c| !superseded(c)) {
        let wanted = specs.iter().find(|s| s.key == stale.key);
        if wanted.is_none_or(|s| !same_party(s, stale)) {
            supersede(conn, stale, cause, now).await?;
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
                // A version published late with an effective instant at or
                // before the clock's start: its terms are the ones in force.
                if cause == Cause::AgreementPublished
                    && matches!(
                        spec.metric,
                        Metric::Acknowledge | Metric::Resolve | Metric::Clearance
                    )
                    && let Some((_, version, calendar_id, terms, ladder)) =
                        new_clock(conn, replica, config, &spec, &facts, start).await?
                    && version != row.agreement_version
                {
                    row.agreement_version = version;
                    row.calendar_id = calendar_id;
                    row.target_secs = terms.target.as_secs() as i64;
                    row.warn_at = terms.warn_at;
                    row.ladder = ladder;
                }
                row
            }
            None => {
                let Some((partner, version, calendar_id, terms, ladder)) =
                    new_clock(conn, replica, config, &spec, &facts, start).await?
                else {
                    continue;
                };
                ClockRow {
                    id: Uuid::now_v7(),
                    key: spec.key.clone(),
                    subject_kind: kind.into(),
                    subject_id: id,
                    metric: spec.metric.as_str().into(),
                    partner_code: partner,
                    agreement_version: version,
                    calendar_id,
                    target_secs: terms.target.as_secs() as i64,
                    warn_at: terms.warn_at,
                    ladder,
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
        };
        row.inputs = spec
            .inputs
            .iter()
            .map(|i| (i.kind.as_str().to_string(), i.at))
            .collect();
        store_computed(conn, replica, clock, old, row, cause).await?;
    }
    Ok(())
}

/// Computes a clock row from its inputs and terms, stores it, reschedules its
/// timers and emits what changed.
async fn store_computed(
    conn: &mut PgConnection,
    replica: &mut Replica,
    clock: &Clock,
    old: Option<&ClockRow>,
    mut row: ClockRow,
    cause: Cause,
) -> Result<(), HandlerError> {
    let now = clock.now();
    let calendar = replica.calendar(conn, &row.calendar_id).await?;
    let working_day = calendar.working_day();
    let computed = clock::compute(calendar, &terms_of(&row), &row.engine_inputs(), now);
    row.state = computed.state.as_str().into();
    row.elapsed_secs = computed.elapsed.as_secs() as i64;
    row.deadline = computed.deadline;
    row.original_deadline = computed.original_deadline;
    row.breached_at = computed.breach;
    row.started_at = computed.started_at;
    row.ended_at = computed.ended_at;
    row.updated_at = now;
    store::put_clock(conn, &row).await?;
    let wanted = wanted_timers(&computed);
    // A clock stored for the first time has no timers to lock or compare.
    let mut have = match old {
        Some(_) => store::timers_of(conn, row.id).await?,
        None => Vec::new(),
    };
    // What fired and is no longer wanted at the instant it fired for is
    // withdrawn, and then counts as not fired: if the clock still wants it
    // at a corrected instant, it fires again there, once.
    for t in have.iter_mut().filter(|t| t.fired_at.is_some()) {
        if !wanted
            .iter()
            .any(|(k, _, due)| *k == t.kind && *due == t.due_at)
        {
            withdraw(conn, &row, computed.deadline, t, cause, now).await?;
            t.fired_at = None;
        }
    }
    let unwanted: Vec<&str> = have
        .iter()
        .filter(|t| t.fired_at.is_none() && !wanted.iter().any(|(k, _, _)| *k == t.kind))
        .map(|t| t.kind.as_str())
        .collect();
    store::drop_timers(conn, row.id, &unwanted).await?;
    let changed: Vec<&(String, i32, DateTime<Utc>)> = wanted
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
    store::put_timers(conn, row.id, &kinds, &seqs, &due).await?;
    emit_changes(conn, old, &row, &computed, working_day).await
}

/// Whether a clock row was superseded (see [`supersede`]).
fn superseded(c: &ClockRow) -> bool {
    c.key.contains(SUPERSEDED)
}

/// What a superseded clock's key gets, so the key is free for the true clock.
const SUPERSEDED: &str = "~superseded~";

/// Whether a stored clock belongs to the party the log now gives its spec
/// (a municipal clock's party is the municipality, not in the spec).
fn same_party(spec: &derive::ClockSpec, c: &ClockRow) -> bool {
    spec.partner.is_empty()
        || matches!(spec.metric, Metric::EndToEnd | Metric::Decision)
        || spec.partner == c.partner_code
}

/// Retires a clock the event log no longer gives (or gives another party):
/// withdraws what it fired, drops what it had yet to fire, and cancels it
/// under a key of its own, so its events and escalations stay accounted for.
async fn supersede(
    conn: &mut PgConnection,
    c: &ClockRow,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    for t in store::timers_of(conn, c.id).await? {
        if t.fired_at.is_some() {
            withdraw(conn, c, None, &t, cause, now).await?;
        }
    }
    let kinds: Vec<String> = store::timers_of(conn, c.id)
        .await?
        .into_iter()
        .map(|t| t.kind)
        .collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    store::drop_timers(conn, c.id, &kinds).await?;
    let mut retired = c.clone();
    retired.key = format!("{}{SUPERSEDED}{}", c.key, c.id);
    retired.state = State::Cancelled.as_str().into();
    retired.ended_at = Some(now);
    retired.deadline = None;
    retired.breached_at = None;
    retired.updated_at = now;
    store::put_clock(conn, &retired).await?;
    store::rekey_clock(conn, c.id, &retired.key).await?;
    emit(conn, "clock", "cancelled", &retired, now, |meta| {
        ev::ClockCancelled {
            meta,
            clock: clock_ref(&retired),
        }
    })
    .await?;
    tracing::info!(clock = %c.id, key = %c.key, partner = %c.partner_code, reason = cause.as_str(), "retired a clock the event log no longer gives");
    Ok(())
}

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

/// Withdraws what timer `t` of clock `c` fired, which the clock as now
/// computed no longer wants at that instant: the withdrawal event, and for
/// an escalation its row marked and the partner told (see
/// [`crate::webhook::withdraw`]). The caller counts the timer as not fired.
async fn withdraw(
    conn: &mut PgConnection,
    c: &ClockRow,
    corrected_deadline: Option<DateTime<Utc>>,
    t: &TimerRow,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let reason = cause.reason() as i32;
    let fired_event = t.event_id.map(|id| id.to_string()).unwrap_or_default();
    if let Some(fraction) = warning_fraction(c, &t.kind) {
        emit(conn, "clock", "warning_withdrawn", c, now, |meta| {
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
        let other_breaches = store::other_breach_stands(conn, c).await?;
        emit(conn, "clock", "breach_withdrawn", c, now, |meta| {
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
        && let Some(e) = store::withdraw_escalation(conn, c.id, level, cause.as_str(), now).await?
    {
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
        crate::webhook::withdraw(conn, e.id, &body).await?;
        emit(conn, "escalation", "withdrawn", c, now, |meta| {
            ev::EscalationWithdrawn {
                meta,
                escalation_id: e.id.to_string(),
                clock: clock_ref(c),
                level: level as u32,
                contact: e.contact.clone(),
                reason,
                raised_event_id: fired_event,
            }
        })
        .await?;
    }
    store::unfire(conn, t).await?;
    tracing::info!(clock = %c.id, kind = %t.kind, due = %t.due_at, reason = cause.as_str(), "withdrew a firing that turned out wrong");
    Ok(())
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
    clock: &Clock,
    config: &SlaConfig,
) -> Result<usize, HandlerError> {
    let mut tx = pool.begin().await?;
    let Some(job) = store::claim_calendar_recompute(&mut tx).await? else {
        return Ok(0);
    };
    let subjects = store::calendar_subjects(&mut tx, &job, CALENDAR_BATCH).await?;
    let mut replica = Replica::default();
    for (kind, id) in &subjects {
        recompute_subject_with(
            &mut tx,
            &mut replica,
            clock,
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
    baladiya_platform::events::outbox::committed(crate::SCHEMA);
    timers_changed();
    if last.is_none() {
        tracing::info!(calendar = %job.calendar_id, "recomputed the clocks on a changed calendar");
    }
    // A finished job with no subjects still counts as progress.
    Ok(subjects.len().max(1))
}

/// What the timer loop needs to decide what may fire.
#[derive(Debug, Clone, Copy)]
pub struct FireRules {
    /// How far each producer's stream is known to be complete.
    pub known: store::Known,
    /// How long a due timer waits for complete knowledge before it fires
    /// anyway, marked provisional (`sla.max_hold_secs`).
    pub max_hold: Duration,
    /// When this watcher started watching: the hold counts from the later
    /// of a timer's due instant and this, so a watcher that was itself down
    /// first catches up on its consumers instead of firing everything due
    /// while it was away as provisional.
    pub watching_since: DateTime<Utc>,
}

impl FireRules {
    /// Timers due at or before this instant may fire provisional at `now`.
    pub fn held_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let hold = chrono::TimeDelta::from_std(self.max_hold).unwrap_or(chrono::TimeDelta::MAX);
        match now.checked_sub_signed(hold) {
            Some(until) if self.watching_since <= until => until,
            // Not watching for a whole hold yet (or a hold past any instant).
            _ => DateTime::UNIX_EPOCH,
        }
    }
}

/// Timers that failed to fire lately, kept out of the next rounds for a
/// while so one that keeps failing does not hold back the others.
#[derive(Debug, Default)]
pub struct Failing {
    until: HashMap<(Uuid, String), std::time::Instant>,
    attempts: HashMap<(Uuid, String), u32>,
}

impl Failing {
    fn skipped(&mut self) -> Vec<(Uuid, String)> {
        let now = std::time::Instant::now();
        self.until.retain(|_, until| *until > now);
        self.until.keys().cloned().collect()
    }

    fn failed(&mut self, t: &TimerRow) {
        let key = (t.clock_id, t.kind.clone());
        let attempts = self.attempts.entry(key.clone()).or_default();
        *attempts = attempts.saturating_add(1);
        let wait = Duration::from_millis(250u64 << (*attempts).min(8));
        self.until.insert(
            key,
            std::time::Instant::now() + wait.min(Duration::from_secs(60)),
        );
    }

    fn fired(&mut self, t: &TimerRow) {
        let key = (t.clock_id, t.kind.clone());
        self.attempts.remove(&key);
        self.until.remove(&key);
    }
}

/// Recomputes the clocks of `partner` that started at or after
/// `effective_from` under an older agreement version, after a version
/// effective then was published: each takes the terms in force at its start.
pub async fn recompute_partner_since(
    conn: &mut PgConnection,
    clock: &Clock,
    config: &SlaConfig,
    partner: &str,
    version: i64,
    effective_from: DateTime<Utc>,
) -> Result<usize, HandlerError> {
    let subjects = store::subjects_of_partner_since(conn, partner, version, effective_from).await?;
    let mut replica = Replica::default();
    for (kind, id) in &subjects {
        recompute_subject_with(
            conn,
            &mut replica,
            clock,
            config,
            kind,
            *id,
            Cause::AgreementPublished,
        )
        .await?;
    }
    Ok(subjects.len())
}

/// Fires every timer due by the clock's now that may fire (see
/// [`store::claim_due`]), earliest first, in batches, each in a savepoint of
/// its own so one that fails waits (see [`Failing`]) while the others fire.
/// Records in `metrics` how late each fired. Returns how many fired.
pub async fn fire_due(
    pool: &sqlx::PgPool,
    clock: &Clock,
    metrics: &Metrics,
    rules: FireRules,
    failing: &mut Failing,
) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let now = clock.now();
        let held_until = rules.held_until(now);
        let mut tx = pool.begin().await?;
        let due = store::claim_due(
            &mut tx,
            now,
            50,
            rules.known,
            held_until,
            &failing.skipped(),
        )
        .await?;
        if due.is_empty() {
            return Ok(total);
        }
        let mut fired = Vec::with_capacity(due.len());
        for timer in &due {
            let mut savepoint = sqlx::Acquire::begin(&mut *tx).await?;
            match fire(&mut savepoint, timer, now).await {
                Ok(()) => {
                    savepoint.commit().await?;
                    failing.fired(timer);
                    fired.push(timer);
                }
                Err(e) => {
                    savepoint.rollback().await?;
                    tracing::error!(clock = %timer.clock_id, kind = %timer.kind, error = %e, "timer could not fire; it waits and the others go on");
                    failing.failed(timer);
                }
            }
        }
        tx.commit().await?;
        baladiya_platform::events::outbox::committed(crate::SCHEMA);
        let committed = clock.now();
        for timer in &fired {
            metrics.record_timer_lag((committed - timer.due_at).to_std().unwrap_or_default());
            if timer.provisional {
                metrics.add_sla_provisional(timer_family(&timer.kind));
            }
        }
        total += fired.len();
    }
}

/// The fraction of the target a `warning:<i>` timer of `c` stands for;
/// `None` for other kinds.
fn warning_fraction(c: &ClockRow, kind: &str) -> Option<f64> {
    let i = kind.strip_prefix("warning:")?;
    Some(
        i.parse::<usize>()
            .ok()
            .and_then(|i| c.warn_at.get(i))
            .copied()
            .unwrap_or_default(),
    )
}

/// `warning`, `breach` or `escalation`: a timer kind without its number.
fn timer_family(kind: &str) -> &str {
    kind.split(':').next().unwrap_or(kind)
}

/// The webhook body of an escalation's event.
fn escalation_body(
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

async fn fire(
    conn: &mut PgConnection,
    t: &TimerRow,
    now: DateTime<Utc>,
) -> Result<(), HandlerError> {
    let c = store::clock(conn, t.clock_id)
        .await?
        .ok_or_else(|| HandlerError::Reject(format!("timer of unknown clock {}", t.clock_id)))?;
    let at = t.due_at;
    let provisional = t.provisional;
    let deadline = c.deadline.map(timestamp);
    let event_id = if let Some(i) = t.kind.strip_prefix("warning:") {
        let fraction = i
            .parse::<usize>()
            .ok()
            .and_then(|i| c.warn_at.get(i))
            .copied()
            .unwrap_or_default();
        emit(conn, "clock", "warning", &c, at, |meta| ev::ClockWarning {
            meta,
            clock: clock_ref(&c),
            fraction,
            deadline,
            provisional,
        })
        .await?
    } else if t.kind == "breach" {
        emit(conn, "clock", "breached", &c, at, |meta| {
            ev::ClockBreached {
                meta,
                clock_id: c.id.to_string(),
                subject_kind: c.subject_kind.clone(),
                subject_id: c.subject_id.to_string(),
                metric: c.metric.clone(),
                partner_code: c.partner_code.clone(),
                deadline: Some(timestamp(at)),
                clock: clock_ref(&c),
                provisional,
            }
        })
        .await?
    } else if let Some(level) = t
        .kind
        .strip_prefix("escalation:")
        .and_then(|l| l.parse::<u32>().ok())
    {
        raise(conn, &c, level, at, provisional).await?
    } else {
        return Err(HandlerError::Reject(format!(
            "unknown timer kind {}",
            t.kind
        )));
    };
    store::mark_fired(conn, t, now, event_id).await?;
    Ok(())
}

/// Raises escalation `level` of a breached clock at `at`: the row, the
/// partner's webhook delivery if it asked for one, and the event.
async fn raise(
    conn: &mut PgConnection,
    c: &ClockRow,
    level: u32,
    at: DateTime<Utc>,
    provisional: bool,
) -> Result<Uuid, HandlerError> {
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
    if !store::add_escalation(conn, &escalation).await? {
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
            conn,
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
    emit(conn, "escalation", "raised", c, at, |meta| {
        ev::EscalationRaised {
            meta,
            escalation_id: escalation.id.to_string(),
            clock: clock_ref(c),
            level,
            contact: stored.contact.clone(),
            overdue_working,
            overdue_wall,
            deadline: Some(timestamp(breach)),
            provisional,
        }
    })
    .await
}
