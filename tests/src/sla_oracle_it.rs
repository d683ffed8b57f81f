//! The property: random case histories whose events reach
//! the SLA watcher after random delays give exactly the warnings, breaches and
//! escalations, and the corrections, that an oracle with full knowledge
//! computes.
//!
//! Each case draws a valid case history (routed, then a random walk over
//! routing's transitions: acknowledged, on hold and resumed, rerouted between
//! two partners, rejected, resolved, reopened, closed), each event with its
//! true instant and a delivery delay of 0 to 3 working days, and a
//! `sla.max_hold` (from a minute, so that provisional firings happen, to
//! sixty days, so that none do). It then drives the engine as the watcher
//! does, against a real PostgreSQL schema and no NATS: a manual clock moves
//! through every true instant, every arrival, every due instant the oracle
//! knows (and that instant plus the hold) and a few random instants; at each
//! step the events that have arrived are recorded and recomputed, each in its
//! own transaction (as the case consumer does), and `commands::fire_due` runs
//! with an honest watermark: just before the earliest true instant of an
//! event not yet arrived, or now. The oracle is `clock::compute` over the
//! whole event log (`derive::case_clocks`) with the same terms.
//!
//! Checked at every step: nothing due by the watermark (or past the hold)
//! stays unfired. Checked at the end, on the outbox:
//! 1. net firings (each firing minus its withdrawal) per clock and timer are
//!    the oracle's, each once, at the oracle's instant;
//! 2. every withdrawal names an earlier firing of the same clock and timer,
//!    once, and that firing was provisional: a firing made with complete
//!    knowledge is never withdrawn; a firing is provisional only if its
//!    instant was not covered when it fired and it had waited the hold;
//! 3. nothing fires before its due instant in simulation time;
//!
//! and the clocks the watcher keeps are the oracle's, with the oracle's
//! partner and terms.
//!
//! Proptest's runner is synchronous, so the test is a plain `#[test]` that
//! owns a tokio runtime and blocks on it for each case; the schema is set up
//! once and emptied (but for the partner replica) before each case. The run
//! is seeded (`SLA_ORACLE_SEED`, a number, else a fixed seed) with
//! `SLA_ORACLE_CASES` cases (default 24), and a failure shrinks to a minimal
//! history, printed with its timeline.
//!
//! # Finding: a reopen's clock on a stale partner (fixed)
//!
//! The property found one bug, kept as
//! [`a_reroute_that_arrives_after_a_reopen_moves_its_clock_to_the_new_partner`]:
//! a reopen's resolve clock is keyed by the reopen alone, and the watcher
//! took its partner from the assignee it knew when it first recorded the
//! reopen. A reroute that happened before the reopen but reached the watcher
//! after it left the clock on the previous partner for good. The engine now
//! retires a clock the whole log gives to another party (or no longer gives):
//! what it fired is withdrawn, it is cancelled under a key of its own
//! (`~superseded~`), and the true clock takes its key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baladiya_partners::domain::{AgreementBody, CalendarRecord, Level, Priority};
use baladiya_platform::clock::Clock;
use baladiya_proto::convert::instant;
use baladiya_proto::sla::events::v1 as ev;
use baladiya_sla_watcher::commands::{self, Failing, FireRules};
use baladiya_sla_watcher::domain::derive::{self, CaseEvent, CaseEventKind, Metric};
use baladiya_sla_watcher::domain::sla_clock::{self, Terms};
use baladiya_sla_watcher::store::{self, Known, SubjectFacts};
use baladiya_sla_watcher::{SlaConfig, SlaWatcherModule};
use baladiya_worktime::{
    Calendar, CalendarSpec, Day, Holiday, WeeklyHours, WindowSpec, WorkingDuration,
};
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{TestEnv, riyadh};

/// The two partners a case moves between; each has its own agreement.
const PARTNERS: [&str; 2] = ["MEWA", "MOTLS"];
/// The end-to-end calendar `SlaConfig::default()` names.
const E2E_CALENDAR: &str = "sa-gov";
const MUNICIPALITY: &str = "RIYADH";
const CATEGORY: &str = "WATER_LEAK";

fn window(from: &str, to: &str) -> WindowSpec {
    WindowSpec::new(from, to)
}

fn sunday_to_thursday(windows: Vec<WindowSpec>, holidays: Vec<Holiday>) -> CalendarSpec {
    CalendarSpec {
        time_zone: "Asia/Riyadh".into(),
        always_open: false,
        weekly: vec![WeeklyHours {
            days: vec![
                Day::Sunday,
                Day::Monday,
                Day::Tuesday,
                Day::Wednesday,
                Day::Thursday,
            ],
            windows,
        }],
        overrides: vec![],
        holidays,
        substitutions: vec![],
        working_day_minutes: None,
    }
}

