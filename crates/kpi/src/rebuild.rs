//! `baladiya kpi rebuild`: replays the domain streams from their first
//! message into fresh tables (schema `kpi_rebuild`) through the same
//! [`consumers::apply`] as the live consumers, then either compares them with
//! the live tables (`--check`) or copies them over the live ones in one
//! transaction and replays what arrived meanwhile.
//!
//! Why this is safe while the platform runs: every fact is keyed by its
//! event, so a repeat is a no-op; readers and the live consumers wait during
//! the copy (they need the tables' locks) and go on after it; and events the
//! live consumers applied between the snapshot and the copy are applied again
//! by the tail replay after it.

use std::collections::BTreeMap;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use baladiya_platform::config::Config;
use baladiya_platform::events::consumer::HandlerError;
use baladiya_platform::events::{InboundEvent, Namespace, StreamSpec};
use baladiya_platform::{app, db};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Connection, PgPool};

use crate::consumers;

/// The tables a rebuild fills, in the order they are copied.
pub const TABLES: [&str; 6] = [
    "facts",
    "states",
    "case_reports",
    "report_channels",
    "license_type_targets",
    "withdrawn_events",
];

/// The schema a rebuild writes into.
pub const REBUILD_SCHEMA: &str = "kpi_rebuild";

/// What to do with the rebuilt tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy them over the live tables.
    Swap,
    /// Compare them with the live tables and leave those alone.
    Check,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Pool(#[from] db::DbError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("another rebuild is running")]
    Busy,
    #[error("applying event {event} from {stream}: {reason}")]
    Apply {
        stream: String,
        event: String,
        reason: String,
    },
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Events read per stream (up to the snapshot).
    pub events: BTreeMap<String, u64>,
    /// Events that could not be projected and were skipped, as the live
    /// consumers park them.
    pub skipped: u64,
    /// Rows per rebuilt table.
    pub rows: BTreeMap<String, i64>,
    /// With [`Mode::Check`]: rows present on one side only, per table.
    pub differences: BTreeMap<String, i64>,
    /// With [`Mode::Swap`]: events applied again after the copy.
    pub tail: u64,
}

fn nats(e: impl std::fmt::Display) -> RebuildError {
    RebuildError::Nats(e.to_string())
}

/// The streams the projections read, with the subjects they read there.
fn sources() -> Vec<(StreamSpec, String)> {
    consumers::consumer_specs()
        .into_iter()
        .map(|c| (c.stream, c.subjects.join(",")))
        .collect()
}

/// Runs a rebuild; `progress` gets one line at a time.
pub async fn rebuild(
    config: &Config,
    mode: Mode,
    mut progress: impl FnMut(String),
) -> Result<Report, RebuildError> {
    let live = db::schema_pool(&config.database, "kpi")?;
    let kpi = crate::KpiModule;
    db::migrate(&live, "kpi", &app::ServiceModule::migrator(&kpi)).await?;
    let mut guard = live.acquire().await?.detach();
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('baladiya-kpi-rebuild'))")
            .fetch_one(&mut guard)
            .await?;
    if !locked {
        return Err(RebuildError::Busy);
    }
    let result = run(config, &live, mode, &mut progress).await;
    guard.close().await.ok();
    result
}

