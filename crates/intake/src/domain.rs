//! Reports as the domain sees them, and the rules a submission must pass.
//! Pure: the catalogue snapshot and the clock's instant come in as values.

use std::collections::HashMap;

use baladiya_platform::auth::{CallerIdentity, Role};
use baladiya_platform::error::Violations;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use baladiya_platform::geo::{Point, ServiceArea};

/// Longest description, in characters, after trimming.
pub const MAX_DESCRIPTION_CHARS: usize = 4_000;
/// Most attachments on one report.
pub const MAX_ATTACHMENTS: usize = 5;
/// Largest attachment.
pub const MAX_ATTACHMENT_BYTES: u64 = 10 * 1024 * 1024;
/// How far in the future `observed_at` may be (clock skew between systems).
pub const OBSERVED_AT_SKEW_SECS: i64 = 300;
/// Accepted attachment types.
pub const ATTACHMENT_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/heic",
    "video/mp4",
    "application/pdf",
];

/// Priority of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }
    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Low, Self::Normal, Self::High, Self::Urgent]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// A report category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub code: String,
    pub name_ar: String,
    pub name_en: String,
    pub group: String,
    pub default_priority: Priority,
    #[serde(default)]
    pub urgent_capable: bool,
    #[serde(default = "default_radius")]
    pub duplicate_radius_meters: u32,
    #[serde(default = "default_window")]
    pub duplicate_window_hours: u32,
    #[serde(default = "active")]
    pub active: bool,
}

fn default_radius() -> u32 {
    250
}
fn default_window() -> u32 {
    72
}
fn active() -> bool {
    true
}

impl Category {
    /// Checks a category edit; field paths start with `prefix`.
    pub fn check(&self, prefix: &str, v: &mut Violations) {
        v.check(
            (2..=40).contains(&self.code.len())
                && self.code.starts_with(|c: char| c.is_ascii_uppercase())
                && self
                    .code
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            &format!("{prefix}code"),
            "must be 2-40 characters: uppercase letters, digits or '_', starting with a letter",
        );
        v.require(&self.name_ar, &format!("{prefix}name.ar"));
        v.require(&self.name_en, &format!("{prefix}name.en"));
        v.require(&self.group, &format!("{prefix}group"));
        v.check(
            (1..=5_000).contains(&self.duplicate_radius_meters),
            &format!("{prefix}duplicate_radius_meters"),
            "must be between 1 and 5000",
        );
        v.check(
            (1..=24 * 90).contains(&self.duplicate_window_hours),
            &format!("{prefix}duplicate_window_hours"),
            "must be between 1 and 2160",
        );
    }
}

/// What the catalogue says, as of a moment.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    pub categories: HashMap<String, Category>,
    pub areas: Vec<ServiceArea>,
    /// Lowercased.
    pub urgent_keywords: Vec<String>,
}

impl Catalogue {
    /// The area of a municipality.
    pub fn area(&self, code: &str) -> Option<&ServiceArea> {
        self.areas.iter().find(|a| a.municipality_code == code)
    }
}

/// A channel, as stored.
pub type ChannelName = &'static str;

/// The reporter's personal data, validated and normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReporterData {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub national_id: Option<String>,
}

impl ReporterData {
    /// Whether nothing was given.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.phone.is_none() && self.national_id.is_none()
    }
}

/// An attachment reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub uri: String,
    pub content_type: String,
    pub size_bytes: u64,
}

/// The raw fields of a submission, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    pub request_id: &'a str,
    pub channel: Option<ChannelName>,
    pub category_code: &'a str,
    pub description: &'a str,
    pub latitude: f64,
    pub longitude: f64,
    pub national_address_short: &'a str,
    pub municipality_code: &'a str,
    pub has_location: bool,
    pub reporter_name: &'a str,
    pub reporter_phone: &'a str,
    pub reporter_national_id: &'a str,
    pub attachments: &'a [AttachmentRef],
    pub observed_at: Option<Option<DateTime<Utc>>>,
    pub priority_hint: Option<Priority>,
}

