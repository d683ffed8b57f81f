//! Proto messages (`baladiya.partners.v1`) to agreement and calendar values
//! and back. Parsing problems become field violations with the proto field
//! paths callers sent.

use baladiya_platform::error::Violations;
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::timestamp;
use baladiya_proto::partners::v1 as pb;
use baladiya_worktime::{
    CalendarSpec, Day, Holiday, HoursOverride, Substitution, WeeklyHours, WindowSpec,
    WorkingDuration,
};
use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{Agreement, AgreementBody, CalendarRecord, Clearance, Level, Priority, Terms};

fn day_from_proto(day: i32) -> Option<Day> {
    Some(match pb::DayOfWeek::try_from(day).ok()? {
        pb::DayOfWeek::Sunday => Day::Sunday,
        pb::DayOfWeek::Monday => Day::Monday,
        pb::DayOfWeek::Tuesday => Day::Tuesday,
        pb::DayOfWeek::Wednesday => Day::Wednesday,
        pb::DayOfWeek::Thursday => Day::Thursday,
        pb::DayOfWeek::Friday => Day::Friday,
        pb::DayOfWeek::Saturday => Day::Saturday,
        pb::DayOfWeek::Unspecified => return None,
    })
}

fn day_to_proto(day: Day) -> i32 {
    (match day {
        Day::Sunday => pb::DayOfWeek::Sunday,
        Day::Monday => pb::DayOfWeek::Monday,
        Day::Tuesday => pb::DayOfWeek::Tuesday,
        Day::Wednesday => pb::DayOfWeek::Wednesday,
        Day::Thursday => pb::DayOfWeek::Thursday,
        Day::Friday => pb::DayOfWeek::Friday,
        Day::Saturday => pb::DayOfWeek::Saturday,
    }) as i32
}

fn date(text: &str, path: &str, v: &mut Violations) -> Option<NaiveDate> {
    let parsed = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
    v.check(parsed.is_some(), path, "must be a date YYYY-MM-DD");
    parsed
}

fn windows(ws: &[pb::TimeWindow]) -> Vec<WindowSpec> {
    ws.iter()
        .map(|w| WindowSpec::new(&w.start, &w.end))
        .collect()
}

fn windows_to_proto(ws: &[WindowSpec]) -> Vec<pb::TimeWindow> {
    ws.iter()
        .map(|w| pb::TimeWindow {
            start: w.start.clone(),
            end: w.end.clone(),
        })
        .collect()
}

/// A holiday from the API; field paths start with `path`. `None` (with the
/// violations recorded) when a date does not parse.
pub fn holiday_from_proto(h: &pb::Holiday, path: &str, v: &mut Violations) -> Option<Holiday> {
    let from = date(&h.start_date, &format!("{path}.start_date"), v);
    let to = date(&h.end_date, &format!("{path}.end_date"), v);
    Some(Holiday {
        name: h.name.clone(),
        from: from?,
        to: to?,
    })
}

/// Days of the week from the API: an unknown or unset value is recorded
/// against `path[j]` and left out.
fn days_from_proto(days: &[i32], path: &str, v: &mut Violations) -> Vec<Day> {
    days.iter()
        .enumerate()
        .filter_map(|(j, d)| {
            let day = day_from_proto(*d);
            v.check(
                day.is_some(),
                &format!("{path}[{j}]"),
                "is not a day of the week",
            );
            day
        })
        .collect()
}

/// An hours override from the API; field paths start with `path`. `None`
/// (with the violations recorded) when a date does not parse. Duplicate days
/// and days without weekly hours are refused when the calendar is built.
pub fn override_from_proto(
    o: &pb::HoursOverride,
    path: &str,
    v: &mut Violations,
) -> Option<HoursOverride> {
    let from = date(&o.start_date, &format!("{path}.start_date"), v);
    let to = date(&o.end_date, &format!("{path}.end_date"), v);
    let days = days_from_proto(&o.days, &format!("{path}.days"), v);
    Some(HoursOverride {
        name: o.name.clone(),
        from: from?,
        to: to?,
        windows: windows(&o.windows),
        days,
    })
}

