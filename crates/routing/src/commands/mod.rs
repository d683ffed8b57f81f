//! Every change routing makes, each in the caller's transaction: a case's
//! transition (the gRPC actions and the automatic close), a case per received
//! report and a supporter per duplicate (the report consumer), the overdue
//! mark (the breach consumer), and the routing rules (the API and the seed
//! loader, in [`rules`]). Nothing else writes to the `routing` schema or its
//! outbox.
//!
//! A transition runs in named steps: load the case and authorize the actor,
//! compute the next state, write the case and its history, emit the
//! transition's event. Its instant is the caller's `occurred_at` (a partner
//! system syncing every few minutes sends when the action really happened) or
//! routing's clock. A given instant must lie within [`Limits::backdating`]
//! before the clock and not before the case's previous step; the history entry
//! keeps it beside when it was recorded, and the event carries both
//! (`baladiya-recordedtime`), so the SLA watcher can correct what it fired
//! before it knew of the action.

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{CallerIdentity, Role};
use baladiya_platform::backdating::BackdatingBound;
use baladiya_platform::events::{Event, Tx};
use baladiya_platform::geo::Point;
use baladiya_proto::intake::events::v1::ReportReceived;
use baladiya_proto::routing::events::v1 as ev;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::domain::{
    self, Action, CASE_ROUTED, CASE_SUPPORTER_ADDED, CaseParties, Query, Rule, Status,
};
use crate::error::RoutingError;
use crate::store::{self, CaseRow, HistoryRow};

mod rules;

pub use rules::{RuleDraft, delete_rule, seed_rule, upsert_rule};

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

/// Who is acting: a caller (whose call is audited), or the platform itself
/// (automatic close).
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    Caller(&'a Audit),
    System,
}

impl By<'_> {
    fn caller(&self) -> Option<&CallerIdentity> {
        match self {
            By::Caller(audit) => Some(&audit.caller),
            By::System => None,
        }
    }

    /// The history's `actor`: `<role>[:<partner or channel>]:<subject>`.
    fn history_label(&self) -> String {
        match self.caller() {
            Some(c) => match (&c.partner, &c.channel) {
                (Some(p), _) => format!("{}:{}:{}", c.role, p, c.subject),
                (None, Some(ch)) => format!("{}:{}:{}", c.role, ch, c.subject),
                _ => format!("{}:{}", c.role, c.subject),
            },
            None => "system".into(),
        }
    }
}

fn parties(case: &CaseRow) -> CaseParties<'_> {
    CaseParties {
        assignee_code: &case.assignee_code,
        municipality_code: &case.municipality_code,
    }
}

/// Whether `caller` may read `case` (the `GetCase` check).
pub fn may_read(caller: &CallerIdentity, case: &CaseRow) -> bool {
    domain::may_read(caller, parties(case))
}

/// The case reference events carry, naming `assignee`.
fn case_ref(c: &CaseRow, assignee: &str) -> Option<ev::CaseRef> {
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

/// One transition as computed: the case before and after, and when.
struct Transition<'a> {
    before: &'a CaseRow,
    after: CaseRow,
    action: Action,
    by: By<'a>,
    step: &'a Step,
    /// When it happened (the caller's `occurred_at`, or now).
    at: DateTime<Utc>,
    /// When it was recorded: routing's clock under the outbox fence.
    recorded_at: DateTime<Utc>,
}

/// Performs `action` on case `id`. `rules` are the rules in force (a rejected
/// case goes to its municipality's triage fallback).
pub async fn transition(
    tx: &mut Tx,
    limits: Limits,
    rules: &[Rule],
    id: Uuid,
    action: Action,
    by: By<'_>,
    step: Step,
) -> Result<CaseRow, RoutingError> {
    // Stamped under the outbox fence, so a watermark never claims this
    // step before its event is on the stream.
    let now = tx.fenced_now().await?;
    let case = load_and_authorize(tx, id, action, by).await?;
    if let Some(etag) = step.etag
        && etag != case.version
    {
        return Err(RoutingError::StaleEtag);
    }
    let t = next_state(limits, rules, &case, action, by, &step, now)?;
    write_case_and_history(tx, &t).await?;
    emit_transition_event(tx, &t).await?;
    if let By::Caller(audit) = by {
        // The step's instant is when the action happened; the row's, when
        // it was recorded.
        let recorded_at = tx.now();
        audit
            .record_action(tx, recorded_at, t.at, &id.to_string())
            .await?;
    }
    Ok(t.after)
}

