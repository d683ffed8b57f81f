//! `baladiya.routing.v1.RoutingService`: the request to domain values
//! ([`crate::convert`]), the caller's scope, a command ([`crate::commands`])
//! or a store read, the answer back to proto. Each RPC takes its caller from
//! the request and answers through [`reply`] once.

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{CallerIdentity, Role, caller};
use baladiya_platform::error::{ApiError, Reply, Violations, reply};
use baladiya_platform::events::Emitter;
use baladiya_platform::geo::Point;
use baladiya_platform::paging::{DEFAULT_PAGE_SIZE, PageTokens, page_size};
use baladiya_proto::routing::v1 as pb;
use sqlx::PgPool;
use tonic::Request;
use uuid::Uuid;

use crate::commands::{self, By, Limits, Step};
use crate::convert::{
    case_action_from_proto, case_to_proto, rule_draft_from_proto, rule_to_proto, status_from_proto,
};
use crate::domain::{self, Action, Query};
use crate::error::RoutingError;
use crate::store::{self, CaseFilter};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct RoutingApi {
    pub pool: PgPool,
    pub emitter: Emitter,
    pub limits: Limits,
    pub tokens: PageTokens,
}

impl RoutingApi {
    /// `GetCase`: the case with its history, if `who` may read it.
    async fn read_case(&self, who: &CallerIdentity, id: &str) -> Result<pb::Case, RoutingError> {
        let id: Uuid = id
            .parse()
            .map_err(|_| ApiError::invalid_field("id", "must be a case id (UUID)"))?;
        let mut conn = self.pool.acquire().await?;
        let case = match store::case(&mut conn, id, false).await? {
            Some(c) if commands::may_read(who, &c) => c,
            Some(_) => return Err(RoutingError::NotYourCase),
            None => return Err(RoutingError::missing_case(Some(who))),
        };
        let history = store::history(&mut conn, id).await?;
        Ok(case_to_proto(&case, &history))
    }

