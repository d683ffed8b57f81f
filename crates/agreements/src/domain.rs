//! Agreements and calendars as pure data: the rules that make them valid and
//! the rule that picks the terms in force. No IO here.
//!
//! Shared by the partners service (which publishes them) and the SLA watcher
//! (which keeps a replica, in a storage format of its own).

use std::collections::HashSet;

use baladiya_platform::error::Violations;
use baladiya_worktime::{CalendarSpec, MAX_DELAY, MAX_TARGET, WorkingDuration};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// Default warning thresholds when terms name none.
pub const DEFAULT_WARN_AT: [f64; 2] = [0.5, 0.75];

/// Calendar ids: `sa-gov`, `24x7`: lowercase letters, digits and `-`.
pub fn valid_calendar_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A calendar with its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarRecord {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: CalendarSpec,
}

impl CalendarRecord {
    /// Checks the record and its spec; field paths start with `prefix`.
    pub fn check(&self, prefix: &str, v: &mut Violations) {
        v.check(
            valid_calendar_id(&self.id),
            &format!("{prefix}id"),
            "must be 1-40 characters: lowercase letters, digits or '-'",
        );
        v.require(&self.name, &format!("{prefix}name"));
        if let Err(problems) = self.spec.build() {
            for p in problems {
                v.add(format!("{prefix}{}", p.field), p.message);
            }
        }
    }
}

/// The local dates whose hours differ between two versions of a calendar:
/// `(None, None)` when everything may have changed (zone, weekly hours).
pub fn changed_range(
    old: &CalendarSpec,
    new: &CalendarSpec,
) -> (Option<NaiveDate>, Option<NaiveDate>) {
    if old.time_zone != new.time_zone
        || old.always_open != new.always_open
        || old.weekly != new.weekly
        || old.substitutions != new.substitutions
        || old.working_day_minutes != new.working_day_minutes
    {
        return (None, None);
    }
    let mut ranges: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    let holidays = |s: &CalendarSpec| {
        s.holidays
            .iter()
            .map(|h| (h.from, h.to, h.name.clone()))
            .collect::<Vec<_>>()
    };
    let (oh, nh) = (holidays(old), holidays(new));
    for h in oh
        .iter()
        .filter(|h| !nh.contains(h))
        .chain(nh.iter().filter(|h| !oh.contains(h)))
    {
        // A substituted single day may move the observed day by up to 3 days.
        // Checked: a calendar stored before dates were bounded may hold any.
        ranges.push((
            h.0.checked_sub_days(chrono::Days::new(3)).unwrap_or(h.0),
            h.1.checked_add_days(chrono::Days::new(3)).unwrap_or(h.1),
        ));
    }
    for o in old
        .overrides
        .iter()
        .filter(|o| !new.overrides.contains(o))
        .chain(new.overrides.iter().filter(|o| !old.overrides.contains(o)))
    {
        ranges.push((o.from, o.to));
    }
    let from = ranges.iter().map(|r| r.0).min();
    let to = ranges.iter().map(|r| r.1).max();
    (from, to)
}

/// Priority as agreements use it; `Any` matches every priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Any,
    Low,
    Normal,
    High,
    Urgent,
}

/// SLA targets for a category (or the default) and priority (or any).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    /// Empty for the default terms.
    #[serde(default)]
    pub category_code: String,
    pub priority: Priority,
    pub acknowledge_within: WorkingDuration,
    pub resolve_within: WorkingDuration,
    pub calendar_id: String,
    #[serde(default)]
    pub warn_at: Vec<f64>,
}

/// A licensing clearance a partner gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clearance {
    pub license_type_code: String,
    #[serde(default)]
    pub description: String,
    pub within: WorkingDuration,
    pub calendar_id: String,
    #[serde(default)]
    pub warn_at: Vec<f64>,
}

/// One level of the escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub level: u32,
    #[serde(default)]
    pub delay_after_breach: WorkingDuration,
    pub contact: String,
    #[serde(default)]
    pub nats_subject: String,
    #[serde(default)]
    pub webhook_url: String,
}

