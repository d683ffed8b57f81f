//! Firing due timers exactly once: which may fire ([`FireRules`]), which
//! wait after failing ([`Failing`]), and the firing itself (a warning, a
//! breach or an escalation level, with the timer marked fired in the same
//! savepoint).

use std::collections::HashMap;
use std::time::Duration;

use baladiya_platform::events::{Emitter, Tx};
use baladiya_platform::metrics::Metrics;
use baladiya_proto::convert::timestamp;
use baladiya_proto::sla::events::v1 as ev;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::escalate::raise;
use super::{CLOCK_BREACHED, CLOCK_WARNING, clock_ref, emit_about_clock};
use crate::domain::{timer_family, warning_fraction};
use crate::error::SlaError;
use crate::store::{self, TimerRow};

/// What the timer loop needs to decide what may fire.
#[derive(Debug, Clone, Copy)]
pub struct FireRules {
    /// How far each producer's stream is known to be complete.
    pub known: store::Known,
    /// How long a due timer waits for complete knowledge before it fires
    /// anyway, marked provisional (`sla.max_hold_secs`).
    pub max_hold: Duration,
    /// When this watcher started watching: the hold counts from the later
    /// of a timer's due instant and this, so a watcher that was itself down
    /// first catches up on its consumers instead of firing everything due
    /// while it was away as provisional.
    pub watching_since: DateTime<Utc>,
}

impl FireRules {
    /// Timers due at or before this instant may fire provisional at `now`.
    pub fn held_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let hold = chrono::TimeDelta::from_std(self.max_hold).unwrap_or(chrono::TimeDelta::MAX);
        match now.checked_sub_signed(hold) {
            Some(until) if self.watching_since <= until => until,
            // Not watching for a whole hold yet (or a hold past any instant).
            _ => DateTime::UNIX_EPOCH,
        }
    }
}

/// Timers that failed to fire lately, kept out of the next rounds for a
/// while so one that keeps failing does not hold back the others.
#[derive(Debug, Default)]
pub struct Failing {
    until: HashMap<(Uuid, String), std::time::Instant>,
    attempts: HashMap<(Uuid, String), u32>,
}

impl Failing {
    fn skipped(&mut self) -> Vec<(Uuid, String)> {
        let now = std::time::Instant::now();
        self.until.retain(|_, until| *until > now);
        self.until.keys().cloned().collect()
    }

    fn failed(&mut self, t: &TimerRow) {
        let key = (t.clock_id, t.kind.clone());
        let attempts = self.attempts.entry(key.clone()).or_default();
        *attempts = attempts.saturating_add(1);
        let wait = Duration::from_millis(250u64 << (*attempts).min(8));
        self.until.insert(
            key,
            std::time::Instant::now() + wait.min(Duration::from_secs(60)),
        );
    }

    fn fired(&mut self, t: &TimerRow) {
        let key = (t.clock_id, t.kind.clone());
        self.attempts.remove(&key);
        self.until.remove(&key);
    }
}

/// Fires every timer due by the time source's now that may fire (see
/// [`store::claim_due`]), earliest first, in batches, each in a savepoint of
/// its own so one that fails waits (see [`Failing`]) while the others fire.
/// Records in `metrics` how late each fired. Returns how many fired.
pub async fn fire_due(
    pool: &sqlx::PgPool,
    emitter: &Emitter,
    metrics: &Metrics,
    rules: FireRules,
    failing: &mut Failing,
) -> Result<usize, SlaError> {
    let time = emitter.clock();
    let mut total = 0;
    loop {
        let now = time.now();
        let held_until = rules.held_until(now);
        let mut tx = emitter.begin(pool).await?;
        let due = store::claim_due(
            &mut tx,
            now,
            50,
            rules.known,
            held_until,
            &failing.skipped(),
        )
        .await?;
        if due.is_empty() {
            return Ok(total);
        }
        let mut fired = Vec::with_capacity(due.len());
        for timer in &due {
            tx.savepoint().await?;
            match fire(&mut tx, timer, now).await {
                Ok(()) => {
                    tx.release_savepoint().await?;
                    failing.fired(timer);
                    fired.push(timer);
                }
                Err(e) => {
                    tx.rollback_to_savepoint().await?;
                    tracing::error!(clock = %timer.clock_id, kind = %timer.kind, error = %e, "timer could not fire; it waits and the others go on");
                    failing.failed(timer);
                }
            }
        }
        tx.commit().await?;
        let committed = time.now();
        for timer in &fired {
            metrics.record_timer_lag((committed - timer.due_at).to_std().unwrap_or_default());
            if timer.provisional {
                metrics.add_sla_provisional(timer_family(&timer.kind));
            }
        }
        total += fired.len();
    }
}

/// Fires timer `t` (due at its instant, fired `now`): its event (and for an
/// escalation level its row and webhook), and marks it fired.
async fn fire(tx: &mut Tx, t: &TimerRow, now: DateTime<Utc>) -> Result<(), SlaError> {
    let c = store::clock(tx, t.clock_id)
        .await?
        .ok_or(SlaError::TimerOfUnknownClock(t.clock_id))?;
    let at = t.due_at;
    let provisional = t.provisional;
    let deadline = c.deadline.map(timestamp);
    let event_id = if let Some(fraction) = warning_fraction(&c.warn_at, &t.kind) {
        emit_about_clock(tx, CLOCK_WARNING, &c, at, |meta| ev::ClockWarning {
            meta,
            clock: clock_ref(&c),
            fraction,
            deadline,
            provisional,
        })
        .await?
    } else if t.kind == "breach" {
        emit_about_clock(tx, CLOCK_BREACHED, &c, at, |meta| ev::ClockBreached {
            meta,
            clock_id: c.id.to_string(),
            subject_kind: c.subject_kind.clone(),
            subject_id: c.subject_id.to_string(),
            metric: c.metric.clone(),
            partner_code: c.partner_code.clone(),
            deadline: Some(timestamp(at)),
            clock: clock_ref(&c),
            provisional,
        })
        .await?
    } else if let Some(level) = t
        .kind
        .strip_prefix("escalation:")
        .and_then(|l| l.parse::<u32>().ok())
    {
        raise(tx, &c, level, at, provisional).await?
    } else {
        return Err(SlaError::UnknownTimerKind(t.kind.clone()));
    };
    store::mark_fired(tx, t, now, event_id).await?;
    Ok(())
}