/// A worktime field path in the API's terms (`from`/`to` are `start_date`/`end_date`).
pub fn api_path(prefix: &str, field: &str) -> String {
    let renamed = field
        .replace(".from", ".start_date")
        .replace(".to", ".end_date");
    format!("{prefix}{renamed}")
}

/// A calendar from an upsert request.
pub fn calendar_from_proto(c: &pb::Calendar, v: &mut Violations) -> CalendarRecord {
    let weekly = c
        .weekly
        .iter()
        .enumerate()
        .map(|(i, w)| WeeklyHours {
            days: days_from_proto(&w.days, &format!("calendar.weekly[{i}].days"), v),
            windows: windows(&w.windows),
        })
        .collect();
    let substitutions = c
        .substitutions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let (f, o) = (day_from_proto(s.falls_on), day_from_proto(s.observed_on));
            v.check(
                f.is_some(),
                &format!("calendar.substitutions[{i}].falls_on"),
                "is required",
            );
            v.check(
                o.is_some(),
                &format!("calendar.substitutions[{i}].observed_on"),
                "is required",
            );
            Some(Substitution {
                falls_on: f?,
                observed_on: o?,
            })
        })
        .collect();
    CalendarRecord {
        id: c.id.trim().to_string(),
        name: c.name.clone(),
        spec: CalendarSpec {
            time_zone: c.time_zone.clone(),
            always_open: c.always_open,
            weekly,
            overrides: c
                .overrides
                .iter()
                .enumerate()
                .filter_map(|(i, o)| override_from_proto(o, &format!("calendar.overrides[{i}]"), v))
                .collect(),
            holidays: c
                .holidays
                .iter()
                .enumerate()
                .filter_map(|(i, h)| holiday_from_proto(h, &format!("calendar.holidays[{i}]"), v))
                .collect(),
            substitutions,
            working_day_minutes: (c.working_day_minutes > 0).then_some(c.working_day_minutes),
        },
    }
}

/// A calendar for a response.
pub fn calendar_to_proto(
    c: &CalendarRecord,
    revision: i64,
    updated_at: DateTime<Utc>,
) -> pb::Calendar {
    let s = &c.spec;
    pb::Calendar {
        id: c.id.clone(),
        name: c.name.clone(),
        time_zone: s.time_zone.clone(),
        always_open: s.always_open,
        weekly: s
            .weekly
            .iter()
            .map(|w| pb::WeeklyHours {
                days: w.days.iter().map(|d| day_to_proto(*d)).collect(),
                windows: windows_to_proto(&w.windows),
            })
            .collect(),
        overrides: s
            .overrides
            .iter()
            .map(|o| pb::HoursOverride {
                name: o.name.clone(),
                start_date: o.from.to_string(),
                end_date: o.to.to_string(),
                windows: windows_to_proto(&o.windows),
                days: o.days.iter().map(|d| day_to_proto(*d)).collect(),
            })
            .collect(),
        holidays: s
            .holidays
            .iter()
            .map(|h| pb::Holiday {
                name: h.name.clone(),
                start_date: h.from.to_string(),
                end_date: h.to.to_string(),
            })
            .collect(),
        substitutions: s
            .substitutions
            .iter()
            .map(|x| pb::HolidaySubstitution {
                falls_on: day_to_proto(x.falls_on),
                observed_on: day_to_proto(x.observed_on),
            })
            .collect(),
        working_day_minutes: s.working_day_minutes.unwrap_or(0),
        revision,
        update_time: Some(timestamp(updated_at)),
    }
}

