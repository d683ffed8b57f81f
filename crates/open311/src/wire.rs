//! The two wire formats of GeoReport v2 from one document tree (pure).
//!
//! The specification defines XML and maps JSON onto it mechanically: a list
//! is an element of items in XML (`<services><service>…</service></services>`)
//! and an array in JSON; a record is child elements in XML and an object in
//! JSON. Every response is built once as a [`Doc`] and rendered in the format
//! the path's suffix asks for, so the two cannot drift apart. Fields keep the
//! order the specification lists them in.

use std::fmt::Write as _;

/// The format a path's suffix names (`.json` or `.xml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// Splits `services.json` into (`services`, JSON); `None` when the suffix
    /// is missing or names another format.
    pub fn split(resource: &str) -> Option<(&str, Self)> {
        let (name, suffix) = resource.rsplit_once('.')?;
        let format = match suffix {
            "json" => Self::Json,
            "xml" => Self::Xml,
            _ => return None,
        };
        (!name.is_empty()).then_some((name, format))
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json; charset=utf-8",
            Self::Xml => "text/xml; charset=utf-8",
        }
    }
}

/// A value in a response.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Text; empty text is an empty element in XML and `""` in JSON.
    Text(String),
    /// A number written as given (coordinates, error codes).
    Number(String),
    Bool(bool),
    /// Absent: an empty element in XML, `null` in JSON.
    Null,
    /// A record, fields in order.
    Record(Vec<(&'static str, Val)>),
    /// A list of values, each an element named by the item name in XML.
    List(&'static str, Vec<Val>),
}

impl Val {
    /// Text, or [`Val::Null`] when empty.
    pub fn text_or_null(text: impl Into<String>) -> Self {
        let text = text.into();
        if text.is_empty() {
            Self::Null
        } else {
            Self::Text(text)
        }
    }
}

/// A whole response: its XML root element and its body (a list or a record).
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub root: &'static str,
    pub body: Val,
}

impl Doc {
    /// A list document: `<root><item/>…</root>` or a JSON array.
    pub fn list(root: &'static str, item: &'static str, items: Vec<Val>) -> Self {
        Self {
            root,
            body: Val::List(item, items),
        }
    }

    /// A record document: `<root>…</root>` or a JSON object.
    pub fn record(root: &'static str, fields: Vec<(&'static str, Val)>) -> Self {
        Self {
            root,
            body: Val::Record(fields),
        }
    }

    /// The document in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        match format {
            Format::Json => json(&self.body, &mut out),
            Format::Xml => {
                out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
                xml_element(self.root, &self.body, &mut out);
                out.push('\n');
            }
        }
        out
    }
}

fn json(value: &Val, out: &mut String) {
    match value {
        Val::Text(t) => out.push_str(&serde_json::Value::String(t.clone()).to_string()),
        Val::Number(n) => out.push_str(n),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Null => out.push_str("null"),
        Val::Record(fields) => {
            out.push('{');
            for (i, (name, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "\"{name}\":");
                json(v, out);
            }
            out.push('}');
        }
        Val::List(_, items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(v, out);
            }
            out.push(']');
        }
    }
}

fn xml_element(name: &str, value: &Val, out: &mut String) {
    let _ = write!(out, "<{name}>");
    match value {
        Val::Text(t) => escape(t, out),
        Val::Number(n) => out.push_str(n),
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Val::Null => {}
        Val::Record(fields) => {
            for (field, v) in fields {
                xml_element(field, v, out);
            }
        }
        Val::List(item, items) => {
            for v in items {
                xml_element(item, v, out);
            }
        }
    }
    let _ = write!(out, "</{name}>");
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
}

/// One entry of the specification's error array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorItem {
    /// The HTTP-like code (400, 403, 404, ...).
    pub code: u16,
    pub description: String,
}

/// The specification's error document: `[{code, description}, ...]`.
pub fn errors(items: &[ErrorItem]) -> Doc {
    Doc::list(
        "errors",
        "error",
        items
            .iter()
            .map(|e| {
                Val::Record(vec![
                    ("code", Val::Number(e.code.to_string())),
                    ("description", Val::Text(e.description.clone())),
                ])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Doc {
        Doc::list(
            "service_requests",
            "request",
            vec![Val::Record(vec![
                ("service_request_id", Val::Text("RUH-2026-0000001".into())),
                ("description", Val::Text("حفرة <كبيرة> & \"عميقة\"".into())),
                ("lat", Val::Number("24.7136".into())),
                ("address_id", Val::Null),
                (
                    "values",
                    Val::List(
                        "value",
                        vec![Val::Record(vec![("key", Val::Text("a".into()))])],
                    ),
                ),
            ])],
        )
    }

    #[test]
    fn json_is_the_array_of_records_in_field_order() {
        assert_eq!(
            sample().render(Format::Json),
            r#"[{"service_request_id":"RUH-2026-0000001","description":"حفرة <كبيرة> & \"عميقة\"","lat":24.7136,"address_id":null,"values":[{"key":"a"}]}]"#
        );
    }

    #[test]
    fn xml_nests_items_under_the_list_element_and_escapes_text() {
        assert_eq!(
            sample().render(Format::Xml),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<service_requests><request>\
             <service_request_id>RUH-2026-0000001</service_request_id>\
             <description>حفرة &lt;كبيرة&gt; &amp; &quot;عميقة&quot;</description>\
             <lat>24.7136</lat><address_id></address_id>\
             <values><value><key>a</key></value></values></request></service_requests>\n"
        );
    }

    #[test]
    fn errors_follow_the_specification() {
        let doc = errors(&[ErrorItem {
            code: 403,
            description: "api_key: missing".into(),
        }]);
        assert_eq!(
            doc.render(Format::Json),
            r#"[{"code":403,"description":"api_key: missing"}]"#
        );
        assert!(
            doc.render(Format::Xml)
                .contains("<errors><error><code>403</code><description>api_key: missing</description></error></errors>")
        );
    }

    #[test]
    fn suffix_picks_the_format() {
        assert_eq!(
            Format::split("services.json"),
            Some(("services", Format::Json))
        );
        assert_eq!(
            Format::split("RUH-2026-0000001.xml"),
            Some(("RUH-2026-0000001", Format::Xml))
        );
        assert_eq!(Format::split("services.html"), None);
        assert_eq!(Format::split("services"), None);
        assert_eq!(Format::split(".json"), None);
    }

    #[test]
    fn control_characters_never_break_the_xml() {
        let doc = Doc::record("x", vec![("t", Val::Text("a\u{1}b\nc".into()))]);
        assert!(doc.render(Format::Xml).contains("<t>ab\nc</t>"));
    }
}
