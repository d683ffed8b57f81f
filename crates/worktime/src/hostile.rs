//! Hostile input, as a fuzzer would send it, on the stable toolchain: random
//! calendars (valid or not, any zone, dates anywhere chrono can hold),
//! targets from zero to `u64::MAX` seconds and instants from chrono's first
//! to its last. `make test` runs it for a fixed number of cases (about ten
//! seconds in a debug build; `PROPTEST_CASES` raises it for a longer soak).
//!
//! What must hold for every input: nothing panics; building either fails
//! with violations or gives a calendar; every answer lies within the
//! measured span; `add_working` is monotonic in its target and in its start;
//! and `working_between` gives back the target `add_working` consumed.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use proptest::prelude::*;

use crate::{
    Calendar, CalendarSpec, Day, EARLIEST_INSTANT, Holiday, HoursOverride, LATEST_INSTANT,
    Substitution, WeeklyHours, WindowSpec, WorkingDuration,
};

/// Zones with odd offsets and daylight saving as well as the Gulf's.
const ZONES: [&str; 8] = [
    "Asia/Riyadh",
    "Asia/Muscat",
    "UTC",
    "Europe/London",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "Nowhere/Atlantis",
];

fn hh_mm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Mostly well-formed windows (sorted boundaries paired up), sometimes
/// anything at all.
fn windows() -> impl Strategy<Value = Vec<WindowSpec>> {
    prop_oneof![
        4 => proptest::collection::btree_set(0u32..=1440, 0..6).prop_map(|points| {
            let points: Vec<u32> = points.into_iter().collect();
            points
                .chunks_exact(2)
                .map(|p| WindowSpec::new(&hh_mm(p[0]), &hh_mm(p[1])))
                .collect()
        }),
        1 => proptest::collection::vec(
            (0u32..1600, 0u32..1600).prop_map(|(a, b)| WindowSpec::new(&hh_mm(a), &hh_mm(b))),
            0..3,
        ),
    ]
}

fn day() -> impl Strategy<Value = Day> {
    (0usize..7).prop_map(|i| Day::ALL[i])
}

/// Dates near the measured span mostly, anywhere chrono can hold sometimes.
fn date() -> impl Strategy<Value = NaiveDate> {
    prop_oneof![
        6 => (-400i64..(200 * 366 + 400)).prop_map(|d| {
            crate::EARLIEST_DATE + chrono::TimeDelta::days(d)
        }),
        1 => (NaiveDate::MIN.num_days_from_ce()..=NaiveDate::MAX.num_days_from_ce())
            .prop_map(|d| NaiveDate::from_num_days_from_ce_opt(d).unwrap_or(NaiveDate::MAX)),
        1 => Just(NaiveDate::MAX),
        1 => Just(NaiveDate::MIN),
    ]
}

fn range() -> impl Strategy<Value = (NaiveDate, NaiveDate)> {
    prop_oneof![
        4 => (date(), 0i64..40).prop_map(|(from, len)| {
            (from, from.checked_add_signed(chrono::TimeDelta::days(len)).unwrap_or(from))
        }),
        1 => (date(), date()),
    ]
}

/// Well-formed windows only: sorted boundaries paired up.
fn good_windows() -> impl Strategy<Value = Vec<WindowSpec>> {
    proptest::collection::btree_set(0u32..=1440, 2..7).prop_map(|points| {
        let points: Vec<u32> = points.into_iter().collect();
        points
            .chunks_exact(2)
            .map(|p| WindowSpec::new(&hh_mm(p[0]), &hh_mm(p[1])))
            .collect()
    })
}