/// Closes a resolved case that stayed quiet for the configured period.
pub async fn close_quiet_case(
    tx: &mut Tx,
    limits: Limits,
    id: Uuid,
) -> Result<CaseRow, RoutingError> {
    let step = Step {
        note: "closed automatically after the quiet period".into(),
        // Now, as `transition` reads it under the outbox fence.
        occurred_at: None,
        ..Step::default()
    };
    transition(tx, limits, &[], id, Action::Close, By::System, step).await
}

/// Locks case `id` and checks that `by` may take `action` on it. A caller
/// held to its own cases is told the same for a missing case as for someone
/// else's; a channel acts on cases it cannot read (a citizen's reopen), so
/// only the actor rule holds it.
async fn load_and_authorize(
    tx: &mut Tx,
    id: Uuid,
    action: Action,
    by: By<'_>,
) -> Result<CaseRow, RoutingError> {
    let case = store::case(tx, id, true)
        .await?
        .ok_or_else(|| RoutingError::missing_case(by.caller()))?;
    if let Some(c) = by.caller() {
        if c.role != Role::Channel && !may_read(c, &case) {
            return Err(RoutingError::NotYourCase);
        }
        if !domain::may_take(c, action, parties(&case)) {
            return Err(RoutingError::NotTheActor(action.actor()));
        }
    }
    Ok(case)
}

/// The case after `action`: the transition table, the instant's bounds, the
/// reopen period and what each action changes besides the state.
fn next_state<'a>(
    limits: Limits,
    rules: &[Rule],
    case: &'a CaseRow,
    action: Action,
    by: By<'a>,
    step: &'a Step,
    now: DateTime<Utc>,
) -> Result<Transition<'a>, RoutingError> {
    let Some(to) = domain::next(case.status, action) else {
        return Err(RoutingError::NotAllowedFrom {
            action,
            status: case.status,
        });
    };
    let at = match step.occurred_at {
        Some(at) => {
            limits.backdating.check("action.occurred_at", at, now)?;
            at
        }
        None => now,
    };
    if at < case.last_step_at {
        return Err(RoutingError::BeforePreviousStep(case.last_step_at));
    }
    if action == Action::Reopen
        && let Some(resolved) = case.resolved_at
        && at > resolved + limits.reopen_within
    {
        return Err(RoutingError::ReopenPeriodEnded(
            resolved + limits.reopen_within,
        ));
    }

    let mut after = case.clone();
    after.status = to;
    after.version += 1;
    after.last_step_at = at;
    match action {
        Action::Reroute => {
            let new = step.assignee.clone().unwrap_or_default();
            if new == case.assignee_code {
                return Err(RoutingError::AlreadyTheAssignee);
            }
            after.assignee_code = new;
            after.overdue_since = None;
        }
        Action::Reject => {
            after.assignee_code = domain::triage(rules, &case.municipality_code).map_or_else(
                || domain::UNROUTED_ASSIGNEE.to_string(),
                |r| r.assignee_code.clone(),
            );
            after.overdue_since = None;
        }
        Action::Resolve => {
            after.resolved_at = Some(at);
            after.resolution = Some(step.note.clone());
            after.proof_uris = step.proof_uris.clone();
            after.overdue_since = None;
        }
        _ => {}
    }
    Ok(Transition {
        before: case,
        after,
        action,
        by,
        step,
        at,
        recorded_at: now,
    })
}

