//! What an Open311 client sends, as intake requests: the `POST /requests`
//! form, the `GET /requests` query, and which Open311 parameter an intake
//! field violation is about. Every problem is an [`ErrorItem`] naming its
//! parameter, reported all at once.

use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::v1 as pb;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use super::{MAX_DESCRIPTION, MAX_SPAN_DAYS, bad, statuses};
use crate::wire::ErrorItem;

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
    let (location, address_string) = location(form, &mut errors);
    let description = description(form, &address_string, &mut errors);
    let (observed_at, priority_hint) = attributes(form, &service_code, &mut errors);
    let notices = notices(form);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewRequest {
        submit: pb::SubmitReportRequest {
            request_id: request_id(client, form),
            channel: channel as i32,
            category_code: service_code,
            description,
            location: Some(location),
            reporter: reporter(form),
            attachments: vec![],
            observed_at,
            priority_hint: priority_hint as i32,
        },
        account_id: value("account_id"),
        notices,
    })
}

/// The form's location: `lat` + `long`, `address_id`, or a short code in
/// `address_string`; and `address_string` as given.
fn location(form: &[(String, String)], errors: &mut Vec<ErrorItem>) -> (common::Location, String) {
    let value = |name: &str| arg(form, name);
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
    (location, address_string)
}

/// The description, with a street address (an `address_string` without a
/// short code) after it: beside coordinates it helps the crew find the place.
fn description(
    form: &[(String, String)],
    address_string: &str,
    errors: &mut Vec<ErrorItem>,
) -> String {
    let description = arg(form, "description");
    if description.chars().count() > MAX_DESCRIPTION {
        errors.push(bad("description: must be at most 4000 characters"));
    }
    if !address_string.is_empty() && short_code_in(address_string).is_none() {
        return format!("{description}\n({address_string})")
            .trim()
            .to_string();
    }
    description
}

/// The reporter, if the form names one or gives a phone.
fn reporter(form: &[(String, String)]) -> Option<pb::Reporter> {
    let name = format!("{} {}", arg(form, "first_name"), arg(form, "last_name"))
        .trim()
        .to_string();
    let phone = arg(form, "phone");
    (!name.is_empty() || !phone.is_empty()).then(|| pb::Reporter {
        name,
        phone,
        national_id: String::new(),
    })
}

/// The service attributes (`attribute[observed_at]`,
/// `attribute[priority_hint]`); any other attribute is refused.
fn attributes(
    form: &[(String, String)],
    service_code: &str,
    errors: &mut Vec<ErrorItem>,
) -> (Option<prost_types::Timestamp>, common::Priority) {
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
    (observed_at, priority_hint)
}

/// What the client sent that is not kept, to say back in `service_notice`.
fn notices(form: &[(String, String)]) -> Vec<String> {
    let mut notices = Vec::new();
    if !arg(form, "media_url").is_empty() {
        notices.push(
            "media_url was not kept: attach photos through the Balady portal or app".to_string(),
        );
    }
    if !arg(form, "email").is_empty() {
        notices.push("email was not kept: give a phone number to be called back".to_string());
    }
    notices
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

/// What `GET /requests` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `service_request_id` given: these requests, every other argument ignored.
    Ids(Vec<String>),
    /// Otherwise: a filtered, bounded list, newest first.
    Filter(pb::ListReportsRequest),
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
    use baladiya_proto::convert::instant;

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
