//! The one way a service writes events: an [`Emitter`] begins a [`Tx`], the
//! state change and its events are written through it, and its
//! [`Tx::commit`] wakes the service's outbox relay by itself.
//!
//! Before this, every writer built its own `EventMeta`, called
//! `outbox::enqueue` and then had to remember to wake the relay after its
//! commit; a forgotten wake-up delayed events silently by a poll interval.
//! Here the envelope is built in one place from what the caller knows (what
//! happened, to which aggregate, when), the clock and the current trace, and
//! the wake-up is tied to the commit, so there is nothing to forget.
//!
//! ```ignore
//! let mut tx = emitter.begin(&pool).await?;
//! store::insert_partner(&mut tx, &partner).await?;
//! tx.emit(
//!     Event::new(PARTNER_UPSERTED, &partner.code, at).scoped(&[&partner.code]),
//!     |meta| events::PartnerUpserted { meta, partner: Some(p) },
//! )
//! .await?;
//! tx.commit().await?; // the relay wakes here
//! ```

use std::ops::{Deref, DerefMut};

use baladiya_proto::convert::timestamp;
use baladiya_proto::events::v1::EventMeta;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{EventError, EventType, OutboundEvent, outbox};
use crate::clock::Clock;
use crate::wake::Wake;

/// A service's door to its outbox: it names the producer (`ce-source`), reads
/// the service's clock and wakes the service's relay. Cheap to clone; every
/// writer of the service (handlers, consumers, background loops) holds one.
#[derive(Debug, Clone)]
pub struct Emitter {
    service: &'static str,
    clock: Clock,
    relay: Wake,
}

impl Emitter {
    /// The emitter of `service` (its `ce-source` is `/baladiya/<service>`).
    pub fn new(service: &'static str, clock: Clock) -> Self {
        Self {
            service,
            clock,
            relay: Wake::new(),
        }
    }

    /// The wake-up of this service's relay: the relay subscribes to it.
    pub fn relay_wake(&self) -> &Wake {
        &self.relay
    }

    /// The service's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Begins a transaction in `pool` whose events wake the relay on commit.
    pub async fn begin(&self, pool: &PgPool) -> Result<Tx, sqlx::Error> {
        Ok(self.within(pool.begin().await?))
    }

    /// Runs `statement`, one autocommitted statement that writes outbox rows
    /// with its own SQL (intake's batched submit: many reports, their events
    /// and audit in one round trip, no transaction around it), and wakes the
    /// relay once it succeeded.
    pub async fn autocommitted<T, E>(
        &self,
        statement: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let done = statement.await;
        if done.is_ok() {
            self.relay.signal();
        }
        done
    }

    /// Builds an event ready for the outbox: its id, its `EventMeta` (passed
    /// to `payload`, which returns the message) and its CloudEvents envelope
    /// with the current trace. [`Tx::emit`] writes it; a batch writer puts it
    /// in its own statement.
    pub fn envelope<M: prost::Message + prost::Name>(
        &self,
        event: Event<'_>,
        payload: impl FnOnce(Option<EventMeta>) -> M,
    ) -> OutboundEvent {
        let id = event.id.unwrap_or_else(Uuid::now_v7);
        let meta = EventMeta {
            event_id: id.to_string(),
            occurred_at: Some(timestamp(event.occurred_at)),
            aggregate_id: event.aggregate.clone(),
            recorded_at: event.recorded_at.map(timestamp),
        };
        let mut outbound = OutboundEvent::new(
            self.service,
            event.kind,
            event.scope,
            id,
            event.aggregate,
            event.occurred_at,
            &payload(Some(meta)),
        );
        outbound.recorded_at = event.recorded_at;
        outbound
    }

    /// Takes over a transaction begun elsewhere (the consumer framework's).
    pub fn within(&self, tx: Transaction<'static, Postgres>) -> Tx {
        Tx {
            inner: tx,
            emitter: self.clone(),
            enqueued: false,
        }
    }
}

/// What one event says about itself: its kind, the aggregate it is about,
/// when it happened and, where later, when it was recorded.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    id: Option<Uuid>,
    kind: EventType,
    aggregate: String,
    scope: &'a [&'a str],
    occurred_at: DateTime<Utc>,
    recorded_at: Option<DateTime<Utc>>,
}

