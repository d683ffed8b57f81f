//! The data form of a calendar: what operators edit, seed files hold, the
//! partners service stores and the API carries. [`CalendarSpec::build`]
//! validates it (every problem, with its field path) into a [`Calendar`].

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::{Calendar, EARLIEST_DATE, LATEST_DATE, Override, Window};

/// A day of the week, spelled out (`sunday` ... `saturday`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Sunday,
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
}

impl Day {
    /// Every day, Sunday first.
    pub const ALL: [Day; 7] = [
        Day::Sunday,
        Day::Monday,
        Day::Tuesday,
        Day::Wednesday,
        Day::Thursday,
        Day::Friday,
        Day::Saturday,
    ];

    /// As chrono's weekday.
    pub fn weekday(self) -> Weekday {
        match self {
            Day::Sunday => Weekday::Sun,
            Day::Monday => Weekday::Mon,
            Day::Tuesday => Weekday::Tue,
            Day::Wednesday => Weekday::Wed,
            Day::Thursday => Weekday::Thu,
            Day::Friday => Weekday::Fri,
            Day::Saturday => Weekday::Sat,
        }
    }

    /// From chrono's weekday.
    pub fn from_weekday(w: Weekday) -> Self {
        Day::ALL[w.num_days_from_sunday() as usize]
    }

    /// The stored name: `sunday` ... `saturday`.
    pub fn name(self) -> &'static str {
        match self {
            Day::Sunday => "sunday",
            Day::Monday => "monday",
            Day::Tuesday => "tuesday",
            Day::Wednesday => "wednesday",
            Day::Thursday => "thursday",
            Day::Friday => "friday",
            Day::Saturday => "saturday",
        }
    }
}

/// A working window within one local day, `HH:MM` to `HH:MM` (end may be `24:00`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub start: String,
    pub end: String,
}

impl WindowSpec {
    /// `start`-`end` in `HH:MM`.
    pub fn new(start: &str, end: &str) -> Self {
        Self {
            start: start.into(),
            end: end.into(),
        }
    }
}

/// Working hours on some days of an ordinary week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyHours {
    pub days: Vec<Day>,
    pub windows: Vec<WindowSpec>,
}

/// Different hours for a date range (Ramadan hours, a one-day change) on
/// some weekdays. An empty `windows` closes those days.
///
/// Saudi and Omani offices keep Ramadan hours on their working days only: an
/// override changes the hours of the calendar's working weekdays (those with
/// weekly hours) and never turns a weekend into a working day. `days` names
/// the weekdays it applies to; empty, or absent in stored JSON and TOML (the
/// serde default, so calendars stored before the field existed keep their
/// meaning), it applies to every working weekday.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoursOverride {
    pub name: String,
    pub from: NaiveDate,
    /// Inclusive.
    pub to: NaiveDate,
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
    /// The weekdays it applies to, each a working weekday; empty for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
}

/// A holiday: one date or an inclusive date range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holiday {
    pub name: String,
    pub from: NaiveDate,
    /// Inclusive; equal to `from` for a single-day holiday.
    pub to: NaiveDate,
}

/// "A single-day holiday that falls on `falls_on` is also observed on the
/// nearest `observed_on`" (the Saudi rule: Friday to Thursday, Saturday to
/// Sunday). The original day stays a holiday; observed days never cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substitution {
    pub falls_on: Day,
    pub observed_on: Day,
}

/// A calendar as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarSpec {
    /// IANA time zone, e.g. `Asia/Riyadh`.
    pub time_zone: String,
    /// Every minute counts, holidays included (urgent 24x7 work).
    #[serde(default)]
    pub always_open: bool,
    #[serde(default)]
    pub weekly: Vec<WeeklyHours>,
    #[serde(default)]
    pub overrides: Vec<HoursOverride>,
    #[serde(default)]
    pub holidays: Vec<Holiday>,
    #[serde(default)]
    pub substitutions: Vec<Substitution>,
    /// Length of one "working day" in targets such as "5 working days"; by
    /// default the longest ordinary day (1440 when always open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_day_minutes: Option<u32>,
}

/// One problem with a calendar spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field path, e.g. `weekly[0].windows[1].end`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Longest holiday or override range accepted, in days.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Parses `HH:MM` into seconds of the day; `24:00` is the end of the day.
pub fn parse_time_of_day(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (u32::from_str(h).ok()?, u32::from_str(m).ok()?);
    match (h, m) {
        (24, 0) => Some(86_400),
        (0..=23, 0..=59) => Some(h * 3600 + m * 60),
        _ => None,
    }
}

