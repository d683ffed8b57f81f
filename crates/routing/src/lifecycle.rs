//! One transition of a case, as every caller performs it: lock the case, check
//! who is acting, the state, the etag and the instant, write the new state and
//! the history entry, and emit the event, all in the caller's transaction.
//!
//! The instant is the caller's `occurred_at` (a partner system syncing every
//! few minutes sends when the action really happened) or routing's clock. A
//! given instant must lie within [`Limits::backdating`] before the clock and not
//! before the case's previous step; the history entry keeps it beside when it
//! was recorded, and the event carries both (`baladiya-recordedtime`), so the
//! SLA watcher can correct what it fired before it knew of the action.

use baladiya_platform::auth::{CallerIdentity, Role};
use baladiya_platform::backdating::BackdatingBound;
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, ErrorKind};
use baladiya_platform::events::{EventType, OutboundEvent, outbox};
use baladiya_proto::convert::timestamp;
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::routing::events::v1 as ev;
use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{self, Action, Actor, Rule};
use crate::store::{self, CaseRow, HistoryRow};

const SERVICE: &str = "routing";

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub occurred_at: Option<DateTime<Utc>>,
    pub note: String,
    /// The case version the caller last read (the etag), if it sent one.
    pub etag: Option<i64>,
    /// Reroute: the new assignee. Reject: the suggested body.
    pub assignee: Option<String>,
    /// Resolve: proof-of-fix references.
    pub proof_uris: Vec<String>,
}

/// Lifecycle settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A resolved case may be reopened for this long.
    pub reopen_within: Duration,
    /// How far before now a caller may say an action happened.
    pub backdating: BackdatingBound,
}

/// Who is acting: a caller, or the platform itself (automatic close).
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    Caller(&'a CallerIdentity),
    System,
}

impl By<'_> {
    fn label(&self) -> String {
        match self {
            By::Caller(c) => match (&c.partner, &c.channel) {
                (Some(p), _) => format!("{}:{}:{}", c.role, p, c.subject),
                (None, Some(ch)) => format!("{}:{}:{}", c.role, ch, c.subject),
                _ => format!("{}:{}", c.role, c.subject),
            },
            By::System => "system".into(),
        }
    }
}

/// Whether `by` may take `action` on `case`.
pub fn authorize(by: By<'_>, action: Action, case: &CaseRow) -> Result<(), ApiError> {
    let By::Caller(c) = by else { return Ok(()) };
    if c.role == Role::Admin {
        return Ok(());
    }
    let is_assignee =
        c.role == Role::Partner && c.partner.as_deref() == Some(case.assignee_code.as_str());
    let is_operator = c.role == Role::Operator && c.covers_municipality(&case.municipality_code);
    let allowed = match action.actor() {
        Actor::Assignee => is_assignee,
        Actor::Operator => is_operator,
        Actor::AssigneeOrOperator => is_assignee || is_operator,
        Actor::CitizenChannel => c.role == Role::Channel,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::permission_denied(match action.actor() {
            Actor::Assignee => "only the case's current assignee may do this",
            Actor::Operator => "only an operator of the case's municipality may do this",
            Actor::AssigneeOrOperator => {
                "only the assignee or an operator of the case's municipality may do this"
            }
            Actor::CitizenChannel => "only a citizens' channel may reopen a case",
        }))
    }
}

/// Whether `by` may see `case` at all.
pub fn can_see(c: &CallerIdentity, case: &CaseRow) -> bool {
    match c.role {
        Role::Admin | Role::Analyst => true,
        Role::Partner => c.partner.as_deref() == Some(case.assignee_code.as_str()),
        Role::Operator => c.covers_municipality(&case.municipality_code),
        Role::Channel => false,
    }
}

/// The event scope of a case: `<MUNICIPALITY>.<ASSIGNEE>`.
pub fn case_ref(c: &CaseRow, assignee: &str) -> Option<ev::CaseRef> {
    Some(ev::CaseRef {
        case_id: c.id.to_string(),
        report_id: c.report_id.to_string(),
        assignee_code: assignee.to_string(),
        municipality_code: c.municipality_code.clone(),
        category_code: c.category_code.clone(),
        priority: c.priority,
        tracking_number: c.tracking_number.clone(),
        version: c.version,
    })
}

