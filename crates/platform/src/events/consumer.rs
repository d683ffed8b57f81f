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

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use tracing::Instrument;
use uuid::Uuid;

use super::{EventError, InboundEvent, Namespace, StreamSpec};
use crate::config::EventsConfig;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::telemetry;

/// How many events a consumer fetches, and applies in one transaction, at most.
const FETCH_BATCH: usize = 128;

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (a database hiccup, a dependency down): retried.
    #[error("{0}")]
    Retry(String),
    /// Can never work (undecodable, violates an invariant): parked at once.
    #[error("{0}")]
    Reject(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(e.to_string())
    }
}

impl From<EventError> for HandlerError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Decode { .. } | EventError::Header { .. } => Self::Reject(e.to_string()),
            other => Self::Retry(other.to_string()),
        }
    }
}

/// Applies events of some kinds to a service's state.
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event` using `conn`, which is inside the transaction that also
    /// records the event in the inbox; do every write through it.
    fn handle(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies `events`, in order, using `conn` (inside the transaction that
    /// records them all in the inbox): a consumer applies what it fetched
    /// together this way. One by one through [`Self::handle`] unless the
    /// handler can write a batch more cheaply.
    fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[InboundEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for event in events {
                self.handle(conn, event).await?;
            }
            Ok(())
        }
    }

    /// How many fetched batches the consumer may apply at once, each in its
    /// own transaction. One (the default) keeps a stream's order; a handler
    /// whose writes give the same rows in any order (a projection) can take
    /// more, so a busy stream is not held to one transaction's round trips.
    fn batches_at_once(&self) -> usize {
        1
    }

    /// Called after an event's transaction has committed, to wake an
    /// in-process loop that reads what the handler wrote (see
    /// [`crate::wake`]). The service's outbox relay is woken without it.
    fn committed(&self) {}
}

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
    schema: String,
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
    /// A consumer applying events through `handler` in `pool`'s schema,
    /// named `schema` (whose outbox relay it wakes after a commit that
    /// enqueued events).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: ConsumerSpec,
        handler: H,
        pool: PgPool,
        schema: &str,
        js: jetstream::Context,
        namespace: Namespace,
        config: &EventsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            spec,
            handler,
            pool,
            schema: schema.to_string(),
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
        let (handled, enqueued) = super::outbox::noting_enqueues(
            AssertUnwindSafe(self.handler.handle_batch(&mut tx, &new)).catch_unwind(),
        )
        .await;
        handled.map_err(|_| HandlerError::Retry("handler panicked".into()))??;
        tx.commit().await?;
        if enqueued {
            super::outbox::committed(&self.schema);
        }
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

    /// Records a poison event; `Err` (retry later) only if even that fails.
    async fn park(
        &self,
        event_id: Option<Uuid>,
        subject: &str,
        headers: serde_json::Value,
        payload: &Bytes,
        error: &str,
        attempts: u32,
    ) -> Result<Outcome, Duration> {
        let result = sqlx::query(
            "INSERT INTO parked_events (consumer, event_id, subject, headers, payload, error, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (consumer, event_id) DO UPDATE
               SET error = EXCLUDED.error, attempts = parked_events.attempts + EXCLUDED.attempts,
                   parked_at = now(), replay_requested = false, replayed_at = NULL",
        )
        .bind(&self.spec.name)
        .bind(event_id)
        .bind(subject)
        .bind(headers)
        .bind(payload.as_ref())
        .bind(error)
        .bind(attempts as i32)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(Outcome::Parked),
            Err(e) => {
                tracing::error!(consumer = %self.spec.name, error = %e, "cannot park event; will retry");
                Err(self.backoff_max)
            }
        }
    }

    /// Tries again every parked event an operator asked to replay.
    pub async fn replay_requested(&self) -> usize {
        let rows = sqlx::query(
            "SELECT id, subject, headers, payload FROM parked_events
             WHERE consumer = $1 AND replay_requested ORDER BY id LIMIT 100",
        )
        .bind(&self.spec.name)
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        let mut replayed = 0;
        for row in rows {
            let (Ok(id), Ok(subject), Ok(headers), Ok(payload)) = (
                row.try_get::<i64, _>("id"),
                row.try_get::<String, _>("subject"),
                row.try_get::<serde_json::Value, _>("headers"),
                row.try_get::<Vec<u8>, _>("payload"),
            ) else {
                continue;
            };
            let result =
                match InboundEvent::from_parts(subject, &json_to_headers(&headers), payload.into())
                {
                    Ok(event) => self.apply(&event).await.map(|_| ()),
                    Err(e) => Err(HandlerError::from(e)),
                };
            let update = match &result {
                Ok(()) => sqlx::query(
                    "UPDATE parked_events SET replay_requested = false, replayed_at = now() WHERE id = $1",
                )
                .bind(id),
                Err(e) => sqlx::query(
                    "UPDATE parked_events SET replay_requested = false, attempts = attempts + 1, error = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(e.to_string()),
            };
            if let Err(e) = update.execute(&self.pool).await {
                tracing::warn!(consumer = %self.spec.name, error = %e, "cannot record replay");
            }
            if result.is_ok() {
                replayed += 1;
                self.metrics
                    .record_event(&self.spec.name, "replayed", Duration::ZERO);
            }
        }
        replayed
    }

    async fn update_parked_gauge(&self) {
        if let Ok(n) = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM parked_events WHERE consumer = $1 AND replayed_at IS NULL",
        )
        .bind(&self.spec.name)
        .fetch_one(&self.pool)
        .await
        {
            self.metrics.set_parked(&self.spec.name, n);
        }
    }
}

/// Asks running consumers to replay parked events: all of `consumer`'s, or one.
/// Returns how many rows were marked.
pub async fn request_replay(
    pool: &PgPool,
    consumer: &str,
    id: Option<i64>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE parked_events SET replay_requested = true
         WHERE consumer = $1 AND replayed_at IS NULL AND ($2::bigint IS NULL OR id = $2)",
    )
    .bind(consumer)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// A parked event, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub id: i64,
    pub consumer: String,
    pub event_id: Option<Uuid>,
    pub subject: String,
    pub error: String,
    pub attempts: i32,
    pub parked_at: chrono::DateTime<chrono::Utc>,
    pub replay_requested: bool,
}

/// Parked events of the pool's schema that were not replayed yet, oldest first.
pub async fn list_parked(pool: &PgPool) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, consumer, event_id, subject, error, attempts, parked_at, replay_requested
         FROM parked_events WHERE replayed_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ParkedEvent {
                id: r.try_get("id")?,
                consumer: r.try_get("consumer")?,
                event_id: r.try_get("event_id")?,
                subject: r.try_get("subject")?,
                error: r.try_get("error")?,
                attempts: r.try_get("attempts")?,
                parked_at: r.try_get("parked_at")?,
                replay_requested: r.try_get("replay_requested")?,
            })
        })
        .collect()
}

fn headers_to_json(headers: &async_nats::HeaderMap) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .filter_map(|(name, values)| {
            values.first().map(|v| {
                (
                    name.to_string(),
                    serde_json::Value::String(v.as_str().to_string()),
                )
            })
        })
        .collect();
    serde_json::Value::Object(map)
}

fn json_to_headers(value: &serde_json::Value) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(map) = value.as_object() {
        for (name, v) in map {
            if let Some(s) = v.as_str() {
                headers.insert(name.as_str(), s);
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_survive_parking_as_json() {
        let mut h = async_nats::HeaderMap::new();
        h.insert("ce-id", "0190");
        h.insert("Nats-Msg-Id", "0190");
        let back = json_to_headers(&headers_to_json(&h));
        assert_eq!(back.get("ce-id").map(|v| v.as_str()), Some("0190"));
        assert_eq!(back.get("Nats-Msg-Id").map(|v| v.as_str()), Some("0190"));
    }
}