/// The calendars: `sa-gov` (end to end), MEWA's (the same hours with two
/// one-day holidays inside the simulated weeks) and MOTLS's (a split shift).
fn calendars() -> Vec<CalendarRecord> {
    let day = |m, d| chrono::NaiveDate::from_ymd_opt(2026, m, d).expect("date");
    let holiday = |name: &str, m, d| Holiday {
        name: name.into(),
        from: day(m, d),
        to: day(m, d),
    };
    vec![
        CalendarRecord {
            id: E2E_CALENDAR.into(),
            name: "Saudi government".into(),
            spec: sunday_to_thursday(vec![window("07:30", "14:30")], vec![]),
        },
        CalendarRecord {
            id: "mewa-gov".into(),
            name: "MEWA".into(),
            spec: sunday_to_thursday(
                vec![window("07:30", "14:30")],
                vec![
                    holiday("Announced closure", 4, 15),
                    holiday("Regional day", 4, 28),
                ],
            ),
        },
        CalendarRecord {
            id: "motls-split".into(),
            name: "MOTLS split shift".into(),
            spec: sunday_to_thursday(
                vec![window("08:00", "12:00"), window("13:00", "16:00")],
                vec![],
            ),
        },
    ]
}

fn wd(days: u32, minutes: u32) -> WorkingDuration {
    WorkingDuration { days, minutes }
}

fn level(level: u32, days: u32) -> Level {
    Level {
        level,
        delay_after_breach: wd(days, 0),
        contact: format!("level {level}"),
        nats_subject: String::new(),
        webhook_url: String::new(),
    }
}

/// MEWA: acknowledge in 4 working hours, resolve in 2 working days, warnings
/// at 50% and 75%, levels at 0, 1 and 3 working days after the breach.
/// MOTLS (the partner a case is rerouted to and from): 8 hours, 3 days, one
/// warning at 75%, levels at 0 and 2 days, on its split shift; different
/// terms, so a clock counted against the wrong partner shows.
fn agreements() -> Vec<(&'static str, AgreementBody)> {
    let terms = |ack, resolve, calendar: &str, warn_at: Vec<f64>| {
        vec![baladiya_partners::domain::Terms {
            category_code: String::new(),
            priority: Priority::Any,
            acknowledge_within: ack,
            resolve_within: resolve,
            calendar_id: calendar.into(),
            warn_at,
        }]
    };
    vec![
        (
            PARTNERS[0],
            AgreementBody {
                terms: terms(wd(0, 240), wd(2, 0), "mewa-gov", vec![0.5, 0.75]),
                ladder: vec![level(1, 0), level(2, 1), level(3, 3)],
                clearances: vec![],
            },
        ),
        (
            PARTNERS[1],
            AgreementBody {
                terms: terms(wd(0, 480), wd(3, 0), "motls-split", vec![0.75]),
                ladder: vec![level(1, 0), level(2, 2)],
                clearances: vec![],
            },
        ),
    ]
}

/// What the oracle and the checks need about the replica.
struct Replica {
    calendars: HashMap<String, Calendar>,
    agreements: HashMap<String, AgreementBody>,
    config: SlaConfig,
}

impl Replica {
    fn new() -> Self {
        Self {
            calendars: calendars()
                .into_iter()
                .map(|c| (c.id.clone(), c.spec.build().expect("valid calendar")))
                .collect(),
            agreements: agreements()
                .into_iter()
                .map(|(p, b)| (p.to_string(), b))
                .collect(),
            config: SlaConfig::default(),
        }
    }

    /// The calendar and terms a clock runs under, as the engine chooses them
    /// for a new clock (the watcher's `new_clock_terms`), for a case.
    fn terms(&self, spec: &derive::ClockSpec) -> (&Calendar, Terms) {
        if spec.metric == Metric::EndToEnd {
            let cal = &self.calendars[&self.config.end_to_end_calendar_of(MUNICIPALITY)];
            let target = cal.duration(wd(self.config.end_to_end_days, 0));
            return (
                cal,
                Terms {
                    target,
                    warn_at: baladiya_partners::domain::DEFAULT_WARN_AT.to_vec(),
                    ladder: vec![],
                },
            );
        }
        let body = &self.agreements[&spec.partner];
        let t = &body.terms[0];
        let cal = &self.calendars[&t.calendar_id];
        let target = if spec.metric == Metric::Acknowledge {
            t.acknowledge_within
        } else {
            t.resolve_within
        };
        (
            cal,
            Terms {
                target: cal.duration(target),
                warn_at: baladiya_partners::domain::warn_at_or_default(&t.warn_at),
                ladder: body
                    .ladder
                    .iter()
                    .map(|l| cal.duration(l.delay_after_breach))
                    .collect(),
            },
        )
    }
}

