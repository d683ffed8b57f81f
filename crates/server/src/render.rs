//! What the CLI prints: protobuf messages as the canonical proto3 JSON
//! mapping (field names as in the protos, enums by name, timestamps in RFC
//! 3339), decoded through the same descriptor set the gRPC port serves for
//! reflection, so any message or event payload can be shown without code
//! per type; and aligned text tables for people, including the tables of
//! every client command ([`crate::client`]), kept here beside the rest of the
//! output so the commands only fetch and choose what to show.

use std::sync::OnceLock;

use baladiya_proto::intake::v1 as intake;
use baladiya_proto::kpi::v1 as kpi;
use baladiya_proto::routing::v1 as routing;
use baladiya_proto::sla::v1 as sla;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// The platform's messages, from `baladiya_proto::FILE_DESCRIPTOR_SET`.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(baladiya_proto::FILE_DESCRIPTOR_SET)
            .expect("the build's own descriptor set decodes")
    })
}

/// The JSON form of an encoded message named `full_name`
/// (`baladiya.routing.events.v1.CaseRouted`); `None` when the name is not a
/// message of this build or the bytes do not decode as it.
pub fn json_of(full_name: &str, bytes: &[u8]) -> Option<serde_json::Value> {
    let descriptor = pool().get_message_by_name(full_name)?;
    let message = DynamicMessage::decode(descriptor, bytes).ok()?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .ok()
}

/// The JSON form of a generated message.
pub fn json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    json_of(&M::full_name(), &message.encode_to_vec()).unwrap_or(serde_json::Value::Null)
}

/// Rows under a header, columns padded to their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |cell: &str| cell.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            let mut out = String::new();
            for (i, cell) in cells.into_iter().enumerate() {
                out.push_str(cell);
                if i < last {
                    out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(self.header.clone());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        if self.rows.is_empty() {
            out.push_str("(none)\n");
        }
        out
    }
}

/// An enum value's name without its type prefix, lower case:
/// `CASE_STATUS_IN_PROGRESS` as `in_progress`.
pub fn enum_word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// A timestamp in RFC 3339 (UTC, seconds), or `-`.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(baladiya_proto::convert::instant)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// When a step was recorded, where that shows a later second than when it
/// happened (an action back-dated within the service's bound); empty otherwise.
pub fn recorded_if_later(
    occurred: Option<&prost_types::Timestamp>,
    recorded: Option<&prost_types::Timestamp>,
) -> String {
    let second = |t: Option<&prost_types::Timestamp>| {
        t.and_then(baladiya_proto::convert::instant)
            .map(|t| t.timestamp())
    };
    match (second(occurred), second(recorded)) {
        (Some(o), Some(r)) if r > o => time(recorded),
        _ => String::new(),
    }
}

/// A duration as hours and minutes, or `-`.
pub fn duration(d: Option<&prost_types::Duration>) -> String {
    d.map(|d| {
        let minutes = d.seconds / 60;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    })
    .unwrap_or_else(|| "-".into())
}

// ------------------------------------------------------------ command tables
//
// The tables of the client commands (`crate::client`), one function per
// response shape, so every text the CLI prints for people is drawn here.

/// Reports, one line each.
pub fn report_table(reports: &[intake::Report]) -> String {
    let mut t = Table::new(&[
        "tracking",
        "status",
        "municipality",
        "category",
        "priority",
        "assignee",
        "received",
    ]);
    for r in reports {
        t.row(vec![
            r.tracking_number.clone(),
            enum_word(r.status().as_str_name(), "REPORT_STATUS_"),
            r.municipality_code.clone(),
            r.category_code.clone(),
            enum_word(r.priority().as_str_name(), "PRIORITY_"),
            or_dash(&r.assignee_code),
            time(r.created_at.as_ref()),
        ]);
    }
    t.render()
}

