//! Poison events: a consumer parks an event it cannot apply in
//! `parked_events` (and terminates it on the stream, so the events after it
//! go on), keeps the `baladiya_parked_events` gauge, and applies again the
//! parked events an operator asked to replay ([`request_replay`],
//! [`list_parked`]: `baladiya events replay` and `baladiya events parked`).
//! Apart from the consumer loop because this is the operator's side of
//! consuming, with its own table.

use std::time::Duration;

use bytes::Bytes;
use sqlx::Row;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::{Consumer, EventHandler, HandlerError, Outcome};
use crate::events::InboundEvent;

impl<H: EventHandler> Consumer<H> {
    /// Records a poison event; `Err` (retry later) only if even that fails.
    pub(super) async fn park(
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

    pub(super) async fn update_parked_gauge(&self) {
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

pub(super) fn headers_to_json(headers: &async_nats::HeaderMap) -> serde_json::Value {
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
