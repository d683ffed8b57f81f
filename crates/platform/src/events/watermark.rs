//! Low watermarks: how a producer tells its consumers "every event of mine
//! recorded before W is on my stream", so the SLA watcher fires a warning,
//! breach or escalation due at D only once it knows every event that
//! happened at or before D (DOMAIN.md, "Nothing fires on partial knowledge").
//!
//! # Producer side: the relay's cut
//!
//! A stream with a watermark subject ([`StreamSpec::watermark`]) has its
//! relay, in each round, take a *cut* before reading the outbox:
//!
//! 1. Every writer takes the schema's *fence* in shared mode before it reads
//!    the clock it stamps its events with ([`super::outbox::fenced_now`]; the
//!    outbox insert, [`super::outbox::enqueue`], takes it too), and holds it
//!    until its transaction ends.
//! 2. The relay passes the fence in exclusive mode and lets go at once
//!    ([`barrier`]): this waits until every writer that holds it has
//!    committed or rolled back. Then it reads its clock, `t`, and only then
//!    reads the unsent outbox rows, in a statement whose snapshot therefore
//!    holds every writer that had taken the fence before the barrier.
//! 3. It publishes those rows, and then (only if it read everything unsent)
//!    a [`Watermark`] with `complete_before = t − margin`, on the same
//!    stream, after the events, with `Nats-Rollup: sub` so the stream keeps
//!    only the newest one.
//!
//! Why that is sound, case by case:
//!
//! - *A writer that commits after the relay's read.* It took the fence after
//!   the barrier (else the barrier would have waited for it), so it read its
//!   clock after the relay read `t`, less the two cases below; its events are
//!   stamped at or after `t − margin` and the watermark does not claim them.
//! - *Several relay replicas.* Only the holder of the schema's relay lock
//!   relays, and each watermark is sound on its own, so a consumer may take
//!   the largest it has seen even when a replica with a slower clock
//!   publishes a smaller one later.
//! - *Clock skew between replicas.* A writer's clock may be behind the
//!   relay's: `margin` (`events.watermark_margin_ms`) must exceed the skew
//!   the deployment allows (NTP keeps Kubernetes nodes within milliseconds).
//! - *A writer that read its clock before taking the fence* (a stamp taken
//!   with `clock.now()` rather than `fenced_now`): it can wait at the fence
//!   behind a relay's cut, which itself waits for a slow writer, so its gap
//!   is unbounded; it is covered only while the gap stays under `margin`
//!   less the skew. Writers of streams with watermarks stamp with
//!   `fenced_now`. A relay that reads a row recorded before a watermark it
//!   already published counts it in `baladiya_outbox_late_events` and logs
//!   it (`watermark_it` shows both).
//!
//! What no watermark can cover, and the SLA watcher corrects instead of
//! waiting for: an action the writer records with an earlier `occurred_at`
//! (back-dated within the producer's bound; the event carries both instants),
//! and the late writer above. Anything that arrives below the watermark is a
//! correction, not an error.
//!
//! # Consumer side: effective only behind the acknowledgement floor
//!
//! A consumer whose filter takes the watermark subject records each one it
//! receives ([`record`], in the same transaction as the batch it came with)
//! with its stream sequence. A watermark takes effect ([`refresh`]) only once
//! the consumer's acknowledgement floor on the server has passed its
//! sequence: then every event before it on the stream was applied (and its
//! effects committed), parked, or still waits for a redelivery, and the floor
//! does not pass an event being retried. That holds with several consumer
//! replicas sharing one durable consumer and across restarts, where events
//! arrive out of stream order; a consumer that cannot reach NATS keeps the
//! effective watermark it had, which only delays firings.
//!
//! [`StreamSpec::watermark`]: super::StreamSpec::watermark

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use chrono::{DateTime, SecondsFormat, Utc};
use prost::{Message, Name};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{CONTENT_TYPE, EventError, InboundEvent, Namespace, SPEC_VERSION, percent_encode};
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::events::v1::{EventMeta, Watermark};

/// The advisory lock key expression of the connection's schema's fence, the
/// key [`super::outbox::enqueue`] takes in shared mode.
const FENCE_KEY: &str = "hashtext('baladiya_outbox_fence.' || current_schema())";

/// Waits until every writer holding the connection's schema's fence has
/// finished, and lets the next ones in: the relay's cut. Fails after
/// `timeout` (a writer holding its transaction open), which skips this
/// round's watermark rather than stall every writer queued behind the cut.
pub async fn barrier(conn: &mut PgConnection, timeout: Duration) -> Result<(), EventError> {
    // In a savepoint, so a timeout leaves the caller's transaction usable.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SAVEPOINT outbox_cut; SET LOCAL lock_timeout = '{}ms'",
        timeout.as_millis().max(1)
    )))
    .execute(&mut *conn)
    .await?;
    // OFFSET 0 keeps the subquery (the lock) from being flattened into the
    // outer select, so the unlock runs after it.
    let cut = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_unlock({FENCE_KEY}) FROM (SELECT pg_advisory_lock({FENCE_KEY}) OFFSET 0) AS cut"
    )))
    .execute(&mut *conn)
    .await;
    let end = if cut.is_ok() {
        "RELEASE SAVEPOINT outbox_cut; SET LOCAL lock_timeout TO DEFAULT"
    } else {
        "ROLLBACK TO SAVEPOINT outbox_cut; RELEASE SAVEPOINT outbox_cut"
    };
    sqlx::raw_sql(end).execute(&mut *conn).await?;
    cut?;
    Ok(())
}