impl<'a> Event<'a> {
    /// An event of `kind` about `aggregate` (`ce-subject`) that happened at `at`.
    pub fn new(kind: EventType, aggregate: impl ToString, at: DateTime<Utc>) -> Self {
        Self {
            id: None,
            kind,
            aggregate: aggregate.to_string(),
            scope: &[],
            occurred_at: at,
            recorded_at: None,
        }
    }

    /// The trailing subject tokens consumers filter on (municipality,
    /// partner, ...), see [`EventType::subject`].
    pub fn scoped(mut self, scope: &'a [&'a str]) -> Self {
        self.scope = scope;
        self
    }

    /// With an id chosen beforehand, for a writer that stores it beside the
    /// event (a case's history row names the event it produced).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Recorded at `at`: kept (in `EventMeta.recorded_at` and the
    /// `baladiya-recordedtime` header) only where later than when it
    /// happened, as for an action a caller back-dated.
    pub fn recorded(mut self, at: DateTime<Utc>) -> Self {
        self.recorded_at = (at > self.occurred_at).then_some(at);
        self
    }
}

/// A transaction of one service that may write events. It derefs to the
/// connection for SQL; [`Self::commit`] wakes the relay if an event was
/// written, so an event can never wait for the relay's poll.
#[derive(Debug)]
pub struct Tx {
    inner: Transaction<'static, Postgres>,
    emitter: Emitter,
    enqueued: bool,
}

impl Tx {
    /// The emitter this transaction writes through.
    pub fn emitter(&self) -> &Emitter {
        &self.emitter
    }

    /// The connection, for store functions.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.inner
    }

    /// The service's clock, read now (unfenced: for services whose stream
    /// carries no watermarks, and for instants that are not event stamps).
    pub fn now(&self) -> DateTime<Utc> {
        self.emitter.clock.now()
    }

    /// The instant to stamp this transaction's events with on a stream with
    /// watermarks: the clock read under the outbox fence (see
    /// [`outbox::fenced_now`]).
    pub async fn fenced_now(&mut self) -> Result<DateTime<Utc>, EventError> {
        outbox::fenced_now(&mut self.inner, &self.emitter.clock).await
    }

    /// Writes an event to the outbox (see [`Emitter::envelope`]) and returns
    /// its id.
    pub async fn emit<M: prost::Message + prost::Name>(
        &mut self,
        event: Event<'_>,
        payload: impl FnOnce(Option<EventMeta>) -> M,
    ) -> Result<Uuid, EventError> {
        let outbound = self.emitter.envelope(event, payload);
        self.enqueue(&outbound).await?;
        Ok(outbound.id)
    }

    /// Writes an event built elsewhere (every event goes through here or
    /// [`Self::emit`], but for [`Emitter::autocommitted`] statements).
    pub async fn enqueue(&mut self, event: &OutboundEvent) -> Result<(), EventError> {
        // Noted before the insert: a wake-up too many is harmless.
        self.enqueued = true;
        outbox::enqueue(&mut self.inner, event).await
    }

    /// Whether an event was written.
    pub fn has_events(&self) -> bool {
        self.enqueued
    }

    /// Marks a point to come back to with [`Self::rollback_to_savepoint`], so
    /// one failing part of a batch (a timer that cannot fire) does not undo
    /// the others. One at a time: a new one replaces the last.
    pub async fn savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SAVEPOINT baladiya_step")
            .execute(&mut *self.inner)
            .await
            .map(drop)
    }

    /// Keeps what was written since [`Self::savepoint`].
    pub async fn release_savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("RELEASE SAVEPOINT baladiya_step")
            .execute(&mut *self.inner)
            .await
            .map(drop)
    }

    /// Undoes what was written since [`Self::savepoint`] (an event written
    /// there may still wake the relay, which then finds nothing more).
    pub async fn rollback_to_savepoint(&mut self) -> Result<(), sqlx::Error> {
        sqlx::query("ROLLBACK TO SAVEPOINT baladiya_step")
            .execute(&mut *self.inner)
            .await
            .map(drop)
    }

    /// Commits, then wakes the relay if an event was written.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await?;
        if self.enqueued {
            self.emitter.relay.signal();
        }
        Ok(())
    }

    /// Rolls back (dropping a `Tx` does too).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for Tx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}