// ------------------------------------------------------------ histories

/// A drawn case, before it is interpreted as a history: shrinking works on
/// these numbers, and any of them make a valid history.
#[derive(Debug, Clone)]
struct Drawn {
    /// Minutes from Sunday 5 April 2026 00:00 Riyadh to the routing.
    start_minute: u32,
    /// Minutes the report was received before it was routed.
    received_before: u32,
    /// The routing's delivery delay, in working minutes of `sa-gov`.
    first_delay: u32,
    /// Each later step: (which allowed action, minutes after the previous
    /// event, delivery delay in working minutes).
    steps: Vec<(u8, u32, u32)>,
    /// `sla.max_hold`, in minutes.
    max_hold_minutes: u32,
    /// Extra simulation instants, minutes after the routing.
    probes: Vec<u32>,
}

fn drawn() -> impl Strategy<Value = Drawn> {
    // Some gaps hit the targets exactly (an acknowledgement at its deadline,
    // a pause at a warning), some are zero (equal instants, ordered by the
    // case's own sequence), the rest anywhere up to two days.
    let gap = prop_oneof![
        2 => Just(0u32),
        1 => Just(120u32),
        1 => Just(180u32),
        1 => Just(240u32),
        3 => 1..=90u32,
        3 => (1..=48u32).prop_map(|h| h * 30),
        3 => 1..=2880u32,
    ];
    // A working day of `sa-gov` is 420 minutes: up to three of them.
    let delay = || {
        prop_oneof![
            3 => Just(0u32),
            2 => 1..=60u32,
            3 => 1..=1260u32,
        ]
    };
    let hold = prop_oneof![Just(1u32), Just(10), Just(240), Just(1440), Just(60 * 1440),];
    (
        0..7 * 1440u32,
        0..=120u32,
        delay(),
        prop::collection::vec((any::<u8>(), gap, delay()), 1..=12),
        hold,
        prop::collection::vec(0..30 * 1440u32, 0..=6),
    )
        .prop_map(
            |(start_minute, received_before, first_delay, steps, max_hold_minutes, probes)| Drawn {
                start_minute,
                received_before,
                first_delay,
                steps,
                max_hold_minutes,
                probes,
            },
        )
}

/// Routing's case statuses, for a valid walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Routed,
    Acknowledged,
    InProgress,
    OnHold,
    Resolved,
    Triage,
    Reopened,
    Closed,
}

/// The actions that move a case's clocks, allowed from a status (routing's
/// `domain::next`; notes and work started move no clock).
fn allowed(s: Status) -> &'static [(CaseEventKind, Status)] {
    use CaseEventKind as K;
    use Status as S;
    match s {
        S::Routed => &[
            (K::Acknowledged, S::Acknowledged),
            (K::Rejected, S::Triage),
            (K::Rerouted, S::Routed),
        ],
        S::Acknowledged | S::InProgress => &[
            (K::OnHold, S::OnHold),
            (K::Resolved, S::Resolved),
            (K::Rejected, S::Triage),
            (K::Rerouted, S::Routed),
        ],
        S::OnHold => &[(K::Resumed, S::InProgress), (K::Rerouted, S::Routed)],
        S::Resolved => &[(K::Reopened, S::Reopened), (K::Closed, S::Closed)],
        S::Triage => &[(K::Rerouted, S::Routed)],
        S::Reopened => &[
            (K::OnHold, S::OnHold),
            (K::Resolved, S::Resolved),
            (K::Rerouted, S::Routed),
        ],
        S::Closed => &[],
    }
}

/// One event of a history: what happened, and when the watcher gets it.
#[derive(Debug, Clone)]
struct Planned {
    event: CaseEvent,
    arrives: DateTime<Utc>,
}

struct History {
    case_id: Uuid,
    events: Vec<Planned>,
    max_hold: Duration,
    probes: Vec<DateTime<Utc>>,
}

fn minutes(m: u32) -> TimeDelta {
    TimeDelta::minutes(i64::from(m))
}

