//! One SLA clock, computed from scratch from its inputs (start, pause, resume,
//! stop, cancel, each at the instant it happened) on a business calendar.
//! Pure: the same inputs in any order, with any duplicates, give the same
//! result, so late, repeated and shuffled events change nothing.
//!
//! Everything a clock fires is "the instant its elapsed working time reaches
//! X": a warning at `ceil(target × fraction)` minutes, the breach at the
//! target, escalation level k at the target plus its delay. Elapsed time only
//! counts while running, so a pause after the breach shifts the escalations.
//! Edge rules (DOMAIN.md): a pause at exactly a due instant does not prevent
//! it; anything due at exactly the stop instant does not fire; a clock stopped
//! at or before its deadline is met, after it breached-then-met.

use std::time::Duration;

use baladiya_worktime::Calendar;
use chrono::{DateTime, Utc};

/// What happened to a clock. At equal instants they apply in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputKind {
    Start,
    Pause,
    Resume,
    Stop,
    Cancel,
}

impl InputKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Stop => "stop",
            Self::Cancel => "cancel",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Start,
            Self::Pause,
            Self::Resume,
            Self::Stop,
            Self::Cancel,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Input {
    pub at: DateTime<Utc>,
    pub kind: InputKind,
}

/// What the clock promises.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    /// Working time to the deadline.
    pub target: Duration,
    /// Warning fractions of the target, each in (0, 1).
    pub warn_at: Vec<f64>,
    /// Escalation delays after the breach, in working time, level 1 first.
    pub ladder: Vec<Duration>,
}

/// Where a clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No start yet.
    Pending,
    Running,
    Paused,
    Met,
    Breached,
    BreachedThenMet,
    Cancelled,
}

impl State {
    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Met => "met",
            Self::Breached => "breached",
            Self::BreachedThenMet => "breached_then_met",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Everything about a clock as of an instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub state: State,
    pub started_at: Option<DateTime<Utc>>,
    /// When it stopped or was cancelled.
    pub ended_at: Option<DateTime<Utc>>,
    /// Working time counted up to the "as of" instant.
    pub elapsed: Duration,
    /// The deadline; unknown (`None`) while paused with time left.
    pub deadline: Option<DateTime<Utc>>,
    /// The deadline had it never paused.
    pub original_deadline: Option<DateTime<Utc>>,
    /// When each warning is (or was) due; `None` if it never will be.
    pub warnings: Vec<Option<DateTime<Utc>>>,
    /// When the breach is (or was) due.
    pub breach: Option<DateTime<Utc>>,
    /// When each escalation level is (or was) due.
    pub escalations: Vec<Option<DateTime<Utc>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Ended by a pause: due instants at the end still count.
    Pause,
    /// Ended by a stop or cancel: due instants at the end do not.
    Stop,
}

/// The clock's running segments.
struct Segments {
    closed: Vec<(DateTime<Utc>, DateTime<Utc>, End)>,
    open: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    cancelled: bool,
    paused: bool,
}

fn segments(inputs: &[Input]) -> Segments {
    let mut sorted = inputs.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut s = Segments {
        closed: Vec::new(),
        open: None,
        started_at: None,
        ended_at: None,
        cancelled: false,
        paused: false,
    };
    for input in sorted {
        if s.ended_at.is_some() {
            break;
        }
        match input.kind {
            InputKind::Start if s.started_at.is_none() => {
                s.started_at = Some(input.at);
                s.open = Some(input.at);
            }
            InputKind::Pause => {
                if let Some(from) = s.open.take() {
                    s.closed.push((from, input.at, End::Pause));
                    s.paused = true;
                }
            }
            InputKind::Resume if s.paused => {
                s.paused = false;
                s.open = Some(input.at);
            }
            InputKind::Stop | InputKind::Cancel if s.started_at.is_some() => {
                if let Some(from) = s.open.take() {
                    s.closed.push((from, input.at, End::Stop));
                }
                s.paused = false;
                s.ended_at = Some(input.at);
                s.cancelled = input.kind == InputKind::Cancel;
            }
            _ => {}
        }
    }
    s
}

impl Segments {
    /// The instant elapsed working time reaches `x`, if it ever does.
    fn instant_at(&self, calendar: &Calendar, x: Duration) -> Option<DateTime<Utc>> {
        let mut acc = Duration::ZERO;
        for &(from, to, end) in &self.closed {
            let worked = calendar.working_between(from, to);
            if acc + worked >= x {
                let due = calendar.add_working(from, x - acc)?;
                let counts = match end {
                    End::Pause => due <= to,
                    End::Stop => due < to,
                };
                return counts.then_some(due);
            }
            acc += worked;
        }
        // `None` past the end of measured time (worktime::LATEST_INSTANT):
        // the API's bounds keep live clocks far from it.
        self.open
            .and_then(|from| calendar.add_working(from, x - acc))
    }