/// A submission that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReport {
    pub channel: ChannelName,
    pub category: Category,
    pub description: String,
    pub point: Option<Point>,
    pub national_address_short: Option<String>,
    pub municipality_code: String,
    pub reporter: ReporterData,
    pub attachments: Vec<AttachmentRef>,
    pub observed_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    pub priority_reason: String,
}

/// Trims, NFC-normalises and checks a description.
pub fn clean_description(text: &str, v: &mut Violations) -> String {
    let normalised: String = text.trim().nfc().collect();
    let chars = normalised.chars().count();
    if chars == 0 {
        v.add("description", "is required");
    } else if chars > MAX_DESCRIPTION_CHARS {
        v.add(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters (got {chars})"),
        );
    }
    if normalised.chars().any(|c| c.is_control() && c != '\n') {
        v.add("description", "must not contain control characters");
    }
    normalised
}

/// A National Address short code: four Latin letters and four digits, e.g. `RRRD2929`.
pub fn valid_short_address(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 8
        && b[..4].iter().all(u8::is_ascii_uppercase)
        && b[4..].iter().all(u8::is_ascii_digit)
}

/// E.164: `+` and 8 to 15 digits; Saudi numbers (+966) have 9 national
/// digits (mobiles start with 5), Omani numbers (+968) 8 (mobiles start with 7 or 9).
pub fn valid_phone(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else {
        return false;
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !(8..=15).contains(&digits.len())
        || digits.starts_with('0')
    {
        return false;
    }
    if let Some(national) = digits.strip_prefix("966") {
        return national.len() == 9 && !national.starts_with('0');
    }
    if let Some(national) = digits.strip_prefix("968") {
        return national.len() == 8 && national.starts_with(['2', '7', '9']);
    }
    true
}

/// A Saudi national ID (starts 1) or iqama (starts 2): 10 digits with a Luhn check digit.
pub fn valid_national_id(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || !b.iter().all(u8::is_ascii_digit) || !matches!(b[0], b'1' | b'2') {
        return false;
    }
    let sum: u32 = b
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The priority and why: the category default, raised by the channel's hint
/// and by urgent keywords; only urgent-capable categories become urgent.
pub fn decide_priority(
    category: &Category,
    hint: Option<Priority>,
    description: &str,
    keywords: &[String],
) -> (Priority, String) {
    let mut priority = category.default_priority;
    let mut reason = format!("category default {}", priority.as_str());
    let cap = |p: Priority| {
        if p == Priority::Urgent && !category.urgent_capable {
            Priority::High
        } else {
            p
        }
    };
    if let Some(h) = hint
        && cap(h) > priority
    {
        priority = cap(h);
        reason.push_str(&format!(
            "; raised to {} by the channel's hint",
            priority.as_str()
        ));
    }
    if priority < Priority::Urgent && category.urgent_capable {
        let lower = description.to_lowercase();
        if let Some(word) = keywords.iter().find(|k| lower.contains(k.as_str())) {
            priority = Priority::Urgent;
            reason.push_str(&format!("; raised to urgent by the keyword '{word}'"));
        }
    }
    (priority, reason)
}

/// Checks every rule and reports every violation at once, in the order of
/// the request's fields.
pub fn validate(
    s: &Submission<'_>,
    catalogue: &Catalogue,
    now: DateTime<Utc>,
) -> Result<ValidReport, Violations> {
    let mut v = Violations::new();
    baladiya_platform::idempotency::check_request_id(s.request_id, &mut v);
    v.check(s.channel.is_some(), "channel", "is required");
    let category = check_category(s.category_code, catalogue, &mut v);
    let description = clean_description(s.description, &mut v);
    let (point, municipality) = check_location(s, catalogue, &mut v);
    let reporter = check_reporter(s, &mut v);
    check_attachments(s.attachments, &mut v);
    let observed_at = check_observed_at(s.observed_at, now, &mut v);

    if !v.is_empty() {
        return Err(v);
    }
    let (Some(category), Some(channel)) = (category, s.channel) else {
        return Err(v);
    };
    let (priority, priority_reason) = decide_priority(
        category,
        s.priority_hint,
        &description,
        &catalogue.urgent_keywords,
    );
    Ok(ValidReport {
        channel,
        category: category.clone(),
        description,
        point,
        national_address_short: Some(s.national_address_short.trim().to_string())
            .filter(|a| !a.is_empty()),
        municipality_code: municipality,
        reporter,
        attachments: s.attachments.to_vec(),
        observed_at,
        priority,
        priority_reason,
    })
}

/// The category `code` names, if it is known and active.
fn check_category<'c>(
    code: &str,
    catalogue: &'c Catalogue,
    v: &mut Violations,
) -> Option<&'c Category> {
    let category = catalogue.categories.get(code);
    match category {
        None if code.is_empty() => v.add("category_code", "is required"),
        None => v.add("category_code", format!("'{code}' is not a known category")),
        Some(c) if !c.active => v.add("category_code", format!("'{code}' is retired")),
        Some(_) => {}
    }
    category
}

