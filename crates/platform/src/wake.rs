//! Process-local wake-ups after a commit.
//!
//! A background loop that reads what other tasks commit (the outbox relay, the
//! SLA watcher's timer loop) sleeps until it is told something changed or its
//! poll interval passes. The writers are in the same process as the loop that
//! reads their rows, so the signal does not go through PostgreSQL: a
//! `pg_notify` in the writing transaction takes a database-wide lock that is
//! held until the commit is flushed, which lines every such commit up behind
//! the others and caps the whole platform at one commit per disk flush.
//!
//! A [`Wake`] is a value, handed to the writers and to the loop by whoever
//! wires them (the outbox's is inside [`crate::events::Emitter`], which signals
//! it on commit), so a writer cannot name the wrong loop. The loop holds a
//! [`Wake::subscribe`]d receiver and awaits `changed()`, which returns at once
//! if a signal came while it was busy, so no wake-up is lost and bursts
//! coalesce.

use std::sync::Arc;

use tokio::sync::watch;

/// One loop's wake-up: clones signal the same loop.
#[derive(Debug, Clone)]
pub struct Wake(Arc<watch::Sender<u64>>);

impl Default for Wake {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl Wake {
    /// A wake-up nobody listens to yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the loop (now, or at its next wait if it is busy).
    pub fn signal(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver whose `changed()` resolves after the next [`Self::signal`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_sent_while_busy_is_seen_and_bursts_coalesce() {
        let wake = Wake::new();
        let other = Wake::new();
        let mut rx = wake.subscribe();
        wake.clone().signal();
        wake.signal();
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .expect("open");
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), rx.changed()).await;
        assert!(again.is_err(), "two signals while busy wake once");
        other.signal();
        let from_other =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.changed()).await;
        assert!(from_other.is_err(), "wake-ups are separate");
    }
}
