//! The case lifecycle and routing rules as pure rules: which transitions are
//! allowed from which state and by whom, who may read a case, and which rule
//! routes a report.

use std::cmp::Ordering;

use baladiya_platform::auth::{CallerIdentity, Role};
use baladiya_platform::events::EventType;
use baladiya_platform::geo::{Point, polygon_contains};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The events of a case (`baladiya.routing.case.<event>.<MUNICIPALITY>.<ASSIGNEE>`).
pub const CASE_ROUTED: EventType = EventType::new("routing", "case", "routed");
pub const CASE_ACKNOWLEDGED: EventType = EventType::new("routing", "case", "acknowledged");
pub const CASE_WORK_STARTED: EventType = EventType::new("routing", "case", "work_started");
pub const CASE_PUT_ON_HOLD: EventType = EventType::new("routing", "case", "put_on_hold");
pub const CASE_RESUMED: EventType = EventType::new("routing", "case", "resumed");
pub const CASE_RESOLVED: EventType = EventType::new("routing", "case", "resolved");
pub const CASE_REJECTED: EventType = EventType::new("routing", "case", "rejected");
pub const CASE_REROUTED: EventType = EventType::new("routing", "case", "rerouted");
pub const CASE_REOPENED: EventType = EventType::new("routing", "case", "reopened");
pub const CASE_CLOSED: EventType = EventType::new("routing", "case", "closed");
pub const CASE_SUPPORTER_ADDED: EventType = EventType::new("routing", "case", "supporter_added");

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Routed,
    Acknowledged,
    InProgress,
    OnHold,
    Resolved,
    Triage,
    Reopened,
    Closed,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 8] = [
        Status::Routed,
        Status::Acknowledged,
        Status::InProgress,
        Status::OnHold,
        Status::Resolved,
        Status::Triage,
        Status::Reopened,
        Status::Closed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::Acknowledged => "acknowledged",
            Self::InProgress => "in_progress",
            Self::OnHold => "on_hold",
            Self::Resolved => "resolved",
            Self::Triage => "triage",
            Self::Reopened => "reopened",
            Self::Closed => "closed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Something done to a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Acknowledge,
    StartWork,
    Note,
    Hold,
    Resume,
    Resolve,
    Reject,
    Reroute,
    Reopen,
    Close,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 10] = [
        Action::Acknowledge,
        Action::StartWork,
        Action::Note,
        Action::Hold,
        Action::Resume,
        Action::Resolve,
        Action::Reject,
        Action::Reroute,
        Action::Reopen,
        Action::Close,
    ];

    /// The history and event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledged",
            Self::StartWork => "work_started",
            Self::Note => "note",
            Self::Hold => "put_on_hold",
            Self::Resume => "resumed",
            Self::Resolve => "resolved",
            Self::Reject => "rejected",
            Self::Reroute => "rerouted",
            Self::Reopen => "reopened",
            Self::Close => "closed",
        }
    }

    /// Who may take it.
    pub fn actor(self) -> Actor {
        match self {
            Self::Acknowledge
            | Self::StartWork
            | Self::Hold
            | Self::Resume
            | Self::Resolve
            | Self::Reject => Actor::Assignee,
            Self::Note => Actor::AssigneeOrOperator,
            Self::Reroute | Self::Close => Actor::Operator,
            Self::Reopen => Actor::CitizenChannel,
        }
    }

    /// The event the action emits (a note emits none).
    pub fn event(self) -> Option<EventType> {
        Some(match self {
            Self::Note => return None,
            Self::Acknowledge => CASE_ACKNOWLEDGED,
            Self::StartWork => CASE_WORK_STARTED,
            Self::Hold => CASE_PUT_ON_HOLD,
            Self::Resume => CASE_RESUMED,
            Self::Resolve => CASE_RESOLVED,
            Self::Reject => CASE_REJECTED,
            Self::Reroute => CASE_REROUTED,
            Self::Reopen => CASE_REOPENED,
            Self::Close => CASE_CLOSED,
        })
    }

    /// The verb of a refusal: "cannot {verb} a case that is ...".
    pub fn verb(self) -> &'static str {
        match self {
            Self::Acknowledge => "acknowledge",
            Self::StartWork => "start work on",
            Self::Note => "add a note to",
            Self::Hold => "put on hold",
            Self::Resume => "resume",
            Self::Resolve => "resolve",
            Self::Reject => "reject",
            Self::Reroute => "reroute",
            Self::Reopen => "reopen",
            Self::Close => "close",
        }
    }
}

