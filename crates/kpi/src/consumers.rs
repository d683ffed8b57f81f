//! The projection consumers: each domain event becomes the facts indicators
//! are computed from ([`crate::domain::facts_of`], pure), written
//! idempotently ([`crate::store::write_projections`]). A fact depends only
//! on its own event, and the lookups (a case's report, a report's channel, a
//! license type's target) are order-free upserts, so applying a stream
//! twice, with duplicates, or interleaved differently with the other streams
//! gives the same rows. The live consumers and `baladiya kpi rebuild` both
//! go through [`apply`].

use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{InboundEvent, Tx, streams};
use sqlx::PgConnection;

use crate::domain::facts_of;
use crate::store;

/// The streams and subjects the projections read: every domain event that
/// feeds an indicator. Partner events (agreements, calendars) feed none: the
/// working time they define reaches the KPIs through the SLA clocks.
pub fn consumer_specs() -> Vec<ConsumerSpec> {
    [
        ("kpi-intake", streams::INTAKE, "baladiya.intake.>"),
        ("kpi-routing", streams::ROUTING, "baladiya.routing.>"),
        ("kpi-sla", streams::SLA, "baladiya.sla.>"),
        ("kpi-licensing", streams::LICENSING, "baladiya.licensing.>"),
    ]
    .into_iter()
    .map(|(name, stream, subject)| ConsumerSpec {
        name: name.into(),
        stream,
        subjects: vec![subject.into()],
    })
    .collect()
}

/// Writes one event's projection; a repeat writes nothing new.
pub async fn apply(conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandlerError> {
    apply_all(conn, std::slice::from_ref(event)).await
}

/// Writes the projections of `events` with one statement per table, however
/// many events there are: what lets the projection keep up with a busy
/// stream. A repeat writes nothing new; an event that cannot be projected
/// fails the whole call (and writes nothing, with the caller's transaction).
pub async fn apply_all(
    conn: &mut PgConnection,
    events: &[InboundEvent],
) -> Result<(), HandlerError> {
    let projections = events.iter().map(facts_of).collect::<Result<Vec<_>, _>>()?;
    store::write_projections(conn, events, &projections).await?;
    Ok(())
}

/// The live projection consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProjectFacts;

impl EventHandler for ProjectFacts {
    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        apply(tx, event).await
    }

    async fn handle_batch(&self, tx: &mut Tx, events: &[InboundEvent]) -> Result<(), HandlerError> {
        apply_all(tx, events).await
    }

    /// Facts depend only on their own event and `until` is recomputed under
    /// a per-subject lock, so batches may commit in any order.
    fn batches_at_once(&self) -> usize {
        BATCHES_AT_ONCE
    }
}

/// How many batches each projection consumer applies at once.
const BATCHES_AT_ONCE: usize = 4;
