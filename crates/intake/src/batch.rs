//! Submits that arrive together are written together.
//!
//! A submit's own work (checking it, its tracking number, sealing the
//! reporter) runs in its request's task; what must reach the database queues
//! here. The writer takes everything queued the moment its last batch has
//! committed and writes it with one statement
//! ([`store::insert_unless_duplicate`]): one round trip, one commit and one
//! WAL flush for the lot. Under a single caller a batch is one submit and
//! costs what a lone insert did; under many callers the database does its
//! per-statement and per-commit work once per batch instead of once per
//! report, which is what lets intake accept reports faster than PostgreSQL
//! commits separate transactions.
//!
//! One batch is written at a time: the next one gathers while it runs, and
//! gets bigger the longer it runs, so the database's fixed work per batch
//! shrinks per report just when load rises. Measured at 32 callers on two
//! cores, three batches at once made batches of five and accepted 2,300
//! submits/s; one at a time, 2,800 with a lower p99.
//!
//! Nothing is acknowledged before its batch commits. A batch that fails is
//! written again one submit at a time, so a submit that cannot be written
//! fails alone and the others still land.

use std::collections::HashSet;

use baladiya_platform::db;
use baladiya_platform::events::Emitter;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::IntakeError;
use crate::store::{self, Inserted, Submit};

/// The most submits one statement carries.
const MAX_BATCH: usize = 64;
/// Submits that may wait for the writer before callers wait to queue.
const QUEUE: usize = 1024;

/// The writer's session plans the batch statement once, not per batch.
///
/// Its custom plan took longer to make (1.5 ms: 42 arrays, six CTEs, two
/// duplicate searches over reports' indexes) than a batch of ten took to
/// run. A generic plan is made once for the connection and kept, so it must
/// not depend on how big `reports` was when it was made: with scans off, the
/// only plan for each duplicate search is its own index (GiST for a point,
/// B-tree for an address), the right one at a hundred reports or ten
/// million; a plan made while the table held twenty rows would otherwise
/// scan it whole until the next autoanalyze. The writer's connection runs
/// nothing else, so the settings reach no other query.
const PLANNED_ONCE: [(&str, &str); 3] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
];

/// What became of a submit, and the submit, handed back.
type Answer = (Result<Inserted, sqlx::Error>, Submit);

struct Queued {
    submit: Submit,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of the batch writer.
#[derive(Debug, Clone)]
pub struct SubmitWriter {
    queue: mpsc::Sender<Queued>,
}

impl SubmitWriter {
    /// Starts the writer on a connection of its own to `pool`'s database,
    /// with [`PLANNED_ONCE`]'s settings; it stops when the last handle drops.
    pub fn start(pool: &PgPool, emitter: Emitter) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let pool = db::sibling_pool(pool, 1, &PLANNED_ONCE);
        tokio::spawn(write_batches(pool, emitter, waiting));
        Self { queue }
    }

    /// Writes `submit` with whatever else is waiting; answers, with the
    /// submit handed back, once that is committed.
    pub async fn write(&self, submit: Submit) -> Result<(Inserted, Submit), IntakeError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { submit, reply })
            .await
            .map_err(|_| IntakeError::ShuttingDown)?;
        let (inserted, submit) = answer.await.map_err(|_| IntakeError::ShuttingDown)?;
        Ok((inserted?, submit))
    }
}

async fn write_batches(pool: PgPool, emitter: Emitter, mut waiting: mpsc::Receiver<Queued>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // In a task of its own, so a panic fails its batch's callers (their
        // answers are dropped: UNAVAILABLE) and the writer goes on.
        let pool = pool.clone();
        let emitter = emitter.clone();
        if let Err(e) = tokio::spawn(async move { write_batch(&pool, &emitter, batch).await }).await
        {
            tracing::error!(error = %e, "a batch of submits was abandoned");
        }
    }
}

/// Writes `batch` in rounds whose `request_id`s differ (a retry that came
/// with its original goes in the next round, where it finds the claim).
async fn write_batch(pool: &PgPool, emitter: &Emitter, mut batch: Vec<Queued>) {
    while !batch.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|q| seen.insert(q.submit.report.request_id.clone()));
        let answers = write_round(pool, emitter, &round).await;
        match answers {
            Ok(answers) => {
                for (queued, answer) in round.into_iter().zip(answers) {
                    queued.reply.send((Ok(answer), queued.submit)).ok();
                }
            }
            Err(e) if round.len() == 1 => {
                if let Some(queued) = round.into_iter().next() {
                    queued.reply.send((Err(e), queued.submit)).ok();
                }
            }
            Err(e) => {
                tracing::warn!(submits = round.len(), error = %e, "a batch of submits failed; writing them one by one");
                for queued in round {
                    let answer = write_round(pool, emitter, std::slice::from_ref(&queued))
                        .await
                        .and_then(|mut a| {
                            a.pop()
                                .ok_or_else(|| sqlx::Error::Protocol("no answer".into()))
                        });
                    queued.reply.send((answer, queued.submit)).ok();
                }
            }
        }
        batch = later;
    }
}

async fn write_round(
    pool: &PgPool,
    emitter: &Emitter,
    round: &[Queued],
) -> Result<Vec<Inserted>, sqlx::Error> {
    let submits: Vec<&Submit> = round.iter().map(|q| &q.submit).collect();
    let mut conn = pool.acquire().await?;
    emitter
        .autocommitted(store::insert_unless_duplicate(&mut conn, &submits))
        .await
}
