//! Writes the million clones: chunks of [`CHUNK`] clones handed out to
//! several connections, each in its own transaction with asynchronous
//! commit and, where the role may, foreign-key checks skipped. Apart from
//! the plan because it is about writing fast, not about what is written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use sqlx::{Connection, PgConnection};

use super::plan::Plan;
use super::sql::{INSERT_CLOCKS, INSERT_TIMERS};

/// Clones per loading transaction.
const CHUNK: i32 = 50_000;

/// Loads every clone on `workers` connections, `CHUNK` clones per
/// transaction. Returns whether foreign-key checks were skipped (that needs
/// a role allowed to set `session_replication_role`).
pub(super) async fn load(database: &str, plan: Arc<Plan>, workers: usize) -> anyhow::Result<bool> {
    let chunks: Vec<(i32, i32)> = (0..plan.clones)
        .step_by(CHUNK as usize)
        .map(|lo| (lo, lo.saturating_add(CHUNK).min(plan.clones)))
        .collect();
    let progress = Arc::new(Progress {
        chunks,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        started: Instant::now(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(load_chunks(
            database.to_string(),
            plan.clone(),
            progress.clone(),
        ));
    }
    let mut skipped = true;
    while let Some(joined) = tasks.join_next().await {
        skipped &= joined.context("a loading task failed")??;
    }
    Ok(skipped)
}

/// The loaders' shared work list.
struct Progress {
    chunks: Vec<(i32, i32)>,
    next: AtomicUsize,
    done: AtomicUsize,
    started: Instant,
}

/// Loads chunks until none is left. Returns whether foreign-key checks were skipped.
async fn load_chunks(
    database: String,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
) -> anyhow::Result<bool> {
    let mut conn = PgConnection::connect(&database)
        .await
        .context("connecting to the SLA bench database")?;
    sqlx::raw_sql("SET TIME ZONE 'UTC'; SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    let skipped = sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .is_ok();
    let total = progress.chunks.len();
    let tenth = total.div_ceil(10).max(1);
    loop {
        let i = progress.next.fetch_add(1, Ordering::Relaxed);
        let Some(&(lo, hi)) = progress.chunks.get(i) else {
            return Ok(skipped);
        };
        let mut tx = conn.begin().await?;
        plan.bind(sqlx::query(INSERT_CLOCKS), lo, hi)
            .bind(plan.template)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cloning clocks {lo}..{hi}"))?;
        plan.bind(sqlx::query(INSERT_TIMERS), lo, hi)
            .bind(plan.kinds.as_slice())
            .bind(plan.seqs.as_slice())
            .bind(plan.dues.as_slice())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cloning the timers of clocks {lo}..{hi}"))?;
        tx.commit().await?;
        let done = progress.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done.is_multiple_of(tenth) || done == total {
            eprintln!(
                "sla:   {}% loaded ({:.0} s)",
                done * 100 / total,
                progress.started.elapsed().as_secs_f64()
            );
        }
    }
}
