//! The transactional outbox: a state change and its events commit together,
//! and a relay publishes committed events to JetStream in order.
//!
//! A writer's [`super::Tx`] inserts the event into the service schema's
//! `outbox` table inside its transaction and, once it commits, wakes this
//! process's relay (see [`crate::wake`] for why not `NOTIFY`). The [`Relay`] takes a transaction-scoped advisory lock so
//! one replica relays a schema at a time, reads unsent rows in `seq` order,
//! publishes each with `Nats-Msg-Id` = event id and waits for its ack before
//! the next, then marks what was stored as sent in the same transaction. A relay
//! that finds the lock taken by another replica looks again shortly, so a
//! replica's events never wait for a poll interval. NATS being down only
//! delays events. A relay that dies between publishing and marking
//! republishes on restart; JetStream's duplicate window drops the copy, and the
//! consumers' inbox drops anything older.

use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{EventError, Namespace, OutboundEvent};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::wake::Wake;
use std::sync::Arc;

/// Takes the outbox fence of the connection's schema (shared, until the
/// transaction ends) and then reads `clock`: the instant a writer of a stream
/// with watermarks stamps its events with. A watermark never claims an event
/// stamped this way before it is on the stream (see
/// [`super::watermark`]); one stamped from a clock read before the fence is
/// covered only while the gap is under `events.watermark_margin_ms`, since a
/// writer can wait at the fence behind a relay's cut.
pub async fn fenced_now(
    conn: &mut PgConnection,
    clock: &Clock,
) -> Result<DateTime<Utc>, EventError> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared(hashtext('baladiya_outbox_fence.' || current_schema()))",
    )
    .execute(&mut *conn)
    .await?;
    Ok(clock.now())
}

