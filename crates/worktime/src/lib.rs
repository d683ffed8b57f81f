//! Business calendars and working-time arithmetic: the engine every SLA clock
//! in Baladiya runs on. Pure: no IO, no async, no clock of its own.
//!
//! A [`Calendar`] is a time zone, working windows per weekday (split shifts
//! allowed), date-range hour overrides (Ramadan hours, a one-day change),
//! holidays (dates or ranges) with substitution rules, or 24x7. For a local
//! date the hours are, in order of precedence: none on a holiday, else the
//! override covering the date, else the weekday's windows.
//!
//! The edge rules (DOMAIN.md, "SLA semantics"):
//! - a deadline is the instant the last working second ends: a count that
//!   completes exactly at a window's end returns that window end, not the next
//!   window's start;
//! - counting begins at the next working instant when started outside hours;
//! - windows are half-open `[start, end)`: the end instant is not working.
//!
//! Arithmetic walks day by day and skips whole ordinary weeks at once, so a
//! 60-working-day target across a year of holidays takes microseconds.

mod spec;

use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

pub use spec::{
    CalendarSpec, Day, Holiday, HoursOverride, Substitution, Violation, WeeklyHours, WindowSpec,
    parse_time_of_day,
};

const DAY_SECS: u32 = 86_400;
/// Safety net for searches over calendars closed for long stretches.
const MAX_SCAN_DAYS: u32 = 366 * 20;

/// One working window of a local day, in seconds since local midnight:
/// `[start, end)` with `end <= 86400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

/// A working duration as targets state it: whole working days (each as long
/// as the calendar's working day) plus minutes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct WorkingDuration {
    #[serde(default)]
    pub days: u32,
    #[serde(default)]
    pub minutes: u32,
}

impl WorkingDuration {
    /// Whether it is no time at all.
    pub fn is_zero(&self) -> bool {
        self.days == 0 && self.minutes == 0
    }
}

/// A validated business calendar. Build one with [`CalendarSpec::build`].
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    always_open: bool,
    /// Indexed by `num_days_from_sunday`.
    weekly: [Vec<Window>; 7],
    /// Sorted, non-overlapping `(from, to inclusive, windows)`.
    overrides: Vec<(NaiveDate, NaiveDate, Vec<Window>)>,
    /// Sorted, merged inclusive ranges (observed substitution days included).
    holidays: Vec<(NaiveDate, NaiveDate)>,
    /// Working seconds in an ordinary week.
    week_secs: u64,
    working_day_secs: u64,
}

impl Calendar {
    pub(crate) fn assemble(
        tz: Tz,
        always_open: bool,
        weekly: [Vec<Window>; 7],
        overrides: Vec<(NaiveDate, NaiveDate, Vec<Window>)>,
        mut holidays: Vec<(NaiveDate, NaiveDate)>,
        working_day_minutes: Option<u32>,
    ) -> Self {
        holidays.sort();
        let mut merged: Vec<(NaiveDate, NaiveDate)> = Vec::with_capacity(holidays.len());
        for (from, to) in holidays {
            match merged.last_mut() {
                Some(last) if from <= last.1.succ_opt().unwrap_or(last.1) => {
                    last.1 = last.1.max(to)
                }
                _ => merged.push((from, to)),
            }
        }
        let day_len = |ws: &Vec<Window>| ws.iter().map(|w| u64::from(w.end - w.start)).sum::<u64>();
        let week_secs = weekly.iter().map(day_len).sum();
        let longest_day = weekly.iter().map(day_len).max().unwrap_or(0);
        let working_day_secs = match (working_day_minutes, always_open) {
            (Some(m), _) => u64::from(m) * 60,
            (None, true) => u64::from(DAY_SECS),
            (None, false) => longest_day,
        };
        Self {
            tz,
            always_open,
            weekly,
            overrides,
            holidays: merged,
            week_secs,
            working_day_secs,
        }
    }

    /// The calendar's time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Whether every minute counts.
    pub fn is_always_open(&self) -> bool {
        self.always_open
    }

    /// The length of one working day in targets such as "5 working days".
    pub fn working_day(&self) -> Duration {
        Duration::from_secs(self.working_day_secs)
    }

    /// The working time a target stands for on this calendar.
    pub fn duration(&self, target: WorkingDuration) -> Duration {
        Duration::from_secs(
            u64::from(target.days) * self.working_day_secs + u64::from(target.minutes) * 60,
        )
    }

    fn is_holiday(&self, date: NaiveDate) -> bool {
        let i = self.holidays.partition_point(|(_, to)| *to < date);
        self.holidays.get(i).is_some_and(|(from, _)| *from <= date)
    }

    fn override_on(&self, date: NaiveDate) -> Option<&[Window]> {
        let i = self.overrides.partition_point(|(_, to, _)| *to < date);
        self.overrides
            .get(i)
            .filter(|(from, _, _)| *from <= date)
            .map(|(_, _, ws)| ws.as_slice())
    }

