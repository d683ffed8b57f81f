//! The contract between a consumer and a service: [`EventHandler`], which a
//! service implements to apply events, and [`HandlerError`], by which it says
//! whether a failure is worth retrying. Apart from the consumer loop because
//! this is the part service crates write against; the loop is the platform's.

use std::future::Future;

use crate::events::{EventError, InboundEvent, Tx};

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
    /// Applies `event` in `tx`, the transaction that also records the event
    /// in the inbox; do every write (and emit every event) through it.
    fn handle(
        &self,
        tx: &mut Tx,
        event: &InboundEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies `events`, in order, in `tx` (the transaction that records them
    /// all in the inbox): a consumer applies what it fetched together this
    /// way. One by one through [`Self::handle`] unless the handler can write
    /// a batch more cheaply.
    fn handle_batch(
        &self,
        tx: &mut Tx,
        events: &[InboundEvent],
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        async move {
            for event in events {
                self.handle(tx, event).await?;
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
    /// [`crate::wake`]). The service's outbox relay is woken by the
    /// transaction's commit without it.
    fn committed(&self) {}
}