/// Writes the new state if nobody changed the case meanwhile, and its
/// history entry.
async fn write_case_and_history(tx: &mut Tx, t: &Transition<'_>) -> Result<(), RoutingError> {
    if !store::update_case(tx, &t.after, t.before.version).await? {
        return Err(RoutingError::ChangedMeanwhile);
    }
    let note = match (t.action, &t.step.assignee) {
        (Action::Reject, Some(s)) if !s.is_empty() => format!("{} (suggested: {s})", t.step.note),
        _ => t.step.note.clone(),
    };
    store::add_history(
        tx,
        t.after.id,
        &HistoryRow {
            action: t.action.as_str().into(),
            from_status: Some(t.before.status),
            to_status: t.after.status,
            assignee_code: t.after.assignee_code.clone(),
            actor: t.by.history_label(),
            occurred_at: t.at,
            recorded_at: t.recorded_at,
            note,
        },
    )
    .await?;
    Ok(())
}

/// Emits the transition's event (a note has none), scoped to the case's
/// municipality and its assignee after the step, but for a rejection, which
/// names the body that sent the case back.
async fn emit_transition_event(tx: &mut Tx, t: &Transition<'_>) -> Result<(), RoutingError> {
    let (case, step) = (&t.after, t.step);
    let Some(kind) = t.action.event() else {
        return Ok(());
    };
    let assignee = match t.action {
        Action::Reject => t.before.assignee_code.as_str(),
        _ => case.assignee_code.as_str(),
    };
    let scope = [case.municipality_code.as_str(), assignee];
    let event = Event::new(kind, case.id, t.at)
        .scoped(&scope)
        .recorded(t.recorded_at);
    let case = case_ref(case, assignee);
    let reason = step.note.clone();
    match t.action {
        Action::Note => {}
        Action::Acknowledge => {
            tx.emit(event, |meta| ev::CaseAcknowledged { meta, case })
                .await?;
        }
        Action::StartWork => {
            tx.emit(event, |meta| ev::CaseWorkStarted { meta, case })
                .await?;
        }
        Action::Hold => {
            tx.emit(event, |meta| ev::CasePutOnHold { meta, case, reason })
                .await?;
        }
        Action::Resume => {
            tx.emit(event, |meta| ev::CaseResumed { meta, case })
                .await?;
        }
        Action::Resolve => {
            let proof_uris = step.proof_uris.clone();
            tx.emit(event, |meta| ev::CaseResolved {
                meta,
                case,
                resolution: reason,
                proof_uris,
            })
            .await?;
        }
        Action::Reject => {
            let suggested_assignee_code = step.assignee.clone().unwrap_or_default();
            tx.emit(event, |meta| ev::CaseRejected {
                meta,
                case,
                reason,
                suggested_assignee_code,
            })
            .await?;
        }
        Action::Reroute => {
            let previous_assignee_code = t.before.assignee_code.clone();
            tx.emit(event, |meta| ev::CaseRerouted {
                meta,
                case,
                previous_assignee_code,
                reason,
            })
            .await?;
        }
        Action::Reopen => {
            tx.emit(event, |meta| ev::CaseReopened { meta, case, reason })
                .await?;
        }
        Action::Close => {
            let automatic = matches!(t.by, By::System);
            tx.emit(event, |meta| ev::CaseClosed {
                meta,
                case,
                automatic,
            })
            .await?;
        }
    }
    Ok(())
}