fn history(d: &Drawn, replica: &Replica) -> History {
    let case_id = Uuid::now_v7();
    let relay = &replica.calendars[E2E_CALENDAR];
    let arrive = |at: DateTime<Utc>, delay: u32| {
        relay
            .add_working(at, Duration::from_secs(u64::from(delay) * 60))
            .expect("in range")
            .max(at)
    };
    let routed_at = riyadh("2026-04-05 00:00") + minutes(d.start_minute);
    let mut assignee = 0usize;
    let mut events = vec![Planned {
        event: CaseEvent {
            id: Uuid::now_v7(),
            kind: CaseEventKind::Routed,
            at: routed_at,
            assignee: PARTNERS[assignee].into(),
            report_received_at: Some(routed_at - minutes(d.received_before)),
            seq: 1,
        },
        arrives: arrive(routed_at, d.first_delay),
    }];
    let (mut status, mut at) = (Status::Routed, routed_at);
    for &(choice, gap, delay) in &d.steps {
        let options = allowed(status);
        if options.is_empty() {
            break;
        }
        let (kind, next) = options[usize::from(choice) % options.len()];
        if kind == CaseEventKind::Rerouted {
            assignee = 1 - assignee;
        }
        at += minutes(gap);
        status = next;
        events.push(Planned {
            event: CaseEvent {
                id: Uuid::now_v7(),
                kind,
                at,
                assignee: PARTNERS[assignee].into(),
                report_received_at: None,
                seq: events.len() as i64 + 1,
            },
            arrives: arrive(at, delay),
        });
    }
    History {
        case_id,
        events,
        max_hold: Duration::from_secs(u64::from(d.max_hold_minutes) * 60),
        probes: d.probes.iter().map(|&m| routed_at + minutes(m)).collect(),
    }
}

fn facts() -> SubjectFacts {
    SubjectFacts {
        tracking_number: "RUH-ORACLE".into(),
        municipality_code: MUNICIPALITY.into(),
        category_code: CATEGORY.into(),
        priority: 0,
        target_days: 0,
    }
}

// ------------------------------------------------------------ the oracle

/// A timer: (clock key, `warning:<i>` | `breach` | `escalation:<level>`).
type TimerKey = (String, String);

/// What a clock with full knowledge wants: every timer and its instant.
struct Oracle {
    due: BTreeMap<TimerKey, DateTime<Utc>>,
    /// By clock key: partner (empty end to end), calendar-built terms.
    clocks: BTreeMap<String, (Metric, String, Terms)>,
}

fn oracle(h: &History, replica: &Replica, end: DateTime<Utc>) -> Oracle {
    let events: Vec<CaseEvent> = h.events.iter().map(|p| p.event.clone()).collect();
    let mut due = BTreeMap::new();
    let mut clocks = BTreeMap::new();
    for spec in derive::case_clocks(h.case_id, &events) {
        let (cal, terms) = replica.terms(&spec);
        let c = sla_clock::compute(cal, &terms, &spec.inputs, end);
        let mut want = |kind: String, at: Option<DateTime<Utc>>| {
            if let Some(at) = at {
                due.insert((spec.key.clone(), kind), at);
            }
        };
        for (i, w) in c.warnings.iter().enumerate() {
            want(format!("warning:{i}"), *w);
        }
        want("breach".into(), c.breach);
        for (i, e) in c.escalations.iter().enumerate() {
            want(format!("escalation:{}", i + 1), *e);
        }
        clocks.insert(spec.key.clone(), (spec.metric, spec.partner.clone(), terms));
    }
    Oracle { due, clocks }
}

// ------------------------------------------------------------ the simulation

/// An outbox row, with the simulation step that wrote it.
struct Written {
    seq: i64,
    ce_type: String,
    payload: Vec<u8>,
    /// The clock's now at the step.
    now: DateTime<Utc>,
    /// The watermark the step's `fire_due` ran with.
    watermark: DateTime<Utc>,
}

/// Empties everything but the partner replica.
async fn reset(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "TRUNCATE subject_events, clocks, timers, escalations, webhook_deliveries, outbox RESTART IDENTITY CASCADE",
    )
    .execute(pool)
    .await?;
    Ok(())
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The honest watermark at `now`: just before the earliest true instant of
/// an event not yet arrived (PostgreSQL keeps microseconds, so one
/// microsecond before), else now.
fn watermark(h: &History, arrived: &[bool], now: DateTime<Utc>) -> DateTime<Utc> {
    h.events
        .iter()
        .zip(arrived)
        .filter(|(_, a)| !**a)
        .map(|(p, _)| p.event.at - TimeDelta::microseconds(1))
        .min()
        .map_or(now, |w| w.min(now))
}

