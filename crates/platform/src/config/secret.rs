//! Secret values: [`Secret`] deserializes like a string but never prints
//! (`Debug`, `baladiya config print`), and [`hex_bytes`] reads the keys that
//! secrets carry as hex. Apart from the loader because every section and
//! every service's own section uses them.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A secret value: readable by the code, never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact(&self.0))
    }
}

/// Decodes hex; `None` if malformed.
pub fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Hides a secret for display. A URL keeps its scheme, user, host and path and
/// loses only its password, so an operator can still see where it points.
fn redact(value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or_default();
        return if userinfo.contains(':') {
            format!("{scheme}://{user}:<redacted>@{host}")
        } else {
            value.to_string()
        };
    }
    if value.contains("://") {
        return value.to_string();
    }
    "<redacted>".into()
}
