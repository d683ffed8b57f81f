//! The one notion of "now" for every service in a process.
//!
//! Services never call `Utc::now()`; they ask the [`Clock`]. In `system` mode it
//! is the operating system's clock. In `manual` mode time stands still until
//! `baladiya.admin.v1.ClockService` (or a test) moves it, and timers that fall
//! due in a skipped span fire one at a time in deadline order: each sleeper is
//! woken with the clock set to its own deadline, and the move waits until the
//! sleeper drops its [`Fired`] guard before going on to the next deadline. That
//! is what lets an acceptance test skip three working days in one call and still
//! see warnings, breaches and escalations happen in the right order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

/// How long a move waits for one woken sleeper to finish before going on.
const FIRE_WAIT: Duration = Duration::from_secs(30);

/// A cloneable handle to the process clock.
#[derive(Clone)]
pub struct Clock(Arc<Inner>);

enum Inner {
    System,
    Manual(Manual),
}

struct Manual {
    state: Mutex<ManualState>,
    /// Serialises moves so two `Advance` calls cannot interleave their timers.
    moving: tokio::sync::Mutex<()>,
}

struct ManualState {
    now: DateTime<Utc>,
    next_id: u64,
    sleepers: BTreeMap<(DateTime<Utc>, u64), oneshot::Sender<Fired>>,
}

/// Held by a woken sleeper while it handles its deadline. A manual clock's
/// move waits for it to be dropped before firing the next deadline.
#[must_use = "dropping the guard tells a manual clock the timer was handled"]
#[derive(Debug, Default)]
pub struct Fired {
    _done: Option<oneshot::Sender<()>>,
}

/// Why a manual clock refused to move.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClockError {
    #[error("the clock is in system mode and cannot be moved")]
    NotManual,
    #[error("cannot move the clock backwards from {now} to {to}")]
    Backwards {
        now: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("mode", &self.mode())
            .field("now", &self.now())
            .finish()
    }
}

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Self {
        Self(Arc::new(Inner::System))
    }

    /// A clock that stands at `start` until moved.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Inner::Manual(Manual {
            state: Mutex::new(ManualState {
                now: start,
                next_id: 0,
                sleepers: BTreeMap::new(),
            }),
            moving: tokio::sync::Mutex::new(()),
        })))
    }

    /// `"system"` or `"manual"`.
    pub fn mode(&self) -> &'static str {
        match &*self.0 {
            Inner::System => "system",
            Inner::Manual(_) => "manual",
        }
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Inner::System => Utc::now(),
            Inner::Manual(m) => m.lock().now,
        }
    }

    /// Waits until the clock reaches `deadline`.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) -> Fired {
        match &*self.0 {
            Inner::System => {
                let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                Fired::default()
            }
            Inner::Manual(m) => {
                let rx = {
                    let mut state = m.lock();
                    if state.now >= deadline {
                        return Fired::default();
                    }
                    let (tx, rx) = oneshot::channel();
                    let id = state.next_id;
                    state.next_id += 1;
                    state.sleepers.insert((deadline, id), tx);
                    rx
                };
                // The sender lives in the map until fired; a closed channel only
                // happens if the clock itself is gone, so wait forever then.
                match rx.await {
                    Ok(fired) => fired,
                    Err(_) => std::future::pending().await,
                }
            }
        }
    }

    /// Moves a manual clock forward by `by`, firing due timers in deadline order.
    /// Returns how many timers fired.
    pub async fn advance(&self, by: Duration) -> Result<u32, ClockError> {
        let Inner::Manual(_) = &*self.0 else {
            return Err(ClockError::NotManual);
        };
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let target = self
            .now()
            .checked_add_signed(by)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.set(target).await
    }

    /// Moves a manual clock to `to`, firing due timers in deadline order.
    /// Returns how many timers fired.
    pub async fn set(&self, to: DateTime<Utc>) -> Result<u32, ClockError> {
        let Inner::Manual(m) = &*self.0 else {
            return Err(ClockError::NotManual);
        };
        let _moving = m.moving.lock().await;
        let now = m.lock().now;
        if to < now {
            return Err(ClockError::Backwards { now, to });
        }
        let mut fired = 0;
        loop {
            let next = {
                let mut state = m.lock();
                match state.sleepers.first_key_value() {
                    Some((&(deadline, _), _)) if deadline <= to => {
                        let (_, sender) = state.sleepers.pop_first().expect("just seen");
                        state.now = state.now.max(deadline);
                        Some(sender)
                    }
                    _ => {
                        state.now = to;
                        None
                    }
                }
            };
            let Some(sender) = next else { break };
            let (done_tx, done_rx) = oneshot::channel();
            if sender
                .send(Fired {
                    _done: Some(done_tx),
                })
                .is_ok()
            {
                fired += 1;
                // Resolves (with an error) when the sleeper drops its guard.
                let _ = tokio::time::timeout(FIRE_WAIT, done_rx).await;
            }
        }
        Ok(fired)
    }
}