/// Writes `event` to the outbox of the connection's schema, inside the
/// caller's transaction: only through [`super::Tx`], whose commit wakes the
/// relay.
pub(super) async fn enqueue(
    conn: &mut PgConnection,
    event: &OutboundEvent,
) -> Result<(), EventError> {
    // The fence (shared) tells the relay's cut to wait for this transaction:
    // see the watermark module.
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, ce_type, ce_source, ce_subject, dataschema, occurred_at, traceparent, payload, recorded_at)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
         FROM (SELECT pg_advisory_xact_lock_shared(hashtext('baladiya_outbox_fence.' || current_schema()))) AS fence",
    )
    .bind(event.id)
    .bind(&event.subject)
    .bind(&event.ce_type)
    .bind(&event.source)
    .bind(&event.aggregate_id)
    .bind(&event.dataschema)
    .bind(event.occurred_at)
    .bind(&event.traceparent)
    .bind(&event.payload)
    .bind(event.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks the pool's schema's events that occurred at or after `since` and
/// were already published as unsent, so the relay publishes them again, in
/// their original order and with their original ids: how a stream lost on the
/// NATS side is refilled from the outbox (rows are kept
/// `events.outbox_retention_days` after publishing). A relay in another
/// process picks them up within `events.outbox_poll_ms`. Returns how many.
pub async fn republish_since(pool: &PgPool, since: DateTime<Utc>) -> Result<u64, EventError> {
    let mut tx = pool.begin().await?;
    let marked = sqlx::query(
        "UPDATE outbox SET sent_at = NULL WHERE sent_at IS NOT NULL AND occurred_at >= $1",
    )
    .bind(since)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(marked)
}

/// Unsent events of the pool's schema, oldest first.
pub async fn unsent(pool: &PgPool, limit: i64) -> Result<Vec<OutboundEvent>, EventError> {
    let mut conn = pool.acquire().await?;
    Ok(load_unsent(&mut conn, limit)
        .await?
        .into_iter()
        .map(|(_, e)| e)
        .collect())
}

async fn load_unsent(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<(i64, OutboundEvent)>, EventError> {
    let rows = sqlx::query(
        "SELECT seq, event_id, subject, ce_type, ce_source, ce_subject, dataschema, occurred_at, traceparent, payload,
                recorded_at
         FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("seq")?,
                OutboundEvent {
                    id: r.try_get::<Uuid, _>("event_id")?,
                    subject: r.try_get("subject")?,
                    ce_type: r.try_get("ce_type")?,
                    source: r.try_get("ce_source")?,
                    aggregate_id: r.try_get("ce_subject")?,
                    dataschema: r.try_get("dataschema")?,
                    occurred_at: r.try_get::<DateTime<Utc>, _>("occurred_at")?,
                    traceparent: r.try_get("traceparent")?,
                    payload: r.try_get("payload")?,
                    recorded_at: r.try_get("recorded_at")?,
                },
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(EventError::from)
}

/// Publishes one event and waits for JetStream to store it.
pub async fn publish(
    js: &jetstream::Context,
    namespace: &Namespace,
    event: &OutboundEvent,
) -> Result<(), EventError> {
    let subject = namespace.subject(&event.subject);
    let fail = |reason: String| EventError::Publish {
        subject: subject.clone(),
        reason,
    };
    js.publish_with_headers(
        subject.clone(),
        event.headers(),
        event.payload.clone().into(),
    )
    .await
    .map_err(|e| fail(e.to_string()))?
    .await
    .map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Relays one schema's outbox to JetStream.
pub struct Relay {
    pool: PgPool,
    schema: String,
    js: jetstream::Context,
    namespace: Namespace,
    batch: i64,
    poll: Duration,
    retention_days: u32,
    metrics: Arc<Metrics>,
    watermarks: Option<Watermarks>,
    woken_by: Wake,
}

/// How a relay publishes its stream's low watermarks.
struct Watermarks {
    subject: &'static str,
    clock: Clock,
    interval: Duration,
    margin: chrono::TimeDelta,
    /// The last one published: when (this process's monotonic time) and what.
    last: std::sync::Mutex<Option<(std::time::Instant, DateTime<Utc>)>>,
}

impl Watermarks {
    fn due(&self) -> bool {
        self.last
            .lock()
            .map(|last| last.is_none_or(|(at, _)| at.elapsed() >= self.interval))
            .unwrap_or(true)
    }

    fn published(&self) -> Option<DateTime<Utc>> {
        self.last.lock().ok().and_then(|last| last.map(|(_, w)| w))
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("schema", &self.schema)
            .finish()
    }
}

impl Relay {
    /// A relay for the schema `pool` is pinned to, woken by the commits of
    /// `emitter`'s transactions.
    pub fn new(
        pool: PgPool,
        schema: &str,
        emitter: &super::Emitter,
        js: jetstream::Context,
        namespace: Namespace,
        config: &crate::config::EventsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            pool,
            schema: schema.to_string(),
            js,
            namespace,
            batch: config.outbox_batch,
            poll: Duration::from_millis(config.outbox_poll_ms),
            retention_days: config.outbox_retention_days,
            metrics,
            watermarks: None,
            woken_by: emitter.relay_wake().clone(),
        }
    }

    /// The same relay, also publishing low watermarks on `subject`, read off
    /// `clock` (see [`super::watermark`]).
    pub fn with_watermarks(
        mut self,
        subject: &'static str,
        clock: Clock,
        config: &crate::config::EventsConfig,
    ) -> Self {
        self.watermarks = Some(Watermarks {
            subject,
            clock,
            interval: Duration::from_millis(config.watermark_interval_ms),
            margin: chrono::TimeDelta::milliseconds(
                i64::try_from(config.watermark_margin_ms).unwrap_or(i64::MAX),
            ),
            last: std::sync::Mutex::new(None),
        });
        self.poll = self
            .poll
            .min(Duration::from_millis(config.watermark_interval_ms));
        self
    }

    /// Publishes one batch. Returns how many events were published, or `None`
    /// when another replica holds the schema's relay lock.
    pub async fn relay_once(&self) -> Result<Option<usize>, EventError> {
        let mut tx = self.pool.begin().await?;
        // Marking events sent need not wait for the disk: if the mark is lost
        // in a crash, the events are published again and JetStream's
        // duplicate window (or the consumers' inbox) drops the copies.
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_xact_lock(hashtext('baladiya_outbox_relay.' || current_schema()))
                    AND set_config('synchronous_commit', 'off', true) = 'off'",
        )
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(None);
        }
        // The cut comes before the read: see the watermark module.
        let mut cut = None;
        if let Some(w) = self.watermarks.as_ref().filter(|w| w.due()) {
            match super::watermark::barrier(&mut tx, w.interval.max(Duration::from_secs(1))).await {
                Ok(()) => cut = Some(w.clock.now() - w.margin),
                Err(e) => {
                    tracing::warn!(schema = %self.schema, error = %e, "a writer held the outbox fence; no watermark this round")
                }
            }
        }
        let batch = load_unsent(&mut tx, self.batch).await?;
        if let Some(published) = self.watermarks.as_ref().and_then(Watermarks::published) {
            let late = batch
                .iter()
                .filter(|(_, e)| e.recorded_at.unwrap_or(e.occurred_at) < published)
                .count();
            if late > 0 {
                tracing::warn!(schema = %self.schema, late, watermark = %published, "events recorded before a published watermark");
                self.metrics.add_outbox_late(&self.schema, late as u64);
            }
        }
        let mut published = Vec::with_capacity(batch.len());
        let mut failure = None;
        for (seq, event) in &batch {
            match publish(&self.js, &self.namespace, event).await {
                Ok(()) => published.push(*seq),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // A watermark only after everything unsent was read and published.
        if failure.is_none()
            && batch.len() < self.batch as usize
            && let (Some(w), Some(cut)) = (&self.watermarks, cut)
        {
            match super::watermark::publish(&self.js, &self.namespace, w.subject, cut).await {
                Ok(_) => {
                    if let Ok(mut last) = w.last.lock() {
                        let newest = last.map_or(cut, |(_, before)| before.max(cut));
                        *last = Some((std::time::Instant::now(), newest));
                    }
                }
                // The events went out; a missed watermark only waits for the
                // next round (at start, the stream may not be provisioned yet).
                Err(e) => {
                    tracing::debug!(schema = %self.schema, error = %e, "watermark not published; the next round tries again")
                }
            }
        }
        // Mark what was stored, so a failure midway does not republish the
        // head of the batch forever; order is kept because we stop at the
        // first failure.
        if !published.is_empty() {
            sqlx::query("UPDATE outbox SET sent_at = now() WHERE seq = ANY($1)")
                .bind(&published)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            self.metrics
                .add_outbox_published(&self.schema, published.len() as u64);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(Some(published.len())),
        }
    }

    /// Publishes until the outbox is empty (or an error stops it). Returns
    /// how many were published, or `None` if another replica was relaying.
    pub async fn drain(&self) -> Result<Option<usize>, EventError> {
        let mut total = 0;
        loop {
            let Some(n) = self.relay_once().await? else {
                return Ok(None);
            };
            total += n;
            if n < self.batch as usize {
                // A short batch read everything unsent at that moment.
                self.metrics.set_outbox_backlog(&self.schema, 0);
                return Ok(Some(total));
            }
        }
    }

    async fn update_backlog(&self) {
        if let Ok(backlog) =
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                .fetch_one(&self.pool)
                .await
        {
            self.metrics.set_outbox_backlog(&self.schema, backlog);
        }
    }

    async fn prune(&self) {
        let result =
            sqlx::query("DELETE FROM outbox WHERE sent_at < now() - make_interval(days => $1)")
                .bind(self.retention_days as i32)
                .execute(&self.pool)
                .await;
        if let Err(e) = result {
            tracing::warn!(schema = %self.schema, error = %e, "outbox prune failed");
        }
    }

    /// Relays until `shutdown`, then flushes what is left (bounded by `grace`).
    pub async fn run(self, mut shutdown: Shutdown, grace: Duration) {
        // Subscribed before the first drain, so a commit during it wakes the next.
        let mut woken = self.woken_by.subscribe();
        let mut failures: u32 = 0;
        let mut rounds: u64 = 0;
        while !shutdown.is_triggered() {
            let mut wait = self.poll;
            match self.drain().await {
                Ok(Some(_)) => failures = 0,
                // Another replica is relaying; what this one's writers
                // committed may be after its last read, so look again soon.
                Ok(None) => wait = wait.min(Duration::from_millis(20)),
                Err(e) => {
                    self.update_backlog().await;
                    failures = failures.saturating_add(1);
                    wait = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                    tracing::warn!(schema = %self.schema, error = %e, failures, "outbox relay failed; will retry");
                }
            }
            rounds += 1;
            if rounds.is_multiple_of(3600) {
                self.prune().await;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(wait) => {}
                _ = woken.changed(), if failures == 0 => {}
            }
        }
        match tokio::time::timeout(grace, self.drain()).await {
            Ok(Ok(n)) => {
                tracing::info!(schema = %self.schema, flushed = n.unwrap_or(0), "outbox relay stopped")
            }
            Ok(Err(e)) => {
                tracing::warn!(schema = %self.schema, error = %e, "outbox flush failed; events stay in the outbox")
            }
            Err(_) => {
                tracing::warn!(schema = %self.schema, "outbox flush timed out; events stay in the outbox")
            }
        }
    }
}