/// Who may take an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The current assignee (a partner body or department).
    Assignee,
    /// An operator of the case's municipality.
    Operator,
    /// Either.
    AssigneeOrOperator,
    /// A citizens' channel.
    CitizenChannel,
}

impl Actor {
    /// Why a caller who is not this actor is refused.
    pub fn refusal(self) -> &'static str {
        match self {
            Self::Assignee => "only the case's current assignee may do this",
            Self::Operator => "only an operator of the case's municipality may do this",
            Self::AssigneeOrOperator => {
                "only the assignee or an operator of the case's municipality may do this"
            }
            Self::CitizenChannel => "only a citizens' channel may reopen a case",
        }
    }
}

/// Whom a case concerns: the body it is assigned to and its municipality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaseParties<'a> {
    pub assignee_code: &'a str,
    pub municipality_code: &'a str,
}

/// Whether `caller` may read a case: admins and analysts every case, a
/// partner the cases assigned to it, an operator those of its municipality
/// (all of them without one); a channel none (it reads through intake).
pub fn may_read(caller: &CallerIdentity, case: CaseParties<'_>) -> bool {
    match caller.role {
        Role::Admin | Role::Analyst => true,
        Role::Partner => caller.partner.as_deref() == Some(case.assignee_code),
        Role::Operator => caller.covers_municipality(case.municipality_code),
        Role::Channel => false,
    }
}

/// Whether `caller` is the actor `action` needs on a case (admins act as
/// anyone).
pub fn may_take(caller: &CallerIdentity, action: Action, case: CaseParties<'_>) -> bool {
    if caller.role == Role::Admin {
        return true;
    }
    let is_assignee =
        caller.role == Role::Partner && caller.partner.as_deref() == Some(case.assignee_code);
    let is_operator =
        caller.role == Role::Operator && caller.covers_municipality(case.municipality_code);
    match action.actor() {
        Actor::Assignee => is_assignee,
        Actor::Operator => is_operator,
        Actor::AssigneeOrOperator => is_assignee || is_operator,
        Actor::CitizenChannel => caller.role == Role::Channel,
    }
}

/// Whether `code` has the shape of a partner or department code (`MOTLS`,
/// `MUN-TRIAGE`): 2 to 32 characters, an uppercase letter first, then
/// uppercase letters, digits, `-` and `_`.
pub fn is_assignee_code(code: &str) -> bool {
    (2..=32).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_uppercase())
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The body a case goes to when no rule matches it.
pub const UNROUTED_ASSIGNEE: &str = "MUN-TRIAGE";

/// The state an action leads to from `from`, or `None` if it is not allowed.
pub fn next(from: Status, action: Action) -> Option<Status> {
    use Action as A;
    use Status as S;
    match (from, action) {
        (S::Routed, A::Acknowledge) => Some(S::Acknowledged),
        (S::Acknowledged | S::Reopened, A::StartWork) => Some(S::InProgress),
        (S::Acknowledged | S::InProgress | S::Reopened, A::Hold) => Some(S::OnHold),
        (S::OnHold, A::Resume) => Some(S::InProgress),
        (S::Acknowledged | S::InProgress | S::Reopened, A::Resolve) => Some(S::Resolved),
        (S::Routed | S::Acknowledged | S::InProgress, A::Reject) => Some(S::Triage),
        (
            S::Routed | S::Acknowledged | S::InProgress | S::OnHold | S::Triage | S::Reopened,
            A::Reroute,
        ) => Some(S::Routed),
        (S::Resolved, A::Reopen) => Some(S::Reopened),
        (S::Resolved, A::Close) => Some(S::Closed),
        (s, A::Note) if s != S::Closed => Some(s),
        _ => None,
    }
}

