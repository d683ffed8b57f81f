//! `baladiya.routing.v1.RoutingService`: request to step, step through the
//! lifecycle, case to response; and the routing rules.

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{Role, caller};
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, Violations};
use baladiya_platform::events::outbox;
use baladiya_platform::geo::Point;
use baladiya_platform::paging::{DEFAULT_PAGE_SIZE, PageTokens, page_size};
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::routing::v1 as pb;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, Action, Query, Rule, Status as CaseStatus};
use crate::lifecycle::{self, By, Limits, Step};
use crate::store::{self, CaseFilter, CaseRow, HistoryRow};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct RoutingApi {
    pub pool: PgPool,
    pub clock: Clock,
    pub limits: Limits,
    pub tokens: PageTokens,
}

type Reply<T> = Result<Response<T>, Status>;

fn status_proto(s: CaseStatus) -> i32 {
    (match s {
        CaseStatus::Routed => pb::CaseStatus::Routed,
        CaseStatus::Acknowledged => pb::CaseStatus::Acknowledged,
        CaseStatus::InProgress => pb::CaseStatus::InProgress,
        CaseStatus::OnHold => pb::CaseStatus::OnHold,
        CaseStatus::Resolved => pb::CaseStatus::Resolved,
        CaseStatus::Triage => pb::CaseStatus::Triage,
        CaseStatus::Reopened => pb::CaseStatus::Reopened,
        CaseStatus::Closed => pb::CaseStatus::Closed,
    }) as i32
}

fn status_from_proto(s: i32) -> Option<CaseStatus> {
    CaseStatus::ALL.into_iter().find(|x| status_proto(*x) == s)
}

