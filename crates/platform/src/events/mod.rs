//! Domain events over NATS JetStream.
//!
//! - [`OutboundEvent`] is an event ready to publish: a protobuf payload plus its
//!   CloudEvents attributes, which travel as NATS headers (binary content
//!   mode, see `proto/baladiya/events/v1/envelope.proto`), with
//!   `Nats-Msg-Id` = `ce-id` so JetStream drops republished duplicates.
//! - [`Emitter`] is a service's one way to write events: its [`Tx`] builds
//!   each envelope, writes it in the same transaction as the state change,
//!   and wakes the relay on commit.
//! - [`outbox`] relays committed events to JetStream in order.
//! - [`consumer`] applies events exactly once per consumer (inbox table),
//!   retries with backoff and parks poison events.
//! - [`StreamSpec`] provisions a domain's stream from code.
//!
//! [`Namespace`] prefixes subjects and stream names so several deployments (or
//! concurrent tests) can share one NATS without seeing each other's events.

pub mod consumer;
mod emitter;
pub mod outbox;
pub mod streams;
pub mod watermark;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::config::EventsConfig;

pub use emitter::{Emitter, Event, Tx};

/// `ce-specversion`.
pub const SPEC_VERSION: &str = "1.0";
/// `content-type` of every payload.
pub const CONTENT_TYPE: &str = "application/protobuf";
/// The header carrying when an event was recorded, for an event recorded
/// after it happened (`ce-time` says when it happened).
pub const RECORDED_AT_HEADER: &str = "baladiya-recordedtime";

