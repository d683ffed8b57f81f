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
//! Writers call [`signal`] after their transaction commits; a loop holds a
//! [`subscribe`]d receiver and awaits `changed()`, which returns at once if a
//! signal came while it was busy, so no wake-up is lost and bursts coalesce.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tokio::sync::watch;

static TOPICS: LazyLock<Mutex<HashMap<String, watch::Sender<u64>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn with_sender<T>(topic: &str, f: impl FnOnce(&watch::Sender<u64>) -> T) -> T {
    let mut topics = TOPICS.lock().unwrap_or_else(|p| p.into_inner());
    let sender = topics
        .entry(topic.to_string())
        .or_insert_with(|| watch::channel(0).0);
    f(sender)
}

/// Wakes every loop subscribed to `topic` in this process.
pub fn signal(topic: &str) {
    with_sender(topic, |s| s.send_modify(|n| *n = n.wrapping_add(1)));
}

/// A receiver whose `changed()` resolves after the next [`signal`] of `topic`.
pub fn subscribe(topic: &str) -> watch::Receiver<u64> {
    with_sender(topic, watch::Sender::subscribe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_sent_while_busy_is_seen_and_bursts_coalesce() {
        let mut rx = subscribe("wake-test");
        signal("wake-test");
        signal("wake-test");
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .expect("open");
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), rx.changed()).await;
        assert!(again.is_err(), "two signals while busy wake once");
        signal("another-topic");
        let other = tokio::time::timeout(std::time::Duration::from_millis(50), rx.changed()).await;
        assert!(other.is_err(), "topics are separate");
    }
}