/// The content of one agreement version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementBody {
    pub terms: Vec<Terms>,
    #[serde(default)]
    pub ladder: Vec<Level>,
    #[serde(default)]
    pub clearances: Vec<Clearance>,
}

/// A published agreement version.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub partner_code: String,
    pub version: i64,
    pub effective_from: DateTime<Utc>,
    pub body: AgreementBody,
    pub published_at: DateTime<Utc>,
    pub published_by: String,
}

/// A target or delay: positive and within `limit` (worktime's bounds, so a
/// live clock never computes past the measured span).
fn check_duration(d: WorkingDuration, limit: WorkingDuration, path: &str, v: &mut Violations) {
    v.check(!d.is_zero(), path, "must be a positive working duration");
    for (part, why) in d.excess(limit) {
        v.add(format!("{path}.{part}"), why);
    }
}

fn check_warn_at(warn_at: &[f64], path: &str, v: &mut Violations) {
    for (i, f) in warn_at.iter().enumerate() {
        v.check(
            f.is_finite() && *f > 0.0 && *f < 1.0,
            &format!("{path}[{i}]"),
            "must be a fraction strictly between 0 and 1",
        );
    }
    v.check(
        warn_at.windows(2).all(|w| w[0] < w[1]),
        path,
        "must be strictly increasing",
    );
}

impl AgreementBody {
    /// Checks everything that needs no lookups; `calendar_known` answers
    /// whether a calendar id exists. Field paths start with `prefix`.
    pub fn check(&self, prefix: &str, calendar_known: &dyn Fn(&str) -> bool, v: &mut Violations) {
        v.check(
            !self.terms.is_empty(),
            &format!("{prefix}terms"),
            "at least one term is required",
        );
        let mut keys = HashSet::new();
        for (i, t) in self.terms.iter().enumerate() {
            let path = format!("{prefix}terms[{i}]");
            check_duration(
                t.acknowledge_within,
                MAX_TARGET,
                &format!("{path}.acknowledge_within"),
                v,
            );
            check_duration(
                t.resolve_within,
                MAX_TARGET,
                &format!("{path}.resolve_within"),
                v,
            );
            v.check(
                calendar_known(&t.calendar_id),
                &format!("{path}.calendar_id"),
                "is not a known calendar",
            );
            check_warn_at(&t.warn_at, &format!("{path}.warn_at"), v);
            if !keys.insert((t.category_code.clone(), t.priority)) {
                v.add(
                    format!("{path}.category_code"),
                    "duplicate terms for this category and priority",
                );
            }
        }
        for (i, l) in self.ladder.iter().enumerate() {
            let path = format!("{prefix}escalation_ladder[{i}]");
            v.check(
                l.level == i as u32 + 1,
                &format!("{path}.level"),
                "levels must be 1, 2, 3, ... in order",
            );
            v.check(
                !l.contact.trim().is_empty(),
                &format!("{path}.contact"),
                "is required",
            );
            v.check(
                l.webhook_url.is_empty() || l.webhook_url.starts_with("https://"),
                &format!("{path}.webhook_url"),
                "must be an https:// URL",
            );
            v.check(
                l.nats_subject.is_empty()
                    || (l.nats_subject.starts_with("baladiya.")
                        && !l.nats_subject.contains(['*', '>', ' '])),
                &format!("{path}.nats_subject"),
                "must be a concrete subject under baladiya.",
            );
            // Level 1 may fire at the breach itself: a zero delay is fine.
            for (part, why) in l.delay_after_breach.excess(MAX_DELAY) {
                v.add(format!("{path}.delay_after_breach.{part}"), why);
            }
            if i > 0 && self.ladder[i - 1].delay_after_breach >= l.delay_after_breach {
                v.add(
                    format!("{path}.delay_after_breach"),
                    "must be longer than the previous level's",
                );
            }
        }
        let mut types = HashSet::new();
        for (i, c) in self.clearances.iter().enumerate() {
            let path = format!("{prefix}clearances[{i}]");
            v.check(
                !c.license_type_code.is_empty(),
                &format!("{path}.license_type_code"),
                "is required",
            );
            check_duration(c.within, MAX_TARGET, &format!("{path}.within"), v);
            v.check(
                calendar_known(&c.calendar_id),
                &format!("{path}.calendar_id"),
                "is not a known calendar",
            );
            check_warn_at(&c.warn_at, &format!("{path}.warn_at"), v);
            if !types.insert(c.license_type_code.clone()) {
                v.add(
                    format!("{path}.license_type_code"),
                    "duplicate license type",
                );
            }
        }
    }