    fn elapsed(&self, calendar: &Calendar, as_of: DateTime<Utc>) -> Duration {
        let closed: Duration = self
            .closed
            .iter()
            .map(|&(from, to, _)| calendar.working_between(from, to.min(as_of)))
            .sum();
        closed
            + self
                .open
                .map_or(Duration::ZERO, |from| calendar.working_between(from, as_of))
    }
}

/// Warning threshold: `ceil(target × fraction)` in whole minutes.
pub fn warning_threshold(target: Duration, fraction: f64) -> Duration {
    let minutes = target.as_secs_f64() / 60.0 * fraction;
    Duration::from_secs((minutes - 1e-9).ceil().max(0.0) as u64 * 60)
}

/// The clock as of `as_of`.
pub fn compute(
    calendar: &Calendar,
    terms: &Terms,
    inputs: &[Input],
    as_of: DateTime<Utc>,
) -> Computed {
    let s = segments(inputs);
    let Some(started_at) = s.started_at else {
        return Computed {
            state: State::Pending,
            started_at: None,
            ended_at: None,
            elapsed: Duration::ZERO,
            deadline: None,
            original_deadline: None,
            warnings: vec![None; terms.warn_at.len()],
            breach: None,
            escalations: vec![None; terms.ladder.len()],
        };
    };
    let breach = s.instant_at(calendar, terms.target);
    let deadline = match (breach, s.open, s.ended_at) {
        (Some(b), _, _) => Some(b),
        (None, Some(_), _) => s.instant_at(calendar, terms.target),
        // Stopped in time: the deadline it was running to.
        (None, None, Some(_)) if !s.closed.is_empty() => {
            let before: Duration = s.closed[..s.closed.len() - 1]
                .iter()
                .map(|&(f, t, _)| calendar.working_between(f, t))
                .sum();
            s.closed
                .last()
                .filter(|seg| seg.2 == End::Stop)
                .and_then(|&(from, _, _)| {
                    calendar.add_working(from, terms.target.saturating_sub(before))
                })
        }
        _ => None,
    };
    let state = if s.cancelled {
        State::Cancelled
    } else if s.ended_at.is_some() {
        if breach.is_some() {
            State::BreachedThenMet
        } else {
            State::Met
        }
    } else if breach.is_some_and(|b| b <= as_of) {
        State::Breached
    } else if s.paused {
        State::Paused
    } else {
        State::Running
    };
    Computed {
        state,
        started_at: Some(started_at),
        ended_at: s.ended_at,
        elapsed: s.elapsed(calendar, as_of),
        deadline,
        original_deadline: calendar.add_working(started_at, terms.target),
        warnings: terms
            .warn_at
            .iter()
            .map(|f| s.instant_at(calendar, warning_threshold(terms.target, *f)))
            .collect(),
        breach,
        escalations: terms
            .ladder
            .iter()
            .map(|delay| s.instant_at(calendar, terms.target + *delay))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baladiya_worktime::{CalendarSpec, Day, Holiday, WeeklyHours, WindowSpec};
    use chrono::{NaiveDateTime, TimeZone};

    fn riyadh(text: &str) -> DateTime<Utc> {
        chrono_tz::Asia::Riyadh
            .from_local_datetime(&NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("t"))
            .single()
            .expect("single")
            .with_timezone(&Utc)
    }

    fn gov() -> Calendar {
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
                windows: vec![WindowSpec::new("07:30", "14:30")],
            }],
            overrides: vec![],
            holidays: vec![Holiday {
                name: "Eid".into(),
                from: chrono::NaiveDate::from_ymd_opt(2026, 5, 25).expect("d"),
                to: chrono::NaiveDate::from_ymd_opt(2026, 6, 1).expect("d"),
            }],
            substitutions: vec![],
            working_day_minutes: None,
        }
        .build()
        .expect("valid")
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    fn terms() -> Terms {
        Terms {
            target: hours(4),
            warn_at: vec![0.5, 0.75],
            ladder: vec![Duration::ZERO, hours(7), hours(21)],
        }
    }

    fn at(kind: InputKind, t: &str) -> Input {
        Input {
            at: riyadh(t),
            kind,
        }
    }

    #[test]
    fn thursday_afternoon_four_hours_warn_breach_and_escalate_on_sunday_and_after() {
        let c = compute(
            &gov(),
            &terms(),
            &[at(InputKind::Start, "2026-04-02 13:00")],
            riyadh("2026-04-20 00:00"),
        );
        assert_eq!(c.deadline, Some(riyadh("2026-04-05 10:00")));
        assert_eq!(c.original_deadline, c.deadline);
        // 50% = 120 min: 90 Thursday + 30 Sunday; 75% = 180 min: Sunday 09:00.
        assert_eq!(
            c.warnings,
            [
                Some(riyadh("2026-04-05 08:00")),
                Some(riyadh("2026-04-05 09:00"))
            ]
        );
        assert_eq!(c.breach, Some(riyadh("2026-04-05 10:00")));
        assert_eq!(
            c.escalations,
            [
                Some(riyadh("2026-04-05 10:00")),
                Some(riyadh("2026-04-06 10:00")),
                Some(riyadh("2026-04-08 10:00"))
            ]
        );
        assert_eq!(c.state, State::Breached);
    }

    #[test]
    fn a_pause_shifts_the_deadline_by_the_paused_working_time() {
        let inputs = [
            at(InputKind::Start, "2026-04-05 08:00"),
            at(InputKind::Pause, "2026-04-05 09:00"),
            at(InputKind::Resume, "2026-04-06 09:00"),
        ];
        let c = compute(&gov(), &terms(), &inputs, riyadh("2026-04-06 09:30"));
        assert_eq!(c.original_deadline, Some(riyadh("2026-04-05 12:00")));
        assert_eq!(
            c.deadline,
            Some(riyadh("2026-04-06 12:00")),
            "shifted by 7 working hours"
        );
        assert_eq!(c.elapsed, Duration::from_secs(90 * 60));
        assert_eq!(c.state, State::Running);
        // While paused with time left the deadline is unknown.
        let paused = compute(&gov(), &terms(), &inputs[..2], riyadh("2026-04-05 10:00"));
        assert_eq!((paused.state, paused.deadline), (State::Paused, None));
    }

    #[test]
    fn edge_rules_at_the_deadline() {
        let start = at(InputKind::Start, "2026-04-05 08:00");
        // Stopped exactly at the deadline: met, and the breach does not fire.
        let c = compute(
            &gov(),
            &terms(),
            &[start, at(InputKind::Stop, "2026-04-05 12:00")],
            riyadh("2026-04-07 00:00"),
        );
        assert_eq!((c.state, c.breach), (State::Met, None));
        assert_eq!(c.deadline, Some(riyadh("2026-04-05 12:00")));
        // Paused exactly at the deadline: the breach fires.
        let c = compute(
            &gov(),
            &terms(),
            &[start, at(InputKind::Pause, "2026-04-05 12:00")],
            riyadh("2026-04-07 00:00"),
        );
        assert_eq!(c.breach, Some(riyadh("2026-04-05 12:00")));
        // A deadline at a window end, stopped in the gap after it: breached then met.
        let c = compute(
            &gov(),
            &terms(),
            &[
                at(InputKind::Start, "2026-04-05 10:30"),
                at(InputKind::Stop, "2026-04-05 16:00"),
            ],
            riyadh("2026-04-07 00:00"),
        );
        assert_eq!(
            (c.state, c.breach),
            (State::BreachedThenMet, Some(riyadh("2026-04-05 14:30")))
        );
    }

    #[test]
    fn order_and_duplicates_do_not_matter() {
        let inputs = vec![
            at(InputKind::Stop, "2026-04-06 11:00"),
            at(InputKind::Resume, "2026-04-06 09:00"),
            at(InputKind::Start, "2026-04-05 08:00"),
            at(InputKind::Pause, "2026-04-05 09:00"),
            at(InputKind::Pause, "2026-04-05 09:00"),
            at(InputKind::Start, "2026-04-05 08:00"),
        ];
        let mut reversed = inputs.clone();
        reversed.reverse();
        let now = riyadh("2026-04-10 00:00");
        assert_eq!(
            compute(&gov(), &terms(), &inputs, now),
            compute(&gov(), &terms(), &reversed, now)
        );
        assert_eq!(compute(&gov(), &terms(), &inputs, now).state, State::Met);
    }

    #[test]
    fn a_resume_arriving_after_the_stop_it_preceded_gives_the_full_knowledge_clock() {
        let start = at(InputKind::Start, "2026-04-05 08:00");
        let pause = at(InputKind::Pause, "2026-04-05 09:00");
        let resume = at(InputKind::Resume, "2026-04-06 09:00");
        let stop = at(InputKind::Stop, "2026-04-06 11:00");
        let now = riyadh("2026-04-10 00:00");
        // The stop arrives first: the clock ends paused, an hour counted.
        let early = compute(&gov(), &terms(), &[start, pause, stop], now);
        assert_eq!((early.state, early.elapsed), (State::Met, hours(1)));
        // Then the resume that happened before it: three hours, met.
        let late = compute(&gov(), &terms(), &[start, pause, stop, resume], now);
        let full = compute(&gov(), &terms(), &[start, pause, resume, stop], now);
        assert_eq!(late, full);
        assert_eq!((late.state, late.elapsed), (State::Met, hours(3)));
    }

    #[test]
    fn warnings_round_up_to_whole_minutes() {
        assert_eq!(
            warning_threshold(Duration::from_secs(7 * 60), 0.5),
            Duration::from_secs(4 * 60)
        );
        assert_eq!(
            warning_threshold(hours(4), 0.75),
            Duration::from_secs(180 * 60)
        );
    }
}
