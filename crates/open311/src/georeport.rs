//! GeoReport v2 in the platform's terms (pure): what an Open311 form or query
//! becomes as an intake request, and what a report or category becomes as an
//! Open311 record.
//!
//! - `service_code` is a category code; `jurisdiction_id` is a municipality
//!   code (`RIYADH`); `service_request_id` is the report's tracking number
//!   (`RUH-2026-0001234`); a `token` is the report's id (a UUID).
//! - A location is `lat` + `long`, or `address_id` (a Saudi National Address
//!   short code, `RRRD2929`), or an `address_string` that contains one: there
//!   is no geocoder behind this door, and a place the platform cannot locate
//!   is refused rather than guessed.
//! - Status is `open` until the report is resolved or closed.
//! - Every service has two attributes: `observed_at` (when the citizen saw the
//!   problem) and `priority_hint` (how urgent it looks to them).
//! - The intake request id (the idempotency key) is derived from the client
//!   and the form, so a client that retries a POST after a lost response gets
//!   the same request back instead of a second one.

use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::intake::v1 as pb;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::wire::{Doc, ErrorItem, Val};

/// The specification's own address, advertised by discovery.
pub const SPECIFICATION: &str = "http://wiki.open311.org/GeoReport_v2";
/// The widest `start_date`..`end_date` span and the default look-back.
pub const MAX_SPAN_DAYS: i64 = 90;
/// The most requests one `GET /requests` returns.
pub const MAX_REQUESTS: usize = 1_000;
/// Longest `description` the specification allows.
const MAX_DESCRIPTION: usize = 4_000;

/// A 400 error item.
pub fn bad(description: impl Into<String>) -> ErrorItem {
    ErrorItem {
        code: 400,
        description: description.into(),
    }
}

/// A 404 error item.
pub fn not_found(description: impl Into<String>) -> ErrorItem {
    ErrorItem {
        code: 404,
        description: description.into(),
    }
}

/// The language names are shown in, from `Accept-Language`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Arabic,
    English,
}

impl Lang {
    /// Arabic when the client's first preference is Arabic, else English.
    pub fn from_accept_language(header: Option<&str>) -> Self {
        let first = header
            .and_then(|h| h.split(',').next())
            .map(|t| t.trim().to_ascii_lowercase());
        match first {
            Some(tag) if tag == "ar" || tag.starts_with("ar-") || tag.starts_with("ar;") => {
                Self::Arabic
            }
            _ => Self::English,
        }
    }

    fn pick(self, text: Option<&common::LocalizedText>) -> String {
        let Some(t) = text else {
            return String::new();
        };
        let (first, second) = match self {
            Self::Arabic => (&t.ar, &t.en),
            Self::English => (&t.en, &t.ar),
        };
        if first.is_empty() {
            second.clone()
        } else {
            first.clone()
        }
    }
}

/// `GET /services`: one record per active category.
pub fn service_list(categories: &[pb::Category], lang: Lang) -> Doc {
    Doc::list(
        "services",
        "service",
        categories
            .iter()
            .filter(|c| c.active)
            .map(|c| {
                Val::Record(vec![
                    ("service_code", Val::Text(c.code.clone())),
                    ("service_name", Val::Text(lang.pick(c.name.as_ref()))),
                    ("description", Val::Text(description_of(c, lang))),
                    ("metadata", Val::Bool(true)),
                    ("type", Val::Text("realtime".into())),
                    ("keywords", Val::Text(keywords_of(c))),
                    ("group", Val::Text(c.group.clone())),
                ])
            })
            .collect(),
    )
}

fn description_of(c: &pb::Category, lang: Lang) -> String {
    let other = match lang {
        Lang::Arabic => Lang::English,
        Lang::English => Lang::Arabic,
    };
    let name = other.pick(c.name.as_ref());
    if c.urgent_capable {
        format!("{name} (may be raised to urgent)")
    } else {
        name
    }
}

fn keywords_of(c: &pb::Category) -> String {
    let mut words: Vec<String> = c
        .name
        .iter()
        .flat_map(|n| [n.en.clone(), n.ar.clone()])
        .filter(|w| !w.is_empty())
        .collect();
    words.push(c.group.clone());
    words.retain(|w| !w.is_empty());
    words.join(",")
}

