//! `baladiya.intake.v1.IntakeService`: request to domain ([`crate::convert`]),
//! who may do it, a command ([`crate::commands`]) or a store read, and the
//! answer back to proto. Each RPC converts its outcome once, with
//! [`reply`]; the checks and reads are the `*_outcome` methods below.

use std::sync::Arc;

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{CallerIdentity, Role, caller};
use baladiya_platform::error::{Reply, Violations, reply};
use baladiya_platform::events::Emitter;
use baladiya_platform::paging::{DEFAULT_PAGE_SIZE, PageTokens, page_size};
use baladiya_proto::convert::instant;
use baladiya_proto::intake::v1 as pb;
use prost::Message;
use sqlx::PgPool;
use tonic::Request;
use uuid::Uuid;

use crate::CatalogueCache;
use crate::cache::ReportCache;
use crate::commands::{self, Submissions, SubmitRequest, Submitter};
use crate::convert::{
    self, caller_channel, category_proto, channel_name, channel_proto, report_proto, status_name,
};
use crate::domain::{self, Category};
use crate::error::IntakeError;
use crate::pii::Vault;
use crate::store::{self, ReportRow};

/// The gRPC service.
pub struct IntakeApi {
    pool: PgPool,
    emitter: Emitter,
    vault: Vault,
    catalogue: Arc<CatalogueCache>,
    tokens: PageTokens,
    submissions: Submissions,
    cache: Arc<ReportCache>,
}

impl std::fmt::Debug for IntakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeApi").finish()
    }
}

impl IntakeApi {
    /// The service over its pool, emitter, keys and catalogue.
    pub fn new(
        pool: PgPool,
        emitter: Emitter,
        vault: Vault,
        catalogue: Arc<CatalogueCache>,
        tokens: PageTokens,
        cache: Arc<ReportCache>,
    ) -> Self {
        Self {
            submissions: Submissions::start(
                pool.clone(),
                emitter.clone(),
                vault.clone(),
                catalogue.clone(),
                cache.clone(),
            ),
            pool,
            emitter,
            vault,
            catalogue,
            tokens,
            cache,
        }
    }

    async fn submit_outcome(
        &self,
        submitter: Submitter,
        audit: &Audit,
        req: pb::SubmitReportRequest,
    ) -> Result<pb::SubmitReportResponse, IntakeError> {
        let attachments = convert::attachments_from_proto(&req.attachments);
        let request = SubmitRequest {
            submission: convert::submission(&req, &attachments),
            encoded: req.encode_to_vec(),
        };
        self.submissions.submit(submitter, audit, request).await
    }

    async fn get_report_outcome(
        &self,
        who: &CallerIdentity,
        req: pb::GetReportRequest,
    ) -> Result<pb::Report, IntakeError> {
        let (id, tracking) = match req.key {
            Some(pb::get_report_request::Key::Id(id)) => (Some(parse_id(&id, "id")?), None),
            Some(pb::get_report_request::Key::TrackingNumber(t)) if !t.trim().is_empty() => {
                (None, Some(t.trim().to_uppercase()))
            }
            _ => return Err(IntakeError::NoReportKey),
        };
        let row = match self.cache.get(id, tracking.as_deref()) {
            Some(kept) => Some(kept),
            None => self.read_report(id, tracking.as_deref()).await?,
        };
        // Whether a report exists is not revealed to those who may not see it.
        let row = match row {
            Some(r) if may_read(who, &r) => r,
            None if who.may_know_absence() => return Err(IntakeError::ReportNotFound),
            _ => return Err(IntakeError::ReportHidden),
        };
        Ok(report_proto(&row))
    }

    /// A report from the database, kept in the cache unless it changed
    /// while being read.
    async fn read_report(
        &self,
        id: Option<Uuid>,
        tracking: Option<&str>,
    ) -> Result<Option<Arc<ReportRow>>, IntakeError> {
        let epoch = self.cache.epoch();
        let mut conn = self.pool.acquire().await?;
        let row = store::report(&mut conn, id, tracking).await?.map(Arc::new);
        if let Some(r) = &row {
            self.cache.keep(epoch, r.clone());
        }
        Ok(row)
    }