fn windows(specs: &[WindowSpec], path: &str, violations: &mut Vec<Violation>) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for (i, w) in specs.iter().enumerate() {
        let start = parse_time_of_day(&w.start).filter(|s| *s < 86_400);
        let end = parse_time_of_day(&w.end);
        if start.is_none() {
            violations.push(Violation {
                field: format!("{path}[{i}].start"),
                message: "must be HH:MM between 00:00 and 23:59".into(),
            });
        }
        if end.is_none() {
            violations.push(Violation {
                field: format!("{path}[{i}].end"),
                message: "must be HH:MM between 00:01 and 24:00".into(),
            });
        }
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                violations.push(Violation {
                    field: format!("{path}[{i}].end"),
                    message:
                        "must be after start (split a shift that crosses midnight into two windows)"
                            .into(),
                });
            } else if out.last().is_some_and(|prev| start < prev.end) {
                violations.push(Violation {
                    field: format!("{path}[{i}].start"),
                    message: "windows must be in order and must not overlap".into(),
                });
            } else {
                out.push(Window { start, end });
            }
        }
    }
    out
}

fn check_range(from: NaiveDate, to: NaiveDate, path: &str, violations: &mut Vec<Violation>) {
    // Working time is measured between EARLIEST_INSTANT and LATEST_INSTANT
    // only; a date outside would never matter and could overflow date
    // arithmetic (a substituted day, a changed range).
    for (date, field) in [(from, "from"), (to, "to")] {
        if !(EARLIEST_DATE..=LATEST_DATE).contains(&date) {
            violations.push(Violation {
                field: format!("{path}.{field}"),
                message: format!("must be between {EARLIEST_DATE} and {LATEST_DATE}"),
            });
        }
    }
    if to < from {
        violations.push(Violation {
            field: format!("{path}.to"),
            message: "must not be before from".into(),
        });
    } else if (to - from).num_days() >= MAX_RANGE_DAYS {
        violations.push(Violation {
            field: format!("{path}.to"),
            message: format!("a range may span at most {MAX_RANGE_DAYS} days"),
        });
    }
}

impl CalendarSpec {
    /// Validates the spec and builds the calendar, or lists every problem.
    pub fn build(&self) -> Result<Calendar, Vec<Violation>> {
        let mut v = Vec::new();
        let tz = chrono_tz::Tz::from_str(&self.time_zone).ok();
        if tz.is_none() {
            v.push(Violation {
                field: "time_zone".into(),
                message: format!(
                    "'{}' is not an IANA time zone such as Asia/Riyadh",
                    self.time_zone
                ),
            });
        }
        let before_weekly = v.len();
        let mut weekly: [Vec<Window>; 7] = Default::default();
        let mut seen = [false; 7];
        for (i, hours) in self.weekly.iter().enumerate() {
            let ws = windows(&hours.windows, &format!("weekly[{i}].windows"), &mut v);
            if hours.days.is_empty() {
                v.push(Violation {
                    field: format!("weekly[{i}].days"),
                    message: "must name at least one day".into(),
                });
            }
            for day in &hours.days {
                let idx = day.weekday().num_days_from_sunday() as usize;
                if seen[idx] {
                    v.push(Violation {
                        field: format!("weekly[{i}].days"),
                        message: format!("{day:?} already has hours").to_lowercase(),
                    });
                }
                seen[idx] = true;
                weekly[idx] = ws.clone();
            }
        }
        // Only when the windows themselves were fine: an invalid window is
        // already reported and would make every day look empty.
        if !self.always_open
            && v.len() == before_weekly
            && weekly.iter().all(Vec::is_empty)
            && !self.weekly.is_empty()
        {
            v.push(Violation {
                field: "weekly".into(),
                message: "at least one day must have working hours".into(),
            });
        }
        if !self.always_open && self.weekly.is_empty() {
            v.push(Violation {
                field: "weekly".into(),
                message: "is required unless always_open".into(),
            });
        }

        // An override applies to working weekdays only (bit `n` for the day
        // `n` days from Sunday). Read from the spec, so that an invalid
        // weekly window is not reported a second time through the overrides.
        let working_days: u8 = self
            .weekly
            .iter()
            .filter(|hours| !hours.windows.is_empty())
            .flat_map(|hours| &hours.days)
            .fold(0, |mask, day| {
                mask | 1 << day.weekday().num_days_from_sunday()
            });
        let mut overrides = Vec::new();
        for (i, o) in self.overrides.iter().enumerate() {
            let path = format!("overrides[{i}]");
            check_range(o.from, o.to, &path, &mut v);
            let ws = windows(&o.windows, &format!("{path}.windows"), &mut v);
            let mut named: u8 = 0;
            for (j, day) in o.days.iter().enumerate() {
                let bit = 1u8 << day.weekday().num_days_from_sunday();
                if named & bit != 0 {
                    v.push(Violation {
                        field: format!("{path}.days[{j}]"),
                        message: format!("{} is named twice", day.name()),
                    });
                } else if !self.always_open && working_days & bit == 0 {
                    v.push(Violation {
                        field: format!("{path}.days[{j}]"),
                        message: format!(
                            "{} has no weekly hours: an override changes the hours of working days and never makes a weekend working",
                            day.name()
                        ),
                    });
                }
                named |= bit;
            }
            let days = if o.days.is_empty() {
                working_days
            } else {
                named & working_days
            };
            overrides.push((o.from, o.to, days, ws, i));
        }
        overrides.sort_by_key(|(from, ..)| *from);
        for pair in overrides.windows(2) {
            if pair[1].0 <= pair[0].1 {
                v.push(Violation {
                    field: format!("overrides[{}].from", pair[1].4),
                    message: format!("overlaps overrides[{}]", pair[0].4),
                });
            }
        }

        let mut holidays = Vec::new();
        for (i, h) in self.holidays.iter().enumerate() {
            check_range(h.from, h.to, &format!("holidays[{i}]"), &mut v);
            if h.name.trim().is_empty() {
                v.push(Violation {
                    field: format!("holidays[{i}].name"),
                    message: "is required".into(),
                });
            }
            holidays.push((h.from, h.to));
        }
        for (i, s) in self.substitutions.iter().enumerate() {
            if s.falls_on == s.observed_on {
                v.push(Violation {
                    field: format!("substitutions[{i}].observed_on"),
                    message: "must differ from falls_on".into(),
                });
            }
        }
        // Observed days: single-day holidays only, the original kept, no cascade.
        let singles: Vec<NaiveDate> = holidays
            .iter()
            .filter(|(from, to)| from == to)
            .map(|(d, _)| *d)
            .collect();
        for date in singles {
            for s in &self.substitutions {
                if Day::from_weekday(chrono::Datelike::weekday(&date)) == s.falls_on {
                    let ahead = (s.observed_on.weekday().num_days_from_sunday() as i64
                        - s.falls_on.weekday().num_days_from_sunday() as i64)
                        .rem_euclid(7);
                    let shift = if ahead <= 3 { ahead } else { ahead - 7 };
                    // Checked: an out-of-range date is reported above but
                    // still walks through here.
                    if let Some(observed) = date.checked_add_signed(chrono::TimeDelta::days(shift))
                    {
                        holidays.push((observed, observed));
                    }
                }
            }
        }
        if let Some(minutes) = self.working_day_minutes
            && !(1..=1440).contains(&minutes)
        {
            v.push(Violation {
                field: "working_day_minutes".into(),
                message: "must be between 1 and 1440".into(),
            });
        }
        match (tz, v.is_empty()) {
            (Some(tz), true) => Ok(Calendar::assemble(
                tz,
                self.always_open,
                weekly,
                overrides
                    .into_iter()
                    .map(|(from, to, days, windows, _)| Override {
                        from,
                        to,
                        days,
                        windows,
                    })
                    .collect(),
                holidays,
                self.working_day_minutes,
            )),
            _ => Err(v),
        }
    }