/// The location: coordinates and/or a National Address short code, and the
/// municipality it is in (the one named, or the one whose area holds the
/// point). The point is kept only when its coordinates are valid.
fn check_location(
    s: &Submission<'_>,
    catalogue: &Catalogue,
    v: &mut Violations,
) -> (Option<Point>, String) {
    if !s.has_location {
        v.add("location", "is required");
        return (None, String::new());
    }
    let has_point = s.latitude != 0.0 || s.longitude != 0.0;
    let address = s.national_address_short.trim();
    if !has_point && address.is_empty() {
        v.add("location", "needs coordinates or a national_address_short");
    }
    if !address.is_empty() && !valid_short_address(address) {
        v.add(
            "location.national_address_short",
            "must be four letters and four digits, e.g. RRRD2929",
        );
    }
    let mut coordinates_ok = has_point;
    if has_point {
        if !(s.latitude.is_finite() && (-90.0..=90.0).contains(&s.latitude)) {
            v.add("location.latitude", "must be between -90 and 90");
            coordinates_ok = false;
        }
        if !(s.longitude.is_finite() && (-180.0..=180.0).contains(&s.longitude)) {
            v.add("location.longitude", "must be between -180 and 180");
            coordinates_ok = false;
        }
    }
    let p = Point {
        lat: s.latitude,
        lon: s.longitude,
    };
    let point = coordinates_ok.then_some(p);
    let located_somehow = has_point || !address.is_empty();
    let municipality =
        locate_municipality(s.municipality_code, point, located_somehow, catalogue, v);
    (point, municipality)
}

/// The municipality of a location: `named` if it is served (and holds
/// `point`, when there is one), else the one whose area holds `point`.
fn locate_municipality(
    named: &str,
    point: Option<Point>,
    located_somehow: bool,
    catalogue: &Catalogue,
    v: &mut Violations,
) -> String {
    if !named.is_empty() {
        match catalogue.area(named) {
            None => v.add(
                "location.municipality_code",
                format!("'{named}' is not a municipality this platform serves"),
            ),
            Some(area) if point.is_some_and(|p| !area.contains(p)) => v.add(
                "location",
                format!("the point is outside the service area of {named}"),
            ),
            Some(_) => return named.to_string(),
        }
    } else if let Some(p) = point {
        match catalogue.areas.iter().find(|a| a.contains(p)) {
            Some(area) => return area.municipality_code.clone(),
            None => v.add(
                "location",
                "the point is outside every municipality's service area",
            ),
        }
    } else if located_somehow {
        v.add(
            "location.municipality_code",
            "is required when the location has no valid coordinates",
        );
    }
    String::new()
}

