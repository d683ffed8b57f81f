//! Proto ↔ domain for `baladiya.routing.v1`: cases and their history out,
//! case actions and routing rules in (every problem of a request reported at
//! once, in [`Violations`]).

use baladiya_platform::error::Violations;
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::routing::v1 as pb;
use uuid::Uuid;

use crate::commands::{RuleDraft, Step};
use crate::domain::{self, Rule, Status};
use crate::store::{CaseRow, HistoryRow};

pub fn status_to_proto(s: Status) -> i32 {
    (match s {
        Status::Routed => pb::CaseStatus::Routed,
        Status::Acknowledged => pb::CaseStatus::Acknowledged,
        Status::InProgress => pb::CaseStatus::InProgress,
        Status::OnHold => pb::CaseStatus::OnHold,
        Status::Resolved => pb::CaseStatus::Resolved,
        Status::Triage => pb::CaseStatus::Triage,
        Status::Reopened => pb::CaseStatus::Reopened,
        Status::Closed => pb::CaseStatus::Closed,
    }) as i32
}

pub fn status_from_proto(s: i32) -> Option<Status> {
    Status::ALL.into_iter().find(|x| status_to_proto(*x) == s)
}

/// A case with `history` (empty in lists).
pub fn case_to_proto(c: &CaseRow, history: &[HistoryRow]) -> pb::Case {
    pb::Case {
        id: c.id.to_string(),
        report_id: c.report_id.to_string(),
        tracking_number: c.tracking_number.clone(),
        assignee_code: c.assignee_code.clone(),
        status: status_to_proto(c.status),
        priority: c.priority,
        category_code: c.category_code.clone(),
        municipality_code: c.municipality_code.clone(),
        history: history
            .iter()
            .map(|h| pb::CaseHistoryEntry {
                action: h.action.clone(),
                from_status: h.from_status.map_or(0, status_to_proto),
                to_status: status_to_proto(h.to_status),
                assignee_code: h.assignee_code.clone(),
                actor: h.actor.clone(),
                occurred_at: Some(timestamp(h.occurred_at)),
                recorded_at: Some(timestamp(h.recorded_at)),
                note: h.note.clone(),
            })
            .collect(),
        etag: c.version.to_string(),
        rule_id: c.rule_id.map(|r| r.to_string()).unwrap_or_default(),
        supporters: c.supporters.max(0) as u32,
        report_received_at: Some(timestamp(c.report_received_at)),
        resolved_at: c.resolved_at.map(timestamp),
        overdue: c.overdue_since.is_some(),
        resolution: c.resolution.clone().unwrap_or_default(),
        proof_uris: c.proof_uris.clone(),
    }
}

pub fn rule_to_proto(r: &Rule) -> pb::RoutingRule {
    pb::RoutingRule {
        id: r.id.to_string(),
        category_code: r.category_code.clone().unwrap_or_default(),
        category_group: r.category_group.clone().unwrap_or_default(),
        municipality_code: r.municipality_code.clone().unwrap_or_default(),
        area: r
            .area
            .iter()
            .map(|[lat, lon]| common::Location {
                latitude: *lat,
                longitude: *lon,
                ..Default::default()
            })
            .collect(),
        priority: r.priority.unwrap_or(0),
        assignee_code: r.assignee_code.clone(),
        description: r.description.clone(),
        version: r.version,
        updated_by: r.updated_by.clone(),
        update_time: Some(timestamp(r.updated_at)),
    }
}

/// The case id and step of a `CaseAction`.
pub fn case_action_from_proto(
    action: &Option<pb::CaseAction>,
    v: &mut Violations,
) -> (Option<Uuid>, Step) {
    let a = action.clone().unwrap_or_default();
    let id = a.case_id.parse::<Uuid>().ok();
    v.check(id.is_some(), "action.case_id", "must be a case id (UUID)");
    let occurred_at = a.occurred_at.as_ref().map(instant);
    v.check(
        !matches!(occurred_at, Some(None)),
        "action.occurred_at",
        "is not a valid timestamp",
    );
    let etag = (!a.etag.is_empty()).then(|| a.etag.parse::<i64>().ok());
    v.check(
        !matches!(etag, Some(None)),
        "action.etag",
        "is not an etag this service issued",
    );
    let note = a.note.trim().to_string();
    v.check(
        note.chars().count() <= 4_000,
        "action.note",
        "must be at most 4000 characters",
    );
    (
        id,
        Step {
            occurred_at: occurred_at.flatten(),
            note,
            etag: etag.flatten(),
            ..Step::default()
        },
    )
}

/// A rule to write, from an `UpsertRoutingRule` request's rule.
pub fn rule_draft_from_proto(r: &pb::RoutingRule, v: &mut Violations) -> RuleDraft {
    let id = if r.id.is_empty() {
        None
    } else {
        r.id.parse::<Uuid>().ok()
    };
    v.check(
        r.id.is_empty() || id.is_some(),
        "rule.id",
        "must be empty (new rule) or a rule id",
    );
    let opt = |s: &str| Some(s.trim().to_string()).filter(|x| !x.is_empty());
    let category = opt(&r.category_code);
    let group = opt(&r.category_group);
    v.check(
        !(category.is_some() && group.is_some()),
        "rule.category_group",
        "set either category_code or category_group, not both",
    );
    v.check(
        domain::is_assignee_code(r.assignee_code.trim()),
        "rule.assignee_code",
        "must be a partner or department code, e.g. MOTLS",
    );
    v.check(
        r.description.chars().count() <= 500,
        "rule.description",
        "must be at most 500 characters",
    );
    if !r.area.is_empty() {
        v.check(
            r.area.len() >= 3,
            "rule.area",
            "a polygon needs at least 3 points",
        );
        for (i, p) in r.area.iter().enumerate() {
            v.check(
                (-90.0..=90.0).contains(&p.latitude) && (-180.0..=180.0).contains(&p.longitude),
                &format!("rule.area[{i}]"),
                "latitude must be -90 to 90 and longitude -180 to 180",
            );
        }
    }
    v.check(
        common::Priority::try_from(r.priority).is_ok(),
        "rule.priority",
        "is not a priority",
    );
    RuleDraft {
        id,
        category_code: category,
        category_group: group,
        municipality_code: opt(&r.municipality_code),
        area: r.area.iter().map(|p| [p.latitude, p.longitude]).collect(),
        priority: (r.priority != 0).then_some(r.priority),
        assignee_code: r.assignee_code.trim().to_string(),
        description: r.description.trim().to_string(),
    }
}
