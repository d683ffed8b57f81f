//! What the CLI prints: protobuf messages as the canonical proto3 JSON
//! mapping (field names as in the protos, enums by name, timestamps in RFC
//! 3339), decoded through the same descriptor set the gRPC port serves for
//! reflection, so any message or event payload can be shown without code
//! per type; and aligned text tables for people.

use std::sync::OnceLock;

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