/// The producer named by a watermark subject: `routing` for
/// `baladiya.routing.watermark`.
pub fn producer_of(subject: &str) -> &str {
    subject
        .strip_prefix("baladiya.")
        .and_then(|s| s.split('.').next())
        .unwrap_or(subject)
}

/// The CloudEvents type of a watermark on `subject`.
pub fn ce_type(subject: &str) -> String {
    format!("sa.baladiya.{}.watermark.v1", producer_of(subject))
}

/// Publishes a watermark on `subject` and waits for JetStream to store it;
/// returns its stream sequence.
pub async fn publish(
    js: &jetstream::Context,
    namespace: &Namespace,
    subject: &str,
    complete_before: DateTime<Utc>,
) -> Result<u64, EventError> {
    let producer = producer_of(subject);
    let id = Uuid::now_v7().to_string();
    let payload = Watermark {
        meta: Some(EventMeta {
            event_id: id.clone(),
            occurred_at: Some(timestamp(complete_before)),
            aggregate_id: producer.to_string(),
            recorded_at: None,
        }),
        complete_before: Some(timestamp(complete_before)),
        producer: producer.to_string(),
    };
    let mut h = HeaderMap::new();
    h.insert("Nats-Rollup", "sub");
    h.insert("Nats-Msg-Id", id.as_str());
    h.insert("ce-specversion", SPEC_VERSION);
    h.insert("ce-id", id.as_str());
    h.insert("ce-type", ce_type(subject).as_str());
    h.insert("ce-source", format!("/baladiya/{producer}").as_str());
    h.insert("ce-subject", producer);
    h.insert(
        "ce-time",
        complete_before
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            .as_str(),
    );
    h.insert(
        "ce-dataschema",
        percent_encode(&Watermark::type_url()).as_str(),
    );
    h.insert("content-type", CONTENT_TYPE);
    let subject = namespace.subject(subject);
    let fail = |reason: String| EventError::Publish {
        subject: subject.clone(),
        reason,
    };
    let ack = js
        .publish_with_headers(subject.clone(), h, payload.encode_to_vec().into())
        .await
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(ack.sequence)
}

/// Whether `event` is a watermark rather than a domain event.
pub fn is_watermark(event: &InboundEvent) -> bool {
    event.ce_type.ends_with(".watermark.v1") && event.dataschema == Watermark::type_url()
}

/// Records the watermarks among `events` for `consumer`, in the caller's
/// transaction.
pub async fn record(
    conn: &mut PgConnection,
    consumer: &str,
    events: &[&InboundEvent],
) -> Result<(), EventError> {
    for event in events {
        let mark: Watermark = event.decode()?;
        let before = mark
            .complete_before
            .as_ref()
            .and_then(instant)
            .ok_or(EventError::Header {
                header: "complete_before",
            })?;
        sqlx::query(
            "INSERT INTO watermarks (consumer, producer, latest_before, latest_seq)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer, producer) DO UPDATE
               SET latest_before = GREATEST(watermarks.latest_before, EXCLUDED.latest_before),
                   latest_seq = GREATEST(watermarks.latest_seq, EXCLUDED.latest_seq),
                   received_at = now()",
        )
        .bind(consumer)
        .bind(&mark.producer)
        .bind(before)
        .bind(i64::try_from(event.stream_sequence).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// What a consumer knows of one producer's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knowledge {
    pub producer: String,
    /// Every event the producer recorded before this instant has been
    /// applied (or parked) by the consumer; `None` before the first watermark.
    pub complete_before: Option<DateTime<Utc>>,
    /// A later watermark is recorded but not yet in effect (the consumer's
    /// acknowledgements of what came before it are still on their way):
    /// worth asking again soon.
    pub pending: bool,
}

/// Brings `consumer`'s effective watermarks forward to what its
/// acknowledgement floor on `stream` allows, and returns them. Without NATS
/// it returns what was effective before.
pub async fn refresh(
    pool: &PgPool,
    js: &jetstream::Context,
    namespace: &Namespace,
    stream: &str,
    consumer: &str,
) -> Result<Vec<Knowledge>, EventError> {
    let floor = async {
        let stream = js.get_stream(namespace.stream(stream)).await.ok()?;
        let info = stream
            .consumer_info(consumer)
            .await
            .map_err(|e| tracing::debug!(consumer, error = %e, "no consumer info; watermarks stay"))
            .ok()?;
        Some(info.ack_floor.stream_sequence)
    }
    .await;
    if let Some(floor) = floor {
        sqlx::query(
            "UPDATE watermarks SET effective_before = GREATEST(effective_before, latest_before)
             WHERE consumer = $1 AND latest_seq <= $2
               AND effective_before IS DISTINCT FROM GREATEST(effective_before, latest_before)",
        )
        .bind(consumer)
        .bind(i64::try_from(floor).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
    }
    known(pool, consumer).await
}

/// `consumer`'s effective watermarks, as last refreshed.
pub async fn known(pool: &PgPool, consumer: &str) -> Result<Vec<Knowledge>, EventError> {
    let rows: Vec<(String, Option<DateTime<Utc>>, bool)> = sqlx::query_as(
        "SELECT producer, effective_before, latest_before > coalesce(effective_before, '-infinity')
         FROM watermarks WHERE consumer = $1 ORDER BY producer",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(producer, complete_before, pending)| Knowledge {
            producer,
            complete_before,
            pending,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_and_type_come_from_the_subject() {
        assert_eq!(producer_of("baladiya.routing.watermark"), "routing");
        assert_eq!(
            ce_type("baladiya.licensing.watermark"),
            "sa.baladiya.licensing.watermark.v1"
        );
    }
}