    /// `ListCases`: a page of the cases `who` may read that match the filters
    /// (a partner's own, an operator's municipality's).
    async fn list_cases_in_scope(
        &self,
        who: &CallerIdentity,
        req: pb::ListCasesRequest,
    ) -> Result<pb::ListCasesResponse, RoutingError> {
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
                    return Err(RoutingError::OtherMunicipality);
                }
                filter.municipality_code = who.municipality.clone();
            }
            Role::Channel => return Err(RoutingError::ChannelsReadThroughIntake),
            _ => {}
        }
        let filters = format!("{filter:?}");
        let after = v
            .absorb(self.tokens.keyset(&req.page_token, &filters))
            .flatten();
        let limit = v.absorb(page_size(req.page_size));
        v.finish()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        let mut conn = self.pool.acquire().await?;
        let rows = store::cases(&mut conn, &filter, after, limit + 1).await?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |c| (c.created_at, c.id));
        Ok(pb::ListCasesResponse {
            cases: page.iter().map(|c| case_to_proto(c, &[])).collect(),
            next_page_token,
        })
    }

    /// Runs one transition of case `id` for the caller of `audit`, once the
    /// request's violations `v` are none; answers the case with its history.
    async fn run_transition(
        &self,
        audit: &Audit,
        id: Option<Uuid>,
        action: Action,
        step: Step,
        v: Violations,
    ) -> Result<pb::Case, RoutingError> {
        v.finish()?;
        let id = id.ok_or_else(|| ApiError::invalid_field("action.case_id", "is required"))?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let rules = if action == Action::Reject {
            store::rules(&mut tx).await?
        } else {
            Vec::new()
        };
        let by = By::Caller(audit);
        let case = commands::transition(&mut tx, self.limits, &rules, id, action, by, step).await?;
        let history = store::history(&mut tx, id).await?;
        tx.commit().await?;
        Ok(case_to_proto(&case, &history))
    }

    /// A transition whose request is the `CaseAction` alone (a note requires
    /// its text).
    async fn run_case_action(
        &self,
        audit: &Audit,
        case_action: Option<pb::CaseAction>,
        action: Action,
    ) -> Result<pb::Case, RoutingError> {
        let mut v = Violations::new();
        let (id, step) = case_action_from_proto(&case_action, &mut v);
        if action == Action::Note {
            v.require(&step.note, "action.note");
        }
        self.run_transition(audit, id, action, step, v).await
    }

    /// `ResolveCase`: the resolution and up to 5 https proof-of-fix URIs.
    async fn resolve_with_proof(
        &self,
        audit: &Audit,
        req: pb::ResolveCaseRequest,
    ) -> Result<pb::Case, RoutingError> {
        let mut v = Violations::new();
        let (id, mut step) = case_action_from_proto(&req.action, &mut v);
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
        self.run_transition(audit, id, Action::Resolve, step, v)
            .await
    }

    /// `RejectCase`: the reason, and the body the assignee suggests if any.
    async fn reject_with_reason(
        &self,
        audit: &Audit,
        req: pb::RejectCaseRequest,
    ) -> Result<pb::Case, RoutingError> {
        let mut v = Violations::new();
        let (id, mut step) = case_action_from_proto(&req.action, &mut v);
        v.require(&req.reason, "reason");
        let suggested = req.suggested_assignee_code.trim();
        v.check(
            suggested.is_empty() || domain::is_assignee_code(suggested),
            "suggested_assignee_code",
            "must be a partner or department code",
        );
        step.note = req.reason.trim().to_string();
        step.assignee = Some(suggested.to_string()).filter(|s| !s.is_empty());
        self.run_transition(audit, id, Action::Reject, step, v)
            .await
    }

    /// `RerouteCase`: the new assignee and the reason.
    async fn reroute_to_assignee(
        &self,
        audit: &Audit,
        req: pb::RerouteCaseRequest,
    ) -> Result<pb::Case, RoutingError> {
        let mut v = Violations::new();
        let (id, mut step) = case_action_from_proto(&req.action, &mut v);
        let assignee = req.assignee_code.trim();
        v.check(
            domain::is_assignee_code(assignee),
            "assignee_code",
            "must be a partner or department code, e.g. MEWA",
        );
        step.note = req.reason.trim().to_string();
        step.assignee = Some(assignee.to_string());
        self.run_transition(audit, id, Action::Reroute, step, v)
            .await
    }

    /// `ListRoutingRules`: the rules in force, in precedence order.
    async fn rules_by_precedence(&self) -> Result<pb::ListRoutingRulesResponse, RoutingError> {
        let mut conn = self.pool.acquire().await?;
        let mut rules = store::rules(&mut conn).await?;
        rules.sort_by(domain::precedence);
        Ok(pb::ListRoutingRulesResponse {
            rules: rules.iter().map(rule_to_proto).collect(),
        })
    }

    /// `UpsertRoutingRule`: a new rule, or a new version of one in force.
    async fn write_rule(
        &self,
        audit: &Audit,
        req: pb::UpsertRoutingRuleRequest,
    ) -> Result<pb::RoutingRule, RoutingError> {
        let Some(r) = req.rule else {
            return Err(ApiError::invalid_field("rule", "is required").into());
        };
        let mut v = Violations::new();
        let draft = rule_draft_from_proto(&r, &mut v);
        v.finish()?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let rule = commands::upsert_rule(&mut tx, audit, draft).await?;
        tx.commit().await?;
        Ok(rule_to_proto(&rule))
    }

    /// `DeleteRoutingRule`.
    async fn delete_rule(
        &self,
        audit: &Audit,
        id: &str,
    ) -> Result<pb::DeleteRoutingRuleResponse, RoutingError> {
        let id: Uuid = id
            .parse()
            .map_err(|_| ApiError::invalid_field("id", "must be a rule id (UUID)"))?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        commands::delete_rule(&mut tx, audit, id).await?;
        tx.commit().await?;
        Ok(pb::DeleteRoutingRuleResponse {})
    }

    /// `ExplainRouting`: how every rule fares for a report like this one.
    async fn explain_rules(
        &self,
        req: pb::ExplainRoutingRequest,
    ) -> Result<pb::ExplainRoutingResponse, RoutingError> {
        let mut v = Violations::new();
        v.require(&req.category_code, "category_code");
        let location = req.location.unwrap_or_default();
        v.require(&location.municipality_code, "location.municipality_code");
        v.finish()?;
        let point = (location.latitude != 0.0 || location.longitude != 0.0).then_some(Point {
            lat: location.latitude,
            lon: location.longitude,
        });
        let mut conn = self.pool.acquire().await?;
        let rules = store::rules(&mut conn).await?;
        let query = Query {
            category_code: &req.category_code,
            category_group: &req.category_group,
            municipality_code: &location.municipality_code,
            point,
            priority: req.priority,
        };
        let (winner, verdicts) = domain::explain(&rules, &query);
        Ok(pb::ExplainRoutingResponse {
            winner: winner.map(rule_to_proto),
            verdicts: verdicts
                .into_iter()
                .map(|(rule, matched, reason)| pb::RuleVerdict {
                    rule: Some(rule_to_proto(rule)),
                    matched,
                    reason,
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::routing_service_server::RoutingService for RoutingApi {
    async fn get_case(&self, request: Request<pb::GetCaseRequest>) -> Reply<pb::Case> {
        let who = caller(&request)?;
        reply(self.read_case(who, &request.get_ref().id).await)
    }

    async fn list_cases(
        &self,
        request: Request<pb::ListCasesRequest>,
    ) -> Reply<pb::ListCasesResponse> {
        let who = caller(&request)?.clone();
        reply(self.list_cases_in_scope(&who, request.into_inner()).await)
    }

    async fn acknowledge_case(
        &self,
        request: Request<pb::AcknowledgeCaseRequest>,
    ) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(
            self.run_case_action(&audit, action, Action::Acknowledge)
                .await,
        )
    }

    async fn start_work(&self, request: Request<pb::StartWorkRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(
            self.run_case_action(&audit, action, Action::StartWork)
                .await,
        )
    }

    async fn add_case_note(&self, request: Request<pb::AddCaseNoteRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(self.run_case_action(&audit, action, Action::Note).await)
    }

    async fn put_case_on_hold(
        &self,
        request: Request<pb::PutCaseOnHoldRequest>,
    ) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(self.run_case_action(&audit, action, Action::Hold).await)
    }

    async fn resume_case(&self, request: Request<pb::ResumeCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(self.run_case_action(&audit, action, Action::Resume).await)
    }

    async fn reopen_case(&self, request: Request<pb::ReopenCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(self.run_case_action(&audit, action, Action::Reopen).await)
    }

    async fn close_case(&self, request: Request<pb::CloseCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        let action = request.into_inner().action;
        reply(self.run_case_action(&audit, action, Action::Close).await)
    }

    async fn resolve_case(&self, request: Request<pb::ResolveCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        reply(self.resolve_with_proof(&audit, request.into_inner()).await)
    }

    async fn reject_case(&self, request: Request<pb::RejectCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        reply(self.reject_with_reason(&audit, request.into_inner()).await)
    }

    async fn reroute_case(&self, request: Request<pb::RerouteCaseRequest>) -> Reply<pb::Case> {
        let audit = Audit::of(&request)?;
        reply(self.reroute_to_assignee(&audit, request.into_inner()).await)
    }

    async fn list_routing_rules(
        &self,
        request: Request<pb::ListRoutingRulesRequest>,
    ) -> Reply<pb::ListRoutingRulesResponse> {
        caller(&request)?;
        reply(self.rules_by_precedence().await)
    }

    async fn upsert_routing_rule(
        &self,
        request: Request<pb::UpsertRoutingRuleRequest>,
    ) -> Reply<pb::RoutingRule> {
        let audit = Audit::of(&request)?;
        reply(self.write_rule(&audit, request.into_inner()).await)
    }

    async fn delete_routing_rule(
        &self,
        request: Request<pb::DeleteRoutingRuleRequest>,
    ) -> Reply<pb::DeleteRoutingRuleResponse> {
        let audit = Audit::of(&request)?;
        reply(self.delete_rule(&audit, &request.get_ref().id).await)
    }

    async fn explain_routing(
        &self,
        request: Request<pb::ExplainRoutingRequest>,
    ) -> Reply<pb::ExplainRoutingResponse> {
        caller(&request)?;
        reply(self.explain_rules(request.into_inner()).await)
    }
}