async fn simulate(
    pool: &PgPool,
    replica: &Replica,
    h: &History,
    oracle: &Oracle,
    end: DateTime<Utc>,
) -> Result<Vec<Written>, TestCaseError> {
    let hold = TimeDelta::from_std(h.max_hold).map_err(fail)?;
    let mut instants: BTreeSet<DateTime<Utc>> = BTreeSet::new();
    for p in &h.events {
        instants.insert(p.event.at);
        instants.insert(p.arrives);
    }
    for due in oracle.due.values() {
        instants.insert(*due);
        instants.insert(*due + hold);
    }
    instants.extend(h.probes.iter().copied());
    instants.insert(end);
    let first = h.events[0].event.at;
    // The watcher runs all along, from before the first event.
    let started = first - TimeDelta::minutes(1);
    let clock = Clock::manual(started);
    let metrics = baladiya_platform::metrics::Metrics::new();
    let mut failing = Failing::default();
    let mut order: Vec<usize> = (0..h.events.len()).collect();
    order.sort_by_key(|&i| (h.events[i].arrives, i));
    let mut arrived = vec![false; h.events.len()];
    let mut next = 0;
    let mut written = Vec::new();
    let mut seen = 0i64;
    let facts = facts();
    let emitter = baladiya_platform::events::Emitter::new("sla-watcher", clock.clone());
    for now in instants.into_iter().filter(|t| *t >= first && *t <= end) {
        clock.set(now).await.map_err(fail)?;
        while let Some(&i) = order.get(next)
            && h.events[i].arrives <= now
        {
            let mut tx = emitter.begin(pool).await.map_err(fail)?;
            if store::add_case_event(&mut tx, h.case_id, &h.events[i].event, &facts)
                .await
                .map_err(fail)?
            {
                commands::recompute_subject(&mut tx, &replica.config, "case", h.case_id)
                    .await
                    .map_err(|e| fail(format!("recompute: {e:?}")))?;
            }
            tx.commit().await.map_err(fail)?;
            arrived[i] = true;
            next += 1;
        }
        let w = watermark(h, &arrived, now);
        let rules = FireRules {
            known: Known {
                cases: Some(w),
                applications: None,
            },
            max_hold: h.max_hold,
            watching_since: started,
        };
        commands::fire_due(pool, &emitter, &metrics, rules, &mut failing)
            .await
            .map_err(fail)?;
        let rows: Vec<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT seq, ce_type, payload FROM outbox WHERE seq > $1 ORDER BY seq")
                .bind(seen)
                .fetch_all(pool)
                .await
                .map_err(fail)?;
        for (seq, ce_type, payload) in rows {
            seen = seq;
            written.push(Written {
                seq,
                ce_type,
                payload,
                now,
                watermark: w,
            });
        }
        // Property 3, at every step: nothing due by what is known, or held
        // past the hold, waits.
        let waiting: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT clock_id, kind, due_at FROM timers
             WHERE fired_at IS NULL AND (due_at <= $1 OR due_at <= $2) ORDER BY due_at",
        )
        .bind(w.min(now))
        .bind(now - hold)
        .fetch_all(pool)
        .await
        .map_err(fail)?;
        prop_assert!(
            waiting.is_empty(),
            "at {now} (watermark {w}) timers due with complete knowledge or past the hold did not fire: {waiting:?}"
        );
    }
    Ok(written)
}

// ------------------------------------------------------------ the checks

/// A warning, breach or escalation as published.
#[derive(Debug, Clone)]
struct Firing {
    timer: TimerKey,
    due: DateTime<Utc>,
    provisional: bool,
    seq: i64,
    now: DateTime<Utc>,
    watermark: DateTime<Utc>,
}

/// A withdrawal as published.
#[derive(Debug, Clone)]
struct Withdrawal {
    timer: TimerKey,
    names: Uuid,
    seq: i64,
}

fn meta_of(meta: Option<&baladiya_proto::events::v1::EventMeta>) -> (Uuid, Option<DateTime<Utc>>) {
    let id = meta
        .and_then(|m| m.event_id.parse().ok())
        .unwrap_or_default();
    let at = meta.and_then(|m| m.occurred_at.as_ref()).and_then(instant);
    (id, at)
}

type Decoded = (BTreeMap<Uuid, Firing>, Vec<Withdrawal>);

