//! The on-disk format of the watcher's replica of partner terms: the JSON in
//! `sla.agreements.body` and `sla.calendars.spec`.
//!
//! The format is the watcher's own: the structs here, with their serde
//! attributes, decide what is written, not the domain types of
//! `baladiya_agreements` (which the partners service changes as it needs).
//! A change to those types changes the conversions below (or fails to
//! compile), never the stored JSON silently.
//!
//! Each document carries `"format"`. Rows written before the format was
//! versioned have none and are format 1: the same shape without the key.
//! A watcher that meets a format it does not know fails the read instead of
//! guessing. An older watcher (a rollback) ignores the key it does not know.
//!
//! Format 1, agreements: `{"format": 1, "terms": [...], "ladder": [...],
//! "clearances": [...]}`, durations as `{"days", "minutes"}`, priorities as
//! lowercase names. Calendars: `{"format": 1, ...}` with the fields of
//! `baladiya_worktime::CalendarSpec` beside the key (worktime's serde form,
//! which its seed files share).

use baladiya_agreements::domain::{AgreementBody, Clearance, Level, Priority, Terms};
use baladiya_worktime::{CalendarSpec, WorkingDuration};
use serde::{Deserialize, Serialize};

/// The agreement format this watcher writes.
pub const AGREEMENT_FORMAT: u32 = 1;
/// The calendar format this watcher writes.
pub const CALENDAR_FORMAT: u32 = 1;

/// A document without `"format"`: written before the format was versioned.
fn unversioned() -> u32 {
    1
}

/// A stored document in a format this watcher does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {what} has format {found}; this watcher reads format {known}")]
pub struct UnknownFormat {
    pub what: &'static str,
    pub found: u32,
    pub known: u32,
}

fn known(what: &'static str, found: u32, known: u32) -> Result<(), UnknownFormat> {
    if found == known {
        Ok(())
    } else {
        Err(UnknownFormat { what, found, known })
    }
}

/// An agreement version's body as stored (`sla.agreements.body`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAgreement {
    #[serde(default = "unversioned")]
    pub format: u32,
    pub terms: Vec<StoredTerms>,
    #[serde(default)]
    pub ladder: Vec<StoredLadderLevel>,
    #[serde(default)]
    pub clearances: Vec<StoredClearance>,
}

/// A working duration as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDuration {
    #[serde(default)]
    pub days: u32,
    #[serde(default)]
    pub minutes: u32,
}

/// A priority as stored; `any` matches every priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredPriority {
    Any,
    Low,
    Normal,
    High,
    Urgent,
}

/// SLA targets for a category (empty: the default) and priority, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTerms {
    #[serde(default)]
    pub category_code: String,
    pub priority: StoredPriority,
    pub acknowledge_within: StoredDuration,
    pub resolve_within: StoredDuration,
    pub calendar_id: String,
    #[serde(default)]
    pub warn_at: Vec<f64>,
}

/// One level of an agreement's escalation ladder, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLadderLevel {
    pub level: u32,
    #[serde(default)]
    pub delay_after_breach: StoredDuration,
    pub contact: String,
    #[serde(default)]
    pub nats_subject: String,
    #[serde(default)]
    pub webhook_url: String,
}

/// A licensing clearance's terms, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredClearance {
    pub license_type_code: String,
    #[serde(default)]
    pub description: String,
    pub within: StoredDuration,
    pub calendar_id: String,
    #[serde(default)]
    pub warn_at: Vec<f64>,
}

/// A calendar as stored (`sla.calendars.spec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCalendar {
    #[serde(default = "unversioned")]
    pub format: u32,
    #[serde(flatten)]
    pub spec: CalendarSpec,
}

impl StoredCalendar {
    /// The current format of a calendar.
    pub fn new(spec: &CalendarSpec) -> Self {
        Self {
            format: CALENDAR_FORMAT,
            spec: spec.clone(),
        }
    }

    /// The calendar, if the format is one this watcher reads.
    pub fn into_spec(self) -> Result<CalendarSpec, UnknownFormat> {
        known("calendar", self.format, CALENDAR_FORMAT)?;
        Ok(self.spec)
    }
}

impl From<WorkingDuration> for StoredDuration {
    fn from(d: WorkingDuration) -> Self {
        Self {
            days: d.days,
            minutes: d.minutes,
        }
    }
}

impl From<StoredDuration> for WorkingDuration {
    fn from(d: StoredDuration) -> Self {
        Self {
            days: d.days,
            minutes: d.minutes,
        }
    }
}