    /// The terms for a category and priority: the most specific of
    /// category+priority, category (any priority), default+priority, default.
    pub fn terms_for(&self, category: &str, priority: Priority) -> Option<(&Terms, &'static str)> {
        let find = |cat: &str, p: Priority| {
            self.terms
                .iter()
                .find(|t| t.category_code == cat && t.priority == p)
        };
        let specific = !category.is_empty();
        [
            (specific && priority != Priority::Any)
                .then(|| find(category, priority).map(|t| (t, "category+priority"))),
            specific.then(|| find(category, Priority::Any).map(|t| (t, "category"))),
            (priority != Priority::Any)
                .then(|| find("", priority).map(|t| (t, "default+priority"))),
            Some(find("", Priority::Any).map(|t| (t, "default"))),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .next()
    }

    /// The clearance terms for a license type.
    pub fn clearance_for(&self, license_type: &str) -> Option<&Clearance> {
        self.clearances
            .iter()
            .find(|c| c.license_type_code == license_type)
    }
}

/// The warning thresholds to use: the given ones, or the defaults.
pub fn warn_at_or_default(warn_at: &[f64]) -> Vec<f64> {
    if warn_at.is_empty() {
        DEFAULT_WARN_AT.to_vec()
    } else {
        warn_at.to_vec()
    }
}

/// The version in force at `at`: the latest whose `effective_from <= at`.
pub fn in_force(versions: &[Agreement], at: DateTime<Utc>) -> Option<&Agreement> {
    versions
        .iter()
        .filter(|a| a.effective_from <= at)
        .max_by_key(|a| a.effective_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wd(days: u32, minutes: u32) -> WorkingDuration {
        WorkingDuration { days, minutes }
    }

    fn terms(category: &str, priority: Priority) -> Terms {
        Terms {
            category_code: category.into(),
            priority,
            acknowledge_within: wd(0, 240),
            resolve_within: wd(3, 0),
            calendar_id: "sa-gov".into(),
            warn_at: vec![],
        }
    }

    fn body() -> AgreementBody {
        AgreementBody {
            terms: vec![
                terms("", Priority::Any),
                terms("", Priority::Urgent),
                terms("WATER_LEAK", Priority::Any),
                terms("SEWAGE_OVERFLOW", Priority::Urgent),
            ],
            ladder: vec![
                Level {
                    level: 1,
                    delay_after_breach: wd(0, 0),
                    contact: "focal point".into(),
                    nats_subject: String::new(),
                    webhook_url: String::new(),
                },
                Level {
                    level: 2,
                    delay_after_breach: wd(1, 0),
                    contact: "deputy minister".into(),
                    nats_subject: String::new(),
                    webhook_url: String::new(),
                },
            ],
            clearances: vec![],
        }
    }

    #[test]
    fn the_most_specific_terms_win() {
        let b = body();
        let matched = |c: &str, p| {
            b.terms_for(c, p)
                .map(|(t, how)| (t.category_code.clone(), t.priority, how))
        };
        assert_eq!(
            matched("SEWAGE_OVERFLOW", Priority::Urgent),
            Some((
                "SEWAGE_OVERFLOW".into(),
                Priority::Urgent,
                "category+priority"
            ))
        );
        assert_eq!(
            matched("WATER_LEAK", Priority::Urgent),
            Some(("WATER_LEAK".into(), Priority::Any, "category"))
        );
        assert_eq!(
            matched("POTHOLE", Priority::Urgent),
            Some(("".into(), Priority::Urgent, "default+priority"))
        );
        assert_eq!(
            matched("POTHOLE", Priority::Normal),
            Some(("".into(), Priority::Any, "default"))
        );
        assert_eq!(
            matched("SEWAGE_OVERFLOW", Priority::Normal),
            Some(("".into(), Priority::Any, "default"))
        );
    }

    #[test]
    fn targets_and_delays_beyond_the_bounds_are_refused() {
        let mut b = body();
        b.terms[0].acknowledge_within = wd(u32::MAX, 0);
        b.terms[1].resolve_within = wd(0, u32::MAX);
        b.ladder[1].delay_after_breach = wd(366, 0);
        b.clearances.push(Clearance {
            license_type_code: "BUILDING".into(),
            description: String::new(),
            within: wd(3_651, 5_256_001),
            calendar_id: "sa-gov".into(),
            warn_at: vec![],
        });
        let mut v = Violations::new();
        b.check("agreement.", &|id| id == "sa-gov", &mut v);
        let err = v.finish().expect_err("invalid");
        let fields: Vec<&str> = err.violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "agreement.terms[0].acknowledge_within.days",
                "agreement.terms[1].resolve_within.minutes",
                "agreement.escalation_ladder[1].delay_after_breach.days",
                "agreement.clearances[0].within.days",
                "agreement.clearances[0].within.minutes",
            ]
        );
        // The bounds themselves are accepted.
        let mut b = body();
        b.terms[0].resolve_within = MAX_TARGET;
        b.ladder[1].delay_after_breach = MAX_DELAY;
        let mut v = Violations::new();
        b.check("agreement.", &|id| id == "sa-gov", &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut b = body();
        b.terms.push(terms("WATER_LEAK", Priority::Any));
        b.terms[0].acknowledge_within = wd(0, 0);
        b.terms[1].calendar_id = "nowhere".into();
        b.terms[2].warn_at = vec![0.75, 0.5, 1.5];
        b.ladder[1].delay_after_breach = wd(0, 0);
        b.ladder[1].webhook_url = "http://insecure".into();
        let mut v = Violations::new();
        b.check("agreement.", &|id| id == "sa-gov", &mut v);
        let err = v.finish().expect_err("invalid");
        let fields: Vec<&str> = err.violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "agreement.terms[0].acknowledge_within",
                "agreement.terms[1].calendar_id",
                "agreement.terms[2].warn_at[2]",
                "agreement.terms[2].warn_at",
                "agreement.terms[4].category_code",
                "agreement.escalation_ladder[1].webhook_url",
                "agreement.escalation_ladder[1].delay_after_breach",
            ]
        );
    }

    #[test]
    fn the_version_in_force_is_the_latest_effective_one() {
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("t")
                .with_timezone(&Utc)
        };
        let version = |n: i64, from: &str| Agreement {
            partner_code: "MEWA".into(),
            version: n,
            effective_from: at(from),
            body: body(),
            published_at: at(from),
            published_by: "test".into(),
        };
        let versions = [
            version(1, "2026-01-01T00:00:00Z"),
            version(2, "2026-03-01T00:00:00Z"),
        ];
        assert_eq!(
            in_force(&versions, at("2025-12-31T23:59:59Z")).map(|a| a.version),
            None
        );
        assert_eq!(
            in_force(&versions, at("2026-02-28T00:00:00Z")).map(|a| a.version),
            Some(1)
        );
        assert_eq!(
            in_force(&versions, at("2026-03-01T00:00:00Z")).map(|a| a.version),
            Some(2)
        );
    }

    #[test]
    fn an_added_holiday_changes_only_its_neighbourhood() {
        let old = CalendarSpec::always_open("Asia/Riyadh");
        let mut new = old.clone();
        let day = NaiveDate::from_ymd_opt(2026, 5, 26).expect("date");
        new.holidays.push(baladiya_worktime::Holiday {
            name: "Arafat".into(),
            from: day,
            to: day,
        });
        assert_eq!(
            changed_range(&old, &new),
            (
                Some(day - chrono::Duration::days(3)),
                Some(day + chrono::Duration::days(3))
            )
        );
        new.time_zone = "Asia/Muscat".into();
        assert_eq!(changed_range(&old, &new), (None, None));
    }
}
