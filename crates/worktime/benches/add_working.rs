//! `add_working` for long targets must take microseconds: it skips whole
//! ordinary weeks instead of stepping minute by minute.

use std::hint::black_box;
use std::time::Duration;

use baladiya_worktime::{
    CalendarSpec, Day, Holiday, HoursOverride, Substitution, WeeklyHours, WindowSpec,
    WorkingDuration,
};
use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

fn saudi_year() -> CalendarSpec {
    let holiday = |name: &str, from: NaiveDate, to: NaiveDate| Holiday {
        name: name.into(),
        from,
        to,
    };
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
        overrides: vec![HoursOverride {
            name: "Ramadan".into(),
            from: date(2026, 2, 18),
            to: date(2026, 3, 18),
            windows: vec![WindowSpec::new("10:00", "15:00")],
            days: vec![],
        }],
        holidays: vec![
            holiday("Founding Day", date(2026, 2, 22), date(2026, 2, 22)),
            holiday("Eid al-Fitr", date(2026, 3, 19), date(2026, 3, 25)),
            holiday("Eid al-Adha", date(2026, 5, 25), date(2026, 6, 1)),
            holiday("National Day", date(2026, 9, 23), date(2026, 9, 23)),
        ],
        substitutions: vec![
            Substitution {
                falls_on: Day::Friday,
                observed_on: Day::Thursday,
            },
            Substitution {
                falls_on: Day::Saturday,
                observed_on: Day::Sunday,
            },
        ],
        working_day_minutes: None,
    }
}

fn bench(c: &mut Criterion) {
    let cal = saudi_year().build().expect("valid calendar");
    let start = Utc
        .with_ymd_and_hms(2026, 1, 4, 5, 0, 0)
        .single()
        .expect("instant");
    let sixty_days = cal.duration(WorkingDuration {
        days: 60,
        minutes: 0,
    });
    let four_hours = Duration::from_secs(4 * 3600);
    c.bench_function("add_working 60 working days across 2026 holidays", |b| {
        b.iter(|| cal.add_working(black_box(start), black_box(sixty_days)))
    });
    c.bench_function("add_working 4 working hours", |b| {
        b.iter(|| cal.add_working(black_box(start), black_box(four_hours)))
    });
    let end = cal
        .add_working(start, sixty_days)
        .expect("60 working days from 2026 end long before 2200");
    c.bench_function("working_between over 60 working days", |b| {
        b.iter(|| cal.working_between(black_box(start), black_box(end)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