/// Event failures.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream stream '{stream}' could not be provisioned: {reason}")]
    Stream { stream: String, reason: String },
    #[error("publishing to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("event header {header} is missing or invalid")]
    Header { header: &'static str },
    #[error("event payload does not decode as {type_url}: {reason}")]
    Decode { type_url: String, reason: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Names one kind of event: `<domain>.<aggregate>.<event>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    pub domain: &'static str,
    pub aggregate: &'static str,
    pub event: &'static str,
}

impl EventType {
    /// A kind of event.
    pub const fn new(domain: &'static str, aggregate: &'static str, event: &'static str) -> Self {
        Self {
            domain,
            aggregate,
            event,
        }
    }
    /// The CloudEvents `type`: `sa.baladiya.<domain>.<aggregate>.<event>.v1`.
    pub fn ce_type(&self) -> String {
        format!(
            "sa.baladiya.{}.{}.{}.v1",
            self.domain, self.aggregate, self.event
        )
    }
    /// The NATS subject with trailing scope tokens (municipality, partner, ...).
    /// Empty or wildcard-like scope tokens become `_`.
    pub fn subject(&self, scope: &[&str]) -> String {
        let mut subject = format!("baladiya.{}.{}.{}", self.domain, self.aggregate, self.event);
        for token in scope {
            subject.push('.');
            subject.push_str(&subject_token(token));
        }
        subject
    }
}

/// Makes a value safe as one NATS subject token.
pub fn subject_token(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// An event ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    pub id: Uuid,
    /// Subject without namespace.
    pub subject: String,
    pub ce_type: String,
    /// `ce-source`, `/baladiya/<service>`.
    pub source: String,
    /// `ce-subject`: the aggregate id.
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    /// `ce-dataschema`: the payload's type URL.
    pub dataschema: String,
    pub payload: Vec<u8>,
    /// W3C trace context of the operation that produced the event.
    pub traceparent: Option<String>,
    /// When the writer recorded it, where that is later than `occurred_at`
    /// (an action reported after the fact); `None`: at `occurred_at`.
    pub recorded_at: Option<DateTime<Utc>>,
}

impl OutboundEvent {
    /// Builds an event from a protobuf payload. `id` and `occurred_at` must be
    /// the same values the payload's `EventMeta` carries.
    pub fn new<M: prost::Message + prost::Name>(
        service: &str,
        kind: EventType,
        scope: &[&str],
        id: Uuid,
        aggregate_id: impl Into<String>,
        occurred_at: DateTime<Utc>,
        payload: &M,
    ) -> Self {
        Self {
            id,
            subject: kind.subject(scope),
            ce_type: kind.ce_type(),
            source: format!("/baladiya/{service}"),
            aggregate_id: aggregate_id.into(),
            occurred_at,
            dataschema: M::type_url(),
            payload: payload.encode_to_vec(),
            traceparent: crate::telemetry::current_traceparent(),
            recorded_at: None,
        }
    }

    /// The same event, recorded at `at` (when it is later than `occurred_at`).
    pub fn recorded(mut self, at: DateTime<Utc>) -> Self {
        self.recorded_at = (at > self.occurred_at).then_some(at);
        self
    }

    /// The NATS headers: CloudEvents binary mode, dedupe id and trace context.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", self.id.to_string().as_str());
        h.insert("ce-specversion", SPEC_VERSION);
        h.insert("ce-id", self.id.to_string().as_str());
        h.insert("ce-type", percent_encode(&self.ce_type).as_str());
        h.insert("ce-source", percent_encode(&self.source).as_str());
        h.insert("ce-subject", percent_encode(&self.aggregate_id).as_str());
        h.insert(
            "ce-time",
            self.occurred_at
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                .as_str(),
        );
        h.insert("ce-dataschema", percent_encode(&self.dataschema).as_str());
        h.insert("content-type", CONTENT_TYPE);
        if let Some(tp) = &self.traceparent {
            h.insert("traceparent", tp.as_str());
        }
        if let Some(at) = self.recorded_at {
            h.insert(
                RECORDED_AT_HEADER,
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_str(),
            );
        }
        h
    }
}

/// An event as a consumer receives it.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    pub id: Uuid,
    /// Subject without namespace.
    pub subject: String,
    pub ce_type: String,
    pub source: String,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub dataschema: String,
    pub payload: Bytes,
    pub traceparent: Option<String>,
    /// When the producer recorded it, where later than `occurred_at`.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Its sequence number in the stream (0 when not read from one).
    pub stream_sequence: u64,
}

impl InboundEvent {
    /// Reads the CloudEvents headers of a message.
    pub fn from_parts(
        subject: String,
        headers: &HeaderMap,
        payload: Bytes,
    ) -> Result<Self, EventError> {
        let get = |name: &'static str| -> Result<String, EventError> {
            headers
                .get(name)
                .map(|v| percent_decode(v.as_str()))
                .filter(|v| !v.is_empty())
                .ok_or(EventError::Header { header: name })
        };
        if get("ce-specversion")? != SPEC_VERSION {
            return Err(EventError::Header {
                header: "ce-specversion",
            });
        }
        Ok(Self {
            id: get("ce-id")?
                .parse()
                .map_err(|_| EventError::Header { header: "ce-id" })?,
            subject,
            ce_type: get("ce-type")?,
            source: get("ce-source")?,
            aggregate_id: get("ce-subject").unwrap_or_default(),
            occurred_at: DateTime::parse_from_rfc3339(&get("ce-time")?)
                .map_err(|_| EventError::Header { header: "ce-time" })?
                .with_timezone(&Utc),
            dataschema: get("ce-dataschema")?,
            payload,
            traceparent: headers.get("traceparent").map(|v| v.as_str().to_string()),
            recorded_at: headers
                .get(RECORDED_AT_HEADER)
                .and_then(|v| DateTime::parse_from_rfc3339(v.as_str()).ok())
                .map(|t| t.with_timezone(&Utc)),
            stream_sequence: 0,
        })
    }

    /// Decodes the payload, checking it is the type the event says it is.
    pub fn decode<M: prost::Message + prost::Name + Default>(&self) -> Result<M, EventError> {
        let expected = M::type_url();
        if self.dataschema != expected {
            return Err(EventError::Decode {
                type_url: expected,
                reason: format!("event carries {}", self.dataschema),
            });
        }
        M::decode(self.payload.clone()).map_err(|e| EventError::Decode {
            type_url: expected,
            reason: e.to_string(),
        })
    }
}

/// Percent-encodes a CloudEvents header value: space, `"`, `%` and anything
/// outside printable ASCII (CloudEvents NATS binding, binary mode).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b == b' ' || b == b'"' || b == b'%' || !(0x21..=0x7e).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Reverses [`percent_encode`]; malformed escapes are kept as they are.
pub fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            let b = (hi * 16 + lo) as u8;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Prefixes subjects and stream names with the configured namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// From `events.namespace`.
    pub fn new(namespace: &str) -> Self {
        Self(namespace.to_string())
    }
    /// The subject as published on NATS.
    pub fn subject(&self, subject: &str) -> String {
        if self.0.is_empty() {
            subject.to_string()
        } else {
            format!("{}.{subject}", self.0)
        }
    }
    /// The subject as the domain knows it.
    pub fn strip<'a>(&self, subject: &'a str) -> &'a str {
        if self.0.is_empty() {
            subject
        } else {
            subject
                .strip_prefix(&self.0)
                .and_then(|s| s.strip_prefix('.'))
                .unwrap_or(subject)
        }
    }
    /// The stream name as created on NATS.
    pub fn stream(&self, name: &str) -> String {
        if self.0.is_empty() {
            name.to_string()
        } else {
            format!("{}_{name}", self.0)
        }
    }
}

/// A domain's stream: one per producing service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name, e.g. `INTAKE`.
    pub name: &'static str,
    /// Subjects without namespace, e.g. `baladiya.intake.>`.
    pub subjects: &'static [&'static str],
    /// The subject its producer's relay publishes low watermarks on (see
    /// [`watermark`]), for a stream whose events move SLA clocks; `None`
    /// for the others.
    pub watermark: Option<&'static str>,
}

