//! What the watcher refuses, and why, in one enum: the API and the consumers
//! map it to their own answers in one place each ([`From<SlaError> for
//! ApiError`] and for `HandlerError`), so no other code chooses a status
//! code or decides what is retried.

use baladiya_platform::error::{ApiError, ErrorKind};
use baladiya_platform::events::EventError;
use baladiya_platform::events::consumer::HandlerError;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Why a watcher command or read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SlaError {
    /// The calendar a clock runs on has not reached the replica yet.
    #[error("calendar {0} is not in the replica yet")]
    CalendarNotReplicated(String),
    /// No version of the partner's agreement in force at the clock's start
    /// has reached the replica yet.
    #[error("no agreement of {partner} in force at {at} in the replica yet")]
    AgreementNotReplicated { partner: String, at: DateTime<Utc> },
    /// A replicated calendar that does not build (`problems` as debugged).
    #[error("calendar {id} is invalid: {problems}")]
    InvalidCalendar { id: String, problems: String },
    /// The agreement in force has no terms for the subject's category.
    #[error("agreement {version} of {partner} has no terms for {category}")]
    NoTerms {
        version: i64,
        partner: String,
        category: String,
    },
    /// A timer whose clock is gone.
    #[error("timer of unknown clock {0}")]
    TimerOfUnknownClock(Uuid),
    /// A timer of a kind the watcher does not fire.
    #[error("unknown timer kind {0}")]
    UnknownTimerKind(String),
    #[error("escalation not found")]
    EscalationNotFound,
    /// The escalation exists, or may, but is not the caller's; a caller who
    /// may not learn what exists gets this for a missing one too.
    #[error("not your escalation")]
    NotYourEscalation,
    #[error("the escalation was already acknowledged")]
    AlreadyAcknowledged,
    /// An escalation row whose clock row is missing.
    #[error("escalation without clock")]
    EscalationWithoutClock,
    /// Already classified by a platform helper (auth, violations, paging,
    /// audit).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventError),
}

/// The one mapping of the watcher's refusals to API errors (codes and
/// messages).
impl From<SlaError> for ApiError {
    fn from(e: SlaError) -> Self {
        use SlaError as E;
        match e {
            E::EscalationNotFound => ApiError::not_found("escalation"),
            E::NotYourEscalation => ApiError::permission_denied(e.to_string()),
            E::AlreadyAcknowledged => ApiError::new(ErrorKind::FailedPrecondition, e.to_string()),
            E::CalendarNotReplicated(_)
            | E::AgreementNotReplicated { .. }
            | E::InvalidCalendar { .. }
            | E::NoTerms { .. }
            | E::TimerOfUnknownClock(_)
            | E::UnknownTimerKind(_)
            | E::EscalationWithoutClock => ApiError::internal(&e),
            E::Api(e) => e,
            E::Db(e) => e.into(),
            E::Events(e) => e.into(),
        }
    }
}

/// Consumers: what the replica may still bring, the database and the outbox
/// may work later (retried); what the replica or the event log can never
/// make right is parked.
impl From<SlaError> for HandlerError {
    fn from(e: SlaError) -> Self {
        use SlaError as E;
        match e {
            E::CalendarNotReplicated(_)
            | E::AgreementNotReplicated { .. }
            | E::Db(_)
            | E::Events(_) => HandlerError::Retry(e.to_string()),
            other => HandlerError::Reject(other.to_string()),
        }
    }
}
