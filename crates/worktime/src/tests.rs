//! Hand-worked Saudi cases and properties of the arithmetic.

use super::*;
use chrono::NaiveDateTime;
use proptest::prelude::*;

fn d(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date")
}

/// A Riyadh instant, `YYYY-MM-DD HH:MM`.
fn riyadh(text: &str) -> DateTime<Utc> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("instant");
    chrono_tz::Asia::Riyadh
        .from_local_datetime(&naive)
        .single()
        .expect("unambiguous")
        .with_timezone(&Utc)
}

/// The arithmetic answers `None` past 2200; every case here stays far inside.
trait InRange {
    fn deadline(&self, start: DateTime<Utc>, duration: Duration) -> DateTime<Utc>;
    fn next_instant(&self, t: DateTime<Utc>) -> DateTime<Utc>;
}

impl InRange for Calendar {
    fn deadline(&self, start: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
        self.add_working(start, duration)
            .expect("deadline before 2200")
    }
    fn next_instant(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.next_working_instant(t)
            .expect("a working instant before 2200")
    }
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

const WORKWEEK: [Day; 5] = [
    Day::Sunday,
    Day::Monday,
    Day::Tuesday,
    Day::Wednesday,
    Day::Thursday,
];

fn holiday(name: &str, from: &str, to: &str) -> Holiday {
    Holiday {
        name: name.into(),
        from: d(from),
        to: d(to),
    }
}

/// The Saudi government calendar: Sunday to Thursday 07:30-14:30, Ramadan
/// 10:00-15:00, the 2026 holidays, Friday->Thursday and Saturday->Sunday.
fn saudi() -> CalendarSpec {
    CalendarSpec {
        time_zone: "Asia/Riyadh".into(),
        always_open: false,
        weekly: vec![WeeklyHours {
            days: WORKWEEK.to_vec(),
            windows: vec![WindowSpec::new("07:30", "14:30")],
        }],
        overrides: vec![HoursOverride {
            name: "Ramadan 1447".into(),
            from: d("2026-02-18"),
            to: d("2026-03-18"),
            windows: vec![WindowSpec::new("10:00", "15:00")],
            days: vec![],
        }],
        holidays: vec![
            holiday("Founding Day", "2026-02-22", "2026-02-22"),
            holiday("Eid al-Fitr", "2026-03-19", "2026-03-25"),
            holiday("Eid al-Adha", "2026-05-25", "2026-06-01"),
            holiday("National Day", "2026-09-23", "2026-09-23"),
            holiday("National Day", "2028-09-23", "2028-09-23"),
            holiday("New Year test", "2026-12-31", "2027-01-01"),
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

fn split_shift() -> CalendarSpec {
    CalendarSpec {
        time_zone: "Asia/Muscat".into(),
        always_open: false,
        weekly: vec![
            WeeklyHours {
                days: WORKWEEK.to_vec(),
                windows: vec![
                    WindowSpec::new("00:00", "02:00"),
                    WindowSpec::new("08:00", "12:00"),
                    WindowSpec::new("16:00", "24:00"),
                ],
            },
            WeeklyHours {
                days: vec![Day::Saturday],
                windows: vec![WindowSpec::new("09:00", "10:00")],
            },
        ],
        overrides: vec![HoursOverride {
            name: "closed for inventory".into(),
            from: d("2026-12-30"),
            to: d("2026-12-30"),
            windows: vec![],
            days: vec![],
        }],
        holidays: vec![holiday("Renaissance", "2027-01-01", "2027-01-03")],
        substitutions: vec![],
        working_day_minutes: Some(7 * 60),
    }
}

/// A zone with daylight saving, to keep the arithmetic honest off the Gulf.
fn with_dst() -> CalendarSpec {
    CalendarSpec {
        time_zone: "Europe/London".into(),
        always_open: false,
        weekly: vec![WeeklyHours {
            days: vec![
                Day::Sunday,
                Day::Monday,
                Day::Tuesday,
                Day::Wednesday,
                Day::Thursday,
                Day::Friday,
                Day::Saturday,
            ],
            windows: vec![
                WindowSpec::new("00:30", "03:00"),
                WindowSpec::new("09:00", "17:00"),
            ],
        }],
        overrides: vec![],
        holidays: vec![],
        substitutions: vec![],
        working_day_minutes: None,
    }
}

#[test]
fn four_working_hours_from_thursday_13_00_end_sunday_10_00() {
    let cal = saudi().build().expect("valid");
    // 2026-03-05 is a Thursday in Ramadan; use the week after Eid instead.
    let start = riyadh("2026-04-02 13:00");
    assert_eq!(
        start.with_timezone(&chrono_tz::Asia::Riyadh).weekday(),
        chrono::Weekday::Thu
    );
    let deadline = cal.deadline(start, hours(4));
    assert_eq!(
        deadline,
        riyadh("2026-04-05 10:00"),
        "90 minutes Thursday, 150 from Sunday 07:30"
    );
    assert_eq!(cal.working_between(start, deadline), hours(4));
}

#[test]
fn a_count_that_completes_at_a_window_end_returns_that_window_end() {
    let cal = saudi().build().expect("valid");
    let deadline = cal.deadline(riyadh("2026-04-02 13:00"), minutes(90));
    assert_eq!(deadline, riyadh("2026-04-02 14:30"), "not Sunday 07:30");
    assert!(
        !cal.is_working(deadline),
        "window ends are not working instants"
    );
}

#[test]
fn counting_starts_at_the_next_working_instant() {
    let cal = saudi().build().expect("valid");
    // Friday evening: nothing counts until Sunday 07:30.
    let friday = riyadh("2026-04-03 20:00");
    assert_eq!(cal.next_instant(friday), riyadh("2026-04-05 07:30"));
    assert_eq!(cal.deadline(friday, hours(1)), riyadh("2026-04-05 08:30"));
    assert_eq!(
        cal.working_between(friday, riyadh("2026-04-05 07:30")),
        Duration::ZERO
    );
}

#[test]
fn five_working_days_across_eid_al_adha() {
    let cal = saudi().build().expect("valid");
    assert_eq!(cal.working_day(), hours(7));
    // Thursday 2026-05-21 10:00; Eid al-Adha holiday 05-25 to 06-01.
    let start = riyadh("2026-05-21 10:00");
    let deadline = cal.deadline(
        start,
        cal.duration(WorkingDuration {
            days: 5,
            minutes: 0,
        }),
    );
    // Thu 4h30 (10:00-14:30), Sun 05-24 7h, then Eid; Tue 06-02 .. : remaining
    // 35h - 4.5h - 7h = 23.5h = Tue 7h, Wed 7h, Thu 7h, Sun 06-07 2.5h -> 10:00.
    assert_eq!(deadline, riyadh("2026-06-07 10:00"));
    assert_eq!(cal.working_between(start, deadline), hours(35));
    assert!(
        !cal.is_working(riyadh("2026-05-27 09:00")),
        "Eid is not working time"
    );
}

#[test]
fn ramadan_hours_replace_the_weekly_hours() {
    let cal = saudi().build().expect("valid");
    let morning = riyadh("2026-03-02 08:00");
    assert!(!cal.is_working(morning), "Ramadan hours start at 10:00");
    assert_eq!(cal.next_instant(morning), riyadh("2026-03-02 10:00"));
    assert!(cal.is_working(riyadh("2026-03-02 14:45")));
    assert_eq!(
        cal.deadline(riyadh("2026-03-02 13:00"), hours(4)),
        riyadh("2026-03-03 12:00")
    );
}

#[test]
fn ramadan_hours_never_make_a_weekend_working() {
    let cal = saudi().build().expect("valid");
    // Thursday 19 February 2026 14:00, in Ramadan (10:00-15:00): one hour on
    // Thursday; Friday and Saturday stay weekend, Sunday 22 February is
    // Founding Day; three hours from Monday 10:00.
    let start = riyadh("2026-02-19 14:00");
    assert!(!cal.is_working(riyadh("2026-02-20 11:00")), "Friday");
    assert!(!cal.is_working(riyadh("2026-02-21 11:00")), "Saturday");
    assert_eq!(cal.deadline(start, hours(4)), riyadh("2026-02-23 13:00"));
    // Without Founding Day the deadline is Sunday 22 February 13:00, not
    // Friday 20 February 13:00 as when the override covered every date.
    let mut spec = saudi();
    spec.holidays.retain(|h| h.name != "Founding Day");
    let cal = spec.build().expect("valid");
    assert_eq!(cal.deadline(start, hours(4)), riyadh("2026-02-22 13:00"));
    assert_eq!(
        cal.working_between(start, riyadh("2026-02-22 13:00")),
        hours(4)
    );
}

#[test]
fn an_override_applies_to_the_weekdays_it_names_only() {
    let mut spec = saudi();
    spec.holidays.clear();
    // Ramadan hours on Sunday to Wednesday; Thursday keeps 07:30-14:30.
    spec.overrides[0].days = vec![Day::Sunday, Day::Monday, Day::Tuesday, Day::Wednesday];
    let cal = spec.build().expect("valid");
    assert!(
        cal.is_working(riyadh("2026-02-26 08:00")),
        "Thursday keeps weekly hours"
    );
    assert!(!cal.is_working(riyadh("2026-02-26 14:45")));
    assert!(
        !cal.is_working(riyadh("2026-02-25 08:00")),
        "Wednesday has Ramadan hours"
    );
    assert!(cal.is_working(riyadh("2026-02-25 14:45")));
    assert!(
        !cal.is_working(riyadh("2026-02-27 11:00")),
        "Friday stays weekend"
    );
    // A closing override on Mondays only.
    spec.overrides[0].days = vec![Day::Monday];
    spec.overrides[0].windows.clear();
    let cal = spec.build().expect("valid");
    assert!(!cal.is_working(riyadh("2026-02-23 11:00")), "Monday closed");
    assert!(cal.is_working(riyadh("2026-02-24 11:00")), "Tuesday open");
}

#[test]
fn override_days_are_checked_with_their_paths() {
    let mut spec = saudi();
    spec.overrides[0].days = vec![Day::Sunday, Day::Friday, Day::Sunday];
    let problems = spec.build().expect_err("invalid");
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["overrides[0].days[1]", "overrides[0].days[2]"]);
    assert!(problems[0].message.contains("friday has no weekly hours"));
    assert!(problems[1].message.contains("sunday is named twice"));
    // A named day that does not occur in the range is fine.
    let mut spec = saudi();
    spec.overrides[0].from = d("2026-02-18");
    spec.overrides[0].to = d("2026-02-18");
    spec.overrides[0].days = vec![Day::Thursday];
    spec.build()
        .expect("a Wednesday-only range may name Thursday");
}

#[test]
fn stored_overrides_without_days_mean_the_working_weekdays() {
    let json = r#"{"name":"Ramadan","from":"2026-02-18","to":"2026-03-18",
        "windows":[{"start":"10:00","end":"15:00"}]}"#;
    let o: HoursOverride = serde_json::from_str(json).expect("old JSON");
    assert!(o.days.is_empty());
    assert!(
        !serde_json::to_string(&o).expect("json").contains("days"),
        "an override without days is stored as before"
    );
    let mut named = o.clone();
    named.days = vec![Day::Sunday];
    let back: HoursOverride =
        serde_json::from_str(&serde_json::to_string(&named).expect("json")).expect("round trip");
    assert_eq!(back, named);
}

#[test]
fn founding_day_is_a_holiday_even_in_ramadan_hours() {
    let cal = saudi().build().expect("valid");
    // Holiday beats override: Sunday 2026-02-22 is inside the Ramadan override.
    assert!(!cal.is_working(riyadh("2026-02-22 11:00")));
    assert_eq!(
        cal.next_instant(riyadh("2026-02-22 11:00")),
        riyadh("2026-02-23 10:00")
    );
}

#[test]
fn national_day_on_a_saturday_is_also_observed_on_sunday() {
    let cal = saudi().build().expect("valid");
    // 2028-09-23 is a Saturday: Sunday 09-24 is observed, work resumes Monday.
    assert!(!cal.is_working(riyadh("2028-09-24 09:00")));
    assert_eq!(
        cal.deadline(riyadh("2028-09-21 14:00"), hours(1)),
        riyadh("2028-09-25 08:00")
    );
    // A Wednesday National Day (2026) moves nowhere.
    assert!(!cal.is_working(riyadh("2026-09-23 09:00")));
    assert!(cal.is_working(riyadh("2026-09-24 09:00")));
}

#[test]
fn substitution_applies_to_single_day_holidays_only() {
    let mut spec = saudi();
    // A two-day holiday Friday-Saturday: no observed days.
    spec.holidays = vec![holiday("Two days", "2026-04-10", "2026-04-11")];
    let cal = spec.build().expect("valid");
    assert!(
        cal.is_working(riyadh("2026-04-09 09:00")),
        "Thursday stays working"
    );
    assert!(
        cal.is_working(riyadh("2026-04-12 09:00")),
        "Sunday stays working"
    );
    // A single Friday holiday adds Thursday.
    let mut spec = saudi();
    spec.holidays = vec![holiday("One day", "2026-04-10", "2026-04-10")];
    let cal = spec.build().expect("valid");
    assert!(!cal.is_working(riyadh("2026-04-09 09:00")));
}

#[test]
fn always_open_counts_every_minute_holidays_included() {
    let mut spec = CalendarSpec::always_open("Asia/Riyadh");
    spec.holidays = vec![holiday("Eid", "2026-03-19", "2026-03-25")];
    let cal = spec.build().expect("valid");
    let start = riyadh("2026-03-19 23:30");
    assert_eq!(cal.deadline(start, hours(12)), riyadh("2026-03-20 11:30"));
    assert_eq!(cal.working_day(), hours(24));
    assert!(cal.is_working(start));
}

#[test]
fn windows_touching_midnight_join_across_the_day_boundary() {
    let cal = split_shift().build().expect("valid");
    let muscat = |text: &str| {
        chrono_tz::Asia::Muscat
            .from_local_datetime(&NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("t"))
            .single()
            .expect("single")
            .with_timezone(&Utc)
    };
    // Monday 23:00 + 2h: 1h to midnight, 1h from Tuesday 00:00.
    assert_eq!(
        cal.deadline(muscat("2026-04-06 23:00"), hours(2)),
        muscat("2026-04-07 01:00")
    );
    // Ending exactly at 24:00 returns midnight.
    assert_eq!(
        cal.deadline(muscat("2026-04-06 23:00"), hours(1)),
        muscat("2026-04-07 00:00")
    );
    assert_eq!(
        cal.duration(WorkingDuration {
            days: 2,
            minutes: 30
        }),
        minutes(2 * 420 + 30)
    );
    // The override closes Wednesday 2026-12-30; the holiday runs into 2027.
    assert!(!cal.is_working(muscat("2026-12-30 09:00")));
    assert_eq!(
        cal.next_instant(muscat("2026-12-31 12:30")),
        muscat("2026-12-31 16:00")
    );
    assert_eq!(
        cal.next_instant(muscat("2027-01-01 00:00")),
        muscat("2027-01-04 00:00")
    );
}

#[test]
fn sixty_working_days_skip_weeks_and_match_the_day_by_day_walk() {
    let cal = saudi().build().expect("valid");
    let start = riyadh("2026-01-04 07:30");
    let target = cal.duration(WorkingDuration {
        days: 60,
        minutes: 0,
    });
    let deadline = cal.deadline(start, target);
    assert_eq!(cal.working_between(start, deadline), target);
    // Day by day: 60 days of 7h, fewer hours in Ramadan, none on holidays.
    let mut left = target.as_secs();
    let mut t = start;
    while left > 0 {
        let step = 60;
        if cal.is_working(t) {
            left -= step;
        }
        t += chrono::Duration::seconds(step as i64);
    }
    // The minute-walk ends one minute past the start of the last working minute.
    assert_eq!(deadline, t);
}

fn calendars() -> Vec<Calendar> {
    [
        saudi(),
        split_shift(),
        with_dst(),
        CalendarSpec::always_open("Asia/Riyadh"),
    ]
    .iter()
    .map(|s| s.build().expect("valid"))
    .collect()
}

fn instant_strategy() -> impl Strategy<Value = DateTime<Utc>> {
    // 2026-01-01 .. 2029-01-01, minute resolution.
    let from = riyadh("2026-01-01 00:00").timestamp() / 60;
    let to = riyadh("2029-01-01 00:00").timestamp() / 60;
    (from..to).prop_map(|m| DateTime::from_timestamp(m * 60, 0).expect("valid"))
}

fn duration_strategy() -> impl Strategy<Value = Duration> {
    (1u64..=60 * 24 * 70).prop_map(|m| Duration::from_secs(m * 60))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_override_ever_makes_a_weekend_working(
        weekend in proptest::collection::vec(0usize..7, 1..4),
        named in proptest::collection::vec(0usize..7, 0..7),
        open_minutes in 1u32..1440,
        from_offset in 0i64..300,
        length in 0i64..60,
        probe in 0i64..(400 * 24 * 60),
    ) {
        let working: Vec<Day> = Day::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| !weekend.contains(i))
            .map(|(_, d)| *d)
            .collect();
        let mut days: Vec<Day> = Vec::new();
        for i in named {
            if working.contains(&Day::ALL[i]) && !days.contains(&Day::ALL[i]) {
                days.push(Day::ALL[i]);
            }
        }
        let from = d("2026-01-01") + chrono::Duration::days(from_offset);
        let end = format!("{:02}:{:02}", open_minutes / 60, open_minutes % 60);
        let spec = CalendarSpec {
            time_zone: "Asia/Riyadh".into(),
            always_open: false,
            weekly: vec![WeeklyHours { days: working.clone(), windows: vec![WindowSpec::new("07:30", "14:30")] }],
            overrides: vec![HoursOverride {
                name: "all day".into(),
                from,
                to: from + chrono::Duration::days(length),
                windows: vec![WindowSpec::new("00:00", &end)],
                days,
            }],
            holidays: vec![],
            substitutions: vec![],
            working_day_minutes: None,
        };
        let cal = spec.build().expect("valid");
        let t = riyadh("2026-01-01 00:00") + chrono::Duration::minutes(probe);
        let day = Day::from_weekday(t.with_timezone(&chrono_tz::Asia::Riyadh).weekday());
        if !working.contains(&day) {
            prop_assert!(!cal.is_working(t), "{day:?} is a weekend day");
        }
    }

    #[test]
    fn working_between_inverts_add_working(c in 0usize..4, a in instant_strategy(), dur in duration_strategy()) {
        let cal = &calendars()[c];
        let deadline = cal.deadline(a, dur);
        prop_assert!(deadline > a);
        prop_assert_eq!(cal.working_between(a, deadline), dur);
    }

    #[test]
    fn add_working_is_monotonic(c in 0usize..4, a in instant_strategy(), shift in 0i64..20_000, d1 in duration_strategy(), d2 in duration_strategy()) {
        let cal = &calendars()[c];
        let later = a + chrono::Duration::minutes(shift);
        prop_assert!(cal.deadline(a, d1) <= cal.deadline(later, d1));
        let (small, big) = if d1 <= d2 { (d1, d2) } else { (d2, d1) };
        prop_assert!(cal.deadline(a, small) <= cal.deadline(a, big));
    }

    #[test]
    fn splitting_a_duration_changes_nothing(c in 0usize..4, a in instant_strategy(), d1 in duration_strategy(), d2 in duration_strategy()) {
        let cal = &calendars()[c];
        prop_assert_eq!(cal.deadline(cal.deadline(a, d1), d2), cal.deadline(a, d1 + d2));
    }

    #[test]
    fn only_working_minutes_are_counted(c in 0usize..4, a in instant_strategy(), span in 1i64..(60 * 24 * 9)) {
        let cal = &calendars()[c];
        let b = a + chrono::Duration::minutes(span);
        let mut counted = 0u64;
        let mut t = a;
        while t < b {
            if cal.is_working(t) {
                counted += 60;
            }
            t += chrono::Duration::minutes(1);
        }
        prop_assert_eq!(cal.working_between(a, b).as_secs(), counted);
    }

    #[test]
    fn deadlines_and_next_instants_respect_the_calendar(c in 0usize..3, a in instant_strategy(), dur in duration_strategy()) {
        let cal = &calendars()[c];
        let next = cal.next_instant(a);
        prop_assert!(next >= a);
        prop_assert!(cal.is_working(next));
        prop_assert_eq!(cal.working_between(a, next), Duration::ZERO);
        // The last working second before a deadline is working time.
        let deadline = cal.deadline(a, dur);
        prop_assert!(cal.is_working(deadline - chrono::Duration::seconds(1)));
    }
}