pub fn priority_from_proto(p: i32) -> Priority {
    match common::Priority::try_from(p).unwrap_or(common::Priority::Unspecified) {
        common::Priority::Unspecified => Priority::Any,
        common::Priority::Low => Priority::Low,
        common::Priority::Normal => Priority::Normal,
        common::Priority::High => Priority::High,
        common::Priority::Urgent => Priority::Urgent,
    }
}

fn priority_to_proto(p: Priority) -> i32 {
    (match p {
        Priority::Any => common::Priority::Unspecified,
        Priority::Low => common::Priority::Low,
        Priority::Normal => common::Priority::Normal,
        Priority::High => common::Priority::High,
        Priority::Urgent => common::Priority::Urgent,
    }) as i32
}

fn duration(d: &Option<common::WorkingDuration>) -> WorkingDuration {
    d.map(|d| WorkingDuration {
        days: d.days,
        minutes: d.minutes,
    })
    .unwrap_or_default()
}

fn duration_to_proto(d: WorkingDuration) -> Option<common::WorkingDuration> {
    Some(common::WorkingDuration {
        days: d.days,
        minutes: d.minutes,
    })
}

/// An agreement body from a publish request.
pub fn body_from_proto(a: &pb::Agreement) -> AgreementBody {
    AgreementBody {
        terms: a
            .terms
            .iter()
            .map(|t| Terms {
                category_code: t.category_code.trim().to_string(),
                priority: priority_from_proto(t.priority),
                acknowledge_within: duration(&t.acknowledge_within),
                resolve_within: duration(&t.resolve_within),
                calendar_id: t.calendar_id.clone(),
                warn_at: t.warn_at.clone(),
            })
            .collect(),
        ladder: a
            .escalation_ladder
            .iter()
            .map(|l| Level {
                level: l.level,
                delay_after_breach: duration(&l.delay_after_breach),
                contact: l.contact.clone(),
                nats_subject: l.nats_subject.clone(),
                webhook_url: l.webhook_url.clone(),
            })
            .collect(),
        clearances: a
            .clearances
            .iter()
            .map(|c| Clearance {
                license_type_code: c.license_type_code.trim().to_string(),
                description: c.description.clone(),
                within: duration(&c.within),
                calendar_id: c.calendar_id.clone(),
                warn_at: c.warn_at.clone(),
            })
            .collect(),
    }
}

pub fn terms_to_proto(t: &Terms, warn_at: Vec<f64>) -> pb::SlaTerms {
    pb::SlaTerms {
        category_code: t.category_code.clone(),
        priority: priority_to_proto(t.priority),
        acknowledge_within: duration_to_proto(t.acknowledge_within),
        resolve_within: duration_to_proto(t.resolve_within),
        calendar_id: t.calendar_id.clone(),
        warn_at,
    }
}

pub fn clearance_to_proto(c: &Clearance, warn_at: Vec<f64>) -> pb::ClearanceTerms {
    pb::ClearanceTerms {
        license_type_code: c.license_type_code.clone(),
        description: c.description.clone(),
        within: duration_to_proto(c.within),
        calendar_id: c.calendar_id.clone(),
        warn_at,
    }
}

/// The ladder with default subjects filled in.
pub fn ladder_to_proto(partner_code: &str, ladder: &[Level]) -> Vec<pb::EscalationLevel> {
    ladder
        .iter()
        .map(|l| pb::EscalationLevel {
            level: l.level,
            delay_after_breach: duration_to_proto(l.delay_after_breach),
            contact: l.contact.clone(),
            nats_subject: if l.nats_subject.is_empty() {
                format!("baladiya.sla.escalation.raised.{partner_code}")
            } else {
                l.nats_subject.clone()
            },
            webhook_url: l.webhook_url.clone(),
        })
        .collect()
}

