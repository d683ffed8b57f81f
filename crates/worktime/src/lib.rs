//! Business calendars and working-time arithmetic: the engine every SLA clock
//! in Baladiya runs on. Pure: no IO, no async, no clock of its own.
//!
//! A [`Calendar`] is a time zone, working windows per weekday (split shifts
//! allowed), date-range hour overrides on some weekdays (Ramadan hours, a
//! one-day change), holidays (dates or ranges) with substitution rules, or
//! 24x7. For a local date the hours are, in order of precedence: none on a
//! holiday, else the override covering the date if it names the date's
//! weekday (by default every working weekday; never a weekend), else the
//! weekday's windows.
//!
//! The edge rules (DOMAIN.md, "SLA semantics"):
//! - a deadline is the instant the last working second ends: a count that
//!   completes exactly at a window's end returns that window end, not the next
//!   window's start;
//! - counting begins at the next working instant when started outside hours;
//! - windows are half-open `[start, end)`: the end instant is not working.
//!
//! No input panics. Working time exists only between [`EARLIEST_INSTANT`]
//! and [`LATEST_INSTANT`] (2000 to 2200 UTC): outside, no instant is working,
//! so [`Calendar::working_between`] counts only the part inside and
//! [`Calendar::add_working`] answers `None` for a deadline past the end. Every
//! date the arithmetic touches is then within a few days of that span, far
//! from chrono's limits, and the remaining date steps are checked anyway.
//! The API bounds targets ([`MAX_TARGET`]) and escalation delays
//! ([`MAX_DELAY`]) so that a live clock on a calendar with ordinary hours
//! never gets near the end of the span; a calendar open a few minutes a week
//! still could, and its clocks then have no deadline rather than a wrong one.
//!
//! Arithmetic walks day by day and skips whole ordinary weeks at once, so a
//! 60-working-day target across a year of holidays takes microseconds.

mod spec;

use std::time::Duration;

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc,
};
use chrono_tz::Tz;

pub use spec::{
    CalendarSpec, Day, Holiday, HoursOverride, Substitution, Violation, WeeklyHours, WindowSpec,
    parse_time_of_day,
};

const DAY_SECS: u32 = 86_400;

/// The first instant working time is measured from: 2000-01-01T00:00:00Z.
/// Nothing the platform measures started earlier; the API refuses instants
/// before it.
pub const EARLIEST_INSTANT: DateTime<Utc> = match DateTime::from_timestamp(946_684_800, 0) {
    Some(t) => t,
    None => panic!("2000-01-01 is a valid instant"),
};

/// The end of measured working time: 2200-01-01T00:00:00Z. Far beyond any
/// bounded target from any accepted instant on an ordinary calendar, and far
/// inside what a protobuf `Timestamp` holds (to 9999-12-31), so a deadline the
/// platform computes can always be sent. The API refuses instants after it.
pub const LATEST_INSTANT: DateTime<Utc> = match DateTime::from_timestamp(7_258_118_400, 0) {
    Some(t) => t,
    None => panic!("2200-01-01 is a valid instant"),
};

/// The first date a calendar's holidays and overrides may name.
pub const EARLIEST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2000, 1, 1) {
    Some(d) => d,
    None => panic!("2000-01-01 is a valid date"),
};

/// The last date a calendar's holidays and overrides may name.
pub const LATEST_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2199, 12, 31) {
    Some(d) => d,
    None => panic!("2199-12-31 is a valid date"),
};

/// The longest target a clock may have: 3,650 working days (ten years of
/// 365 working days; the longest real target, a 60-day license, is far
/// below), or as many minutes as ten years of 24x7 time. Each part is bounded
/// on its own: a target is `days` plus `minutes`.
pub const MAX_TARGET: WorkingDuration = WorkingDuration {
    days: 3_650,
    minutes: 3_650 * 24 * 60,
};

/// The longest delay after a breach for an escalation level: 365 working
/// days, or as many minutes as a year of 24x7 time.
pub const MAX_DELAY: WorkingDuration = WorkingDuration {
    days: 365,
    minutes: 365 * 24 * 60,
};

/// Whether `t` is an instant the platform measures: within
/// `[EARLIEST_INSTANT, LATEST_INSTANT]`.
pub fn instant_in_range(t: DateTime<Utc>) -> bool {
    (EARLIEST_INSTANT..=LATEST_INSTANT).contains(&t)
}

/// Why an instant is out of range, for a field violation.
pub fn instant_range_message() -> String {
    format!(
        "must be between {} and {}",
        EARLIEST_INSTANT.to_rfc3339(),
        LATEST_INSTANT.to_rfc3339()
    )
}

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

    /// The parts beyond `limit` (such as [`MAX_TARGET`]), each as
    /// (`"days"` or `"minutes"`, why), for field violations.
    pub fn excess(&self, limit: WorkingDuration) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.days > limit.days {
            out.push((
                "days",
                format!("must be at most {} working days", limit.days),
            ));
        }
        if self.minutes > limit.minutes {
            out.push((
                "minutes",
                format!("must be at most {} minutes", limit.minutes),
            ));
        }
        out
    }
}