/// The outbox's firings (by event id) and withdrawals.
fn decode(
    written: &[Written],
    keys: &HashMap<Uuid, (String, Vec<f64>)>,
) -> Result<Decoded, TestCaseError> {
    use prost::Message;
    let clock_of = |id: &str| -> Result<&(String, Vec<f64>), TestCaseError> {
        let id: Uuid = id.parse().map_err(fail)?;
        keys.get(&id)
            .ok_or_else(|| fail(format!("an event names clock {id}, which is not stored")))
    };
    let warning = |(key, warn_at): &(String, Vec<f64>), fraction: f64| {
        let i = warn_at
            .iter()
            .position(|f| (f - fraction).abs() < 1e-9)
            .ok_or_else(|| fail(format!("warning at {fraction} on clock {key}")))?;
        Ok::<_, TestCaseError>((key.clone(), format!("warning:{i}")))
    };
    let mut firings = BTreeMap::new();
    let mut withdrawals = Vec::new();
    for w in written {
        let kind = w
            .ce_type
            .strip_prefix("sa.baladiya.sla.")
            .and_then(|t| t.strip_suffix(".v1"))
            .unwrap_or_default();
        let fired = |timer, meta: Option<&baladiya_proto::events::v1::EventMeta>, provisional| {
            let (id, due) = meta_of(meta);
            let due = due.ok_or_else(|| fail(format!("{} without occurred_at", w.ce_type)))?;
            Ok::<_, TestCaseError>((
                id,
                Firing {
                    timer,
                    due,
                    provisional,
                    seq: w.seq,
                    now: w.now,
                    watermark: w.watermark,
                },
            ))
        };
        let parse_id = |s: &str| s.parse::<Uuid>().map_err(fail);
        match kind {
            "clock.warning" => {
                let e = ev::ClockWarning::decode(&*w.payload).map_err(fail)?;
                let c = clock_of(
                    &e.clock
                        .as_ref()
                        .map(|c| c.clock_id.clone())
                        .unwrap_or_default(),
                )?;
                let (id, f) = fired(warning(c, e.fraction)?, e.meta.as_ref(), e.provisional)?;
                firings.insert(id, f);
            }
            "clock.breached" => {
                let e = ev::ClockBreached::decode(&*w.payload).map_err(fail)?;
                let (key, _) = clock_of(&e.clock_id)?;
                let (id, f) = fired(
                    (key.clone(), "breach".into()),
                    e.meta.as_ref(),
                    e.provisional,
                )?;
                firings.insert(id, f);
            }
            "escalation.raised" => {
                let e = ev::EscalationRaised::decode(&*w.payload).map_err(fail)?;
                let (key, _) = clock_of(
                    &e.clock
                        .as_ref()
                        .map(|c| c.clock_id.clone())
                        .unwrap_or_default(),
                )?;
                let timer = (key.clone(), format!("escalation:{}", e.level));
                let (id, f) = fired(timer, e.meta.as_ref(), e.provisional)?;
                firings.insert(id, f);
            }
            "clock.warning_withdrawn" => {
                let e = ev::ClockWarningWithdrawn::decode(&*w.payload).map_err(fail)?;
                let c = clock_of(
                    &e.clock
                        .as_ref()
                        .map(|c| c.clock_id.clone())
                        .unwrap_or_default(),
                )?;
                withdrawals.push(Withdrawal {
                    timer: warning(c, e.fraction)?,
                    names: parse_id(&e.warning_event_id)?,
                    seq: w.seq,
                });
            }
            "clock.breach_withdrawn" => {
                let e = ev::ClockBreachWithdrawn::decode(&*w.payload).map_err(fail)?;
                let (key, _) = clock_of(
                    &e.clock
                        .as_ref()
                        .map(|c| c.clock_id.clone())
                        .unwrap_or_default(),
                )?;
                withdrawals.push(Withdrawal {
                    timer: (key.clone(), "breach".into()),
                    names: parse_id(&e.breach_event_id)?,
                    seq: w.seq,
                });
            }
            "escalation.withdrawn" => {
                let e = ev::EscalationWithdrawn::decode(&*w.payload).map_err(fail)?;
                let (key, _) = clock_of(
                    &e.clock
                        .as_ref()
                        .map(|c| c.clock_id.clone())
                        .unwrap_or_default(),
                )?;
                withdrawals.push(Withdrawal {
                    timer: (key.clone(), format!("escalation:{}", e.level)),
                    names: parse_id(&e.raised_event_id)?,
                    seq: w.seq,
                });
            }
            _ => {}
        }
    }
    Ok((firings, withdrawals))
}

/// What the cases exercised, over a run.
#[derive(Default)]
struct Stats {
    firings: AtomicUsize,
    provisional: AtomicUsize,
    withdrawals: AtomicUsize,
}