/// The reporter's data, trimmed; each field checked when given.
fn check_reporter(s: &Submission<'_>, v: &mut Violations) -> ReporterData {
    let name = s.reporter_name.trim();
    v.check(
        name.chars().count() <= 200,
        "reporter.name",
        "must be at most 200 characters",
    );
    v.check(
        !name.chars().any(char::is_control),
        "reporter.name",
        "must not contain control characters",
    );
    let phone = s.reporter_phone.trim();
    v.check(
        phone.is_empty() || valid_phone(phone),
        "reporter.phone",
        "must be E.164, e.g. +966501234567 or +96891234567",
    );
    let national_id = s.reporter_national_id.trim();
    v.check(
        national_id.is_empty() || valid_national_id(national_id),
        "reporter.national_id",
        "must be a 10-digit national ID or iqama starting 1 or 2 with a valid check digit",
    );
    ReporterData {
        name: Some(name.to_string()).filter(|x| !x.is_empty()),
        phone: Some(phone.to_string()).filter(|x| !x.is_empty()),
        national_id: Some(national_id.to_string()).filter(|x| !x.is_empty()),
    }
}

/// At most [`MAX_ATTACHMENTS`], each an https URI of an accepted type and size.
fn check_attachments(attachments: &[AttachmentRef], v: &mut Violations) {
    if attachments.len() > MAX_ATTACHMENTS {
        v.add(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        );
    }
    for (i, a) in attachments.iter().enumerate() {
        v.check(
            a.uri.starts_with("https://")
                && a.uri.len() <= 2_048
                && !a.uri.contains(char::is_whitespace),
            &format!("attachments[{i}].uri"),
            "must be an https:// URI",
        );
        v.check(
            ATTACHMENT_TYPES.contains(&a.content_type.as_str()),
            &format!("attachments[{i}].content_type"),
            "must be image/jpeg, image/png, image/heic, video/mp4 or application/pdf",
        );
        v.check(
            (1..=MAX_ATTACHMENT_BYTES).contains(&a.size_bytes),
            &format!("attachments[{i}].size_bytes"),
            "must be between 1 byte and 10 MiB",
        );
    }
}

/// When the citizen saw the problem: a valid instant, not in the future
/// (beyond [`OBSERVED_AT_SKEW_SECS`] of clock skew).
fn check_observed_at(
    observed_at: Option<Option<DateTime<Utc>>>,
    now: DateTime<Utc>,
    v: &mut Violations,
) -> Option<DateTime<Utc>> {
    match observed_at {
        None => None,
        Some(None) => {
            v.add("observed_at", "is not a valid timestamp");
            None
        }
        Some(Some(t)) => {
            v.check(
                t <= now + chrono::Duration::seconds(OBSERVED_AT_SKEW_SECS),
                "observed_at",
                "must not be in the future",
            );
            Some(t)
        }
    }
}

/// Whether `who`, whose token's channel claim names the stored channel
/// `own_channel`, may read a report of `municipality` that came in on
/// `channel` (a channel its own reports; an operator its municipality's).
pub fn may_read(
    who: &CallerIdentity,
    own_channel: Option<ChannelName>,
    municipality: &str,
    channel: &str,
) -> bool {
    match who.role {
        Role::Admin => true,
        Role::Operator => who.covers_municipality(municipality),
        Role::Channel => own_channel == Some(channel),
        Role::Partner | Role::Analyst => false,
    }
}