/// The attributes every service takes, in order.
const ATTRIBUTES: [&str; 2] = ["observed_at", "priority_hint"];

/// `GET /services/{code}`: the service definition.
pub fn service_definition(c: &pb::Category) -> Doc {
    let mut priorities = vec![("LOW", "low"), ("NORMAL", "normal"), ("HIGH", "high")];
    if c.urgent_capable {
        priorities.push(("URGENT", "urgent"));
    }
    let attribute = |order: u32,
                     code: &str,
                     datatype: &str,
                     description: &str,
                     datatype_description: &str,
                     values: Vec<Val>| {
        Val::Record(vec![
            ("variable", Val::Bool(true)),
            ("code", Val::Text(code.into())),
            ("datatype", Val::Text(datatype.into())),
            ("required", Val::Bool(false)),
            (
                "datatype_description",
                Val::Text(datatype_description.into()),
            ),
            ("order", Val::Number(order.to_string())),
            ("description", Val::Text(description.into())),
            ("values", Val::List("value", values)),
        ])
    };
    Doc::record(
        "service_definition",
        vec![
            ("service_code", Val::Text(c.code.clone())),
            (
                "attributes",
                Val::List(
                    "attribute",
                    vec![
                        attribute(
                            1,
                            ATTRIBUTES[0],
                            "datetime",
                            "When you saw the problem, if not just now.",
                            "W3C date and time with a time zone, e.g. 2026-11-30T08:15:00+03:00",
                            vec![],
                        ),
                        attribute(
                            2,
                            ATTRIBUTES[1],
                            "singlevaluelist",
                            "How urgent it looks to you; the platform sets the priority.",
                            "",
                            priorities
                                .into_iter()
                                .map(|(key, name)| {
                                    Val::Record(vec![
                                        ("key", Val::Text(key.into())),
                                        ("name", Val::Text(name.into())),
                                    ])
                                })
                                .collect(),
                        ),
                    ],
                ),
            ),
        ],
    )
}

/// The value of argument `name` (the last one given), trimmed; empty when
/// absent, which the specification treats the same as empty.
pub fn arg(args: &[(String, String)], name: &str) -> String {
    args.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// A `POST /requests` form, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRequest {
    pub submit: pb::SubmitReportRequest,
    /// Echoed back as the specification asks.
    pub account_id: String,
    /// What the client sent that is not kept, said back in `service_notice`.
    pub notices: Vec<String>,
}

