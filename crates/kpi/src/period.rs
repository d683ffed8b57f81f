//! Reporting periods in a municipality's time zone. Leadership reviews by
//! week, the Council of Amanahs by fortnight, and scorecards by month,
//! quarter and year; each is a run of whole local days turned into the UTC
//! instants `[start, end)` the facts are selected by, so an event at 23:30 on
//! the last evening of a month in Riyadh (20:30 UTC) counts in that month.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// The length of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    Day,
    /// Sunday to Saturday, the working week of the Gulf governments.
    Week,
    /// Two such weeks, counted from [`FORTNIGHT_ANCHOR`].
    Fortnight,
    Month,
    Quarter,
    Year,
}

impl Granularity {
    /// Every granularity, shortest first.
    pub const ALL: [Granularity; 6] = [
        Self::Day,
        Self::Week,
        Self::Fortnight,
        Self::Month,
        Self::Quarter,
        Self::Year,
    ];

    /// The lower-case name used in URLs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Fortnight => "fortnight",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    /// Reads [`Self::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }
}

/// The Sunday fortnights are counted from: 1 January 2023.
pub const FORTNIGHT_ANCHOR: NaiveDate = match NaiveDate::from_ymd_opt(2023, 1, 1) {
    Some(d) => d,
    None => panic!("valid date"),
};

/// One period: whole local days `first..=last` in `tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub granularity: Granularity,
    pub first: NaiveDate,
    pub last: NaiveDate,
    pub tz: Tz,
}

impl Period {
    /// The period of `granularity` that contains the local day `date`.
    pub fn containing(granularity: Granularity, date: NaiveDate, tz: Tz) -> Self {
        let first = match granularity {
            Granularity::Day => date,
            Granularity::Week => week_start(date),
            Granularity::Fortnight => {
                let week = week_start(date);
                let weeks = (week - FORTNIGHT_ANCHOR).num_days().div_euclid(7);
                week - Days::new(7 * weeks.rem_euclid(2) as u64)
            }
            Granularity::Month => date.with_day(1).unwrap_or(date),
            Granularity::Quarter => {
                let month = (date.month0() / 3) * 3 + 1;
                NaiveDate::from_ymd_opt(date.year(), month, 1).unwrap_or(date)
            }
            Granularity::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1).unwrap_or(date),
        };
        let next_first = match granularity {
            Granularity::Day => first + Days::new(1),
            Granularity::Week => first + Days::new(7),
            Granularity::Fortnight => first + Days::new(14),
            Granularity::Month => first + Months::new(1),
            Granularity::Quarter => first + Months::new(3),
            Granularity::Year => first + Months::new(12),
        };
        Self {
            granularity,
            first,
            last: next_first - Days::new(1),
            tz,
        }
    }

    /// The instant the period starts: local midnight of its first day.
    pub fn start(&self) -> DateTime<Utc> {
        local_midnight(self.first, self.tz)
    }

    /// The instant just after it: local midnight of the day after its last.
    pub fn end(&self) -> DateTime<Utc> {
        local_midnight(self.last + Days::new(1), self.tz)
    }

    /// The period right after this one.
    pub fn next(&self) -> Self {
        Self::containing(self.granularity, self.last + Days::new(1), self.tz)
    }

    /// The same period a year earlier (for growth): the period containing
    /// the day one year before this one's first day.
    pub fn year_earlier(&self) -> Self {
        Self::containing(self.granularity, self.first - Months::new(12), self.tz)
    }

    /// A short label: `2026-11-23`, `2026-11-22..2026-11-28`, `2026-11`,
    /// `2026-Q4`, `2026`.
    pub fn label(&self) -> String {
        match self.granularity {
            Granularity::Day => self.first.to_string(),
            Granularity::Week | Granularity::Fortnight => format!("{}..{}", self.first, self.last),
            Granularity::Month => self.first.format("%Y-%m").to_string(),
            Granularity::Quarter => {
                format!("{}-Q{}", self.first.year(), self.first.month0() / 3 + 1)
            }
            Granularity::Year => self.first.year().to_string(),
        }
    }

    /// The periods from the one containing `from` to the one containing `to`,
    /// oldest first; `None` if there would be more than `limit`.
    pub fn series(
        granularity: Granularity,
        from: NaiveDate,
        to: NaiveDate,
        tz: Tz,
        limit: usize,
    ) -> Option<Vec<Self>> {
        let mut out = Vec::new();
        let mut p = Self::containing(granularity, from, tz);
        while p.first <= to {
            if out.len() == limit {
                return None;
            }
            out.push(p);
            p = p.next();
        }
        Some(out)
    }
}