/// An agreement version for a response.
pub fn agreement_to_proto(a: &Agreement) -> pb::Agreement {
    pb::Agreement {
        partner_code: a.partner_code.clone(),
        version: a.version,
        effective_from: Some(timestamp(a.effective_from)),
        terms: a
            .body
            .terms
            .iter()
            .map(|t| terms_to_proto(t, t.warn_at.clone()))
            .collect(),
        escalation_ladder: ladder_to_proto(&a.partner_code, &a.body.ladder),
        clearances: a
            .body
            .clearances
            .iter()
            .map(|c| clearance_to_proto(c, c.warn_at.clone()))
            .collect(),
        publish_time: Some(timestamp(a.published_at)),
        published_by: a.published_by.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: &str, end: &str) -> pb::TimeWindow {
        pb::TimeWindow {
            start: start.into(),
            end: end.into(),
        }
    }

    fn ramadan(days: Vec<i32>) -> pb::Calendar {
        pb::Calendar {
            id: "sa-gov".into(),
            name: "Saudi government".into(),
            time_zone: "Asia/Riyadh".into(),
            weekly: vec![pb::WeeklyHours {
                days: (1..=5).collect(),
                windows: vec![window("07:30", "14:30")],
            }],
            overrides: vec![pb::HoursOverride {
                name: "Ramadan 1447 hours".into(),
                start_date: "2026-02-18".into(),
                end_date: "2026-03-18".into(),
                windows: vec![window("10:00", "15:00")],
                days,
            }],
            ..Default::default()
        }
    }

    fn problems(c: &pb::Calendar) -> Vec<String> {
        let mut v = Violations::new();
        let record = calendar_from_proto(c, &mut v);
        record.check("calendar.", &mut v);
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.violations.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn override_days_survive_the_proto_round_trip() {
        let sent = ramadan(vec![
            pb::DayOfWeek::Sunday as i32,
            pb::DayOfWeek::Monday as i32,
        ]);
        let mut v = Violations::new();
        let record = calendar_from_proto(&sent, &mut v);
        assert!(v.is_empty());
        assert_eq!(record.spec.overrides[0].days, [Day::Sunday, Day::Monday]);
        record.spec.build().expect("valid");
        let back = calendar_to_proto(&record, 1, Utc::now());
        assert_eq!(back.overrides, sent.overrides);
        // No days: every working weekday, and none sent back.
        let record = calendar_from_proto(&ramadan(vec![]), &mut v);
        assert!(record.spec.overrides[0].days.is_empty());
        assert!(
            calendar_to_proto(&record, 1, Utc::now()).overrides[0]
                .days
                .is_empty()
        );
    }

    #[test]
    fn unknown_duplicate_and_weekend_override_days_are_refused_by_path() {
        assert_eq!(
            problems(&ramadan(vec![pb::DayOfWeek::Sunday as i32, 0, 42])),
            [
                "calendar.overrides[0].days[1]",
                "calendar.overrides[0].days[2]"
            ]
        );
        assert_eq!(
            problems(&ramadan(vec![
                pb::DayOfWeek::Sunday as i32,
                pb::DayOfWeek::Sunday as i32,
                pb::DayOfWeek::Friday as i32,
            ])),
            [
                "calendar.overrides[0].days[1]",
                "calendar.overrides[0].days[2]"
            ]
        );
    }

    #[test]
    fn calendar_dates_outside_the_measured_span_are_refused() {
        let mut c = ramadan(vec![]);
        c.overrides[0].start_date = "0001-01-01".into();
        c.holidays.push(pb::Holiday {
            name: "far".into(),
            start_date: "9999-12-31".into(),
            end_date: "9999-12-31".into(),
        });
        c.substitutions.push(pb::HolidaySubstitution {
            falls_on: pb::DayOfWeek::Friday as i32,
            observed_on: pb::DayOfWeek::Thursday as i32,
        });
        // In worktime's terms here; ops renames from/to to start_date/end_date.
        assert_eq!(
            problems(&c),
            [
                "calendar.overrides[0].from",
                "calendar.overrides[0].to",
                "calendar.holidays[0].from",
                "calendar.holidays[0].to",
            ]
        );
    }
}
