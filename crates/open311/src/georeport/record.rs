//! What an Open311 client gets back: reports and categories as Open311
//! records, the answers to `POST /requests` and `GET /tokens`, and
//! discovery, each a [`Doc`] for [`crate::wire`] to render.

use baladiya_proto::convert::instant;
use baladiya_proto::intake::v1 as pb;
use chrono::{DateTime, SecondsFormat, Utc};

use super::request::NewRequest;
use super::{CLOSED, Lang, SPECIFICATION};
use crate::wire::{Doc, Val};

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

fn w3c(t: Option<&prost_types::Timestamp>) -> Val {
    t.and_then(instant)
        .map(|t| Val::Text(t.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or(Val::Null)
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

#[cfg(test)]
mod tests {
    use baladiya_proto::common::v1 as common;

    use super::super::OPEN;
    use super::*;

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
}
