//! How far in the past a caller may say its action happened.
//!
//! Partner systems sync with the platform every few minutes and send the
//! instant each action really happened (`CaseAction.occurred_at`, an
//! inspection's `inspected_at`), and SLA clocks are computed from those
//! instants, not from when the call arrived. Unbounded, that lets any caller
//! rewrite its SLA record after the fact: acknowledge a case "yesterday",
//! hours after its breach and escalation went out. So a producer accepts a
//! back-dated instant only within a configured window before its own clock,
//! keeps both instants (when it happened, when it was recorded), and refuses
//! anything older with `INVALID_ARGUMENT` naming the field and the bound.
//!
//! An instant after the producer's clock is refused outright, with no
//! tolerance for skew: an action is never recorded before it happened
//! (`recorded_at >= occurred_at` is what history, audit, the
//! `baladiya-recordedtime` header and the SLA watcher's late-data handling
//! rely on); a future instant would become the subject's last step and refuse
//! everyone else's next step until the clock catches up; and claiming a later
//! instant never earns a caller SLA time, so a tolerance would only excuse a
//! skewed clock, which the message makes visible by giving the platform's time.

use chrono::{DateTime, Duration, Utc};

use crate::config::KeyError;
use crate::error::ApiError;

/// The default window: 15 minutes, three sync intervals of a partner system
/// that syncs every five minutes, with room for one missed sync.
pub const DEFAULT_MAX_BACKDATE_SECS: u64 = 15 * 60;

/// The largest window configuration accepts: 7 days (a partner system down
/// over a long weekend). Beyond that, corrections go through an operator.
pub const MAX_MAX_BACKDATE_SECS: u64 = 7 * 24 * 60 * 60;

/// The window within which a caller-given instant is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackdatingBound {
    seconds: u64,
}

impl Default for BackdatingBound {
    fn default() -> Self {
        Self {
            seconds: DEFAULT_MAX_BACKDATE_SECS,
        }
    }
}

impl BackdatingBound {
    /// A window of `seconds`, held to what configuration accepts.
    pub fn seconds(seconds: u64) -> Self {
        Self {
            seconds: seconds.min(MAX_MAX_BACKDATE_SECS),
        }
    }

    /// The window in seconds.
    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    /// The window as a duration.
    pub fn duration(self) -> Duration {
        // At most MAX_MAX_BACKDATE_SECS, far inside i64.
        Duration::seconds(self.seconds as i64)
    }

    /// The earliest instant accepted at `now`.
    pub fn earliest(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.duration()
    }

    /// Why `occurred_at`, given in request field `field`, is refused at
    /// `now`, if it is: after `now`, or more than the window before it.
    pub fn check(
        self,
        field: &str,
        occurred_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        if occurred_at > now {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "must not be in the future (the platform's time is {})",
                    now.to_rfc3339()
                ),
            ));
        }
        if occurred_at < self.earliest(now) {
            return Err(ApiError::invalid_field(
                field,
                format!(
                    "must be within {} seconds before now (not before {}); older actions are \
                     not accepted",
                    self.seconds,
                    self.earliest(now).to_rfc3339()
                ),
            ));
        }
        Ok(())
    }

    /// The configuration problem with a window of `seconds` under `key`, if any.
    pub fn validate_config(key: &str, seconds: u64) -> Option<KeyError> {
        (seconds > MAX_MAX_BACKDATE_SECS).then(|| KeyError {
            key: key.into(),
            message: format!("must be between 0 and {MAX_MAX_BACKDATE_SECS} (7 days)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-04-02T10:00:00Z")
            .expect("a valid instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn within_the_window_is_accepted_up_to_its_edges() {
        let bound = BackdatingBound::default();
        for back in [0, 1, 300, 899, 900] {
            let at = now() - Duration::seconds(back);
            assert!(
                bound.check("action.occurred_at", at, now()).is_ok(),
                "{back} s back"
            );
        }
    }

    #[test]
    fn older_than_the_window_is_refused_naming_the_field_and_the_bound() {
        let bound = BackdatingBound::default();
        let refused = bound
            .check("action.occurred_at", now() - Duration::seconds(901), now())
            .expect_err("one second too old");
        assert_eq!(refused.kind, ErrorKind::InvalidArgument);
        assert_eq!(refused.violations.len(), 1);
        assert_eq!(refused.violations[0].field, "action.occurred_at");
        assert!(
            refused.violations[0]
                .description
                .contains("must be within 900 seconds before now"),
            "{}",
            refused.violations[0].description
        );
        assert!(
            refused.violations[0]
                .description
                .contains("2026-04-02T09:45:00+00:00")
        );
    }

    #[test]
    fn any_future_instant_is_refused() {
        let bound = BackdatingBound::default();
        for ahead in [Duration::milliseconds(1), Duration::minutes(5)] {
            let refused = bound
                .check("inspected_at", now() + ahead, now())
                .expect_err("future");
            assert_eq!(refused.violations[0].field, "inspected_at");
            assert!(refused.violations[0].description.contains("future"));
        }
    }

    #[test]
    fn a_zero_window_accepts_only_now() {
        let bound = BackdatingBound::seconds(0);
        assert!(bound.check("f", now(), now()).is_ok());
        assert!(
            bound
                .check("f", now() - Duration::milliseconds(1), now())
                .is_err()
        );
    }

    #[test]
    fn configuration_is_bounded_to_seven_days() {
        assert!(BackdatingBound::validate_config("max_backdate_secs", 0).is_none());
        assert!(BackdatingBound::validate_config("max_backdate_secs", 604_800).is_none());
        let e =
            BackdatingBound::validate_config("max_backdate_secs", 604_801).expect("beyond 7 days");
        assert_eq!(e.key, "max_backdate_secs");
        assert_eq!(BackdatingBound::seconds(u64::MAX).as_secs(), 604_800);
    }
}
