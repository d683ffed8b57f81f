//! Idempotent event consumers.
//!
//! A [`Consumer`] pulls from a durable JetStream consumer and applies each
//! event through an [`EventHandler`] inside a Postgres transaction that also
//! records the event id in the `inbox` table; the message is acknowledged only
//! after that transaction commits. So an event delivered twice (a republish, a
//! lost ack, a replay from the start of the stream) is applied once.
//!
//! Events fetched together are applied in order in one transaction, and
//! acknowledged together after its commit: one commit (one disk flush) per
//! batch rather than per event is what lets a consumer keep up with a busy
//! stream. If any event of the batch does not decode or its handler fails, the
//! transaction is rolled back and the batch is applied one event at a time, so
//! the failing event alone is retried or parked.
//!
//! A handler that fails gets the event again after a backoff that doubles per
//! attempt; after `events.consumer_max_attempts` the event is parked in
//! `parked_events` (visible as the `baladiya_parked_events` metric) and
//! terminated on the stream, so one poison event never blocks the ones after
//! it. Setting `replay_requested` on a parked row (`baladiya events replay`)
//! makes the running consumer try it again.
//!
//! What a service implements, [`EventHandler`] and [`HandlerError`], is in
//! `handler`; parking, replay and the operator's view of parked events in
//! `parked`. Both are re-exported here, so their paths are
//! `events::consumer::Name`.

mod handler;
mod parked;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::{FutureExt, StreamExt};
use sqlx::postgres::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::{Emitter, EventError, InboundEvent, Namespace, StreamSpec};
use crate::config::EventsConfig;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::telemetry;
use parked::headers_to_json;

pub use handler::{EventHandler, HandlerError};
pub use parked::{ParkedEvent, list_parked, request_replay};

/// How many events a consumer fetches, and applies in one transaction, at most.
const FETCH_BATCH: usize = 128;

/// Where a consumer reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable consumer name, unique per stream, e.g. `routing-reports`.
    pub name: String,
    /// The stream it reads (created if its producer has not started yet).
    pub stream: StreamSpec,
    /// Subjects without namespace, e.g. `baladiya.intake.report.>`.
    pub subjects: Vec<String>,
}

/// A running consumer.
pub struct Consumer<H> {
    spec: ConsumerSpec,
    handler: H,
    pool: PgPool,
    emitter: Emitter,
    js: jetstream::Context,
    namespace: Namespace,
    max_attempts: u32,
    backoff: Duration,
    backoff_max: Duration,
    metrics: Arc<Metrics>,
    events: EventsConfig,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("spec", &self.spec)
            .finish()
    }
}

/// What happened to one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    Retried,
    Parked,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Retried => "retried",
            Self::Parked => "parked",
        }
    }
}