/// An hours override as the arithmetic uses it.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    pub(crate) from: NaiveDate,
    /// Inclusive.
    pub(crate) to: NaiveDate,
    /// The weekdays it applies to: bit `n` for the day `n` days from Sunday,
    /// only ever working weekdays.
    pub(crate) days: u8,
    pub(crate) windows: Vec<Window>,
}

/// A validated business calendar. Build one with [`CalendarSpec::build`].
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    always_open: bool,
    /// Indexed by `num_days_from_sunday`.
    weekly: [Vec<Window>; 7],
    /// Sorted, non-overlapping.
    overrides: Vec<Override>,
    /// Sorted, merged inclusive ranges (observed substitution days included).
    holidays: Vec<(NaiveDate, NaiveDate)>,
    /// Working seconds in an ordinary week.
    week_secs: u64,
    working_day_secs: u64,
    /// The local date of `LATEST_INSTANT`: no later date has working time.
    last_date: NaiveDate,
}

impl Calendar {
    pub(crate) fn assemble(
        tz: Tz,
        always_open: bool,
        weekly: [Vec<Window>; 7],
        overrides: Vec<Override>,
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
            last_date: LATEST_INSTANT.with_timezone(&tz).date_naive(),
        }
    }

    /// The calendar's time zone.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The length of one working day in targets such as "5 working days".
    pub fn working_day(&self) -> Duration {
        Duration::from_secs(self.working_day_secs)
    }

    /// The working time a target stands for on this calendar. Cannot
    /// overflow: at most `u32::MAX` days of 86,400 s plus `u32::MAX` minutes
    /// is about 3.9e14 s, far below `u64::MAX`.
    pub fn duration(&self, target: WorkingDuration) -> Duration {
        Duration::from_secs(
            u64::from(target.days) * self.working_day_secs + u64::from(target.minutes) * 60,
        )
    }

    fn is_holiday(&self, date: NaiveDate) -> bool {
        let i = self.holidays.partition_point(|(_, to)| *to < date);
        self.holidays.get(i).is_some_and(|(from, _)| *from <= date)
    }

    /// The override's windows for a date it covers and whose weekday it names.
    fn override_on(&self, date: NaiveDate, weekday: usize) -> Option<&[Window]> {
        let i = self.overrides.partition_point(|o| o.to < date);
        self.overrides
            .get(i)
            .filter(|o| o.from <= date && o.days & (1 << weekday) != 0)
            .map(|o| o.windows.as_slice())
    }

    /// The working windows of a local date: holiday, else override, else weekly.
    fn windows_on(&self, date: NaiveDate) -> &[Window] {
        if self.is_holiday(date) {
            return &[];
        }
        let weekday = date.weekday().num_days_from_sunday() as usize;
        if let Some(ws) = self.override_on(date, weekday) {
            return ws;
        }
        &self.weekly[weekday]
    }

    /// Whether the 7 days from `date` are an ordinary week: no holiday, no
    /// override, the same UTC offset at both ends (no DST change), and
    /// wholly inside the measured span (so a skipped week never counts time
    /// outside it).
    fn ordinary_week(&self, date: NaiveDate) -> bool {
        let Some(end) = date.checked_add_days(Days::new(7)) else {
            return false;
        };
        let h = self.holidays.partition_point(|(_, to)| *to < date);
        if self.holidays.get(h).is_some_and(|(from, _)| *from < end) {
            return false;
        }
        let o = self.overrides.partition_point(|o| o.to < date);
        if self.overrides.get(o).is_some_and(|o| o.from < end) {
            return false;
        }
        let (week_start, week_end) = (self.local_to_utc(date, 0), self.local_to_utc(end, 0));
        week_start >= EARLIEST_INSTANT
            && week_end <= LATEST_INSTANT
            && week_start.checked_add_days(Days::new(7)) == Some(week_end)
    }

    /// The UTC instant of `secs` after local midnight of `date`. A local time
    /// that does not exist (a DST gap) moves forward to the first that does;
    /// an ambiguous one takes the earlier instant. Called with dates near the
    /// measured span only, so the steps below cannot overflow; they are
    /// checked all the same and saturate.
    fn local_to_utc(&self, date: NaiveDate, secs: u32) -> DateTime<Utc> {
        let midnight = date.and_time(NaiveTime::MIN);
        // Dates here lie within days of the measured span, centuries from
        // chrono's limits: the sums below cannot overflow, and saturate if
        // they ever did.
        let naive = midnight
            .checked_add_signed(TimeDelta::seconds(i64::from(secs)))
            .unwrap_or(midnight);
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
            LocalResult::None => {}
        }
        // In a DST gap: move forward to the first local time that exists.
        for shift_minutes in (15..=240).step_by(15) {
            let Some(shifted) = naive.checked_add_signed(TimeDelta::minutes(shift_minutes)) else {
                break;
            };
            match self.tz.from_local_datetime(&shifted) {
                LocalResult::Single(t) => return t.with_timezone(&Utc),
                LocalResult::Ambiguous(a, _) => return a.with_timezone(&Utc),
                LocalResult::None => continue,
            }
        }
        // No zone has a gap longer than four hours; fall back to UTC.
        Utc.from_utc_datetime(&naive)
    }

    /// The local date of an instant of the measured span.
    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// The UTC working intervals of a local date, in order. Not clipped to
    /// the measured span: callers clamp their instants into it and check
    /// what they answer, which keeps this, the hot path, as it was.
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
    /// No instant outside `[EARLIEST_INSTANT, LATEST_INSTANT)` is working.
    pub fn is_working(&self, t: DateTime<Utc>) -> bool {
        if !(EARLIEST_INSTANT..LATEST_INSTANT).contains(&t) {
            return false;
        }
        if self.always_open {
            return true;
        }
        let date = self.local_date(t);
        self.intervals_on(date).any(|(s, e)| s <= t && t < e)
    }

    /// `t` if it is working, else the start of the next working window;
    /// `None` if there is none before `LATEST_INSTANT`.
    pub fn next_working_instant(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.max(EARLIEST_INSTANT);
        if t >= LATEST_INSTANT {
            return None;
        }
        if self.always_open {
            return Some(t);
        }
        let last = self.last_date;
        let mut date = self.local_date(t);
        while date <= last {
            if let Some((s, _)) = self.intervals_on(date).find(|(_, e)| *e > t) {
                let next = s.max(t);
                return (next < LATEST_INSTANT).then_some(next);
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// The deadline: the instant `duration` of working time after `start` ends.
    /// Counting begins at the next working instant; a count that completes at
    /// a window's end returns that window end. A zero duration returns `start`.
    /// `None` when the deadline would fall after `LATEST_INSTANT` (a start
    /// before `EARLIEST_INSTANT` counts from there).
    pub fn add_working(&self, start: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
        let mut remaining = duration.as_secs();
        let nanos = duration.subsec_nanos();
        if remaining == 0 && nanos == 0 {
            return Some(start);
        }
        let start = start.max(EARLIEST_INSTANT);
        if start >= LATEST_INSTANT {
            return None;
        }
        if self.always_open {
            let deadline = start.checked_add_signed(TimeDelta::from_std(duration).ok()?)?;
            return (deadline <= LATEST_INSTANT).then_some(deadline);
        }
        // Sub-second targets are not a business notion; round them up.
        if nanos > 0 {
            remaining = remaining.checked_add(1)?;
        }
        let last = self.last_date;
        let mut date = self.local_date(start);
        let mut first_day = true;
        while date <= last {
            if !first_day && self.week_secs > 0 {
                while remaining > self.week_secs && self.ordinary_week(date) {
                    remaining -= self.week_secs;
                    date = date.checked_add_days(Days::new(7))?;
                }
            }
            first_day = false;
            for (s, e) in self.intervals_on(date) {
                if e <= start {
                    continue;
                }
                let from = s.max(start);
                // Both within the measured span: a few billion seconds apart
                // at most, so the conversions below cannot lose anything.
                let available = (e - from).num_seconds().max(0) as u64;
                if remaining <= available {
                    // `start` is clamped into the span, so only the end needs
                    // checking (a week skipped past it leaves the deadline
                    // further still).
                    return from
                        .checked_add_signed(TimeDelta::seconds(remaining as i64))
                        .filter(|due| *due <= LATEST_INSTANT);
                }
                remaining -= available;
            }
            date = date.succ_opt()?;
        }
        None
    }

    /// Working time in `[a, b)`; zero when `b <= a`. Only the part inside
    /// `[EARLIEST_INSTANT, LATEST_INSTANT)` counts.
    pub fn working_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
        let (a, b) = (a.max(EARLIEST_INSTANT), b.min(LATEST_INSTANT));
        if b <= a {
            return Duration::ZERO;
        }
        if self.always_open {
            return (b - a).to_std().unwrap_or_default();
        }
        let mut total = TimeDelta::zero();
        let mut date = self.local_date(a);
        let last = self.local_date(b);
        let week = TimeDelta::seconds(self.week_secs as i64);
        let mut first_day = true;
        while date <= last {
            if !first_day && self.week_secs > 0 {
                while date
                    .checked_add_days(Days::new(7))
                    .is_some_and(|end| end < last)
                    && self.ordinary_week(date)
                {
                    total += week;
                    date = match date.checked_add_days(Days::new(7)) {
                        Some(d) => d,
                        None => break,
                    };
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

#[cfg(test)]
mod hostile;