async fn run(
    config: &Config,
    live: &PgPool,
    mode: Mode,
    progress: &mut impl FnMut(String),
) -> Result<Report, RebuildError> {
    let client = app::connect_nats(&config.nats).await.map_err(nats)?;
    // The client retries in the background; a command says plainly when NATS
    // is not there rather than timing out on its first request.
    for _ in 0..50 {
        if client.connection_state() == async_nats::connection::State::Connected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if client.connection_state() != async_nats::connection::State::Connected {
        return Err(RebuildError::Nats(format!(
            "cannot reach NATS at {} (nats.url)",
            config.nats.url
        )));
    }
    let js = jetstream::new(client);
    let namespace = Namespace::new(&config.events.namespace);

    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE"
    )))
    .execute(live)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {REBUILD_SCHEMA}")))
        .execute(live)
        .await?;
    for table in TABLES {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {REBUILD_SCHEMA}.{table} (LIKE kpi.{table} INCLUDING ALL)"
        )))
        .execute(live)
        .await?;
    }
    let fresh = db::schema_pool(&config.database, REBUILD_SCHEMA)?;
    let mut report = Report::default();
    let mut snapshot = Vec::new();
    for (spec, subject) in sources() {
        let name = namespace.stream(spec.name);
        let last = replay(
            &js,
            &namespace,
            &name,
            &subject,
            1,
            false,
            &fresh,
            &mut report,
            progress,
        )
        .await?;
        snapshot.push((name, subject, last));
    }
    for table in TABLES {
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {REBUILD_SCHEMA}.{table}"
        )))
        .fetch_one(live)
        .await?;
        report.rows.insert(table.to_string(), rows);
    }
    match mode {
        Mode::Check => {
            for table in TABLES {
                let differ: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT (SELECT count(*) FROM (SELECT * FROM kpi.{table} EXCEPT SELECT * FROM {REBUILD_SCHEMA}.{table}) a)
                          + (SELECT count(*) FROM (SELECT * FROM {REBUILD_SCHEMA}.{table} EXCEPT SELECT * FROM kpi.{table}) b)"
                )))
                .fetch_one(live)
                .await?;
                report.differences.insert(table.to_string(), differ);
            }
            let total: i64 = report.differences.values().sum();
            progress(format!(
                "check: {total} row(s) differ between the live tables and the rebuild"
            ));
        }
        Mode::Swap => {
            let mut conn = live.acquire().await?;
            let mut tx = conn.begin().await?;
            // The copy is one statement over every fact: no statement timeout.
            sqlx::query("SET LOCAL statement_timeout = 0")
                .execute(&mut *tx)
                .await?;
            let list = TABLES.map(|t| format!("kpi.{t}")).join(", ");
            sqlx::query(AssertSqlSafe(format!("TRUNCATE {list}")))
                .execute(&mut *tx)
                .await?;
            for table in TABLES {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO kpi.{table} SELECT * FROM {REBUILD_SCHEMA}.{table}"
                )))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            progress("swap: the rebuilt tables replaced the live ones".into());
            let before = report.events.values().sum::<u64>();
            for (name, subject, last) in &snapshot {
                replay(
                    &js,
                    &namespace,
                    name,
                    subject,
                    last + 1,
                    true,
                    live,
                    &mut report,
                    progress,
                )
                .await?;
            }
            report.tail = report.events.values().sum::<u64>() - before;
            progress(format!(
                "tail: {} event(s) that arrived during the rebuild applied again",
                report.tail
            ));
        }
    }
    fresh.close().await;
    sqlx::query(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {REBUILD_SCHEMA} CASCADE"
    )))
    .execute(live)
    .await?;
    Ok(report)
}

/// Applies the messages of `stream` matching `subject` from sequence `from`
/// up to the stream's last sequence now; returns that last sequence.
#[allow(clippy::too_many_arguments)]
async fn replay(
    js: &jetstream::Context,
    namespace: &Namespace,
    stream_name: &str,
    subject: &str,
    from: u64,
    is_tail: bool,
    pool: &PgPool,
    report: &mut Report,
    progress: &mut impl FnMut(String),
) -> Result<u64, RebuildError> {
    let mut stream = match js.get_stream(stream_name).await {
        Ok(s) => s,
        Err(e) if e.to_string().contains("not found") => {
            progress(format!(
                "{stream_name}: no such stream yet, nothing to replay"
            ));
            return Ok(0);
        }
        Err(e) => return Err(nats(e)),
    };
    let last = stream.info().await.map_err(nats)?.state.last_sequence;
    let label = if is_tail { "tail" } else { "replay" };
    if last < from {
        if !is_tail {
            progress(format!("{stream_name}: empty"));
        }
        return Ok(last);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: namespace.subject(subject),
            deliver_policy: if from <= 1 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                }
            },
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    let mut messages = consumer.messages().await.map_err(nats)?;
    let mut count = 0u64;
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut in_tx = 0;
    loop {
        let Some(message) = messages.next().await else {
            break;
        };
        let message = message.map_err(nats)?;
        let info = message.info().map_err(nats)?;
        let seq = info.stream_sequence;
        let pending = info.pending;
        if seq > last {
            break;
        }
        let headers = message.headers.clone().unwrap_or_default();
        let applied = match InboundEvent::from_parts(
            namespace.strip(message.subject.as_str()).to_string(),
            &headers,
            message.payload.clone(),
        ) {
            Ok(event) => match consumers::apply(&mut tx, &event).await {
                Ok(()) => true,
                Err(HandlerError::Reject(reason)) => {
                    progress(format!(
                        "{stream_name}: skipping event {}: {reason}",
                        event.id
                    ));
                    false
                }
                Err(HandlerError::Retry(reason)) => {
                    return Err(RebuildError::Apply {
                        stream: stream_name.to_string(),
                        event: event.id.to_string(),
                        reason,
                    });
                }
            },
            Err(e) => {
                progress(format!("{stream_name}: skipping message {seq}: {e}"));
                false
            }
        };
        if !applied {
            report.skipped += 1;
        }
        count += 1;
        in_tx += 1;
        if in_tx == 500 {
            tx.commit().await?;
            tx = conn.begin().await?;
            in_tx = 0;
        }
        if count.is_multiple_of(10_000) {
            progress(format!(
                "{stream_name}: {label} {count} events (sequence {seq} of {last})"
            ));
        }
        if seq == last || pending == 0 {
            break;
        }
    }
    tx.commit().await?;
    progress(format!(
        "{stream_name}: {label} {count} events done (up to sequence {last})"
    ));
    *report.events.entry(stream_name.to_string()).or_default() += count;
    Ok(last)
}