impl<H: EventHandler> Consumer<H> {
    /// A consumer applying events through `handler` in `pool`'s schema, in
    /// transactions of `emitter` (so the events a handler writes wake the
    /// service's relay on commit).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: ConsumerSpec,
        handler: H,
        pool: PgPool,
        emitter: &Emitter,
        js: jetstream::Context,
        namespace: Namespace,
        config: &EventsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            spec,
            handler,
            pool,
            emitter: emitter.clone(),
            js,
            namespace,
            max_attempts: config.consumer_max_attempts,
            backoff: Duration::from_millis(config.consumer_backoff_ms),
            backoff_max: Duration::from_millis(config.consumer_backoff_max_ms),
            metrics,
            events: config.clone(),
        }
    }

    /// Creates (or updates) the durable consumer on the server.
    pub async fn provision(&self) -> Result<jetstream::consumer::PullConsumer, EventError> {
        self.spec
            .stream
            .ensure_exists(&self.js, &self.namespace, &self.events)
            .await?;
        let stream_name = self.namespace.stream(self.spec.stream.name);
        let fail = |reason: String| EventError::Stream {
            stream: stream_name.clone(),
            reason,
        };
        let stream = self
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut subjects: Vec<String> = self
            .spec
            .subjects
            .iter()
            .map(|s| self.namespace.subject(s))
            .collect();
        // One subject goes in `filter_subject`, which every server honours; a
        // server before 2.10 ignores `filter_subjects` and would deliver the
        // whole stream.
        let filter_subject = if subjects.len() == 1 {
            subjects.pop().unwrap_or_default()
        } else {
            String::new()
        };
        let config = pull::Config {
            durable_name: Some(self.spec.name.clone()),
            filter_subject,
            filter_subjects: subjects,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            // Parking is ours (bounded attempts); the server never gives up on its own.
            max_deliver: -1,
            max_ack_pending: 1_000,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// Pulls and applies events until `shutdown`; the batch in hand finishes first.
    pub async fn run(self, mut shutdown: Shutdown) {
        // Shared with the tasks that apply batches.
        let this = Arc::new(self);
        let mut consumer = loop {
            match this.provision().await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(consumer = %this.spec.name, error = %e, "cannot provision consumer; retrying");
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        };
        let mut stats = tokio::time::interval(Duration::from_secs(5));
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut messages = None;
        let limit = this.handler.batches_at_once().max(1);
        // Each batch is applied in a task of its own, so it progresses
        // whatever this loop is waiting on.
        let mut applying = tokio::task::JoinSet::new();
        let mut acking: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        while !shutdown.is_triggered() {
            // At the limit, the next batch waits for one in hand to finish.
            if applying.len() >= limit {
                if let Some(Ok(acks)) = applying.join_next().await {
                    acking.extend(acks);
                }
                acking.retain(|a| !a.is_finished());
                continue;
            }
            if messages.is_none() {
                // A continuous pull: the server sends events as they are
                // stored, and nothing runs while there are none.
                match consumer
                    .stream()
                    .max_messages_per_batch(FETCH_BATCH)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                {
                    Ok(m) => messages = Some(m),
                    Err(e) => {
                        tracing::warn!(consumer = %this.spec.name, error = %e, "cannot pull; retrying");
                        tokio::select! {
                            _ = shutdown.wait() => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                        }
                    }
                }
            }
            let Some(stream) = messages.as_mut() else {
                continue;
            };
            let first = tokio::select! {
                _ = shutdown.wait() => break,
                Some(applied) = applying.join_next(), if !applying.is_empty() => {
                    acking.extend(applied.ok().flatten());
                    acking.retain(|a| !a.is_finished());
                    continue;
                }
                _ = stats.tick() => {
                    match consumer.info().await {
                        Ok(info) => this
                            .metrics
                            .set_consumer_lag(&this.spec.name, info.num_pending),
                        // Deleted on the server (an operator resetting it, a
                        // stream recreated): provision again; the inbox
                        // absorbs the replay.
                        Err(e) => {
                            tracing::warn!(consumer = %this.spec.name, error = %e, "consumer lost; provisioning it again");
                            if let Ok(fresh) = this.provision().await {
                                consumer = fresh;
                                messages = None;
                            }
                        }
                    }
                    this.replay_requested().await;
                    this.update_parked_gauge().await;
                    continue;
                }
                next = stream.next() => next,
            };
            let mut batch = Vec::new();
            match first {
                Some(Ok(message)) => batch.push(message),
                Some(Err(e)) => {
                    tracing::debug!(consumer = %this.spec.name, error = %e, "pull interrupted; pulling again");
                    messages = None;
                    continue;
                }
                None => {
                    messages = None;
                    continue;
                }
            }
            // Whatever else has already arrived joins the batch.
            while batch.len() < FETCH_BATCH {
                match stream.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    _ => break,
                }
            }
            let applier = Arc::clone(&this);
            applying.spawn(async move { applier.deliver_all(batch).await });
        }
        while let Some(applied) = applying.join_next().await {
            acking.extend(applied.ok().flatten());
        }
        for acks in acking {
            acks.await.ok();
        }
        tracing::info!(consumer = %this.spec.name, "consumer stopped");
    }

    /// Applies a fetched batch in one transaction, or one by one if that
    /// fails. A batch's acknowledgements are sent and confirmed in a task of
    /// their own, returned, so the next batch is applied while they travel: a
    /// lost one only brings an event again, which the inbox skips.
    async fn deliver_all(
        &self,
        messages: Vec<jetstream::Message>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if messages.len() > 1 {
            let started = Instant::now();
            if let Some(applied) = self.apply_together(&messages).await {
                let each = started.elapsed() / messages.len() as u32;
                let (metrics, name) = (self.metrics.clone(), self.spec.name.clone());
                return Some(tokio::spawn(async move {
                    let acks = messages.iter().map(|m| m.double_ack_with(AckKind::Ack));
                    for (acked, applied) in futures::future::join_all(acks)
                        .await
                        .into_iter()
                        .zip(applied)
                    {
                        if let Err(e) = acked {
                            tracing::warn!(consumer = %name, error = %e, "ack failed; the event will come again and be skipped");
                        }
                        let outcome = if applied {
                            Outcome::Applied
                        } else {
                            Outcome::Duplicate
                        };
                        metrics.record_event(&name, outcome.label(), each);
                    }
                }));
            }
        }
        for message in messages {
            self.deliver(message).await;
        }
        None
    }

    /// Applies every event of `messages` in order in one committed
    /// transaction, returning for each whether it was new (`false`: the inbox
    /// had it); `None`, with nothing written, if any event does not decode or
    /// apply.
    async fn apply_together(&self, messages: &[jetstream::Message]) -> Option<Vec<bool>> {
        let events = messages
            .iter()
            .map(|m| self.inbound(m).ok())
            .collect::<Option<Vec<_>>>()?;
        let span = tracing::info_span!("consume", otel.kind = "consumer", messaging.system = "nats",
            consumer = %self.spec.name, messaging.batch.message_count = events.len());
        match self.apply_all(&events).instrument(span).await {
            Ok(applied) => Some(applied),
            Err(e) => {
                tracing::debug!(consumer = %self.spec.name, error = %e, "batch failed; applying its events one by one");
                None
            }
        }
    }

    /// The event in `message`, its subject without the namespace.
    fn inbound(&self, message: &jetstream::Message) -> Result<InboundEvent, EventError> {
        let mut event = InboundEvent::from_parts(
            self.namespace.strip(message.subject.as_str()).to_string(),
            &message.headers.clone().unwrap_or_default(),
            message.payload.clone(),
        )?;
        event.stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        Ok(event)
    }

    async fn deliver(&self, message: jetstream::Message) -> Outcome {
        let started = Instant::now();
        let attempt = message.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
        let subject = self.namespace.strip(message.subject.as_str()).to_string();
        let headers = message.headers.clone().unwrap_or_default();
        let outcome = match self.inbound(&message) {
            Err(e) => {
                let header_json = headers_to_json(&headers);
                self.park(
                    None,
                    &subject,
                    header_json,
                    &message.payload,
                    &e.to_string(),
                    attempt,
                )
                .await
            }
            Ok(event) => {
                let span = tracing::info_span!("consume", otel.kind = "consumer", messaging.system = "nats",
                    messaging.destination.name = %subject, consumer = %self.spec.name, event.id = %event.id);
                telemetry::set_remote_parent(&span, event.traceparent.as_deref());
                match self.apply(&event).instrument(span).await {
                    Ok(true) => Ok(Outcome::Applied),
                    Ok(false) => Ok(Outcome::Duplicate),
                    Err(HandlerError::Retry(reason)) if attempt < self.max_attempts => {
                        tracing::warn!(consumer = %self.spec.name, event.id = %event.id, attempt, error = %reason, "event failed; will retry");
                        Err(self.delay(attempt))
                    }
                    Err(e) => {
                        tracing::error!(consumer = %self.spec.name, event.id = %event.id, attempt, error = %e, "event parked");
                        self.park(
                            Some(event.id),
                            &subject,
                            headers_to_json(&headers),
                            &message.payload,
                            &e.to_string(),
                            attempt,
                        )
                        .await
                    }
                }
            }
        };
        let outcome = match outcome {
            Ok(o) => {
                let kind = if o == Outcome::Parked {
                    AckKind::Term
                } else {
                    AckKind::Ack
                };
                if let Err(e) = message.double_ack_with(kind).await {
                    tracing::warn!(consumer = %self.spec.name, error = %e, "ack failed; the event will come again and be skipped");
                }
                o
            }
            Err(delay) => {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                Outcome::Retried
            }
        };
        self.metrics
            .record_event(&self.spec.name, outcome.label(), started.elapsed());
        outcome
    }

    /// Applies `event` once: `Ok(false)` if the inbox already has it.
    async fn apply(&self, event: &InboundEvent) -> Result<bool, HandlerError> {
        Ok(self.apply_all(std::slice::from_ref(event)).await?[0])
    }

    /// Applies `events` in order in one transaction that also records them in
    /// the inbox, returning for each whether it was new (a copy the inbox
    /// already had, or an earlier one in `events` had, is skipped). Nothing is
    /// written if any handler fails.
    async fn apply_all(&self, events: &[InboundEvent]) -> Result<Vec<bool>, HandlerError> {
        let marks: Vec<&InboundEvent> = events
            .iter()
            .filter(|e| super::watermark::is_watermark(e))
            .collect();
        if !marks.is_empty() {
            return self.apply_with_watermarks(events, &marks).await;
        }
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let mut tx = self.pool.begin().await?;
        let mut fresh: std::collections::HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.spec.name)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let applied: Vec<bool> = events.iter().map(|e| fresh.remove(&e.id)).collect();
        if !applied.contains(&true) {
            return Ok(applied);
        }
        let new: std::borrow::Cow<[InboundEvent]> = if applied.iter().all(|a| *a) {
            events.into()
        } else {
            events
                .iter()
                .zip(&applied)
                .filter(|(_, applied)| **applied)
                .map(|(event, _)| event.clone())
                .collect()
        };
        let mut tx = self.emitter.within(tx);
        AssertUnwindSafe(self.handler.handle_batch(&mut tx, &new))
            .catch_unwind()
            .await
            .map_err(|_| HandlerError::Retry("handler panicked".into()))??;
        tx.commit().await?;
        self.handler.committed();
        Ok(applied)
    }

    /// Applies `events` with the watermarks among them: the domain events as
    /// [`Self::apply_all`] does, then the watermarks recorded (never in the
    /// inbox: they carry no effect to repeat). The watermarks wait for the
    /// events' commit, since a watermark recorded beside events whose
    /// transaction failed would claim what was not applied.
    async fn apply_with_watermarks(
        &self,
        events: &[InboundEvent],
        marks: &[&InboundEvent],
    ) -> Result<Vec<bool>, HandlerError> {
        let domain: Vec<InboundEvent> = events
            .iter()
            .filter(|e| !super::watermark::is_watermark(e))
            .cloned()
            .collect();
        let mut applied = if domain.is_empty() {
            Vec::new()
        } else {
            Box::pin(self.apply_all(&domain)).await?
        }
        .into_iter();
        let mut tx = self.pool.begin().await?;
        super::watermark::record(&mut tx, &self.spec.name, marks).await?;
        tx.commit().await?;
        self.handler.committed();
        Ok(events
            .iter()
            .map(|e| super::watermark::is_watermark(e) || applied.next().unwrap_or(false))
            .collect())
    }

    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}