    /// A 24x7 calendar in `time_zone`.
    pub fn always_open(time_zone: &str) -> Self {
        Self {
            time_zone: time_zone.into(),
            always_open: true,
            weekly: Vec::new(),
            overrides: Vec::new(),
            holidays: Vec::new(),
            substitutions: Vec::new(),
            working_day_minutes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse_strictly() {
        assert_eq!(parse_time_of_day("07:30"), Some(27_000));
        assert_eq!(parse_time_of_day("24:00"), Some(86_400));
        for bad in ["7:30", "24:01", "12:60", "noon", "", "12:3"] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let spec = CalendarSpec {
            time_zone: "Mars/Olympus".into(),
            always_open: false,
            weekly: vec![
                WeeklyHours {
                    days: vec![Day::Sunday],
                    windows: vec![
                        WindowSpec::new("14:30", "07:30"),
                        WindowSpec::new("25:00", "26:00"),
                    ],
                },
                WeeklyHours {
                    days: vec![Day::Sunday],
                    windows: vec![
                        WindowSpec::new("08:00", "12:00"),
                        WindowSpec::new("11:00", "13:00"),
                    ],
                },
            ],
            overrides: vec![],
            holidays: vec![Holiday {
                name: "".into(),
                from: NaiveDate::from_ymd_opt(2026, 3, 2).expect("date"),
                to: NaiveDate::from_ymd_opt(2026, 3, 1).expect("date"),
            }],
            substitutions: vec![Substitution {
                falls_on: Day::Friday,
                observed_on: Day::Friday,
            }],
            working_day_minutes: Some(0),
        };
        let fields: Vec<String> = spec
            .build()
            .expect_err("invalid")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "time_zone",
                "weekly[0].windows[0].end",
                "weekly[0].windows[1].start",
                "weekly[0].windows[1].end",
                "weekly[1].windows[1].start",
                "weekly[1].days",
                "holidays[0].to",
                "holidays[0].name",
                "substitutions[0].observed_on",
                "working_day_minutes",
            ]
        );
    }

    #[test]
    fn specs_read_from_toml() {
        let spec: CalendarSpec = toml::from_str(
            r#"
            time_zone = "Asia/Riyadh"
            substitutions = [{ falls_on = "friday", observed_on = "thursday" }]
            [[weekly]]
            days = ["sunday", "monday", "tuesday", "wednesday", "thursday"]
            windows = [{ start = "07:30", end = "14:30" }]
            [[holidays]]
            name = "National Day"
            from = "2026-09-23"
            to = "2026-09-23"
            "#,
        )
        .expect("toml");
        let calendar = spec.build().expect("valid");
        assert_eq!(calendar.working_day().as_secs(), 7 * 3600);
    }
}