impl Manual {
    fn lock(&self) -> MutexGuard<'_, ManualState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `baladiya.admin.v1.ClockService`: moves the process clock in manual mode.
pub mod admin {
    use super::{Clock, ClockError};
    use crate::auth::{Role, caller};
    use crate::error::{ApiError, Reply, reply};
    use baladiya_proto::admin::v1 as pb;
    use baladiya_proto::convert::{instant, timestamp};
    use tonic::Request;

    /// The gRPC face of a manual [`Clock`].
    #[derive(Debug, Clone)]
    pub struct ClockAdmin {
        clock: Clock,
    }

    impl ClockAdmin {
        /// Serves `clock`.
        pub fn new(clock: Clock) -> Self {
            Self { clock }
        }
    }

    /// A clock that cannot move (not manual, or backwards) refuses the call.
    impl From<ClockError> for ApiError {
        fn from(e: ClockError) -> Self {
            ApiError::failed_precondition(e.to_string())
        }
    }

    #[tonic::async_trait]
    impl pb::clock_service_server::ClockService for ClockAdmin {
        async fn get_time(
            &self,
            request: Request<pb::GetTimeRequest>,
        ) -> Reply<pb::GetTimeResponse> {
            reply(self.time(request))
        }

        async fn set_time(
            &self,
            request: Request<pb::SetTimeRequest>,
        ) -> Reply<pb::SetTimeResponse> {
            reply(self.move_to(request).await)
        }

        async fn advance(
            &self,
            request: Request<pb::AdvanceRequest>,
        ) -> Reply<pb::AdvanceResponse> {
            reply(self.move_by(request).await)
        }
    }

    /// The RPCs' work; the trait above converts each outcome once.
    impl ClockAdmin {
        fn time(
            &self,
            request: Request<pb::GetTimeRequest>,
        ) -> Result<pb::GetTimeResponse, ApiError> {
            caller(&request)?;
            Ok(pb::GetTimeResponse {
                now: Some(timestamp(self.clock.now())),
                mode: self.clock.mode().into(),
            })
        }

        async fn move_to(
            &self,
            request: Request<pb::SetTimeRequest>,
        ) -> Result<pb::SetTimeResponse, ApiError> {
            caller(&request)?.require(Role::Admin)?;
            let to = request
                .get_ref()
                .time
                .as_ref()
                .and_then(instant)
                .ok_or_else(|| ApiError::invalid_field("time", "is required"))?;
            let timers_fired = self.clock.set(to).await?;
            Ok(pb::SetTimeResponse {
                now: Some(timestamp(self.clock.now())),
                timers_fired,
            })
        }

        async fn move_by(
            &self,
            request: Request<pb::AdvanceRequest>,
        ) -> Result<pb::AdvanceResponse, ApiError> {
            caller(&request)?.require(Role::Admin)?;
            let by = request
                .get_ref()
                .by
                .and_then(|d| std::time::Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ApiError::invalid_field("by", "must be a positive duration"))?;
            let timers_fired = self.clock.advance(by).await?;
            Ok(pb::AdvanceResponse {
                now: Some(timestamp(self.clock.now())),
                timers_fired,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0)
            .single()
            .expect("valid")
    }

    #[tokio::test]
    async fn manual_clock_fires_skipped_timers_in_deadline_order() {
        let clock = Clock::manual(at(7, 0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        for deadline in [at(9, 0), at(8, 0), at(10, 0), at(12, 0)] {
            let clock2 = clock.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let _fired = clock2.sleep_until(deadline).await;
                seen.lock().expect("lock").push((deadline, clock2.now()));
            });
        }
        tokio::task::yield_now().await;
        // Let every sleeper register.
        while clock_sleepers(&clock) < 4 {
            tokio::task::yield_now().await;
        }
        let fired = clock
            .advance(Duration::from_secs(3 * 3600))
            .await
            .expect("advance");
        assert_eq!(fired, 3);
        assert_eq!(clock.now(), at(10, 0));
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            [
                (at(8, 0), at(8, 0)),
                (at(9, 0), at(9, 0)),
                (at(10, 0), at(10, 0))
            ],
            "each timer sees the clock at its own deadline, in order"
        );
    }

    fn clock_sleepers(clock: &Clock) -> usize {
        match &*clock.0 {
            Inner::Manual(m) => m.lock().sleepers.len(),
            Inner::System => 0,
        }
    }

    #[tokio::test]
    async fn manual_clock_refuses_to_go_backwards_and_system_refuses_to_move() {
        let clock = Clock::manual(at(8, 0));
        assert_eq!(
            clock.set(at(7, 0)).await,
            Err(ClockError::Backwards {
                now: at(8, 0),
                to: at(7, 0)
            })
        );
        assert_eq!(
            Clock::system().advance(Duration::from_secs(1)).await,
            Err(ClockError::NotManual)
        );
    }

    #[tokio::test]
    async fn past_deadlines_return_at_once() {
        let clock = Clock::manual(at(8, 0));
        let _fired = clock.sleep_until(at(7, 59)).await;
        assert_eq!(clock.now(), at(8, 0));
    }
}