async fn check(
    pool: &PgPool,
    h: &History,
    oracle: &Oracle,
    written: &[Written],
    stats: &Stats,
) -> Result<(), TestCaseError> {
    let hold = TimeDelta::from_std(h.max_hold).map_err(fail)?;
    let mut conn = pool.acquire().await.map_err(fail)?;
    let stored = store::clocks_of(&mut conn, "case", h.case_id, false)
        .await
        .map_err(fail)?;
    drop(conn);

    // The clocks kept are the oracle's, with its partner and terms; a clock
    // the watcher retired (it had it on another party) is cancelled.
    let (retired, stored): (Vec<_>, Vec<_>) = stored
        .into_iter()
        .partition(|c| c.key.contains("~superseded~"));
    for c in &retired {
        prop_assert_eq!(c.state.as_str(), "cancelled", "retired clock {}", c.key);
    }
    let kept: BTreeSet<&str> = stored.iter().map(|c| c.key.as_str()).collect();
    let wanted: BTreeSet<&str> = oracle.clocks.keys().map(String::as_str).collect();
    prop_assert_eq!(&kept, &wanted, "the clocks kept");
    for c in &stored {
        let (metric, partner, terms) = &oracle.clocks[&c.key];
        if *metric != Metric::EndToEnd {
            prop_assert_eq!(&c.partner_code, partner, "partner of clock {}", c.key);
        }
        let ladder: Vec<u64> = c.ladder.iter().map(|l| l.delay_secs).collect();
        let oracle_ladder: Vec<u64> = terms.ladder.iter().map(Duration::as_secs).collect();
        prop_assert_eq!(
            (c.target_secs, &c.warn_at, &ladder),
            (
                terms.target.as_secs() as i64,
                &terms.warn_at,
                &oracle_ladder
            ),
            "terms of clock {} ({})",
            c.key,
            c.partner_code
        );
    }

    let keys: HashMap<Uuid, (String, Vec<f64>)> = stored
        .iter()
        .map(|c| (c.id, (c.key.clone(), c.warn_at.clone())))
        .collect();
    let (firings, withdrawals) = decode(written, &keys)?;
    stats.firings.fetch_add(firings.len(), Ordering::Relaxed);
    stats.provisional.fetch_add(
        firings.values().filter(|f| f.provisional).count(),
        Ordering::Relaxed,
    );
    stats
        .withdrawals
        .fetch_add(withdrawals.len(), Ordering::Relaxed);

    // 2: every withdrawal names an earlier firing of its timer, once, and
    // only a provisional firing is ever withdrawn.
    let mut withdrawn: BTreeSet<Uuid> = BTreeSet::new();
    for w in &withdrawals {
        let f = firings.get(&w.names).ok_or_else(|| {
            fail(format!(
                "withdrawal #{} of {:?} names {}, which never fired",
                w.seq, w.timer, w.names
            ))
        })?;
        prop_assert_eq!(
            &f.timer,
            &w.timer,
            "withdrawal #{} names another timer",
            w.seq
        );
        prop_assert!(f.seq < w.seq, "withdrawal #{} before its firing", w.seq);
        prop_assert!(
            withdrawn.insert(w.names),
            "firing {} of {:?} withdrawn twice",
            w.names,
            w.timer
        );
        prop_assert!(
            f.provisional,
            "{:?} fired at {} with complete knowledge (due {}, watermark {}) and was withdrawn (#{})",
            f.timer,
            f.now,
            f.due,
            f.watermark,
            w.seq
        );
    }
    for (id, f) in &firings {
        // 3: never before its instant; complete knowledge unless marked
        // provisional, and provisional only after the hold.
        prop_assert!(
            f.now >= f.due,
            "{:?} due {} fired early, at {}",
            f.timer,
            f.due,
            f.now
        );
        if f.provisional {
            prop_assert!(
                f.due > f.watermark && f.due <= f.now - hold,
                "{:?} due {} fired provisionally at {} with watermark {} and a hold of {:?}",
                f.timer,
                f.due,
                f.now,
                f.watermark,
                h.max_hold
            );
        } else {
            prop_assert!(
                f.due <= f.watermark,
                "{:?} due {} fired as complete at {} though the watermark was {} ({id})",
                f.timer,
                f.due,
                f.now,
                f.watermark
            );
        }
    }

    // 1: net firings are the oracle's, each once, at its instant.
    let mut net: BTreeMap<TimerKey, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (id, f) in &firings {
        if !withdrawn.contains(id) {
            net.entry(f.timer.clone()).or_default().push(f.due);
        }
    }
    let expected: BTreeMap<TimerKey, Vec<DateTime<Utc>>> = oracle
        .due
        .iter()
        .map(|(k, due)| (k.clone(), vec![*due]))
        .collect();
    prop_assert_eq!(net, expected, "net firings against the oracle's");
    Ok(())
}

/// A readable account of a case, for a failure.
fn describe(d: &Drawn, h: &History, oracle: &Oracle, written: &[Written]) -> String {
    let local = |t: DateTime<Utc>| {
        t.with_timezone(&chrono_tz::Asia::Riyadh)
            .format("%a %m-%d %H:%M:%S%.f")
            .to_string()
    };
    let mut s = format!(
        "{d:?}\nmax_hold {:?}\nevents (true instant -> arrival, Riyadh):\n",
        h.max_hold
    );
    for p in &h.events {
        let e = &p.event;
        let _ = writeln!(
            s,
            "  #{} {:?} {} at {} -> arrives {}",
            e.seq,
            e.kind,
            e.assignee,
            local(e.at),
            local(p.arrives)
        );
    }
    s.push_str("oracle:\n");
    for ((key, kind), due) in &oracle.due {
        let _ = writeln!(s, "  {key} {kind} due {}", local(*due));
    }
    s.push_str("outbox:\n");
    for w in written {
        let _ = writeln!(
            s,
            "  #{} at {} (watermark {}) {}",
            w.seq,
            local(w.now),
            local(w.watermark),
            w.ce_type
        );
    }
    s
}