    async fn list_reports_outcome(
        &self,
        who: &CallerIdentity,
        mut req: pb::ListReportsRequest,
    ) -> Result<pb::ListReportsResponse, IntakeError> {
        confine_listing(who, &mut req)?;
        let mut v = Violations::new();
        v.check(
            req.municipality_code.is_empty()
                || self.catalogue.get().area(&req.municipality_code).is_some(),
            "municipality_code",
            &format!(
                "'{}' is not a municipality this platform serves",
                req.municipality_code
            ),
        );
        v.check(
            req.status == 0 || status_name(req.status).is_some(),
            "status",
            "is not a report status",
        );
        for (i, s) in req.statuses.iter().enumerate() {
            v.check(
                status_name(*s).is_some(),
                &format!("statuses[{i}]"),
                "is not a report status",
            );
        }
        v.check(
            req.channel == 0 || channel_name(req.channel).is_some(),
            "channel",
            "is not a channel",
        );
        let created = req.created.unwrap_or_default();
        let from = created.start_time.as_ref().map(instant);
        let to = created.end_time.as_ref().map(instant);
        v.check(
            !matches!(from, Some(None)),
            "created.start_time",
            "is not a valid timestamp",
        );
        v.check(
            !matches!(to, Some(None)),
            "created.end_time",
            "is not a valid timestamp",
        );
        let key = convert::list_page_key(&req);
        let after = v
            .absorb(self.tokens.keyset(&req.page_token, &key))
            .flatten();
        let limit = v.absorb(page_size(req.page_size));
        v.finish()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        let filter = convert::report_filter(&req, from.flatten(), to.flatten());
        let mut conn = self.pool.acquire().await?;
        let rows = store::reports(&mut conn, &filter, after, limit + 1).await?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &key, |r| (r.created_at, r.id));
        Ok(pb::ListReportsResponse {
            reports: page.iter().map(report_proto).collect(),
            next_page_token,
        })
    }

    async fn rate_report_outcome(
        &self,
        audit: &Audit,
        req: pb::RateReportRequest,
    ) -> Result<pb::Report, IntakeError> {
        let mut v = Violations::new();
        let id = req.report_id.parse::<Uuid>().ok();
        v.check(id.is_some(), "report_id", "must be a report id (UUID)");
        v.check((1..=5).contains(&req.score), "score", "must be 1 to 5");
        let comment = req.comment.trim();
        v.check(
            comment.chars().count() <= 1_000,
            "comment",
            "must be at most 1000 characters",
        );
        v.check(
            !comment.chars().any(|c| c.is_control() && c != '\n'),
            "comment",
            "must not contain control characters",
        );
        v.finish()?;
        let id = id.ok_or(IntakeError::NotAReportId { field: "report_id" })?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let rated = commands::rate_report(&mut tx, audit, id, req.score, comment).await?;
        tx.commit().await?;
        self.cache.forget(&id);
        Ok(report_proto(&rated))
    }

    async fn list_categories_outcome(
        &self,
        include_inactive: bool,
    ) -> Result<pb::ListCategoriesResponse, IntakeError> {
        let mut conn = self.pool.acquire().await?;
        let catalogue = store::load_catalogue(&mut conn).await?;
        let mut categories: Vec<&Category> = catalogue
            .categories
            .values()
            .filter(|c| include_inactive || c.active)
            .collect();
        categories.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(pb::ListCategoriesResponse {
            categories: categories.into_iter().map(category_proto).collect(),
        })
    }

    async fn reporter_contact_outcome(
        &self,
        audit: &Audit,
        req: &pb::GetReporterContactRequest,
    ) -> Result<pb::Reporter, IntakeError> {
        let id = parse_id(&req.report_id, "report_id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let contact = commands::open_reporter_contact(&mut tx, audit, &self.vault, id).await?;
        tx.commit().await?;
        Ok(pb::Reporter {
            name: contact.name.unwrap_or_default(),
            phone: contact.phone.unwrap_or_default(),
            national_id: contact.national_id.unwrap_or_default(),
        })
    }

    async fn upsert_category_outcome(
        &self,
        audit: &Audit,
        req: pb::UpsertCategoryRequest,
    ) -> Result<pb::Category, IntakeError> {
        let Some(c) = req.category else {
            return Err(IntakeError::Required("category"));
        };
        let mut v = Violations::new();
        let (category, has_default_priority) = convert::category_from_proto(c);
        v.check(
            has_default_priority,
            "category.default_priority",
            "is required",
        );
        category.check("category.", &mut v);
        v.finish()?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        commands::upsert_category(&mut tx, audit, &category).await?;
        tx.commit().await?;
        if let Err(e) = self.catalogue.reload(&self.pool).await {
            tracing::warn!(error = %e, "catalogue reload after an edit failed; the periodic reload will catch up");
        }
        Ok(category_proto(&category))
    }
}

