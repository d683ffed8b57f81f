//! The projection figure: [`PROJECTED_EVENTS`] events of the mix published
//! to JetStream as the outbox relays publish them, then the KPI service
//! started alone and timed until its consumers' counters account for every
//! event. Kept apart from the scorecard because it is the only step that
//! goes through NATS and reads `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use baladiya_kpi::domain::facts_of;
use baladiya_platform::config::EventsConfig;
use baladiya_platform::events::{Namespace, OutboundEvent, StreamSpec, streams};
use chrono::{DateTime, Utc};

use super::generate::{Generator, inbound};
use super::{PROJECTED_EVENTS, connect};
use crate::env::Env;
use crate::platform::{Platform, http_body};
use crate::report::Figure;

/// Publishes awaiting their JetStream ack before the oldest is awaited.
const PUBLISH_WINDOW: usize = 4_096;
/// How long the projection may make no progress before the bench gives up.
const STALL: Duration = Duration::from_secs(120);
/// The streams the KPI projection reads, which the bench fills.
const CONSUMED: [StreamSpec; 4] = [
    streams::INTAKE,
    streams::ROUTING,
    streams::SLA,
    streams::LICENSING,
];

/// Publishes [`PROJECTED_EVENTS`] events, starts the KPI service alone and
/// times its consumers through them.
pub(super) async fn measure(
    env: &Env,
    js: &jetstream::Context,
    database: &str,
    name: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(Figure, serde_json::Value)> {
    let namespace = Namespace::new(name);
    let events = Generator::new(0x6b70_6931, now).take(PROJECTED_EVENTS);
    let mut mix: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_facts = 0u64;
    for e in &events {
        let kind = e.ce_type.trim_start_matches("sa.baladiya.");
        *mix.entry(kind.trim_end_matches(".v1").to_string())
            .or_default() += 1;
        let projected = facts_of(&inbound(e.clone()))
            .with_context(|| format!("the projection refuses a generated {}", e.ce_type))?;
        expected_facts += projected.facts.len() as u64;
    }
    for spec in CONSUMED {
        spec.ensure_exists(js, &namespace, &EventsConfig::default())
            .await
            .with_context(|| format!("creating stream {}", namespace.stream(spec.name)))?;
    }
    eprintln!("kpi: publishing {PROJECTED_EVENTS} events to JetStream");
    let published = publish(js, &namespace, events).await?;
    eprintln!(
        "kpi: published in {:.1} s; starting the KPI service",
        published.as_secs_f64()
    );

    let started = Instant::now();
    let platform = Platform::start(env, "kpi", database, name).await?;
    let ready = started.elapsed();
    let timing = Instant::now();
    let before = progress(platform.http).await?.done();
    let (mut last, mut moved, mut told) = (before, Instant::now(), Instant::now());
    let done = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = progress(platform.http).await?;
        if seen.done() >= PROJECTED_EVENTS {
            break seen;
        }
        if seen.done() > last {
            (last, moved) = (seen.done(), Instant::now());
        }
        anyhow::ensure!(
            moved.elapsed() < STALL,
            "the KPI projection made no progress in {} s, at {last} of {PROJECTED_EVENTS} events",
            STALL.as_secs()
        );
        if told.elapsed() >= Duration::from_secs(10) {
            told = Instant::now();
            eprintln!("kpi: projected {last} of {PROJECTED_EVENTS} events");
        }
    };
    let elapsed = timing.elapsed();
    let mut conn = connect(database).await?;
    let facts: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi.facts")
        .fetch_one(&mut conn)
        .await
        .context("counting the facts")?;
    platform.stop().await;
    anyhow::ensure!(
        done.parked == 0,
        "the KPI consumers parked {} of the generated events",
        done.parked
    );
    anyhow::ensure!(
        u64::try_from(facts).unwrap_or(0) == expected_facts,
        "the KPI consumers wrote {facts} facts where the projection gives {expected_facts}"
    );

    let counted = PROJECTED_EVENTS - before.min(PROJECTED_EVENTS);
    let rate = counted as f64 / elapsed.as_secs_f64();
    eprintln!(
        "kpi: projected {counted} events in {:.1} s: {rate:.0} events/s",
        elapsed.as_secs_f64()
    );
    let figure = Figure {
        name: "KPI projection events/s".into(),
        value: rate,
        unit: "events/s",
        limit: "the issue's floor of 10,000 events/s".into(),
        limit_value: 10_000.0,
        floor: 1.0,
        aim: 2.5,
        lower_is_better: false,
    };
    let details = serde_json::json!({
        "events": PROJECTED_EVENTS,
        "published_s": published.as_secs_f64(),
        "start_to_ready_s": ready.as_secs_f64(),
        "applied_before_ready": before,
        "timed_events": counted,
        "seconds": elapsed.as_secs_f64(),
        "events_per_s": rate,
        "by_consumer": done.by_consumer,
        "facts": facts,
        "event_mix": mix,
    });
    Ok((figure, details))
}

/// Publishes `events` as the outbox relay does (same subjects, headers and
/// payloads), with many acks in flight instead of one at a time.
async fn publish(
    js: &jetstream::Context,
    namespace: &Namespace,
    events: Vec<OutboundEvent>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut acks = VecDeque::with_capacity(PUBLISH_WINDOW);
    for event in events {
        let subject = namespace.subject(&event.subject);
        let ack = js
            .publish_with_headers(subject, event.headers(), event.payload.into())
            .await
            .with_context(|| format!("publishing to {}", event.subject))?;
        acks.push_back(ack);
        if acks.len() >= PUBLISH_WINDOW
            && let Some(ack) = acks.pop_front()
        {
            ack.await.context("JetStream did not store an event")?;
        }
    }
    while let Some(ack) = acks.pop_front() {
        ack.await.context("JetStream did not store an event")?;
    }
    Ok(started.elapsed())
}

/// What the KPI consumers are done with, from `/metrics`.
#[derive(Debug, Default)]
struct Progress {
    /// Events applied, skipped as duplicates or parked, by consumer.
    by_consumer: BTreeMap<String, u64>,
    parked: u64,
}

impl Progress {
    fn done(&self) -> u64 {
        self.by_consumer.values().sum()
    }
}

/// Reads `baladiya_consumer_events_total{consumer="kpi-…",outcome="…"}`.
async fn progress(http: SocketAddr) -> anyhow::Result<Progress> {
    let metrics = http_body(http, "/metrics")
        .await
        .context("reading /metrics")?;
    let mut out = Progress::default();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("baladiya_consumer_events") else {
            continue;
        };
        let rest = rest.strip_prefix("_total").unwrap_or(rest);
        let Some((labels, value)) = rest.strip_prefix('{').and_then(|r| r.split_once("} ")) else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|pair| {
                pair.strip_prefix(name)?
                    .strip_prefix("=\"")?
                    .strip_suffix('"')
            })
        };
        let (Some(consumer), Some(outcome)) = (label("consumer"), label("outcome")) else {
            continue;
        };
        let Ok(n) = value.trim().parse::<f64>() else {
            continue;
        };
        if !consumer.starts_with("kpi-") || !matches!(outcome, "applied" | "duplicate" | "parked") {
            continue;
        }
        *out.by_consumer.entry(consumer.to_string()).or_default() += n as u64;
        if outcome == "parked" {
            out.parked += n as u64;
        }
    }
    Ok(out)
}
