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
//!
//! Two halves: [`request`] reads what a client sends (forms and queries,
//! into intake requests) and [`record`] writes what it gets back (reports
//! and categories as Open311 records); the vocabulary both use is here.

pub mod record;
pub mod request;

pub use record::{
    created, discovery, request_record, service_definition, service_list, status_word, token,
};
pub use request::{
    NewRequest, Query, arg, list_query, new_request, parameter_of, short_code_in, w3c_datetime,
};

use baladiya_proto::common::v1 as common;
use baladiya_proto::intake::v1 as pb;

use crate::wire::ErrorItem;

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