fn case_proto(c: &CaseRow, history: &[HistoryRow]) -> pb::Case {
    pb::Case {
        id: c.id.to_string(),
        report_id: c.report_id.to_string(),
        tracking_number: c.tracking_number.clone(),
        assignee_code: c.assignee_code.clone(),
        status: status_proto(c.status),
        priority: c.priority,
        category_code: c.category_code.clone(),
        municipality_code: c.municipality_code.clone(),
        history: history
            .iter()
            .map(|h| pb::CaseHistoryEntry {
                action: h.action.clone(),
                from_status: h.from_status.map_or(0, status_proto),
                to_status: status_proto(h.to_status),
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

fn rule_proto(r: &Rule) -> pb::RoutingRule {
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

fn valid_code(code: &str) -> bool {
    (2..=32).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_uppercase())
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What a rule matches on, as an upsert gives it.
struct Matching {
    category_code: Option<String>,
    category_group: Option<String>,
    municipality_code: Option<String>,
    area: Vec<[f64; 2]>,
    priority: Option<i32>,
}

/// The case id and step of an action, every problem reported at once.
fn step_of(action: &Option<pb::CaseAction>, v: &mut Violations) -> (Option<Uuid>, Step) {
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

impl RoutingApi {
    async fn act(
        &self,
        audit: &Audit,
        id: Option<Uuid>,
        action: Action,
        step: Step,
        v: Violations,
    ) -> Reply<pb::Case> {
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid_field("action.case_id", "is required"))?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let rules = if action == Action::Reject {
            store::rules(&mut tx).await.map_err(ApiError::from)?
        } else {
            Vec::new()
        };
        let case = lifecycle::apply(
            &mut tx,
            &self.clock,
            self.limits,
            &rules,
            id,
            action,
            By::Caller(&audit.caller),
            step,
        )
        .await?;
        let history = store::history(&mut tx, id).await.map_err(ApiError::from)?;
        // The step's instant is when the action happened; the row's, when
        // it was recorded.
        audit
            .record_action(
                &mut tx,
                self.clock.now(),
                case.last_step_at,
                &id.to_string(),
            )
            .await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(case_proto(&case, &history)))
    }

    async fn simple(
        &self,
        audit: Audit,
        a: Option<pb::CaseAction>,
        action: Action,
    ) -> Reply<pb::Case> {
        let mut v = Violations::new();
        let (id, step) = step_of(&a, &mut v);
        if action == Action::Note {
            v.require(&step.note, "action.note");
        }
        self.act(&audit, id, action, step, v).await
    }

    fn rule_from_proto(&self, r: &pb::RoutingRule, v: &mut Violations) -> Matching {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|x| !x.is_empty());
        let category = opt(&r.category_code);
        let group = opt(&r.category_group);
        v.check(
            !(category.is_some() && group.is_some()),
            "rule.category_group",
            "set either category_code or category_group, not both",
        );
        v.check(
            valid_code(r.assignee_code.trim()),
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
        Matching {
            category_code: category,
            category_group: group,
            municipality_code: opt(&r.municipality_code),
            area: r.area.iter().map(|p| [p.latitude, p.longitude]).collect(),
            priority: (r.priority != 0).then_some(r.priority),
        }
    }
}

#[tonic::async_trait]
impl pb::routing_service_server::RoutingService for RoutingApi {
    async fn get_case(&self, request: Request<pb::GetCaseRequest>) -> Reply<pb::Case> {
        let who = caller(&request)?.clone();
        let id: Uuid = request
            .get_ref()
            .id
            .parse()
            .map_err(|_| ApiError::invalid_field("id", "must be a case id (UUID)"))?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let case = store::case(&mut conn, id, false)
            .await
            .map_err(ApiError::from)?;
        // Whether it exists is not revealed to those who may not see it.
        let case = match case {
            Some(c) if lifecycle::can_see(&who, &c) => c,
            Some(_) => return Err(ApiError::permission_denied("not your case").into()),
            None if who.may_know_absence() => return Err(ApiError::not_found("case").into()),
            None => return Err(ApiError::permission_denied("not your case").into()),
        };
        let history = store::history(&mut conn, id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(case_proto(&case, &history)))
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Reply<pb::ListCasesResponse> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let status = status_from_proto(req.status);
        v.check(
            req.status == 0 || status.is_some(),
            "status",
            "is not a case status",
        );
        let opt = |s: &str| Some(s.to_string()).filter(|x| !x.is_empty());
        let mut filter = CaseFilter {
            assignee_code: opt(&req.assignee_code),
            municipality_code: opt(&req.municipality_code),
            category_code: opt(&req.category_code),
            status,
            overdue_only: req.overdue_only,
        };
        match who.role {
            Role::Partner => filter.assignee_code = who.partner.clone().or(Some(String::new())),
            Role::Operator if who.municipality.is_some() => {
                if filter.municipality_code.is_some()
                    && filter.municipality_code != who.municipality
                {
                    return Err(ApiError::permission_denied(
                        "operators see their own municipality only",
                    )
                    .into());
                }
                filter.municipality_code = who.municipality.clone();
            }
            Role::Channel => {
                return Err(
                    ApiError::permission_denied("channels look reports up through intake").into(),
                );
            }
            _ => {}
        }
        let filters = format!("{filter:?}");
        let after = v
            .absorb(self.tokens.keyset(&req.page_token, &filters))
            .flatten();
        let limit = v.absorb(page_size(req.page_size));
        v.finish()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let rows = store::cases(&mut conn, &filter, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |c| (c.created_at, c.id));
        Ok(Response::new(pb::ListCasesResponse {
            cases: page.iter().map(|c| case_proto(c, &[])).collect(),
            next_page_token,
        }))
    }

    async fn acknowledge_case(
        &self,
        request: Request<pb::AcknowledgeCaseRequest>,
    ) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::Acknowledge)
            .await
    }

    async fn start_work(&self, request: Request<pb::StartWorkRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::StartWork)
            .await
    }

    async fn add_case_note(&self, request: Request<pb::AddCaseNoteRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::Note)
            .await
    }

    async fn put_case_on_hold(
        &self,
        request: Request<pb::PutCaseOnHoldRequest>,
    ) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::Hold)
            .await
    }

    async fn resume_case(&self, request: Request<pb::ResumeCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::Resume)
            .await
    }

    async fn reopen_case(&self, request: Request<pb::ReopenCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::Reopen)
            .await
    }

    async fn close_case(&self, request: Request<pb::CloseCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        self.simple(audit, request.into_inner().action, Action::Close)
            .await
    }

    async fn resolve_case(&self, request: Request<pb::ResolveCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let (id, mut step) = step_of(&req.action, &mut v);
        let resolution = req.resolution.trim();
        v.require(resolution, "resolution");
        v.check(
            resolution.chars().count() <= 4_000,
            "resolution",
            "must be at most 4000 characters",
        );
        v.check(req.proof_uris.len() <= 5, "proof_uris", "at most 5");
        for (i, uri) in req.proof_uris.iter().enumerate() {
            v.check(
                uri.starts_with("https://") && !uri.contains(char::is_whitespace),
                &format!("proof_uris[{i}]"),
                "must be an https:// URI",
            );
        }
        step.note = resolution.to_string();
        step.proof_uris = req.proof_uris;
        self.act(&audit, id, Action::Resolve, step, v).await
    }

    async fn reject_case(&self, request: Request<pb::RejectCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let (id, mut step) = step_of(&req.action, &mut v);
        v.require(&req.reason, "reason");
        let suggested = req.suggested_assignee_code.trim();
        v.check(
            suggested.is_empty() || valid_code(suggested),
            "suggested_assignee_code",
            "must be a partner or department code",
        );
        step.note = req.reason.trim().to_string();
        step.assignee = Some(suggested.to_string()).filter(|s| !s.is_empty());
        self.act(&audit, id, Action::Reject, step, v).await
    }

    async fn reroute_case(&self, request: Request<pb::RerouteCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let (id, mut step) = step_of(&req.action, &mut v);
        let assignee = req.assignee_code.trim();
        v.check(
            valid_code(assignee),
            "assignee_code",
            "must be a partner or department code, e.g. MEWA",
        );
        step.note = req.reason.trim().to_string();
        step.assignee = Some(assignee.to_string());
        self.act(&audit, id, Action::Reroute, step, v).await
    }

    async fn list_routing_rules(
        &self,
        request: Request<pb::ListRoutingRulesRequest>,
    ) -> Reply<pb::ListRoutingRulesResponse> {
        caller(&request)?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let mut rules = store::rules(&mut conn).await.map_err(ApiError::from)?;
        rules.sort_by(domain::precedence);
        Ok(Response::new(pb::ListRoutingRulesResponse {
            rules: rules.iter().map(rule_proto).collect(),
        }))
    }

    async fn upsert_routing_rule(
        &self,
        request: Request<pb::UpsertRoutingRuleRequest>,
    ) -> Reply<pb::RoutingRule> {
        let audit = Audit::of(&request)?;
        let who = audit.caller.subject.clone();
        let Some(r) = request.into_inner().rule else {
            return Err(ApiError::invalid_field("rule", "is required").into());
        };
        let mut v = Violations::new();
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
        let Matching {
            category_code,
            category_group,
            municipality_code,
            area,
            priority,
        } = self.rule_from_proto(&r, &mut v);
        v.finish()?;
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let existing = match id {
            Some(id) => Some(
                store::rule_for_update(&mut tx, id)
                    .await
                    .map_err(ApiError::from)?
                    .ok_or_else(|| ApiError::not_found("rule"))?,
            ),
            None => None,
        };
        let rule = Rule {
            id: id.unwrap_or_else(Uuid::now_v7),
            category_code,
            category_group,
            municipality_code,
            area,
            priority,
            assignee_code: r.assignee_code.trim().to_string(),
            description: r.description.trim().to_string(),
            version: existing.as_ref().map_or(1, |e| e.version + 1),
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
            updated_by: who,
        };
        let action = if existing.is_some() {
            "changed"
        } else {
            "created"
        };
        store::put_rule(&mut tx, &rule, action, None)
            .await
            .map_err(ApiError::from)?;
        audit.record(&mut tx, now, &rule.id.to_string()).await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(rule_proto(&rule)))
    }

    async fn delete_routing_rule(
        &self,
        request: Request<pb::DeleteRoutingRuleRequest>,
    ) -> Reply<pb::DeleteRoutingRuleResponse> {
        let audit = Audit::of(&request)?;
        let who = audit.caller.subject.clone();
        let id: Uuid = request
            .get_ref()
            .id
            .parse()
            .map_err(|_| ApiError::invalid_field("id", "must be a rule id (UUID)"))?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let mut rule = store::rule_for_update(&mut tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("rule"))?;
        rule.version += 1;
        rule.updated_at = self.clock.now();
        rule.updated_by = who;
        store::put_rule(&mut tx, &rule, "deleted", None)
            .await
            .map_err(ApiError::from)?;
        audit
            .record(&mut tx, rule.updated_at, &id.to_string())
            .await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::DeleteRoutingRuleResponse {}))
    }

    async fn explain_routing(
        &self,
        request: Request<pb::ExplainRoutingRequest>,
    ) -> Reply<pb::ExplainRoutingResponse> {
        caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.require(&req.category_code, "category_code");
        let location = req.location.unwrap_or_default();
        v.require(&location.municipality_code, "location.municipality_code");
        v.finish()?;
        let point = (location.latitude != 0.0 || location.longitude != 0.0).then_some(Point {
            lat: location.latitude,
            lon: location.longitude,
        });
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let rules = store::rules(&mut conn).await.map_err(ApiError::from)?;
        let query = Query {
            category_code: &req.category_code,
            category_group: &req.category_group,
            municipality_code: &location.municipality_code,
            point,
            priority: req.priority,
        };
        let (winner, verdicts) = domain::explain(&rules, &query);
        Ok(Response::new(pb::ExplainRoutingResponse {
            winner: winner.map(rule_proto),
            verdicts: verdicts
                .into_iter()
                .map(|(rule, matched, reason)| pb::RuleVerdict {
                    rule: Some(rule_proto(rule)),
                    matched,
                    reason,
                })
                .collect(),
        }))
    }
}