impl From<Priority> for StoredPriority {
    fn from(p: Priority) -> Self {
        match p {
            Priority::Any => Self::Any,
            Priority::Low => Self::Low,
            Priority::Normal => Self::Normal,
            Priority::High => Self::High,
            Priority::Urgent => Self::Urgent,
        }
    }
}

impl From<StoredPriority> for Priority {
    fn from(p: StoredPriority) -> Self {
        match p {
            StoredPriority::Any => Self::Any,
            StoredPriority::Low => Self::Low,
            StoredPriority::Normal => Self::Normal,
            StoredPriority::High => Self::High,
            StoredPriority::Urgent => Self::Urgent,
        }
    }
}

impl From<&AgreementBody> for StoredAgreement {
    fn from(b: &AgreementBody) -> Self {
        Self {
            format: AGREEMENT_FORMAT,
            terms: b
                .terms
                .iter()
                .map(|t| StoredTerms {
                    category_code: t.category_code.clone(),
                    priority: t.priority.into(),
                    acknowledge_within: t.acknowledge_within.into(),
                    resolve_within: t.resolve_within.into(),
                    calendar_id: t.calendar_id.clone(),
                    warn_at: t.warn_at.clone(),
                })
                .collect(),
            ladder: b
                .ladder
                .iter()
                .map(|l| StoredLadderLevel {
                    level: l.level,
                    delay_after_breach: l.delay_after_breach.into(),
                    contact: l.contact.clone(),
                    nats_subject: l.nats_subject.clone(),
                    webhook_url: l.webhook_url.clone(),
                })
                .collect(),
            clearances: b
                .clearances
                .iter()
                .map(|c| StoredClearance {
                    license_type_code: c.license_type_code.clone(),
                    description: c.description.clone(),
                    within: c.within.into(),
                    calendar_id: c.calendar_id.clone(),
                    warn_at: c.warn_at.clone(),
                })
                .collect(),
        }
    }
}