/// Runs one case.
async fn run_case(
    pool: &PgPool,
    replica: &Replica,
    d: &Drawn,
    stats: &Stats,
) -> Result<(), TestCaseError> {
    reset(pool).await.map_err(fail)?;
    let h = history(d, replica);
    let last = h
        .events
        .iter()
        .map(|p| p.arrives.max(p.event.at))
        .max()
        .expect("a routing");
    // Well past every deadline: the longest chain is a resolve target and
    // its last level, five working days, or the end-to-end target.
    let end = last + TimeDelta::days(45);
    let oracle = oracle(&h, replica, end);
    let written = simulate(pool, replica, &h, &oracle, end).await;
    let written = match written {
        Ok(w) => w,
        Err(e) => return Err(fail(format!("{e}\n{}", describe(d, &h, &oracle, &[])))),
    };
    check(pool, &h, &oracle, &written, stats)
        .await
        .map_err(|e| fail(format!("{e}\n{}", describe(d, &h, &oracle, &written))))
}

/// A database with the watcher's schema and the partner replica, on a
/// runtime the caller blocks on (proptest's runner is synchronous).
struct Harness {
    rt: tokio::runtime::Runtime,
    env: TestEnv,
    pool: PgPool,
    replica: Replica,
}

impl Harness {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let env = TestEnv::new();
        let pool = rt.block_on(async {
            use baladiya_platform::app::ServiceModule;
            let config = env.config();
            baladiya_platform::db::ensure_database(&config.database)
                .await
                .expect("database");
            let pool =
                baladiya_platform::db::schema_pool(&config.database, "sla_watcher").expect("pool");
            baladiya_platform::db::migrate(&pool, "sla_watcher", &SlaWatcherModule.migrator())
                .await
                .expect("migrations");
            let mut conn = pool.acquire().await.expect("connection");
            for c in calendars() {
                store::put_calendar(&mut conn, &c, 1)
                    .await
                    .expect("calendar");
            }
            for (partner, body) in agreements() {
                store::put_agreement(&mut conn, partner, 1, riyadh("2026-01-01 00:00"), &body)
                    .await
                    .expect("agreement");
            }
            pool
        });
        Self {
            rt,
            env,
            pool,
            replica: Replica::new(),
        }
    }

    fn run(&self, d: &Drawn, stats: &Stats) -> Result<(), TestCaseError> {
        self.rt
            .block_on(run_case(&self.pool, &self.replica, d, stats))
    }

    fn close(self) {
        self.rt.block_on(async {
            self.pool.close().await;
            self.env.cleanup().await;
        });
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn seed() -> [u8; 32] {
    let n: u64 = env_number("SLA_ORACLE_SEED").unwrap_or(0x51A0_2026);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed
}

/// The property.
#[test]
fn late_events_give_exactly_the_firings_and_corrections_of_full_knowledge() {
    let cases: u32 = env_number("SLA_ORACLE_CASES").unwrap_or(24);
    let harness = Harness::new();
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 400,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed()),
    );
    let stats = Stats::default();
    let result = runner.run(&drawn(), |d| harness.run(&d, &stats));
    harness.close();
    if let Err(e) = result {
        panic!("{e}");
    }
    let load = |n: &AtomicUsize| n.load(Ordering::Relaxed);
    println!(
        "{cases} cases: {} firings, {} of them provisional, {} withdrawals",
        load(&stats.firings),
        load(&stats.provisional),
        load(&stats.withdrawals),
    );
}

/// The counterexample the property found, minimized: a case routed to MEWA
/// at 08:00 on a Sunday is rerouted to MOTLS at 09:00, but the reroute
/// reaches the watcher only on Monday; MOTLS acknowledges at 09:30, resolves
/// at 10:00, and the citizen reopens at 10:30, all delivered at once. The
/// watcher first records the reopen's resolve clock as MEWA's (the assignee
/// it knew); when the reroute arrives the clock must move to MOTLS, with
/// MOTLS's terms, and whatever fired for MEWA be withdrawn.
#[test]
fn a_reroute_that_arrives_after_a_reopen_moves_its_clock_to_the_new_partner() {
    let d = Drawn {
        start_minute: 8 * 60,
        received_before: 0,
        first_delay: 0,
        steps: vec![
            (2, 60, 600), // rerouted to MOTLS, delivered 600 working minutes late
            (0, 30, 0),   // acknowledged
            (1, 30, 0),   // resolved
            (0, 30, 0),   // reopened
        ],
        max_hold_minutes: 60 * 1440,
        probes: vec![],
    };
    let harness = Harness::new();
    let result = harness.run(&d, &Stats::default());
    harness.close();
    if let Err(e) = result {
        panic!("{e}");
    }
}