/// A tracking number: `<PREFIX>-<YEAR>-<sequence, 7 digits or more>`.
pub fn tracking_number(prefix: &str, year: i32, sequence: i64) -> String {
    format!("{prefix}-{year}-{sequence:07}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn category(urgent_capable: bool) -> Category {
        Category {
            code: "SEWAGE_OVERFLOW".into(),
            name_ar: "طفح مياه الصرف".into(),
            name_en: "Sewage overflow".into(),
            group: "water".into(),
            default_priority: Priority::Normal,
            urgent_capable,
            duplicate_radius_meters: 250,
            duplicate_window_hours: 72,
            active: true,
        }
    }

    #[test]
    fn national_ids_carry_a_luhn_check_digit() {
        assert!(valid_national_id("1000000008"));
        assert!(valid_national_id("2000000006"));
        assert!(!valid_national_id("1000000001"), "bad check digit");
        assert!(!valid_national_id("3000000004"), "must start 1 or 2");
        assert!(!valid_national_id("100000000"), "10 digits");
        assert!(!valid_national_id("١٠٠٠٠٠٠٠٠٨"), "ASCII digits only");
    }

    #[test]
    fn phones_are_e164_with_gulf_rules() {
        for ok in [
            "+966501234567",
            "+966112345678",
            "+96891234567",
            "+96872345678",
            "+4915112345678",
        ] {
            assert!(valid_phone(ok), "{ok}");
        }
        for bad in [
            "0501234567",
            "+96650123456",
            "+9665012345678",
            "+96851234567",
            "+966 50 123 4567",
            "+",
            "+0123456789",
        ] {
            assert!(!valid_phone(bad), "{bad}");
        }
    }

    #[test]
    fn short_addresses_are_four_letters_and_four_digits() {
        assert!(valid_short_address("RRRD2929"));
        assert!(!valid_short_address("rrrd2929"));
        assert!(!valid_short_address("RRR2929"));
        assert!(!valid_short_address("RRRD292A"));
    }

    #[test]
    fn priority_rises_with_hints_and_keywords_within_the_category() {
        let kw = vec!["طفح".to_string(), "flood".to_string()];
        let (p, why) = decide_priority(&category(true), None, "طفح في الشارع", &kw);
        assert_eq!(p, Priority::Urgent);
        assert!(why.contains("keyword 'طفح'"), "{why}");
        let (p, why) = decide_priority(&category(false), Some(Priority::Urgent), "FLOOD", &kw);
        assert_eq!(p, Priority::High, "{why}");
        let (p, _) = decide_priority(&category(true), Some(Priority::Low), "quiet", &kw);
        assert_eq!(p, Priority::Normal, "a hint never lowers");
    }

    #[test]
    fn descriptions_are_trimmed_normalised_and_bounded() {
        let mut v = Violations::new();
        // "é" as e + combining acute becomes one NFC character.
        assert_eq!(clean_description("  cafe\u{301}  ", &mut v), "caf\u{e9}");
        assert!(v.is_empty());
        clean_description("bad\u{7}bell", &mut v);
        clean_description(&"x".repeat(MAX_DESCRIPTION_CHARS + 1), &mut v);
        clean_description("   ", &mut v);
        assert_eq!(v.finish().expect_err("three problems").violations.len(), 3);
    }

    proptest! {
        #[test]
        fn validators_never_panic(text in any::<String>(), lat in any::<f64>(), lon in any::<f64>()) {
            let _ = valid_phone(&text);
            let _ = valid_national_id(&text);
            let _ = valid_short_address(&text);
            let mut v = Violations::new();
            let _ = clean_description(&text, &mut v);
            let catalogue = Catalogue::default();
            let s = Submission {
                request_id: &text,
                channel: Some("mobile_app"),
                category_code: &text,
                description: &text,
                latitude: lat,
                longitude: lon,
                national_address_short: &text,
                municipality_code: &text,
                has_location: true,
                reporter_name: &text,
                reporter_phone: &text,
                reporter_national_id: &text,
                attachments: &[],
                observed_at: None,
                priority_hint: None,
            };
            let _ = validate(&s, &catalogue, Utc::now());
        }

        #[test]
        fn generated_valid_ids_pass(body in "[12][0-9]{8}") {
            // Append the Luhn digit that makes the sum a multiple of 10.
            let id = (0..10).map(|d| format!("{body}{d}")).find(|c| valid_national_id(c));
            prop_assert!(id.is_some());
        }
    }
}