impl StoredAgreement {
    /// The agreement body, if the format is one this watcher reads.
    pub fn into_body(self) -> Result<AgreementBody, UnknownFormat> {
        known("agreement", self.format, AGREEMENT_FORMAT)?;
        Ok(AgreementBody {
            terms: self
                .terms
                .into_iter()
                .map(|t| Terms {
                    category_code: t.category_code,
                    priority: t.priority.into(),
                    acknowledge_within: t.acknowledge_within.into(),
                    resolve_within: t.resolve_within.into(),
                    calendar_id: t.calendar_id,
                    warn_at: t.warn_at,
                })
                .collect(),
            ladder: self
                .ladder
                .into_iter()
                .map(|l| Level {
                    level: l.level,
                    delay_after_breach: l.delay_after_breach.into(),
                    contact: l.contact,
                    nats_subject: l.nats_subject,
                    webhook_url: l.webhook_url,
                })
                .collect(),
            clearances: self
                .clearances
                .into_iter()
                .map(|c| Clearance {
                    license_type_code: c.license_type_code,
                    description: c.description,
                    within: c.within.into(),
                    calendar_id: c.calendar_id,
                    warn_at: c.warn_at,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use baladiya_worktime::{Day, Holiday, HoursOverride, Substitution, WeeklyHours, WindowSpec};
    use chrono::NaiveDate;
    use serde_json::{Value, json};

    use super::*;

    fn wd(days: u32, minutes: u32) -> WorkingDuration {
        WorkingDuration { days, minutes }
    }

    fn level(level: u32, days: u32, contact: &str, subject: &str, url: &str) -> Level {
        Level {
            level,
            delay_after_breach: wd(days, 0),
            contact: contact.into(),
            nats_subject: subject.into(),
            webhook_url: url.into(),
        }
    }

    /// The body the literals below describe.
    fn body() -> AgreementBody {
        let terms =
            |category: &str, priority, ack, resolve, calendar: &str, warn_at: &[f64]| Terms {
                category_code: category.into(),
                priority,
                acknowledge_within: ack,
                resolve_within: resolve,
                calendar_id: calendar.into(),
                warn_at: warn_at.to_vec(),
            };
        AgreementBody {
            terms: vec![
                terms("", Priority::Any, wd(0, 240), wd(3, 0), "sa-gov", &[]),
                terms(
                    "SEWAGE_OVERFLOW",
                    Priority::Urgent,
                    wd(0, 30),
                    wd(0, 480),
                    "24x7",
                    &[0.5, 0.9],
                ),
            ],
            ladder: vec![
                level(1, 0, "focal point", "", ""),
                level(
                    2,
                    1,
                    "deputy minister",
                    "baladiya.sla.escalation.raised.MEWA",
                    "https://hooks.mewa.example/sla",
                ),
            ],
            clearances: vec![Clearance {
                license_type_code: "BUILDING".into(),
                description: "structural review".into(),
                within: wd(5, 0),
                calendar_id: "sa-gov".into(),
                warn_at: vec![],
            }],
        }
    }

    /// `sla.agreements.body` exactly as the watcher wrote it before the format
    /// was versioned (serde of the partners crate's `AgreementBody`).
    const UNVERSIONED_AGREEMENT: &str = r#"{"terms":[{"category_code":"","priority":"any","acknowledge_within":{"days":0,"minutes":240},"resolve_within":{"days":3,"minutes":0},"calendar_id":"sa-gov","warn_at":[]},{"category_code":"SEWAGE_OVERFLOW","priority":"urgent","acknowledge_within":{"days":0,"minutes":30},"resolve_within":{"days":0,"minutes":480},"calendar_id":"24x7","warn_at":[0.5,0.9]}],"ladder":[{"level":1,"delay_after_breach":{"days":0,"minutes":0},"contact":"focal point","nats_subject":"","webhook_url":""},{"level":2,"delay_after_breach":{"days":1,"minutes":0},"contact":"deputy minister","nats_subject":"baladiya.sla.escalation.raised.MEWA","webhook_url":"https://hooks.mewa.example/sla"}],"clearances":[{"license_type_code":"BUILDING","description":"structural review","within":{"days":5,"minutes":0},"calendar_id":"sa-gov","warn_at":[]}]}"#;

    /// Format 1 as this watcher writes it: the golden copy. A change here is
    /// a change of the stored format: give it a new number and read the old.
    fn golden_agreement() -> Value {
        json!({
            "format": 1,
            "terms": [
                {
                    "category_code": "",
                    "priority": "any",
                    "acknowledge_within": {"days": 0, "minutes": 240},
                    "resolve_within": {"days": 3, "minutes": 0},
                    "calendar_id": "sa-gov",
                    "warn_at": []
                },
                {
                    "category_code": "SEWAGE_OVERFLOW",
                    "priority": "urgent",
                    "acknowledge_within": {"days": 0, "minutes": 30},
                    "resolve_within": {"days": 0, "minutes": 480},
                    "calendar_id": "24x7",
                    "warn_at": [0.5, 0.9]
                }
            ],
            "ladder": [
                {
                    "level": 1,
                    "delay_after_breach": {"days": 0, "minutes": 0},
                    "contact": "focal point",
                    "nats_subject": "",
                    "webhook_url": ""
                },
                {
                    "level": 2,
                    "delay_after_breach": {"days": 1, "minutes": 0},
                    "contact": "deputy minister",
                    "nats_subject": "baladiya.sla.escalation.raised.MEWA",
                    "webhook_url": "https://hooks.mewa.example/sla"
                }
            ],
            "clearances": [
                {
                    "license_type_code": "BUILDING",
                    "description": "structural review",
                    "within": {"days": 5, "minutes": 0},
                    "calendar_id": "sa-gov",
                    "warn_at": []
                }
            ]
        })
    }

    fn read_agreement(stored: Value) -> Result<AgreementBody, UnknownFormat> {
        serde_json::from_value::<StoredAgreement>(stored)
            .expect("parses")
            .into_body()
    }

    #[test]
    fn agreements_written_before_the_format_was_versioned_read_back_to_the_same_terms() {
        let stored: Value = serde_json::from_str(UNVERSIONED_AGREEMENT).expect("json");
        assert_eq!(read_agreement(stored), Ok(body()));
        // Optional fields absent, as serde defaulted them before.
        let sparse = json!({"terms": [{"priority": "low", "acknowledge_within": {"minutes": 60},
            "resolve_within": {"days": 2}, "calendar_id": "sa-gov"}]});
        assert_eq!(
            read_agreement(sparse),
            Ok(AgreementBody {
                terms: vec![Terms {
                    category_code: String::new(),
                    priority: Priority::Low,
                    acknowledge_within: wd(0, 60),
                    resolve_within: wd(2, 0),
                    calendar_id: "sa-gov".into(),
                    warn_at: vec![],
                }],
                ladder: vec![],
                clearances: vec![],
            })
        );
    }

    #[test]
    fn agreements_are_written_in_the_golden_format_1() {
        let written = serde_json::to_value(StoredAgreement::from(&body())).expect("serializes");
        assert_eq!(written, golden_agreement());
        // Format 1 is the unversioned shape with the key added.
        let mut unversioned: Value = serde_json::from_str(UNVERSIONED_AGREEMENT).expect("json");
        unversioned["format"] = json!(1);
        assert_eq!(written, unversioned);
        assert_eq!(read_agreement(written), Ok(body()));
    }

    #[test]
    fn an_unknown_format_is_refused_not_guessed() {
        let mut stored = golden_agreement();
        stored["format"] = json!(2);
        assert_eq!(
            read_agreement(stored),
            Err(UnknownFormat {
                what: "agreement",
                found: 2,
                known: 1
            })
        );
        let mut stored = golden_calendar();
        stored["format"] = json!(7);
        let read = serde_json::from_value::<StoredCalendar>(stored).expect("parses");
        assert!(read.into_spec().is_err());
    }

    fn calendar() -> CalendarSpec {
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        let weekdays = [
            Day::Sunday,
            Day::Monday,
            Day::Tuesday,
            Day::Wednesday,
            Day::Thursday,
        ];
        CalendarSpec {
            time_zone: "Asia/Muscat".into(),
            always_open: false,
            weekly: vec![WeeklyHours {
                days: weekdays.to_vec(),
                windows: vec![
                    WindowSpec::new("07:00", "11:00"),
                    WindowSpec::new("12:00", "15:00"),
                ],
            }],
            overrides: vec![HoursOverride {
                name: "Ramadan".into(),
                from: date("2026-02-18"),
                to: date("2026-03-18"),
                windows: vec![WindowSpec::new("10:00", "14:00")],
                days: weekdays[..2].to_vec(),
            }],
            holidays: vec![Holiday {
                name: "National Day".into(),
                from: date("2026-11-18"),
                to: date("2026-11-19"),
            }],
            substitutions: vec![Substitution {
                falls_on: Day::Friday,
                observed_on: Day::Thursday,
            }],
            working_day_minutes: Some(420),
        }
    }

    /// `sla.calendars.spec` exactly as the watcher wrote it before the format
    /// was versioned (serde of worktime's `CalendarSpec`).
    const UNVERSIONED_CALENDAR: &str = r#"{"time_zone":"Asia/Muscat","always_open":false,"weekly":[{"days":["sunday","monday","tuesday","wednesday","thursday"],"windows":[{"start":"07:00","end":"11:00"},{"start":"12:00","end":"15:00"}]}],"overrides":[{"name":"Ramadan","from":"2026-02-18","to":"2026-03-18","windows":[{"start":"10:00","end":"14:00"}],"days":["sunday","monday"]}],"holidays":[{"name":"National Day","from":"2026-11-18","to":"2026-11-19"}],"substitutions":[{"falls_on":"friday","observed_on":"thursday"}],"working_day_minutes":420}"#;

    fn golden_calendar() -> Value {
        json!({
            "format": 1,
            "time_zone": "Asia/Muscat",
            "always_open": false,
            "weekly": [{
                "days": ["sunday", "monday", "tuesday", "wednesday", "thursday"],
                "windows": [{"start": "07:00", "end": "11:00"}, {"start": "12:00", "end": "15:00"}]
            }],
            "overrides": [{
                "name": "Ramadan",
                "from": "2026-02-18",
                "to": "2026-03-18",
                "windows": [{"start": "10:00", "end": "14:00"}],
                "days": ["sunday", "monday"]
            }],
            "holidays": [{"name": "National Day", "from": "2026-11-18", "to": "2026-11-19"}],
            "substitutions": [{"falls_on": "friday", "observed_on": "thursday"}],
            "working_day_minutes": 420
        })
    }

    #[test]
    fn calendars_written_before_the_format_was_versioned_read_back_the_same() {
        let read: StoredCalendar = serde_json::from_str(UNVERSIONED_CALENDAR).expect("parses");
        assert_eq!(read.into_spec(), Ok(calendar()));
    }

    #[test]
    fn calendars_are_written_in_the_golden_format_1() {
        let written = serde_json::to_value(StoredCalendar::new(&calendar())).expect("serializes");
        assert_eq!(written, golden_calendar());
        let read: StoredCalendar = serde_json::from_value(written).expect("parses");
        assert_eq!(read.into_spec(), Ok(calendar()));
    }
}