    /// The working windows of a local date: holiday, else override, else weekly.
    fn windows_on(&self, date: NaiveDate) -> &[Window] {
        if self.is_holiday(date) {
            return &[];
        }
        if let Some(ws) = self.override_on(date) {
            return ws;
        }
        &self.weekly[date.weekday().num_days_from_sunday() as usize]
    }

    /// Whether the 7 days from `date` are an ordinary week: no holiday, no
    /// override, and the same UTC offset at both ends (no DST change).
    fn ordinary_week(&self, date: NaiveDate) -> bool {
        let end = date + chrono::Duration::days(7);
        let h = self.holidays.partition_point(|(_, to)| *to < date);
        if self.holidays.get(h).is_some_and(|(from, _)| *from < end) {
            return false;
        }
        let o = self.overrides.partition_point(|(_, to, _)| *to < date);
        if self
            .overrides
            .get(o)
            .is_some_and(|(from, _, _)| *from < end)
        {
            return false;
        }
        self.local_to_utc(date, 0) + chrono::Duration::days(7) == self.local_to_utc(end, 0)
    }

    /// The UTC instant of `secs` after local midnight of `date`. A local time
    /// that does not exist (a DST gap) moves forward to the first that does;
    /// an ambiguous one takes the earlier instant.
    fn local_to_utc(&self, date: NaiveDate, secs: u32) -> DateTime<Utc> {
        let naive: NaiveDateTime =
            date.and_time(chrono::NaiveTime::MIN) + chrono::Duration::seconds(i64::from(secs));
        for shift_minutes in (0..=240).step_by(15) {
            match self
                .tz
                .from_local_datetime(&(naive + chrono::Duration::minutes(shift_minutes)))
            {
                LocalResult::Single(t) => return t.with_timezone(&Utc),
                LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
                LocalResult::None => continue,
            }
        }
        // No zone has a gap longer than four hours; fall back to UTC.
        Utc.from_utc_datetime(&naive)
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// The UTC working intervals of a local date, in order.
    fn intervals_on(
        &self,
        date: NaiveDate,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        self.windows_on(date).iter().map(move |w| {
            (
                self.local_to_utc(date, w.start),
                self.local_to_utc(date, w.end),
            )
        })
    }

    /// Whether `t` is inside a working window (window ends are not working).
    pub fn is_working(&self, t: DateTime<Utc>) -> bool {
        if self.always_open {
            return true;
        }
        let date = self.local_date(t);
        self.intervals_on(date).any(|(s, e)| s <= t && t < e)
    }

    /// `t` if it is working, else the start of the next working window.
    pub fn next_working_instant(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.always_open {
            return t;
        }
        let mut date = self.local_date(t);
        for _ in 0..MAX_SCAN_DAYS {
            if let Some((s, _)) = self.intervals_on(date).find(|(_, e)| *e > t) {
                return s.max(t);
            }
            date = date.succ_opt().unwrap_or(date);
        }
        t + chrono::Duration::days(i64::from(MAX_SCAN_DAYS))
    }

    /// The deadline: the instant `duration` of working time after `start` ends.
    /// Counting begins at the next working instant; a count that completes at
    /// a window's end returns that window end. A zero duration returns `start`.
    pub fn add_working(&self, start: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
        let mut remaining = duration.as_secs();
        let nanos = duration.subsec_nanos();
        if remaining == 0 && nanos == 0 {
            return start;
        }
        if self.always_open {
            return start + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        }
        // Sub-second targets are not a business notion; round them up.
        if nanos > 0 {
            remaining += 1;
        }
        let mut date = self.local_date(start);
        let mut first_day = true;
        for _ in 0..MAX_SCAN_DAYS * 2 {
            if !first_day && self.week_secs > 0 {
                while remaining > self.week_secs && self.ordinary_week(date) {
                    remaining -= self.week_secs;
                    date += chrono::Duration::days(7);
                }
            }
            first_day = false;
            for (s, e) in self.intervals_on(date) {
                if e <= start {
                    continue;
                }
                let from = s.max(start);
                let available = (e - from).num_seconds().max(0) as u64;
                if remaining <= available {
                    return from + chrono::Duration::seconds(remaining as i64);
                }
                remaining -= available;
            }
            date = date.succ_opt().unwrap_or(date);
        }
        start + chrono::Duration::days(i64::from(MAX_SCAN_DAYS))
    }

    /// Working time in `[a, b)`; zero when `b <= a`.
    pub fn working_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
        if b <= a {
            return Duration::ZERO;
        }
        if self.always_open {
            return (b - a).to_std().unwrap_or_default();
        }
        let mut total = chrono::Duration::zero();
        let mut date = self.local_date(a);
        let last = self.local_date(b);
        let mut first_day = true;
        while date <= last {
            if !first_day && self.week_secs > 0 {
                while date + chrono::Duration::days(7) < last && self.ordinary_week(date) {
                    total += chrono::Duration::seconds(self.week_secs as i64);
                    date += chrono::Duration::days(7);
                }
            }
            first_day = false;
            for (s, e) in self.intervals_on(date) {
                let (from, to) = (s.max(a), e.min(b));
                if to > from {
                    total += to - from;
                }
            }
            date = match date.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        total.to_std().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