/// A calendar that mostly passes validation, so the arithmetic gets to run
/// on it: each weekday in one of up to three groups of hours or weekend,
/// overrides one after another on working days, holidays inside the span.
fn buildable_spec() -> impl Strategy<Value = CalendarSpec> {
    let groups = proptest::collection::vec(0usize..4, 7);
    let hours = proptest::collection::vec(good_windows(), 3);
    let overrides = proptest::collection::vec(
        (
            0i64..120,
            0i64..40,
            windows(),
            proptest::collection::vec(day(), 0..3),
        ),
        0..4,
    );
    let holidays = proptest::collection::vec((0i64..(200 * 365), 0i64..10), 0..8);
    (
        0usize..ZONES.len() - 1,
        groups,
        hours,
        (0i64..(200 * 365), overrides),
        holidays,
        prop::bool::ANY,
        prop_oneof![3 => Just(None), 1 => (1u32..=1440).prop_map(Some)],
    )
        .prop_map(
            |(zone, groups, hours, (first, overrides), holidays, substitute, working_day)| {
                let weekly = (0..3)
                    .filter_map(|g| {
                        let days: Vec<Day> = (0..7)
                            .filter(|&d| groups[d] == g)
                            .map(|d| Day::ALL[d])
                            .collect();
                        (!days.is_empty()).then(|| WeeklyHours {
                            days,
                            windows: hours[g].clone(),
                        })
                    })
                    .collect::<Vec<_>>();
                let working: Vec<Day> = weekly
                    .iter()
                    .filter(|w| !w.windows.is_empty())
                    .flat_map(|w| w.days.clone())
                    .collect();
                let mut next = crate::EARLIEST_DATE + chrono::TimeDelta::days(first);
                let overrides = overrides
                    .into_iter()
                    .map(|(gap, len, windows, named)| {
                        let from = next + chrono::TimeDelta::days(gap);
                        let to = from + chrono::TimeDelta::days(len);
                        next = to + chrono::TimeDelta::days(1);
                        let mut days: Vec<Day> = Vec::new();
                        for d in named {
                            if working.contains(&d) && !days.contains(&d) {
                                days.push(d);
                            }
                        }
                        HoursOverride {
                            name: "override".into(),
                            from,
                            to,
                            windows,
                            days,
                        }
                    })
                    .collect();
                let holidays = holidays
                    .into_iter()
                    .map(|(at, len)| {
                        let from = crate::EARLIEST_DATE + chrono::TimeDelta::days(at);
                        Holiday {
                            name: "holiday".into(),
                            from,
                            to: from + chrono::TimeDelta::days(len),
                        }
                    })
                    .collect();
                let substitutions = if substitute {
                    vec![Substitution {
                        falls_on: Day::Friday,
                        observed_on: Day::Thursday,
                    }]
                } else {
                    vec![]
                };
                CalendarSpec {
                    time_zone: ZONES[zone].into(),
                    always_open: false,
                    weekly,
                    overrides,
                    holidays,
                    substitutions,
                    working_day_minutes: working_day,
                }
            },
        )
}

/// Anything at all: unknown zones, dates anywhere chrono can hold, broken
/// windows, duplicate days.
fn wild_spec() -> impl Strategy<Value = CalendarSpec> {
    let weekly = proptest::collection::vec(
        (proptest::collection::vec(day(), 0..4), windows())
            .prop_map(|(days, windows)| WeeklyHours { days, windows }),
        0..4,
    );
    let overrides = proptest::collection::vec(
        (range(), windows(), proptest::collection::vec(day(), 0..4)).prop_map(
            |((from, to), windows, days)| HoursOverride {
                name: "override".into(),
                from,
                to,
                windows,
                days,
            },
        ),
        0..4,
    );
    let holidays = proptest::collection::vec(
        range().prop_map(|(from, to)| Holiday {
            name: "holiday".into(),
            from,
            to,
        }),
        0..6,
    );
    let substitutions = proptest::collection::vec(
        (day(), day()).prop_map(|(falls_on, observed_on)| Substitution {
            falls_on,
            observed_on,
        }),
        0..3,
    );
    (
        0usize..ZONES.len(),
        prop::bool::weighted(0.15),
        weekly,
        overrides,
        holidays,
        substitutions,
        prop_oneof![3 => Just(None), 1 => any::<u32>().prop_map(Some), 1 => (1u32..=1440).prop_map(Some)],
    )
        .prop_map(
            |(zone, always_open, weekly, overrides, holidays, substitutions, working_day)| {
                CalendarSpec {
                    time_zone: ZONES[zone].into(),
                    always_open,
                    weekly,
                    overrides,
                    holidays,
                    substitutions,
                    working_day_minutes: working_day,
                }
            },
        )
}