/// One report, a field per line.
pub fn report_detail(r: &intake::Report) -> String {
    let location = r.location.clone().unwrap_or_default();
    let mut t = Table::new(&["field", "value"]);
    for (k, v) in [
        ("id", r.id.clone()),
        ("tracking", r.tracking_number.clone()),
        (
            "status",
            enum_word(r.status().as_str_name(), "REPORT_STATUS_"),
        ),
        ("municipality", r.municipality_code.clone()),
        ("category", r.category_code.clone()),
        (
            "priority",
            format!(
                "{} ({})",
                enum_word(r.priority().as_str_name(), "PRIORITY_"),
                r.priority_reason
            ),
        ),
        ("assignee", or_dash(&r.assignee_code)),
        (
            "expected resolution",
            time(r.expected_resolution_at.as_ref()),
        ),
        ("received", time(r.created_at.as_ref())),
        ("status changed", time(r.status_changed_at.as_ref())),
        (
            "where",
            format!(
                "{} {} {}",
                location.latitude, location.longitude, location.national_address_short
            )
            .trim()
            .to_string(),
        ),
        ("duplicate of", or_dash(&r.duplicate_of)),
        ("supporters", r.supporters.to_string()),
        (
            "rating",
            r.rating
                .as_ref()
                .map(|x| format!("{}/5 {}", x.score, x.comment))
                .unwrap_or_else(|| "-".into()),
        ),
        ("description", r.description.clone()),
    ] {
        t.row(vec![k.to_string(), v]);
    }
    t.render()
}

/// A submitted report, and whether it joined an open one as a duplicate.
pub fn submission_detail(r: &intake::SubmitReportResponse) -> String {
    let mut out = report_detail(&r.report.clone().unwrap_or_default());
    if r.linked_as_duplicate {
        out.push_str("linked to an open report of the same problem nearby\n");
    }
    out
}

/// The text, or `-` when empty.
fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// Cases, one line each.
pub fn case_table(cases: &[routing::Case]) -> String {
    let mut t = Table::new(&[
        "id",
        "tracking",
        "status",
        "assignee",
        "municipality",
        "category",
        "priority",
        "overdue",
    ]);
    for c in cases {
        t.row(vec![
            c.id.clone(),
            c.tracking_number.clone(),
            enum_word(c.status().as_str_name(), "CASE_STATUS_"),
            c.assignee_code.clone(),
            c.municipality_code.clone(),
            c.category_code.clone(),
            enum_word(c.priority().as_str_name(), "PRIORITY_"),
            if c.overdue { "yes" } else { "" }.into(),
        ]);
    }
    t.render()
}

