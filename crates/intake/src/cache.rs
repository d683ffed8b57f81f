//! Reports read recently, kept in memory for `GetReport`.
//!
//! A citizen's app and a contact-centre screen poll the same report again
//! and again; answering from memory spares the database round trip and most
//! of the request's work. What makes a cached report safe to serve is that
//! every change to a stored report announces itself: a trigger on `reports`
//! (migration 0103) sends its id on [`CHANNEL`] with the change's commit, and
//! every intake replica listens, so a replica forgets a report as soon as any
//! replica (or a consumer) changed it.
//!
//! Two races are closed by an epoch, bumped whenever something is forgotten:
//! a read that started before a change but finishes after its announcement
//! would otherwise cache the old row, so a row is kept only if the epoch has
//! not moved since its read began. And announcements lost while the listening
//! connection was down are covered by forgetting everything and caching
//! nothing until it listens again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::store::ReportRow;

/// The notification channel the `reports` trigger announces changes on.
pub const CHANNEL: &str = "intake_reports_changed";

/// Reports kept at most; the oldest kept goes first.
const CAPACITY: usize = 20_000;

/// Where the cache is: reads start with [`ReportCache::epoch`] and end with
/// [`ReportCache::keep`].
#[derive(Debug, Default)]
pub struct ReportCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<Uuid, Arc<ReportRow>>,
    by_tracking: HashMap<String, Uuid>,
    /// Ids in the order they were kept (some may be gone already).
    order: VecDeque<Uuid>,
    epoch: u64,
    /// Whether announcements are being received; nothing is kept otherwise.
    listening: bool,
}

impl Inner {
    fn forget(&mut self, id: &Uuid) {
        if let Some(row) = self.by_id.remove(id) {
            self.by_tracking.remove(&row.tracking_number);
        }
    }

    fn forget_all(&mut self) {
        self.by_id.clear();
        self.by_tracking.clear();
        self.order.clear();
    }
}

impl ReportCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The report with `id`, or else with `tracking`, if kept.
    pub fn get(&self, id: Option<Uuid>, tracking: Option<&str>) -> Option<Arc<ReportRow>> {
        let inner = self.lock();
        let id = match (id, tracking) {
            (Some(id), _) => id,
            (None, Some(t)) => *inner.by_tracking.get(t)?,
            (None, None) => return None,
        };
        inner.by_id.get(&id).cloned()
    }

    /// Taken before reading a report from the database.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Keeps `row`, read from the database after [`Self::epoch`] returned
    /// `epoch`, unless something was forgotten since (it may be older than
    /// that change) or changes are not being heard.
    pub fn keep(&self, epoch: u64, row: Arc<ReportRow>) {
        let mut inner = self.lock();
        if !inner.listening || inner.epoch != epoch {
            return;
        }
        while inner.by_id.len() >= CAPACITY {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.forget(&oldest);
        }
        let id = row.id;
        inner.forget(&id);
        inner.by_tracking.insert(row.tracking_number.clone(), id);
        inner.by_id.insert(id, row);
        inner.order.push_back(id);
        // Reports kept, forgotten and kept again leave stale places behind.
        if inner.order.len() > 2 * CAPACITY {
            let Inner { by_id, order, .. } = &mut *inner;
            let mut placed = std::collections::HashSet::new();
            order.retain(|id| by_id.contains_key(id) && placed.insert(*id));
        }
    }

    /// Forgets report `id`: it changed.
    pub fn forget(&self, id: &Uuid) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.forget(id);
    }

    /// Forgets everything, and keeps nothing until `listening` again.
    fn set_listening(&self, listening: bool) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.forget_all();
        inner.listening = listening;
    }

    /// Follows the announcements on `pool`'s database until the process
    /// ends, reconnecting after a pause when the connection drops.
    pub async fn follow(self: Arc<Self>, pool: PgPool) {
        loop {
            match listen(&pool).await {
                Ok(mut listener) => {
                    self.set_listening(true);
                    // Until the connection is lost (`None`) or fails.
                    while let Ok(Some(n)) = listener.try_recv().await {
                        match n.payload().parse::<Uuid>() {
                            Ok(id) => self.forget(&id),
                            Err(_) => self.set_listening(true),
                        }
                    }
                    tracing::warn!(
                        "lost the report change announcements; caching nothing until they are back"
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot listen for report changes yet");
                }
            }
            self.set_listening(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection ends this listener (`try_recv` answers `None`):
    // [`ReportCache::follow`] forgets everything before listening again.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn row(n: u128) -> ReportRow {
        ReportRow {
            id: Uuid::from_u128(n),
            tracking_number: format!("RUH-2026-{n:07}"),
            status: "received".into(),
            status_changed_at: Utc::now(),
            municipality_code: "RIYADH".into(),
            category_code: "POTHOLE".into(),
            priority: "normal".into(),
            priority_reason: String::new(),
            duplicate_of: None,
            channel: "mobile_app".into(),
            description: "a pothole".into(),
            latitude: None,
            longitude: None,
            national_address_short: None,
            observed_at: None,
            created_at: Utc::now(),
            assignee_code: None,
            expected_resolution_at: None,
            supporters: 0,
            attachments: Vec::new(),
            reporter_key: None,
            rating_score: None,
            rating_comment: None,
            rated_at: None,
        }
    }

    #[test]
    fn keeps_only_while_listening_and_finds_by_either_key() {
        let cache = ReportCache::default();
        let r = row(1);
        cache.keep(cache.epoch(), Arc::new(r.clone()));
        assert!(cache.get(Some(r.id), None).is_none(), "kept while deaf");
        cache.set_listening(true);
        cache.keep(cache.epoch(), Arc::new(r.clone()));
        assert_eq!(cache.get(Some(r.id), None).as_deref(), Some(&r));
        assert_eq!(
            cache.get(None, Some(&r.tracking_number)).as_deref(),
            Some(&r)
        );
        cache.set_listening(false);
        assert!(
            cache.get(Some(r.id), None).is_none(),
            "kept after going deaf"
        );
    }

    #[test]
    fn a_read_that_overlaps_a_change_is_not_kept() {
        let cache = ReportCache::default();
        cache.set_listening(true);
        let r = row(2);
        let before = cache.epoch();
        cache.forget(&Uuid::from_u128(99)); // any change, while r was read
        cache.keep(before, Arc::new(r.clone()));
        assert!(cache.get(Some(r.id), None).is_none());
        cache.keep(cache.epoch(), Arc::new(r.clone()));
        cache.forget(&r.id);
        assert!(cache.get(Some(r.id), None).is_none());
        assert!(cache.get(None, Some(&r.tracking_number)).is_none());
    }

    #[test]
    fn holds_at_most_its_capacity_oldest_first_out() {
        let cache = ReportCache::default();
        cache.set_listening(true);
        for n in 0..(CAPACITY as u128 + 10) {
            cache.keep(cache.epoch(), Arc::new(row(n)));
        }
        let inner = cache.lock();
        assert_eq!(inner.by_id.len(), CAPACITY);
        assert_eq!(inner.by_tracking.len(), CAPACITY);
        assert!(!inner.by_id.contains_key(&Uuid::from_u128(0)));
        assert!(
            inner
                .by_id
                .contains_key(&Uuid::from_u128(CAPACITY as u128 + 9))
        );
    }
}