/// Maps a `POST /requests` form (already authenticated; `api_key` is
/// ignored here) for a client whose channel is `channel`. Every problem is
/// reported at once, each naming its parameter.
pub fn new_request(
    form: &[(String, String)],
    client: &str,
    channel: pb::Channel,
) -> Result<NewRequest, Vec<ErrorItem>> {
    let mut errors = Vec::new();
    let value = |name: &str| arg(form, name);
    let service_code = value("service_code");
    if service_code.is_empty() {
        errors.push(bad("service_code: is required"));
    }

    let mut location = common::Location {
        municipality_code: value("jurisdiction_id"),
        ..Default::default()
    };
    let (lat, long) = (value("lat"), value("long"));
    let mut has_point = false;
    match (lat.is_empty(), long.is_empty()) {
        (true, true) => {}
        (false, true) => errors.push(bad("long: is required with lat")),
        (true, false) => errors.push(bad("lat: is required with long")),
        (false, false) => {
            match lat.parse::<f64>() {
                Ok(v) if v.is_finite() => location.latitude = v,
                _ => errors.push(bad("lat: must be a number of degrees, e.g. 24.7136")),
            }
            match long.parse::<f64>() {
                Ok(v) if v.is_finite() => location.longitude = v,
                _ => errors.push(bad("long: must be a number of degrees, e.g. 46.6753")),
            }
            has_point = true;
        }
    }
    let address_id = value("address_id").to_ascii_uppercase();
    let address_string = value("address_string");
    if !address_id.is_empty() {
        location.national_address_short = address_id;
    } else if let Some(code) = short_code_in(&address_string) {
        location.national_address_short = code;
    } else if !address_string.is_empty() && !has_point {
        errors.push(bad(
            "address_string: holds no National Address short code (four letters and four digits, e.g. RRRD2929); send lat and long or address_id",
        ));
    }
    if !has_point && address_string.is_empty() && location.national_address_short.is_empty() {
        errors.push(bad(
            "lat: a location is required: lat and long, address_string or address_id",
        ));
    }

    let mut description = value("description");
    if description.chars().count() > MAX_DESCRIPTION {
        errors.push(bad("description: must be at most 4000 characters"));
    }
    // A street address beside coordinates helps the crew find the place.
    if !address_string.is_empty() && short_code_in(&address_string).is_none() {
        description = format!("{description}\n({address_string})")
            .trim()
            .to_string();
    }

    let name = format!("{} {}", value("first_name"), value("last_name"))
        .trim()
        .to_string();
    let phone = value("phone");
    let reporter = (!name.is_empty() || !phone.is_empty()).then(|| pb::Reporter {
        name,
        phone,
        national_id: String::new(),
    });

    let mut observed_at = None;
    let mut priority_hint = common::Priority::Unspecified;
    for (key, v) in form {
        let Some(code) = key
            .strip_prefix("attribute[")
            .and_then(|k| k.strip_suffix(']').or_else(|| k.strip_suffix("][]")))
        else {
            continue;
        };
        let v = v.trim();
        match code {
            "observed_at" if !v.is_empty() => match w3c_datetime(v) {
                Some(t) => observed_at = Some(timestamp(t)),
                None => errors.push(bad(
                    "attribute[observed_at]: must be a date and time with a time zone, e.g. 2026-11-30T08:15:00+03:00",
                )),
            },
            "priority_hint" if !v.is_empty() => {
                match common::Priority::from_str_name(&format!("PRIORITY_{}", v.to_ascii_uppercase())) {
                    Some(p) if p != common::Priority::Unspecified => priority_hint = p,
                    _ => errors.push(bad(
                        "attribute[priority_hint]: must be LOW, NORMAL, HIGH or URGENT",
                    )),
                }
            }
            "observed_at" | "priority_hint" => {}
            other => errors.push(bad(format!(
                "attribute[{other}]: is not an attribute of any service here; see GET /services/{service_code}"
            ))),
        }
    }

    let mut notices = Vec::new();
    if !value("media_url").is_empty() {
        notices.push(
            "media_url was not kept: attach photos through the Balady portal or app".to_string(),
        );
    }
    if !value("email").is_empty() {
        notices.push("email was not kept: give a phone number to be called back".to_string());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let submit = pb::SubmitReportRequest {
        request_id: String::new(),
        channel: channel as i32,
        category_code: service_code,
        description,
        location: Some(location),
        reporter,
        attachments: vec![],
        observed_at,
        priority_hint: priority_hint as i32,
    };
    Ok(NewRequest {
        submit: pb::SubmitReportRequest {
            request_id: request_id(client, form),
            ..submit
        },
        account_id: value("account_id"),
        notices,
    })
}

/// The idempotency key of a form: the client and every field but `api_key`,
/// in a canonical order.
fn request_id(client: &str, form: &[(String, String)]) -> String {
    let mut fields: Vec<&(String, String)> = form.iter().filter(|(k, _)| k != "api_key").collect();
    fields.sort();
    let mut hash = Sha256::new();
    hash.update(client.as_bytes());
    for (k, v) in fields {
        hash.update([0]);
        hash.update(k.as_bytes());
        hash.update([0]);
        hash.update(v.trim().as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("open311-{hex}")
}

/// The first National Address short code (four capital letters and four
/// digits) in `text`, as a word of its own.
pub fn short_code_in(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_uppercase)
        .find(|w| {
            w.len() == 8
                && w[..4].chars().all(|c| c.is_ascii_uppercase())
                && w[4..].chars().all(|c| c.is_ascii_digit())
        })
}

/// A W3C date-time; the specification requires a time zone.
pub fn w3c_datetime(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn w3c(t: Option<&prost_types::Timestamp>) -> Val {
    t.and_then(instant)
        .map(|t| Val::Text(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(Val::Null)
}

/// What `GET /requests` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `service_request_id` given: these requests, every other argument ignored.
    Ids(Vec<String>),
    /// Otherwise: a filtered, bounded list, newest first.
    Filter(pb::ListReportsRequest),
}

/// The statuses Open311 calls `open`: everything before a resolution.
const OPEN: &[pb::ReportStatus] = &[
    pb::ReportStatus::Received,
    pb::ReportStatus::Routed,
    pb::ReportStatus::Acknowledged,
    pb::ReportStatus::InProgress,
    pb::ReportStatus::OnHold,
    pb::ReportStatus::Reopened,
];
/// The statuses Open311 calls `closed`.
const CLOSED: &[pb::ReportStatus] = &[pb::ReportStatus::Resolved, pb::ReportStatus::Closed];

/// The statuses an Open311 status word stands for.
fn statuses(word: &str) -> Option<&'static [pb::ReportStatus]> {
    match word {
        "open" => Some(OPEN),
        "closed" => Some(CLOSED),
        _ => None,
    }
}

/// Maps `GET /requests` arguments, with the specification's defaults: the
/// last 90 days, at most 90 days between `start_date` and `end_date`.
pub fn list_query(args: &[(String, String)], now: DateTime<Utc>) -> Result<Query, Vec<ErrorItem>> {
    let value = |name: &str| arg(args, name);
    let csv = |text: String| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let ids = csv(value("service_request_id"));
    if !ids.is_empty() {
        return Ok(Query::Ids(ids));
    }
    let mut errors = Vec::new();
    let mut date = |name: &str| -> Option<DateTime<Utc>> {
        let text = value(name);
        if text.is_empty() {
            return None;
        }
        let parsed = w3c_datetime(&text);
        if parsed.is_none() {
            errors.push(bad(format!(
                "{name}: must be a W3C date and time with a time zone, e.g. 2026-11-01T00:00:00+03:00"
            )));
        }
        parsed
    };
    let (start, end) = (date("start_date"), date("end_date"));
    let span = Duration::days(MAX_SPAN_DAYS);
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) => (s, e),
        (Some(s), None) => (s, (s + span).min(now)),
        (None, Some(e)) => (e - span, e),
        (None, None) => (now - span, now),
    };
    if end < start {
        errors.push(bad("end_date: is before start_date"));
    } else if end - start > span {
        errors.push(bad("end_date: may be at most 90 days after start_date"));
    }
    let mut wanted = Vec::new();
    for word in csv(value("status")) {
        match statuses(&word) {
            Some(s) => wanted.extend(s.iter().map(|s| *s as i32)),
            None => errors.push(bad(format!("status: '{word}' is not open or closed"))),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Query::Filter(pb::ListReportsRequest {
        page_size: 500,
        municipality_code: value("jurisdiction_id"),
        category_codes: csv(value("service_code")),
        statuses: wanted,
        created: Some(common::Interval {
            start_time: Some(timestamp(start)),
            // Inclusive in Open311; the API's intervals are half-open.
            end_time: Some(timestamp(end + Duration::microseconds(1))),
        }),
        ..Default::default()
    }))
}

/// Open311's word for a report's status.
pub fn status_word(status: i32) -> &'static str {
    if CLOSED.iter().any(|s| *s as i32 == status) {
        "closed"
    } else {
        "open"
    }
}

fn status_notes(r: &pb::Report) -> String {
    use pb::ReportStatus as S;
    let mut notes = match pb::ReportStatus::try_from(r.status) {
        Ok(S::Received) => "received, not yet routed",
        Ok(S::Routed) => "routed to the body that must act",
        Ok(S::Acknowledged) => "acknowledged by the body that must act",
        Ok(S::InProgress) => "work is under way",
        Ok(S::OnHold) => "on hold: waiting on the reporter",
        Ok(S::Resolved) => "resolved",
        Ok(S::Closed) => "closed",
        Ok(S::Reopened) => "reopened",
        _ => "",
    }
    .to_string();
    if !r.duplicate_of.is_empty() {
        notes.push_str("; linked to an earlier report of the same problem");
    }
    notes
}

/// One `request` record of `GET /requests`.
pub fn request_record(r: &pb::Report, service_name: &str) -> Val {
    let location = r.location.clone().unwrap_or_default();
    let has_point = location.latitude != 0.0 || location.longitude != 0.0;
    let coordinate = |v: f64| {
        if has_point {
            Val::Number(v.to_string())
        } else {
            Val::Null
        }
    };
    Val::Record(vec![
        ("service_request_id", Val::Text(r.tracking_number.clone())),
        ("status", Val::Text(status_word(r.status).into())),
        ("status_notes", Val::text_or_null(status_notes(r))),
        ("service_name", Val::text_or_null(service_name)),
        ("service_code", Val::Text(r.category_code.clone())),
        ("description", Val::text_or_null(r.description.clone())),
        (
            "agency_responsible",
            Val::text_or_null(r.assignee_code.clone()),
        ),
        ("service_notice", Val::Null),
        ("requested_datetime", w3c(r.created_at.as_ref())),
        ("updated_datetime", w3c(r.status_changed_at.as_ref())),
        ("expected_datetime", w3c(r.expected_resolution_at.as_ref())),
        (
            "address",
            Val::text_or_null(location.national_address_short.clone()),
        ),
        (
            "address_id",
            Val::text_or_null(location.national_address_short.clone()),
        ),
        ("zipcode", Val::Null),
        ("lat", coordinate(location.latitude)),
        ("long", coordinate(location.longitude)),
        (
            "media_url",
            Val::text_or_null(
                r.attachments
                    .first()
                    .map(|a| a.uri.clone())
                    .unwrap_or_default(),
            ),
        ),
    ])
}

/// The answer to `POST /requests`.
pub fn created(r: &pb::Report, new: &NewRequest, linked_as_duplicate: bool) -> Doc {
    let mut notices = new.notices.clone();
    if linked_as_duplicate {
        notices.insert(
            0,
            "linked to an open report of the same problem nearby".to_string(),
        );
    }
    Doc::list(
        "service_requests",
        "request",
        vec![Val::Record(vec![
            ("service_request_id", Val::Text(r.tracking_number.clone())),
            ("service_notice", Val::text_or_null(notices.join("; "))),
            ("account_id", Val::text_or_null(new.account_id.clone())),
        ])],
    )
}

/// The answer to `GET /tokens/{token}`.
pub fn token(r: &pb::Report, token: &str) -> Doc {
    Doc::list(
        "service_requests",
        "request",
        vec![Val::Record(vec![
            ("service_request_id", Val::Text(r.tracking_number.clone())),
            ("token", Val::Text(token.into())),
        ])],
    )
}

/// `discovery`: where the endpoint is and what it speaks.
pub fn discovery(url: &str, changeset: DateTime<Utc>, contact: &str, key_service: &str) -> Doc {
    let changeset = Val::Text(changeset.to_rfc3339_opts(SecondsFormat::Secs, true));
    Doc::record(
        "discovery",
        vec![
            ("changeset", changeset.clone()),
            ("contact", Val::Text(contact.into())),
            ("key_service", Val::Text(key_service.into())),
            (
                "endpoints",
                Val::List(
                    "endpoint",
                    vec![Val::Record(vec![
                        ("specification", Val::Text(SPECIFICATION.into())),
                        ("url", Val::Text(url.into())),
                        ("changeset", changeset),
                        ("type", Val::Text("production".into())),
                        (
                            "formats",
                            Val::List(
                                "format",
                                vec![
                                    Val::Text("text/xml".into()),
                                    Val::Text("application/json".into()),
                                ],
                            ),
                        ),
                    ])],
                ),
            ),
        ],
    )
}

/// The Open311 parameter an intake field violation is about, and whether it
/// means "unknown" (404) rather than "bad" (400).
pub fn parameter_of(field: &str, message: &str) -> (&'static str, u16) {
    let unknown = message.contains("not a known") || message.contains("not a municipality");
    match field {
        "category_code" if unknown => ("service_code", 404),
        "category_code" => ("service_code", 400),
        "location.municipality_code" | "municipality_code" if unknown => ("jurisdiction_id", 404),
        "location.municipality_code" | "municipality_code" => ("jurisdiction_id", 400),
        "location.latitude" => ("lat", 400),
        "location.longitude" => ("long", 400),
        "location.national_address_short" => ("address_id", 400),
        "location" => ("lat", 400),
        "description" => ("description", 400),
        "reporter.name" => ("first_name", 400),
        "reporter.phone" => ("phone", 400),
        "observed_at" => ("attribute[observed_at]", 400),
        "priority_hint" => ("attribute[priority_hint]", 400),
        _ => ("request", 400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    /// A form from the client `app` on the Open311 channel.
    fn from_app(pairs: &[(&str, &str)]) -> Result<NewRequest, Vec<ErrorItem>> {
        new_request(&form(pairs), "app", pb::Channel::Open311)
    }

    #[test]
    fn a_form_with_coordinates_becomes_an_open311_report() {
        let new = from_app(&[
            ("api_key", "k"),
            ("jurisdiction_id", "RIYADH"),
            ("service_code", "POTHOLE"),
            ("lat", "24.7136"),
            ("long", "46.6753"),
            ("description", "حفرة"),
            ("first_name", "Sara"),
            ("last_name", "Ali"),
            ("phone", "+966501234567"),
            ("attribute[observed_at]", "2026-11-30T08:15:00+03:00"),
            ("attribute[priority_hint]", "high"),
            ("account_id", "a-1"),
        ])
        .expect("valid");
        let s = &new.submit;
        assert_eq!(s.channel, pb::Channel::Open311 as i32);
        assert_eq!(s.category_code, "POTHOLE");
        let l = s.location.clone().expect("location");
        assert_eq!((l.latitude, l.longitude), (24.7136, 46.6753));
        assert_eq!(l.municipality_code, "RIYADH");
        assert_eq!(s.reporter.as_ref().expect("reporter").name, "Sara Ali");
        assert_eq!(s.priority_hint, common::Priority::High as i32);
        assert_eq!(
            s.observed_at.as_ref().and_then(instant),
            w3c_datetime("2026-11-30T05:15:00Z")
        );
        assert_eq!(new.account_id, "a-1");
        assert!(s.request_id.starts_with("open311-") && s.request_id.len() <= 64);
    }

    #[test]
    fn the_same_form_from_the_same_client_is_the_same_request() {
        let a = form(&[
            ("service_code", "POTHOLE"),
            ("address_id", "rrrd2929"),
            ("api_key", "1"),
        ]);
        let b = form(&[
            ("api_key", "2"),
            ("address_id", "rrrd2929"),
            ("service_code", "POTHOLE"),
        ]);
        let id = |f: &[(String, String)], client: &str| {
            new_request(f, client, pb::Channel::Open311)
                .expect("valid")
                .submit
                .request_id
        };
        assert_eq!(id(&a, "app"), id(&b, "app"));
        assert_ne!(id(&a, "app"), id(&a, "kiosk"));
        let c = form(&[("service_code", "POTHOLE"), ("address_id", "RRRD2930")]);
        assert_ne!(id(&a, "app"), id(&c, "app"));
    }

    #[test]
    fn a_short_code_is_found_in_an_address_string() {
        let new = from_app(&[
            ("service_code", "POTHOLE"),
            ("address_string", "RRRD2929, King Fahd Road"),
        ])
        .expect("valid");
        assert_eq!(
            new.submit
                .location
                .expect("location")
                .national_address_short,
            "RRRD2929"
        );
        assert_eq!(short_code_in("near rrrd2929."), Some("RRRD2929".into()));
        assert_eq!(short_code_in("RRRD29290"), None);
    }

    #[test]
    fn every_bad_parameter_is_named_at_once() {
        let errors = from_app(&[
            ("lat", "north"),
            ("address_string", "King Fahd Road"),
            ("attribute[colour]", "red"),
            ("attribute[observed_at]", "yesterday"),
        ])
        .expect_err("invalid");
        let text: Vec<&str> = errors.iter().map(|e| e.description.as_str()).collect();
        for expected in [
            "service_code:",
            "long: is required with lat",
            "attribute[colour]:",
            "attribute[observed_at]:",
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(expected)),
                "{expected} missing from {text:?}"
            );
        }
        assert!(errors.iter().all(|e| e.code == 400));
        let none = from_app(&[("service_code", "POTHOLE")]).expect_err("no location");
        assert!(
            none[0]
                .description
                .starts_with("lat: a location is required")
        );
        let street = from_app(&[
            ("service_code", "POTHOLE"),
            ("address_string", "King Fahd Road"),
        ])
        .expect_err("cannot be located");
        assert!(street[0].description.starts_with("address_string:"));
    }

    #[test]
    fn list_defaults_to_the_last_ninety_days() {
        let now = w3c_datetime("2026-11-30T12:00:00Z").expect("now");
        let Query::Filter(q) = list_query(&[], now).expect("valid") else {
            panic!("a filter")
        };
        let created = q.created.expect("interval");
        assert_eq!(
            created.start_time.as_ref().and_then(instant),
            Some(now - Duration::days(90))
        );
        assert!(q.statuses.is_empty() && q.category_codes.is_empty());
    }

    #[test]
    fn list_arguments_map_to_filters() {
        let now = w3c_datetime("2026-11-30T12:00:00Z").expect("now");
        let args = form(&[
            ("service_code", "POTHOLE,STREETLIGHT"),
            ("status", "closed"),
            ("start_date", "2026-11-01T00:00:00+03:00"),
            ("end_date", "2026-11-30T00:00:00+03:00"),
            ("jurisdiction_id", "RIYADH"),
        ]);
        let Query::Filter(q) = list_query(&args, now).expect("valid") else {
            panic!("a filter")
        };
        assert_eq!(q.category_codes, vec!["POTHOLE", "STREETLIGHT"]);
        assert_eq!(
            q.statuses,
            vec![
                pb::ReportStatus::Resolved as i32,
                pb::ReportStatus::Closed as i32
            ]
        );
        assert_eq!(q.municipality_code, "RIYADH");
        assert_eq!(
            q.created
                .expect("interval")
                .start_time
                .as_ref()
                .and_then(instant),
            w3c_datetime("2026-10-31T21:00:00Z")
        );
        let ids = list_query(
            &form(&[("service_request_id", "A, B"), ("status", "bad")]),
            now,
        );
        assert_eq!(ids, Ok(Query::Ids(vec!["A".into(), "B".into()])));
    }

    #[test]
    fn list_refuses_spans_over_ninety_days_and_dates_without_zones() {
        let now = w3c_datetime("2026-11-30T12:00:00Z").expect("now");
        let wide = form(&[
            ("start_date", "2026-01-01T00:00:00Z"),
            ("end_date", "2026-11-01T00:00:00Z"),
        ]);
        let e = list_query(&wide, now).expect_err("too wide");
        assert!(
            e[0].description
                .starts_with("end_date: may be at most 90 days")
        );
        let naive = form(&[("start_date", "2026-11-01T00:00:00"), ("status", "pending")]);
        let e = list_query(&naive, now).expect_err("no zone");
        assert_eq!(e.len(), 2);
        assert!(e[0].description.starts_with("start_date:"));
        assert!(e[1].description.starts_with("status:"));
    }

    #[test]
    fn open_until_resolved_or_closed() {
        for s in OPEN {
            assert_eq!(status_word(*s as i32), "open");
        }
        for s in CLOSED {
            assert_eq!(status_word(*s as i32), "closed");
        }
        // Every status the API has is exactly one of the two.
        for s in (1..).map_while(|n| pb::ReportStatus::try_from(n).ok()) {
            assert!(OPEN.contains(&s) != CLOSED.contains(&s), "{s:?}");
        }
    }

    #[test]
    fn arabic_first_clients_get_arabic_names() {
        assert_eq!(
            Lang::from_accept_language(Some("ar-SA,en;q=0.8")),
            Lang::Arabic
        );
        assert_eq!(Lang::from_accept_language(Some("en-GB")), Lang::English);
        assert_eq!(Lang::from_accept_language(None), Lang::English);
        let c = pb::Category {
            code: "POTHOLE".into(),
            name: Some(common::LocalizedText {
                ar: "حفرة".into(),
                en: "Pothole".into(),
            }),
            active: true,
            ..Default::default()
        };
        let ar =
            service_list(std::slice::from_ref(&c), Lang::Arabic).render(crate::wire::Format::Json);
        assert!(ar.contains(r#""service_name":"حفرة""#), "{ar}");
    }

    #[test]
    fn violations_point_at_open311_parameters() {
        assert_eq!(
            parameter_of("category_code", "'X' is not a known category"),
            ("service_code", 404)
        );
        assert_eq!(
            parameter_of(
                "location.municipality_code",
                "'X' is not a municipality this platform serves"
            ),
            ("jurisdiction_id", 404)
        );
        assert_eq!(parameter_of("location.latitude", "must be"), ("lat", 400));
        assert_eq!(
            parameter_of(
                "municipality_code",
                "'X' is not a municipality this platform serves"
            ),
            ("jurisdiction_id", 404)
        );
    }
}