fn parse_id(text: &str, field: &'static str) -> Result<Uuid, IntakeError> {
    text.parse()
        .map_err(|_| IntakeError::NotAReportId { field })
}

/// Whether `who` may read `report`.
fn may_read(who: &CallerIdentity, report: &ReportRow) -> bool {
    domain::may_read(
        who,
        caller_channel(who),
        &report.municipality_code,
        &report.channel,
    )
}

/// Holds a listing to the caller's reach: a channel lists its own reports,
/// an operator of a municipality that municipality's.
fn confine_listing(
    who: &CallerIdentity,
    req: &mut pb::ListReportsRequest,
) -> Result<(), IntakeError> {
    match who.role {
        Role::Channel => {
            let own = caller_channel(who).ok_or(IntakeError::TokenNamesNoChannel)?;
            if req.channel != 0 && channel_name(req.channel) != Some(own) {
                return Err(IntakeError::ListOtherChannel);
            }
            req.channel = channel_proto(own);
        }
        Role::Operator if who.municipality.is_some() => {
            let own = who.municipality.clone().unwrap_or_default();
            if !req.municipality_code.is_empty() && req.municipality_code != own {
                return Err(IntakeError::ListOtherMunicipality);
            }
            req.municipality_code = own;
        }
        _ => {}
    }
    Ok(())
}

/// Who a submit is from, for the channel rule: a channel front-end whose
/// token names a channel submits only as that channel.
fn submitter(who: &CallerIdentity) -> Submitter {
    if who.role == Role::Channel && who.channel.is_some() {
        Submitter::OwnChannel(caller_channel(who))
    } else {
        Submitter::AnyChannel
    }
}

#[tonic::async_trait]
impl pb::intake_service_server::IntakeService for IntakeApi {
    async fn submit_report(
        &self,
        request: Request<pb::SubmitReportRequest>,
    ) -> Reply<pb::SubmitReportResponse> {
        // Who may submit is the policy's (crate baladiya_platform::policy).
        let submitter = submitter(caller(&request)?);
        let audit = Audit::of(&request)?;
        reply(
            self.submit_outcome(submitter, &audit, request.into_inner())
                .await,
        )
    }

    async fn get_report(&self, request: Request<pb::GetReportRequest>) -> Reply<pb::Report> {
        let who = caller(&request)?.clone();
        reply(self.get_report_outcome(&who, request.into_inner()).await)
    }

    async fn list_reports(
        &self,
        request: Request<pb::ListReportsRequest>,
    ) -> Reply<pb::ListReportsResponse> {
        let who = caller(&request)?.clone();
        reply(self.list_reports_outcome(&who, request.into_inner()).await)
    }

    async fn rate_report(&self, request: Request<pb::RateReportRequest>) -> Reply<pb::Report> {
        let audit = Audit::of(&request)?;
        reply(self.rate_report_outcome(&audit, request.into_inner()).await)
    }

    async fn list_categories(
        &self,
        request: Request<pb::ListCategoriesRequest>,
    ) -> Reply<pb::ListCategoriesResponse> {
        caller(&request)?;
        reply(
            self.list_categories_outcome(request.get_ref().include_inactive)
                .await,
        )
    }

    async fn get_reporter_contact(
        &self,
        request: Request<pb::GetReporterContactRequest>,
    ) -> Reply<pb::Reporter> {
        let audit = Audit::of(&request)?;
        reply(
            self.reporter_contact_outcome(&audit, request.get_ref())
                .await,
        )
    }

    async fn upsert_category(
        &self,
        request: Request<pb::UpsertCategoryRequest>,
    ) -> Reply<pb::Category> {
        let audit = Audit::of(&request)?;
        reply(
            self.upsert_category_outcome(&audit, request.into_inner())
                .await,
        )
    }
}