/// A routing rule: when it matches, the case goes to `assignee_code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: Uuid,
    #[serde(default)]
    pub category_code: Option<String>,
    #[serde(default)]
    pub category_group: Option<String>,
    #[serde(default)]
    pub municipality_code: Option<String>,
    /// `[latitude, longitude]` vertices; empty matches everywhere.
    #[serde(default)]
    pub area: Vec<[f64; 2]>,
    /// `baladiya.common.v1.Priority`; `None` matches any.
    #[serde(default)]
    pub priority: Option<i32>,
    pub assignee_code: String,
    pub description: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// What a report looks like to the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Query<'a> {
    pub category_code: &'a str,
    pub category_group: &'a str,
    pub municipality_code: &'a str,
    pub point: Option<Point>,
    pub priority: i32,
}

impl Rule {
    /// Why the rule does not match, or `None` if it does.
    pub fn mismatch(&self, q: &Query<'_>) -> Option<String> {
        if let Some(c) = &self.category_code
            && c != q.category_code
        {
            return Some(format!("category {c} is not {}", q.category_code));
        }
        if self.category_code.is_none()
            && let Some(g) = &self.category_group
            && g != q.category_group
        {
            return Some(format!(
                "category group {g} is not {}",
                display(q.category_group)
            ));
        }
        if let Some(m) = &self.municipality_code
            && m != q.municipality_code
        {
            return Some(format!("municipality {m} is not {}", q.municipality_code));
        }
        if !self.area.is_empty() {
            match q.point {
                None => {
                    return Some("the rule has an area and the report has no coordinates".into());
                }
                Some(p) if !polygon_contains(&self.area, p) => {
                    return Some("the point is outside the rule's area".into());
                }
                Some(_) => {}
            }
        }
        if let Some(p) = self.priority
            && p != q.priority
        {
            return Some(format!("priority {p} is not {}", q.priority));
        }
        None
    }

    /// How specific the rule is, compared in this order: category (exact 2,
    /// group 1, any 0), area, municipality, priority.
    pub fn specificity(&self) -> (u8, u8, u8, u8) {
        let category = if self.category_code.is_some() {
            2
        } else {
            u8::from(self.category_group.is_some())
        };
        (
            category,
            u8::from(!self.area.is_empty()),
            u8::from(self.municipality_code.is_some()),
            u8::from(self.priority.is_some()),
        )
    }

    /// Whether the rule is a triage fallback: it matches any report.
    pub fn is_fallback(&self) -> bool {
        self.category_code.is_none()
            && self.category_group.is_none()
            && self.area.is_empty()
            && self.priority.is_none()
    }
}

fn display(s: &str) -> &str {
    if s.is_empty() { "(none)" } else { s }
}

/// The precedence of rules: more specific first; between equally specific
/// rules the older wins (then the smaller id), so adding a rule never silently
/// takes over from an equal one already in force.
pub fn precedence(a: &Rule, b: &Rule) -> Ordering {
    b.specificity()
        .cmp(&a.specificity())
        .then(a.created_at.cmp(&b.created_at))
        .then(a.id.cmp(&b.id))
}

/// How each rule fared for a query, most specific first; the winner is the
/// first that matched.
pub fn explain<'r>(
    rules: &'r [Rule],
    q: &Query<'_>,
) -> (Option<&'r Rule>, Vec<(&'r Rule, bool, String)>) {
    let mut ordered: Vec<&Rule> = rules.iter().collect();
    ordered.sort_by(|a, b| precedence(a, b));
    let winner = ordered.iter().copied().find(|r| r.mismatch(q).is_none());
    let verdicts = ordered
        .into_iter()
        .map(|r| match (r.mismatch(q), winner) {
            (Some(why), _) => (r, false, why),
            (None, Some(w)) if w.id == r.id => {
                (r, true, "the most specific matching rule".to_string())
            }
            (None, Some(w)) if w.specificity() == r.specificity() => (
                r,
                true,
                format!("as specific as rule {}, which is older", w.id),
            ),
            (None, Some(w)) => (r, true, format!("less specific than rule {}", w.id)),
            (None, None) => (r, true, String::new()),
        })
        .collect();
    (winner, verdicts)
}

