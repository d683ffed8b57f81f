//! The KPI figures: how fast the projection turns domain events
//! into facts, and how long a scorecard takes over a year of them.
//!
//! **Projection throughput (events/s).** [`PROJECTED_EVENTS`] domain events
//! are published straight into JetStream, under a namespace of their own,
//! before the KPI service runs. They are what the projection reads in
//! production, in a realistic mix: complaints (report received, case routed,
//! acknowledged, worked on, sometimes rejected and rerouted to triage, put on
//! hold, resolved, rated, reopened, closed; duplicates linked; acknowledge,
//! resolve and end-to-end clocks started, paused, warned, breached, escalated
//! and met), license applications (submitted, clearances, corrections, site
//! inspections, approved or rejected, license issued; decision clocks) and
//! facility inspections, over ten municipalities, the seeded partners,
//! categories and license types, and the last twelve months. They are built
//! from the services' own proto messages with [`OutboundEvent::new`] and
//! published with its headers, so subjects, CloudEvents headers and payloads
//! are what the outbox relays publish; events that feed no indicator (clock
//! starts, warnings, clearances) are in the mix too, as the projection must
//! read and skip them. Then `baladiya run --services kpi` starts alone on a
//! fresh database, and the time runs from `/readyz` answering 200 until the
//! KPI consumers' `baladiya_consumer_events_total` counters account for every
//! event; the events applied before ready are left out of the count, so
//! neither process start nor migrations are in the figure. The consumers run
//! as they do live (inbox, transactions, acks); nothing is set up for the
//! bench. The facts written are then counted against what [`facts_of`] gives
//! for the same events, and no event may be parked.
//!
//! **GetScorecard p99 over 10,000,000 events.** Projecting ten million events
//! through NATS would take the bench too long at the live rate, so the other
//! `10,000,000 - PROJECTED_EVENTS` events of the same mix are generated in
//! process and turned into rows by the projection's own [`facts_of`]: the
//! facts, case-report and report-channel rows the consumers would have
//! written, no more and no fewer. They are streamed into the same database
//! with `COPY`; the states among them are then copied into `states` with
//! their `until` by one statement, what the projection's `link_states` does
//! batch by batch. The facts and states tables' primary keys and indexes are
//! dropped during the load and rebuilt from their own definitions after it (freshly built
//! indexes are somewhat denser than ones grown a row at a time: a small
//! advantage to the query, said here rather than hidden), then
//! `VACUUM (ANALYZE)`, the state autovacuum keeps a live table in. The KPI
//! service restarts on it, the first answer is checked to have counted the
//! loaded facts, and `GetScorecard` for one municipality and the last whole
//! month runs, as an analyst, in a closed loop at 1 caller (the figure) and
//! at 8, and a partner's scorecard at 1, each for `--seconds`.
//!
//! The database and the namespace's streams are dropped at the end, whatever
//! happened.
//!
//! The work is split by what each step needs: [`generate`] makes the events
//! of the mix, [`projection`] publishes some and times the consumers through
//! them, [`load`] writes the rows of the rest straight into the tables, and
//! [`scorecard`] times `GetScorecard` over all of them. This module runs the
//! steps in order on a database and namespace of their own.
//!
//! [`OutboundEvent::new`]: baladiya_platform::events::OutboundEvent::new
//! [`facts_of`]: baladiya_kpi::domain::facts_of

use anyhow::Context;
use async_nats::jetstream;
use baladiya_platform::app::connect_nats;
use baladiya_platform::config::NatsConfig;
use chrono::{DateTime, Utc};

use crate::env::{Env, Phase, create_database, delete_streams, drop_database};

mod generate;
mod load;
mod projection;
mod scorecard;

pub use scorecard::scorecard_load;

/// Events published for the projection figure.
const PROJECTED_EVENTS: u64 = 200_000;
/// Events the scorecard is computed over, the projected ones included.
const SCORECARD_EVENTS: u64 = 10_000_000;

/// Both KPI figures; see the module documentation for the method.
pub async fn measure(env: &Env) -> anyhow::Result<Phase> {
    let name = format!("bench_kpi_{}", env.stamp);
    let nats = connect_nats(&NatsConfig {
        url: env.nats.clone(),
        ..NatsConfig::default()
    })
    .await
    .context("connecting to NATS")?;
    let js = jetstream::new(nats);
    let database = create_database(env, &name).await?;
    let result = figures(env, &js, &database, &name).await;
    delete_streams(env, &name).await;
    drop_database(env, &name).await;
    result
}

async fn figures(
    env: &Env,
    js: &jetstream::Context,
    database: &str,
    name: &str,
) -> anyhow::Result<Phase> {
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).context("the time now")?;
    let (projected, projection_details) = projection::measure(env, js, database, name, now).await?;
    let (scorecard, scorecard_details) = scorecard::measure(env, database, name, now).await?;
    let mut details = serde_json::Map::new();
    details.insert("kpi_projection".into(), projection_details);
    details.insert("kpi_scorecard".into(), scorecard_details);
    Ok(Phase {
        figures: vec![projected, scorecard],
        details,
    })
}

async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .context("connecting to the KPI database")
}