/// Routes a received report into a new case: the rule that matches it (the
/// rules are read into `rules` once for all the reports of a batch: one
/// transaction, the same rules), the case, its first history entry and
/// `routed`. A report that already has a case (a replay) changes nothing.
pub async fn route_report(
    tx: &mut Tx,
    rules: &mut Option<Vec<Rule>>,
    report: &ReportReceived,
    report_id: Uuid,
    received_at: DateTime<Utc>,
) -> Result<(), RoutingError> {
    // Routing records what happened at the report's receipt now: its events
    // say both, stamped under the outbox fence (see
    // `baladiya_platform::events::watermark`).
    let recorded_at = tx.fenced_now().await?;
    if store::case_of_report(tx, report_id).await?.is_some() {
        return Ok(());
    }
    let rules = match rules {
        Some(rules) => rules,
        None => rules.insert(store::rules(tx).await?),
    };
    let location = report.location.clone().unwrap_or_default();
    let point = (location.latitude != 0.0 || location.longitude != 0.0).then_some(Point {
        lat: location.latitude,
        lon: location.longitude,
    });
    let rule = domain::route(
        rules,
        &Query {
            category_code: &report.category_code,
            category_group: &report.category_group,
            municipality_code: &report.municipality_code,
            point,
            priority: report.priority,
        },
    );
    let case = CaseRow {
        id: Uuid::now_v7(),
        report_id,
        tracking_number: report.tracking_number.clone(),
        municipality_code: report.municipality_code.clone(),
        category_code: report.category_code.clone(),
        category_group: report.category_group.clone(),
        priority: report.priority,
        latitude: point.map(|p| p.lat),
        longitude: point.map(|p| p.lon),
        assignee_code: rule.map_or_else(
            || domain::UNROUTED_ASSIGNEE.to_string(),
            |r| r.assignee_code.clone(),
        ),
        status: Status::Routed,
        version: 1,
        rule_id: rule.map(|r| r.id),
        report_received_at: received_at,
        last_step_at: received_at,
        resolved_at: None,
        resolution: None,
        proof_uris: Vec::new(),
        supporters: 0,
        overdue_since: None,
        created_at: recorded_at,
    };
    if !store::insert_case(tx, &case).await? {
        return Ok(());
    }
    store::add_history(
        tx,
        case.id,
        &HistoryRow {
            action: "routed".into(),
            from_status: None,
            to_status: Status::Routed,
            assignee_code: case.assignee_code.clone(),
            actor: "system".into(),
            occurred_at: received_at,
            recorded_at: case.created_at,
            note: rule.map_or_else(
                || "no rule matched; sent to triage".to_string(),
                |r| format!("rule {}: {}", r.id, r.description),
            ),
        },
    )
    .await?;
    // Routed at the report's receipt, recorded now: no clock of the case
    // existed before this event, so nothing the SLA watcher fired can be
    // wrong for want of it; the recorded instant keeps the relay from
    // counting it late.
    let scope = [case.municipality_code.as_str(), case.assignee_code.as_str()];
    tx.emit(
        Event::new(CASE_ROUTED, case.id, received_at)
            .scoped(&scope)
            .recorded(recorded_at),
        |meta| ev::CaseRouted {
            meta,
            case: case_ref(&case, &case.assignee_code),
            rule_id: case.rule_id.map(|r| r.to_string()).unwrap_or_default(),
            report_received_at: report.received_at,
        },
    )
    .await?;
    Ok(())
}

/// Counts a duplicate report (`report_id`, received at `received_at`) as a
/// supporter of its master report's case, once, with `supporter_added`.
pub async fn add_supporter(
    tx: &mut Tx,
    master_report_id: Uuid,
    report_id: Uuid,
    received_at: DateTime<Utc>,
) -> Result<(), RoutingError> {
    // As for a new case: happened at the receipt, recorded now.
    let recorded_at = tx.fenced_now().await?;
    let case = store::case_of_report(tx, master_report_id)
        .await?
        .ok_or(RoutingError::MasterReportWithoutCase(master_report_id))?;
    let Some(supporters) = store::add_supporter(tx, case.id, report_id).await? else {
        return Ok(());
    };
    let scope = [case.municipality_code.as_str(), case.assignee_code.as_str()];
    tx.emit(
        Event::new(CASE_SUPPORTER_ADDED, case.id, received_at)
            .scoped(&scope)
            .recorded(recorded_at),
        |meta| ev::CaseSupporterAdded {
            meta,
            case: case_ref(&case, &case.assignee_code),
            supporter_report_id: report_id.to_string(),
            supporters: supporters.max(0) as u32,
        },
    )
    .await?;
    Ok(())
}

/// Marks case `case_id` overdue since `at` if `partner` is still its
/// assignee and it is open (a clock of the assignee breached).
pub async fn mark_overdue(
    tx: &mut Tx,
    case_id: Uuid,
    partner: &str,
    at: DateTime<Utc>,
) -> Result<(), RoutingError> {
    store::mark_overdue(tx, case_id, partner, at).await?;
    Ok(())
}

/// Clears case `case_id`'s overdue mark if `partner` is still its assignee
/// (the breach that set it was withdrawn and no other stands).
pub async fn clear_overdue(tx: &mut Tx, case_id: Uuid, partner: &str) -> Result<(), RoutingError> {
    store::clear_overdue(tx, case_id, partner).await?;
    Ok(())
}