impl StreamSpec {
    /// Creates the stream, or updates it to this configuration: limits
    /// retention, file storage, the configured replicas, age and duplicate
    /// window. Only the stream's producer does this (its NATS user may
    /// update its own stream only).
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
        namespace: &Namespace,
        config: &EventsConfig,
    ) -> Result<(), EventError> {
        self.provision(js, namespace, config, true).await
    }

    /// Creates the stream with this configuration if it does not exist yet,
    /// and otherwise leaves it alone: what a consumer of another domain's
    /// stream does, so start order does not matter and no consumer can
    /// change a stream it does not own.
    pub async fn ensure_exists(
        &self,
        js: &jetstream::Context,
        namespace: &Namespace,
        config: &EventsConfig,
    ) -> Result<(), EventError> {
        self.provision(js, namespace, config, false).await
    }

    async fn provision(
        &self,
        js: &jetstream::Context,
        namespace: &Namespace,
        config: &EventsConfig,
        update: bool,
    ) -> Result<(), EventError> {
        let stream_config = self.config(namespace, config);
        let name = stream_config.name.clone();
        let done = if update {
            js.create_or_update_stream(stream_config)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            js.get_or_create_stream(stream_config)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        done.map_err(|reason| EventError::Stream {
            stream: name,
            reason,
        })
    }

    fn config(&self, namespace: &Namespace, config: &EventsConfig) -> stream::Config {
        let name = namespace.stream(self.name);
        stream::Config {
            name: name.clone(),
            subjects: self.subjects.iter().map(|s| namespace.subject(s)).collect(),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            num_replicas: config.stream_replicas,
            max_age: Duration::from_secs(config.stream_max_age_hours * 3600),
            duplicate_window: Duration::from_secs(config.duplicate_window_secs),
            allow_direct: true,
            // A watermark replaces the one before it (`Nats-Rollup: sub`).
            allow_rollup: self.watermark.is_some(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baladiya_proto::common::v1::Location;

    #[test]
    fn type_and_subject_follow_the_conventions() {
        let kind = EventType::new("intake", "report", "received");
        assert_eq!(kind.ce_type(), "sa.baladiya.intake.report.received.v1");
        assert_eq!(
            kind.subject(&["RIYADH", "a.b*>", ""]),
            "baladiya.intake.report.received.RIYADH.a_b__._"
        );
    }

    #[test]
    fn headers_round_trip_through_percent_encoding() {
        let payload = Location {
            latitude: 24.7,
            longitude: 46.7,
            national_address_short: "RRRD2929".into(),
            municipality_code: "RIYADH".into(),
        };
        let id = Uuid::now_v7();
        let mut event = OutboundEvent::new(
            "intake",
            EventType::new("intake", "report", "received"),
            &["RIYADH"],
            id,
            "بلاغ 42 \"quoted\" 100%",
            DateTime::parse_from_rfc3339("2026-03-01T10:00:00+03:00")
                .expect("time")
                .with_timezone(&Utc),
            &payload,
        );
        event.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let headers = event.headers();
        assert_eq!(
            headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some(id.to_string().as_str())
        );
        assert_eq!(
            headers.get("ce-dataschema").map(|v| v.as_str()),
            Some("type.googleapis.com/baladiya.common.v1.Location")
        );
        let ce_subject = headers
            .get("ce-subject")
            .expect("subject")
            .as_str()
            .to_string();
        assert!(
            ce_subject.is_ascii() && !ce_subject.contains(' '),
            "{ce_subject}"
        );
        assert_eq!(
            headers.get("ce-time").map(|v| v.as_str()),
            Some("2026-03-01T07:00:00Z")
        );

        let inbound = InboundEvent::from_parts(
            event.subject.clone(),
            &headers,
            Bytes::from(event.payload.clone()),
        )
        .expect("parse");
        assert_eq!(inbound.id, id);
        assert_eq!(inbound.aggregate_id, "بلاغ 42 \"quoted\" 100%");
        assert_eq!(inbound.occurred_at, event.occurred_at);
        assert_eq!(inbound.traceparent, event.traceparent);
        assert_eq!(inbound.decode::<Location>().expect("decode"), payload);
        assert!(
            inbound
                .decode::<baladiya_proto::common::v1::Interval>()
                .is_err(),
            "decoding as another type is refused"
        );
    }

    #[test]
    fn missing_headers_are_named() {
        let err = InboundEvent::from_parts("x".into(), &HeaderMap::new(), Bytes::new())
            .expect_err("no headers");
        assert!(err.to_string().contains("ce-specversion"), "{err}");
    }

    #[test]
    fn namespace_prefixes_and_strips() {
        let ns = Namespace::new("t42");
        assert_eq!(ns.subject("baladiya.intake.>"), "t42.baladiya.intake.>");
        assert_eq!(ns.strip("t42.baladiya.x"), "baladiya.x");
        assert_eq!(ns.stream("INTAKE"), "t42_INTAKE");
        let none = Namespace::default();
        assert_eq!(none.subject("a.b"), "a.b");
        assert_eq!(none.stream("INTAKE"), "INTAKE");
    }
}