/// Instants in the measured span mostly, at its edges, and anywhere.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let span = LATEST_INSTANT.timestamp() - EARLIEST_INSTANT.timestamp();
    prop_oneof![
        6 => (0..span).prop_map(|s| EARLIEST_INSTANT + chrono::TimeDelta::seconds(s)),
        2 => (-3 * 86_400i64..3 * 86_400).prop_map(|s| EARLIEST_INSTANT + chrono::TimeDelta::seconds(s)),
        2 => (-3 * 86_400i64..3 * 86_400).prop_map(|s| LATEST_INSTANT + chrono::TimeDelta::seconds(s)),
        1 => any::<i64>().prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)),
        1 => Just(DateTime::<Utc>::MIN_UTC),
        1 => Just(DateTime::<Utc>::MAX_UTC),
    ]
}

/// Targets in whole seconds, from nothing to absurd.
fn target() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..90 * 86_400).prop_map(Duration::from_secs),
        2 => (0u64..4_000 * 86_400).prop_map(Duration::from_secs),
        1 => any::<u64>().prop_map(Duration::from_secs),
        1 => Just(Duration::MAX),
    ]
}

/// `a <= b` with `None` as "after the measured span", later than any instant.
fn no_later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

fn check_deadline(
    cal: &Calendar,
    start: DateTime<Utc>,
    target: Duration,
) -> Result<Option<DateTime<Utc>>, TestCaseError> {
    let deadline = cal.add_working(start, target);
    if target.is_zero() {
        prop_assert_eq!(deadline, Some(start));
        return Ok(deadline);
    }
    if let Some(due) = deadline {
        prop_assert!(due <= LATEST_INSTANT, "{due} is past the measured span");
        prop_assert!(
            due > start.max(EARLIEST_INSTANT),
            "{due} is not after {start}"
        );
        // What was added is what is counted back.
        prop_assert_eq!(cal.working_between(start, due), target);
    } else {
        // Only when there is not that much working time left in the span.
        prop_assert!(cal.working_between(start, LATEST_INSTANT) < target);
    }
    Ok(deadline)
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    ProptestConfig {
        cases,
        // A failing case is shrunk from a random history; keep it bounded.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hostile_calendars_targets_and_instants_never_break_the_arithmetic(
        spec in prop_oneof![
            5 => buildable_spec(),
            1 => (0usize..ZONES.len() - 1).prop_map(|z| CalendarSpec::always_open(ZONES[z])),
            1 => wild_spec(),
        ],
        start in instant(),
        later in instant(),
        targets in (target(), target()),
        days in any::<u32>(),
        minutes in any::<u32>(),
    ) {
        let Ok(cal) = spec.build() else {
            // Refused with violations rather than a panic: that is the point.
            return Ok(());
        };
        let (small, big) = if targets.0 <= targets.1 { targets } else { (targets.1, targets.0) };
        let to_small = check_deadline(&cal, start, small)?;
        let to_big = check_deadline(&cal, start, big)?;
        prop_assert!(no_later(to_small, to_big), "monotonic in the target");
        if later >= start {
            let from_later = cal.add_working(later, small);
            prop_assert!(no_later(to_small, from_later), "monotonic in the start");
        }
        let (a, b) = (start.min(later), start.max(later));
        let worked = cal.working_between(a, b);
        let span = (b.min(LATEST_INSTANT) - a.max(EARLIEST_INSTANT)).to_std().unwrap_or_default();
        prop_assert!(worked <= span, "{worked:?} of working time in {span:?}");
        match cal.next_working_instant(start) {
            Some(next) => {
                prop_assert!(next >= start && next < LATEST_INSTANT);
                prop_assert!(cal.is_working(next));
                prop_assert_eq!(cal.working_between(start, next), Duration::ZERO);
            }
            None => prop_assert_eq!(cal.working_between(start, LATEST_INSTANT), Duration::ZERO),
        }
        // Converting any target, however large, is exact and cannot overflow.
        let converted = cal.duration(WorkingDuration { days, minutes });
        prop_assert_eq!(
            converted.as_secs(),
            u64::from(days) * cal.working_day().as_secs() + u64::from(minutes) * 60
        );
    }
}