fn week_start(date: NaiveDate) -> NaiveDate {
    date - Days::new(u64::from(date.weekday().num_days_from_sunday()))
}

/// Local midnight; on a day that starts inside a daylight-saving gap, the
/// first instant of the day that exists.
fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut local = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("date")
    }

    fn riyadh(g: Granularity, date: &str) -> Period {
        Period::containing(g, day(date), chrono_tz::Asia::Riyadh)
    }

    #[test]
    fn riyadh_periods_start_at_local_midnight() {
        let month = riyadh(Granularity::Month, "2026-11-23");
        assert_eq!(month.label(), "2026-11");
        assert_eq!(month.start().to_rfc3339(), "2026-10-31T21:00:00+00:00");
        assert_eq!(month.end().to_rfc3339(), "2026-11-30T21:00:00+00:00");
        let d = riyadh(Granularity::Day, "2026-11-23");
        assert_eq!(d.start().to_rfc3339(), "2026-11-22T21:00:00+00:00");
        assert_eq!(d.label(), "2026-11-23");
    }

    #[test]
    fn weeks_run_sunday_to_saturday_and_fortnights_pair_them_from_the_anchor() {
        // 2026-11-23 is a Monday.
        let w = riyadh(Granularity::Week, "2026-11-23");
        assert_eq!((w.first, w.last), (day("2026-11-22"), day("2026-11-28")));
        assert_eq!(w.label(), "2026-11-22..2026-11-28");
        assert_eq!(riyadh(Granularity::Week, "2026-11-22"), w);
        assert_eq!(riyadh(Granularity::Week, "2026-11-28"), w);
        let anchor = riyadh(Granularity::Fortnight, "2023-01-01");
        assert_eq!(
            (anchor.first, anchor.last),
            (day("2023-01-01"), day("2023-01-14"))
        );
        let f = riyadh(Granularity::Fortnight, "2026-11-23");
        assert_eq!((f.last - f.first).num_days(), 13);
        assert_eq!((f.first - FORTNIGHT_ANCHOR).num_days() % 14, 0);
        assert!(f.first <= day("2026-11-23") && day("2026-11-23") <= f.last);
        // Before the anchor too.
        let early = riyadh(Granularity::Fortnight, "2022-12-31");
        assert_eq!(
            (early.first, early.last),
            (day("2022-12-18"), day("2022-12-31"))
        );
    }

    #[test]
    fn quarters_years_and_year_earlier() {
        let q = riyadh(Granularity::Quarter, "2026-11-23");
        assert_eq!((q.first, q.last), (day("2026-10-01"), day("2026-12-31")));
        assert_eq!(q.label(), "2026-Q4");
        let y = riyadh(Granularity::Year, "2024-02-29");
        assert_eq!(
            (y.first, y.last, y.label()),
            (day("2024-01-01"), day("2024-12-31"), "2024".into())
        );
        assert_eq!(q.year_earlier().label(), "2025-Q4");
        let feb = riyadh(Granularity::Month, "2024-02-10");
        assert_eq!(feb.last, day("2024-02-29"));
        assert_eq!(feb.year_earlier().last, day("2023-02-28"));
    }

    #[test]
    fn series_are_consecutive_and_bounded() {
        let s = Period::series(
            Granularity::Month,
            day("2026-01-15"),
            day("2026-12-01"),
            chrono_tz::Asia::Riyadh,
            400,
        )
        .expect("series");
        assert_eq!(s.len(), 12);
        assert!(s.windows(2).all(|w| w[0].end() == w[1].start()));
        assert!(
            Period::series(
                Granularity::Day,
                day("2020-01-01"),
                day("2026-01-01"),
                chrono_tz::Asia::Riyadh,
                400
            )
            .is_none()
        );
    }

    #[test]
    fn a_zone_with_daylight_saving_keeps_whole_local_days() {
        // Europe/London springs forward on 2026-03-29 (a 23-hour day).
        let d = Period::containing(
            Granularity::Day,
            day("2026-03-29"),
            chrono_tz::Europe::London,
        );
        assert_eq!((d.end() - d.start()).num_hours(), 23);
    }
}
