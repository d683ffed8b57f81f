//! `baladiya events tail`: follows the event streams straight from NATS
//! JetStream, not through a service, so it takes NATS flags ([`Streams`])
//! instead of [`Remote`](super::Remote). Beside it, what only it needs:
//! `--since` parsing, which stream holds a subject, and the JSON form of one
//! event.

use baladiya_platform::events::{InboundEvent, Namespace, streams};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{Exit, Failure, Output};
use crate::render;

/// Where the event streams are.
#[derive(Debug, Clone, clap::Args)]
pub struct Streams {
    /// NATS server URL.
    #[arg(
        long,
        env = "BALADIYA__NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// NATS user.
    #[arg(long, env = "BALADIYA__NATS__USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "BALADIYA__NATS__PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// The deployment's subject and stream prefix (events.namespace).
    #[arg(long, env = "BALADIYA__EVENTS__NAMESPACE", default_value = "")]
    pub namespace: String,
}

/// `--since`: `90s`, `30m`, `1h`, `2d`, or an RFC 3339 instant.
pub fn since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    let bad = || {
        Failure::usage(format!(
            "--since {text}: expected 90s, 30m, 1h, 2d or an instant like 2026-11-30T00:00:00Z"
        ))
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let span = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => return Err(bad()),
    };
    Ok(now - span)
}

/// The stream that holds `subject` (`baladiya.routing.>` is in ROUTING).
fn stream_of(subject: &str) -> Result<&'static str, Failure> {
    let domain = subject.split('.').nth(1).unwrap_or_default();
    [
        streams::INTAKE,
        streams::ROUTING,
        streams::PARTNERS,
        streams::SLA,
        streams::LICENSING,
    ]
    .into_iter()
    .find(|s| s.name.eq_ignore_ascii_case(domain))
    .map(|s| s.name)
    .ok_or_else(|| {
        Failure::usage(format!(
            "{subject}: subjects start baladiya.<domain>. with domain intake, routing, partners, sla or licensing (e.g. 'baladiya.routing.>')"
        ))
    })
}

/// One event as a JSON line: the CloudEvents attributes and the decoded payload.
pub fn event_json(event: &InboundEvent) -> serde_json::Value {
    let type_name = event
        .dataschema
        .rsplit('/')
        .next()
        .unwrap_or(&event.dataschema);
    serde_json::json!({
        "id": event.id.to_string(),
        "type": event.ce_type,
        "source": event.source,
        "subject": event.subject,
        "time": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "dataschema": event.dataschema,
        "aggregate_id": event.aggregate_id,
        "data": render::json_of(type_name, &event.payload).unwrap_or(serde_json::Value::Null),
    })
}

/// Follows `subject` from `since` (or from now), printing each event; stops
/// after `count` events when given. Progress of a replay goes to stderr.
pub async fn tail(
    streams_at: &Streams,
    subject: &str,
    since_text: Option<&str>,
    count: Option<u64>,
    output: Output,
) -> Result<(), Failure> {
    use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, pull};
    let stream = stream_of(subject)?;
    let start = since_text.map(|s| since(s, Utc::now())).transpose()?;
    let mut options = async_nats::ConnectOptions::new().name("baladiya events tail");
    if let (Some(user), Some(password)) = (&streams_at.nats_user, &streams_at.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let unavailable = |e: String| {
        Failure::new(
            Exit::Unavailable,
            format!(
                "cannot read the streams at {}: {e}\nhint: is NATS running there? (--nats or BALADIYA__NATS__URL names it)",
                streams_at.nats
            ),
        )
    };
    let client = options
        .connect(&streams_at.nats)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let namespace = Namespace::new(&streams_at.namespace);
    let js = async_nats::jetstream::new(client);
    let stream_name = namespace.stream(stream);
    let nats_stream = js.get_stream(&stream_name).await.map_err(|e| {
        Failure::new(
            Exit::NotFound,
            format!("stream {stream_name}: {e}\nhint: is --namespace right? (events.namespace of the deployment)"),
        )
    })?;
    let consumer = nats_stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: namespace.subject(subject),
            deliver_policy: match start {
                Some(t) => DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                        t.timestamp_nanos_opt().unwrap_or_default(),
                    ))
                    .map_err(|_| Failure::usage("--since: out of range"))?,
                },
                None => DeliverPolicy::New,
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if start.is_some() {
        eprintln!(
            "replaying {subject} from {}",
            start.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
    }
    let mut shown: u64 = 0;
    let mut caught_up = start.is_none();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable(e.to_string()))?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        let headers = message.headers.clone().unwrap_or_default();
        let subject_seen = namespace.strip(message.subject.as_str()).to_string();
        match InboundEvent::from_parts(subject_seen.clone(), &headers, message.payload.clone()) {
            Ok(event) => {
                let value = event_json(&event);
                match output {
                    Output::Json => println!("{value}"),
                    Output::Table => println!(
                        "{}  {}  {}  {}",
                        value["time"].as_str().unwrap_or_default(),
                        event.ce_type,
                        event.subject,
                        value["data"]
                    ),
                }
            }
            Err(e) => eprintln!("skipped a message on {subject_seen}: {e}"),
        }
        shown += 1;
        if !caught_up && pending == 0 {
            caught_up = true;
            eprintln!("replayed {shown} event(s); following new ones (Ctrl-C to stop)");
        } else if !caught_up && shown.is_multiple_of(1000) {
            eprintln!("replayed {shown} event(s), {pending} to go");
        }
        if count.is_some_and(|c| shown >= c) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_spans_and_instants() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("instant")
            .to_utc();
        assert_eq!(
            since("1h", now).ok(),
            Some(now - chrono::Duration::hours(1))
        );
        assert_eq!(since("2d", now).ok(), Some(now - chrono::Duration::days(2)));
        assert_eq!(
            since("2026-11-30T00:00:00+03:00", now)
                .ok()
                .map(|t| t.to_rfc3339()),
            Some("2026-11-29T21:00:00+00:00".into())
        );
        assert!(since("yesterday", now).is_err());
    }

    #[test]
    fn subjects_name_their_stream() {
        assert_eq!(stream_of("baladiya.routing.>").ok(), Some("ROUTING"));
        assert_eq!(
            stream_of("baladiya.sla.escalation.raised.MOTLS").ok(),
            Some("SLA")
        );
        assert!(stream_of("routing.>").is_err());
    }
}