/// One case's line, its resolution, then its history.
pub fn case_detail(c: &routing::Case) -> String {
    let mut out = case_table(std::slice::from_ref(c));
    if !c.resolution.is_empty() {
        out.push_str(&format!("resolution: {}\n", c.resolution));
    }
    out.push('\n');
    let mut t = Table::new(&[
        "when", "recorded", "action", "to", "assignee", "actor", "note",
    ]);
    for h in &c.history {
        t.row(vec![
            time(h.occurred_at.as_ref()),
            recorded_if_later(h.occurred_at.as_ref(), h.recorded_at.as_ref()),
            h.action.clone(),
            enum_word(h.to_status().as_str_name(), "CASE_STATUS_"),
            or_dash(&h.assignee_code),
            h.actor.clone(),
            h.note.clone(),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// A subject's SLA clocks, with what a held firing waits on.
pub fn clock_table(clocks: &[sla::Clock]) -> String {
    let mut t = Table::new(&[
        "metric",
        "partner",
        "state",
        "target",
        "elapsed",
        "deadline",
        "original",
        "agreement",
        "waiting on",
    ]);
    for c in clocks {
        // A firing held for knowledge: what, on whom, and when it goes out anyway.
        let waiting = c.held.as_ref().map_or_else(
            || "-".to_string(),
            |h| {
                let on = if h.input_parked {
                    "a parked input".to_string()
                } else {
                    format!(
                        "{} (known to {})",
                        h.waiting_on,
                        time(h.known_until.as_ref())
                    )
                };
                format!(
                    "{} due {} on {on}; fires by {}",
                    h.kind,
                    time(h.due_at.as_ref()),
                    time(h.fires_by.as_ref())
                )
            },
        );
        let mut state = enum_word(c.state().as_str_name(), "CLOCK_STATE_");
        if c.breach_provisional {
            state.push_str(" (provisional)");
        }
        if c.withdrawals > 0 {
            state.push_str(&format!(", {} withdrawn", c.withdrawals));
        }
        t.row(vec![
            c.metric.clone(),
            c.partner_code.clone(),
            state,
            duration(c.target.as_ref()),
            duration(c.elapsed.as_ref()),
            time(c.deadline.as_ref()),
            time(c.original_deadline.as_ref()),
            format!("v{}", c.agreement_version),
            waiting,
        ]);
    }
    t.render()
}

/// Escalations, with who acknowledged them and why any were withdrawn.
pub fn escalation_table(escalations: &[sla::Escalation]) -> String {
    let mut t = Table::new(&[
        "id",
        "partner",
        "level",
        "tracking",
        "raised",
        "overdue",
        "acknowledged",
        "withdrawn",
    ]);
    for e in escalations {
        let withdrawn = match &e.withdrawn_at {
            Some(at) => format!("{} ({})", time(Some(at)), e.withdrawal_reason),
            None if e.provisional => "- (provisional)".into(),
            None => "-".into(),
        };
        t.row(vec![
            e.id.clone(),
            e.partner_code.clone(),
            e.level.to_string(),
            e.tracking_number.clone(),
            time(e.raised_at.as_ref()),
            duration(e.overdue_working.as_ref()),
            if e.acknowledged_at.is_some() {
                format!(
                    "{} by {}",
                    time(e.acknowledged_at.as_ref()),
                    e.acknowledged_by
                )
            } else {
                "-".into()
            },
            withdrawn,
        ]);
    }
    t.render()
}

/// A scorecard: its subject and period, then one line per indicator.
pub fn scorecard_table(card: &kpi::Scorecard) -> String {
    let period = card.period.clone().unwrap_or_default();
    let mut out = format!(
        "{} {} ({} to {}, {})\n\n",
        if card.partner_code.is_empty() {
            &card.municipality_code
        } else {
            &card.partner_code
        },
        period.label,
        period.first_day,
        period.last_day,
        period.time_zone
    );
    let mut t = Table::new(&["indicator", "value", "target", "status", "sample"]);
    for i in &card.indicators {
        let m = i.measurement.unwrap_or_default();
        let show = |v: Option<f64>| match (v, i.unit()) {
            (None, _) => "-".to_string(),
            (Some(v), kpi::Unit::Share) => format!("{:.1}%", v * 100.0),
            (Some(v), kpi::Unit::Count) => format!("{v:.0}"),
            (Some(v), _) => format!("{v:.2}"),
        };
        t.row(vec![
            i.name_en.clone(),
            show(m.value),
            show(m.target),
            enum_word(m.status().as_str_name(), "STATUS_"),
            m.sample_size.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use baladiya_proto::intake::v1 as pb;

    #[test]
    fn messages_become_canonical_json_with_proto_field_names() {
        let report = pb::Report {
            tracking_number: "RUH-2026-0000001".into(),
            status: pb::ReportStatus::Routed as i32,
            created_at: Some(prost_types::Timestamp {
                seconds: 1_764_489_600,
                nanos: 0,
            }),
            ..Default::default()
        };
        let value = json(&report);
        assert_eq!(value["tracking_number"], "RUH-2026-0000001");
        assert_eq!(value["status"], "REPORT_STATUS_ROUTED");
        assert_eq!(value["created_at"], "2025-11-30T08:00:00Z");
        assert_eq!(value["supporters"], 0, "defaults are printed for scripts");
        assert_eq!(json_of("no.such.Message", &[]), None);
    }

    #[test]
    fn tables_align_columns_by_characters() {
        let mut t = Table::new(&["code", "name"]);
        t.row(vec!["POTHOLE".into(), "حفرة".into()]);
        t.row(vec!["X".into(), "y".into()]);
        assert_eq!(t.render(), "code     name\nPOTHOLE  حفرة\nX        y\n");
        assert_eq!(Table::new(&["a"]).render(), "a\n(none)\n");
    }

    #[test]
    fn recorded_time_shows_only_when_a_later_second() {
        let at = |seconds, nanos| Some(prost_types::Timestamp { seconds, nanos });
        let t = 1_764_489_600;
        assert_eq!(
            recorded_if_later(at(t, 0).as_ref(), at(t + 300, 0).as_ref()),
            "2025-11-30T08:05:00Z"
        );
        assert_eq!(
            recorded_if_later(at(t, 0).as_ref(), at(t, 900_000_000).as_ref()),
            ""
        );
        assert_eq!(recorded_if_later(at(t, 0).as_ref(), None), "");
        assert_eq!(recorded_if_later(None, at(t, 0).as_ref()), "");
    }

    #[test]
    fn enum_words_drop_the_type_prefix() {
        assert_eq!(
            enum_word("CASE_STATUS_IN_PROGRESS", "CASE_STATUS_"),
            "in_progress"
        );
    }
}