/// The rule that routes a query.
pub fn route<'r>(rules: &'r [Rule], q: &Query<'_>) -> Option<&'r Rule> {
    explain(rules, q).0
}

/// Where a rejected case goes: the municipality's triage fallback.
pub fn triage<'r>(rules: &'r [Rule], municipality_code: &str) -> Option<&'r Rule> {
    let fallbacks: Vec<Rule> = rules.iter().filter(|r| r.is_fallback()).cloned().collect();
    let q = Query {
        category_code: "",
        category_group: "",
        municipality_code,
        point: None,
        priority: 0,
    };
    route(&fallbacks, &q).and_then(|w| rules.iter().find(|r| r.id == w.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_table_is_closed_and_closed_is_final() {
        for action in Action::ALL {
            assert_eq!(next(Status::Closed, action), None, "{action:?} from closed");
        }
        assert_eq!(
            next(Status::Routed, Action::Acknowledge),
            Some(Status::Acknowledged)
        );
        assert_eq!(
            next(Status::Routed, Action::Resolve),
            None,
            "acknowledge first"
        );
        assert_eq!(next(Status::OnHold, Action::Resolve), None, "resume first");
        assert_eq!(next(Status::Triage, Action::Acknowledge), None);
        assert_eq!(
            next(Status::Resolved, Action::Reopen),
            Some(Status::Reopened)
        );
        assert_eq!(
            next(Status::Reopened, Action::Resolve),
            Some(Status::Resolved)
        );
    }

    fn rule(
        category: Option<&str>,
        group: Option<&str>,
        municipality: Option<&str>,
        assignee: &str,
        age: i64,
    ) -> Rule {
        let t = DateTime::from_timestamp(1_700_000_000 + age, 0).expect("time");
        Rule {
            id: Uuid::now_v7(),
            category_code: category.map(String::from),
            category_group: group.map(String::from),
            municipality_code: municipality.map(String::from),
            area: vec![],
            priority: None,
            assignee_code: assignee.into(),
            description: String::new(),
            version: 1,
            created_at: t,
            updated_at: t,
            updated_by: "test".into(),
        }
    }

    #[test]
    fn the_most_specific_rule_wins_and_ties_go_to_the_older() {
        let rules = vec![
            rule(None, None, None, "MUN-TRIAGE", 0),
            rule(None, Some("water"), None, "MEWA", 1),
            rule(Some("WATER_LEAK"), None, None, "MEWA", 2),
            rule(Some("WATER_LEAK"), None, Some("JEDDAH"), "NWC", 3),
            rule(Some("WATER_LEAK"), None, Some("JEDDAH"), "OTHER", 4),
        ];
        let q = |cat, group, muni| Query {
            category_code: cat,
            category_group: group,
            municipality_code: muni,
            point: None,
            priority: 2,
        };
        assert_eq!(
            route(&rules, &q("WATER_LEAK", "water", "JEDDAH")).map(|r| r.assignee_code.as_str()),
            Some("NWC")
        );
        assert_eq!(
            route(&rules, &q("WATER_LEAK", "water", "RIYADH")).map(|r| r.assignee_code.as_str()),
            Some("MEWA")
        );
        assert_eq!(
            route(&rules, &q("SEWAGE_OVERFLOW", "water", "RIYADH")).map(|r| r.id),
            Some(rules[1].id)
        );
        assert_eq!(
            route(&rules, &q("POTHOLE", "roads", "RIYADH")).map(|r| r.assignee_code.as_str()),
            Some("MUN-TRIAGE")
        );
        let (_, verdicts) = explain(&rules, &q("WATER_LEAK", "water", "JEDDAH"));
        let reasons: Vec<&str> = verdicts.iter().map(|v| v.2.as_str()).collect();
        assert_eq!(reasons[0], "the most specific matching rule");
        assert!(reasons[1].starts_with("as specific as rule"), "{reasons:?}");
        assert!(
            reasons[4].starts_with("less specific than rule"),
            "{reasons:?}"
        );
    }
}