/// Puts a case event in the outbox, marked as recorded at `recorded_at`
/// where that is later than when it happened (`at`): an action a caller
/// back-dated. Events of the platform's own making pass `at` for both.
#[allow(clippy::too_many_arguments)]
pub async fn emit<M: prost::Message + prost::Name>(
    conn: &mut PgConnection,
    event: &'static str,
    case: &CaseRow,
    assignee: &str,
    id: Uuid,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    payload: &M,
) -> Result<(), ApiError> {
    let kind = EventType::new("routing", "case", event);
    let out = OutboundEvent::new(
        SERVICE,
        kind,
        &[&case.municipality_code, assignee],
        id,
        case.id.to_string(),
        at,
        payload,
    )
    .recorded(recorded_at);
    outbox::enqueue(conn, &out)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// Event identity and time: it happened at `at` and was recorded at
/// `recorded_at`, which the payload carries where it is later (as `emit`
/// puts it in the `baladiya-recordedtime` header).
pub fn meta(
    id: Uuid,
    case_id: Uuid,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
) -> Option<EventMeta> {
    Some(EventMeta {
        event_id: id.to_string(),
        occurred_at: Some(timestamp(at)),
        aggregate_id: case_id.to_string(),
        recorded_at: (recorded_at > at).then(|| timestamp(recorded_at)),
    })
}

/// Performs `action` on case `id`. `rules` are the rules in force (a rejected
/// case goes to its municipality's triage fallback).
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    conn: &mut PgConnection,
    clock: &Clock,
    limits: Limits,
    rules: &[Rule],
    id: Uuid,
    action: Action,
    by: By<'_>,
    step: Step,
) -> Result<CaseRow, ApiError> {
    // Stamped under the outbox fence, so a watermark never claims this
    // step before its event is on the stream.
    let now = outbox::fenced_now(conn, clock)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let hidden = |c: &CallerIdentity| matches!(c.role, Role::Partner | Role::Operator);
    let case = match (store::case(conn, id, true).await?, by) {
        (Some(case), _) => case,
        // A partner cannot tell a missing case from someone else's.
        (None, By::Caller(c)) if hidden(c) => {
            return Err(ApiError::permission_denied("not your case"));
        }
        (None, _) => return Err(ApiError::not_found("case")),
    };
    if let By::Caller(c) = by
        && hidden(c)
        && !can_see(c, &case)
    {
        return Err(ApiError::permission_denied("not your case"));
    }
    authorize(by, action, &case)?;
    if let Some(etag) = step.etag
        && etag != case.version
    {
        return Err(ApiError::new(
            ErrorKind::Aborted,
            "the case changed since you read it; read it again",
        ));
    }
    let Some(to) = domain::next(case.status, action) else {
        return Err(ApiError::failed_precondition(format!(
            "cannot {} a case that is {}",
            action_verb(action),
            case.status.as_str()
        )));
    };
    let at = match step.occurred_at {
        Some(at) => {
            limits.backdating.check("action.occurred_at", at, now)?;
            at
        }
        None => now,
    };
    if at < case.last_step_at {
        return Err(ApiError::invalid_field(
            "action.occurred_at",
            format!(
                "must not be before the case's previous step ({})",
                case.last_step_at.to_rfc3339()
            ),
        ));
    }
    if action == Action::Reopen
        && let Some(resolved) = case.resolved_at
        && at > resolved + limits.reopen_within
    {
        return Err(ApiError::failed_precondition(format!(
            "the reopen period ended at {}",
            (resolved + limits.reopen_within).to_rfc3339()
        )));
    }

    let mut next = case.clone();
    next.status = to;
    next.version += 1;
    next.last_step_at = at;
    match action {
        Action::Reroute => {
            let new = step.assignee.clone().unwrap_or_default();
            if new == case.assignee_code {
                return Err(ApiError::invalid_field(
                    "assignee_code",
                    "is already the assignee",
                ));
            }
            next.assignee_code = new;
            next.overdue_since = None;
        }
        Action::Reject => {
            next.assignee_code = domain::triage(rules, &case.municipality_code)
                .map_or_else(|| "MUN-TRIAGE".to_string(), |r| r.assignee_code.clone());
            next.overdue_since = None;
        }
        Action::Resolve => {
            next.resolved_at = Some(at);
            next.resolution = Some(step.note.clone());
            next.proof_uris = step.proof_uris.clone();
            next.overdue_since = None;
        }
        _ => {}
    }
    if !store::update_case(conn, &next, case.version).await? {
        return Err(ApiError::new(
            ErrorKind::Aborted,
            "the case changed meanwhile; read it again",
        ));
    }
    let note = match (action, &step.assignee) {
        (Action::Reject, Some(s)) if !s.is_empty() => format!("{} (suggested: {s})", step.note),
        _ => step.note.clone(),
    };
    store::add_history(
        conn,
        id,
        &HistoryRow {
            action: action.as_str().into(),
            from_status: Some(case.status),
            to_status: to,
            assignee_code: next.assignee_code.clone(),
            actor: by.label(),
            occurred_at: at,
            recorded_at: now,
            note,
        },
    )
    .await?;

    let event_id = Uuid::now_v7();
    let m = meta(event_id, id, at, now);
    let assignee = next.assignee_code.as_str();
    match action {
        Action::Note => {}
        Action::Acknowledge => {
            emit(
                conn,
                "acknowledged",
                &next,
                assignee,
                event_id,
                at,
                now,
                &ev::CaseAcknowledged {
                    meta: m,
                    case: case_ref(&next, assignee),
                },
            )
            .await?
        }
        Action::StartWork => {
            emit(
                conn,
                "work_started",
                &next,
                assignee,
                event_id,
                at,
                now,
                &ev::CaseWorkStarted {
                    meta: m,
                    case: case_ref(&next, assignee),
                },
            )
            .await?
        }
        Action::Hold => {
            let p = ev::CasePutOnHold {
                meta: m,
                case: case_ref(&next, assignee),
                reason: step.note.clone(),
            };
            emit(conn, "put_on_hold", &next, assignee, event_id, at, now, &p).await?
        }
        Action::Resume => {
            emit(
                conn,
                "resumed",
                &next,
                assignee,
                event_id,
                at,
                now,
                &ev::CaseResumed {
                    meta: m,
                    case: case_ref(&next, assignee),
                },
            )
            .await?
        }
        Action::Resolve => {
            let p = ev::CaseResolved {
                meta: m,
                case: case_ref(&next, assignee),
                resolution: step.note.clone(),
                proof_uris: step.proof_uris.clone(),
            };
            emit(conn, "resolved", &next, assignee, event_id, at, now, &p).await?
        }
        Action::Reject => {
            // The event names the body that sent the case back.
            let p = ev::CaseRejected {
                meta: m,
                case: case_ref(&next, &case.assignee_code),
                reason: step.note.clone(),
                suggested_assignee_code: step.assignee.clone().unwrap_or_default(),
            };
            emit(
                conn,
                "rejected",
                &next,
                &case.assignee_code,
                event_id,
                at,
                now,
                &p,
            )
            .await?
        }
        Action::Reroute => {
            let p = ev::CaseRerouted {
                meta: m,
                case: case_ref(&next, assignee),
                previous_assignee_code: case.assignee_code.clone(),
                reason: step.note.clone(),
            };
            emit(conn, "rerouted", &next, assignee, event_id, at, now, &p).await?
        }
        Action::Reopen => {
            let p = ev::CaseReopened {
                meta: m,
                case: case_ref(&next, assignee),
                reason: step.note.clone(),
            };
            emit(conn, "reopened", &next, assignee, event_id, at, now, &p).await?
        }
        Action::Close => {
            let p = ev::CaseClosed {
                meta: m,
                case: case_ref(&next, assignee),
                automatic: matches!(by, By::System),
            };
            emit(conn, "closed", &next, assignee, event_id, at, now, &p).await?
        }
    }
    Ok(next)
}

fn action_verb(action: Action) -> &'static str {
    match action {
        Action::Acknowledge => "acknowledge",
        Action::StartWork => "start work on",
        Action::Note => "add a note to",
        Action::Hold => "put on hold",
        Action::Resume => "resume",
        Action::Resolve => "resolve",
        Action::Reject => "reject",
        Action::Reroute => "reroute",
        Action::Reopen => "reopen",
        Action::Close => "close",
    }
}
