//! `RoutingError`: everything routing's own rules can refuse, and the one
//! place those refusals become gRPC codes ([`ApiError`]) and consumer
//! outcomes ([`HandlerError`]).

use baladiya_platform::auth::CallerIdentity;
use baladiya_platform::error::{ApiError, ErrorKind};
use baladiya_platform::events::EventError;
use baladiya_platform::events::consumer::HandlerError;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{Action, Actor, Status};

/// Why routing refused or failed a request, an event or a seed record.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The caller may not read the case, or asked about a missing one and may
    /// not learn that it is missing (see [`RoutingError::missing_case`]).
    #[error("not your case")]
    NotYourCase,
    #[error("case not found")]
    CaseNotFound,
    #[error("rule not found")]
    RuleNotFound,
    /// The caller is not the actor the action needs.
    #[error("{}", .0.refusal())]
    NotTheActor(Actor),
    /// The caller's etag is not the case's version.
    #[error("the case changed since you read it; read it again")]
    StaleEtag,
    /// Another transition of the case committed between our read and write.
    #[error("the case changed meanwhile; read it again")]
    ChangedMeanwhile,
    /// The transition table has no such step from the case's state.
    #[error("cannot {} a case that is {}", .action.verb(), .status.as_str())]
    NotAllowedFrom { action: Action, status: Status },
    /// The given instant is before the case's previous step.
    #[error("action.occurred_at must not be before the case's previous step ({})", .0.to_rfc3339())]
    BeforePreviousStep(DateTime<Utc>),
    /// A reopen after the reopen period.
    #[error("the reopen period ended at {}", .0.to_rfc3339())]
    ReopenPeriodEnded(DateTime<Utc>),
    /// A reroute to the body the case is already assigned to.
    #[error("assignee_code is already the assignee")]
    AlreadyTheAssignee,
    /// A municipal operator asked for another municipality's cases.
    #[error("operators see their own municipality only")]
    OtherMunicipality,
    /// A channel asked to list cases.
    #[error("channels look reports up through intake")]
    ChannelsReadThroughIntake,
    /// A duplicate report arrived before its master's case exists.
    #[error("the master report {0} has no case yet")]
    MasterReportWithoutCase(Uuid),
    /// Already classified by a platform helper (violations, paging, audit,
    /// back-dating bound).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventError),
}

impl RoutingError {
    /// A case that does not exist, as `caller` may learn it: routing's one
    /// absence rule is the platform's ([`CallerIdentity::may_know_absence`]);
    /// a caller held to its own cases is told `NOT_FOUND` no more than for
    /// someone else's case. The platform itself (`None`) is told the truth.
    pub fn missing_case(caller: Option<&CallerIdentity>) -> Self {
        match caller {
            Some(c) if !c.may_know_absence() => Self::NotYourCase,
            _ => Self::CaseNotFound,
        }
    }
}

/// Routing's only mapping to gRPC codes.
impl From<RoutingError> for ApiError {
    fn from(e: RoutingError) -> Self {
        let message = e.to_string();
        match e {
            RoutingError::NotYourCase
            | RoutingError::NotTheActor(_)
            | RoutingError::OtherMunicipality
            | RoutingError::ChannelsReadThroughIntake => ApiError::permission_denied(message),
            RoutingError::CaseNotFound => ApiError::not_found("case"),
            RoutingError::RuleNotFound => ApiError::not_found("rule"),
            RoutingError::StaleEtag | RoutingError::ChangedMeanwhile => {
                ApiError::new(ErrorKind::Aborted, message)
            }
            RoutingError::NotAllowedFrom { .. }
            | RoutingError::ReopenPeriodEnded(_)
            | RoutingError::MasterReportWithoutCase(_) => ApiError::failed_precondition(message),
            RoutingError::BeforePreviousStep(last) => ApiError::invalid_field(
                "action.occurred_at",
                format!(
                    "must not be before the case's previous step ({})",
                    last.to_rfc3339()
                ),
            ),
            RoutingError::AlreadyTheAssignee => {
                ApiError::invalid_field("assignee_code", "is already the assignee")
            }
            RoutingError::Api(e) => e,
            RoutingError::Db(e) => e.into(),
            RoutingError::Events(e) => e.into(),
        }
    }
}

/// What the report consumers do with a failure: a master case that is not
/// there yet, the database and the outbox are retried; the rest is parked.
impl From<RoutingError> for HandlerError {
    fn from(e: RoutingError) -> Self {
        match e {
            RoutingError::Db(e) => e.into(),
            RoutingError::Events(e) => e.into(),
            RoutingError::MasterReportWithoutCase(_) => Self::Retry(e.to_string()),
            other => Self::Reject(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use baladiya_platform::auth::Role;
    use baladiya_platform::error::ErrorKind;

    use super::*;

    fn caller(role: Role, municipality: Option<&str>) -> CallerIdentity {
        CallerIdentity {
            subject: "test".into(),
            role,
            partner: (role == Role::Partner).then(|| "MOTLS".into()),
            municipality: municipality.map(String::from),
            channel: (role == Role::Channel).then(|| "CHANNEL_CALL_CENTER_940".into()),
        }
    }

    #[test]
    fn a_missing_case_is_named_only_to_callers_who_may_know_absence() {
        let kind = |c: Option<&CallerIdentity>| ApiError::from(RoutingError::missing_case(c)).kind;
        for (who, expected) in [
            (caller(Role::Admin, None), ErrorKind::NotFound),
            (caller(Role::Analyst, None), ErrorKind::NotFound),
            (caller(Role::Operator, None), ErrorKind::NotFound),
            (
                caller(Role::Operator, Some("RIYADH")),
                ErrorKind::PermissionDenied,
            ),
            (caller(Role::Partner, None), ErrorKind::PermissionDenied),
            (caller(Role::Channel, None), ErrorKind::PermissionDenied),
        ] {
            assert_eq!(kind(Some(&who)), expected, "{who:?}");
        }
        assert_eq!(kind(None), ErrorKind::NotFound, "the platform itself");
    }
}
