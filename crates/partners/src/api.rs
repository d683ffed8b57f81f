//! `baladiya.partners.v1.PartnerService`: converts requests, checks the caller,
//! runs the operation in a transaction, converts the answer. Nothing else.

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::caller;
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, Reply, Violations, reply};
use baladiya_platform::events::Emitter;
use baladiya_platform::idempotency::{self, Claim};
use baladiya_platform::paging::PageTokens;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::partners::v1 as pb;
use prost::Message;
use sqlx::PgPool;
use tonic::Request;

use crate::commands::{self, Exception};
use crate::convert::{self, agreement_to_proto, calendar_to_proto, partner_to_proto};
use crate::domain::{self, CalendarRecord};
use crate::error::PartnersError;
use crate::store;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 500;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct PartnerApi {
    pub pool: PgPool,
    pub clock: Clock,
    pub emitter: Emitter,
    pub tokens: PageTokens,
}

fn page_filters(kind: i32, include_inactive: bool) -> String {
    format!("kind={kind}&include_inactive={include_inactive}")
}

fn at_or_now(
    at: &Option<prost_types::Timestamp>,
    clock: &Clock,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    match at {
        None => Ok(clock.now()),
        Some(t) => {
            instant(t).ok_or_else(|| ApiError::invalid_field("at", "is not a valid timestamp"))
        }
    }
}

impl PartnerApi {
    async fn calendar_proto(&self, id: &str) -> Result<pb::Calendar, ApiError> {
        let mut conn = self.pool.acquire().await?;
        let c = store::calendar(&mut conn, id)
            .await?
            .ok_or_else(|| ApiError::not_found(format_args!("calendar {id}")))?;
        Ok(calendar_to_proto(&c.record, c.revision, c.updated_at))
    }

    async fn versions(&self, code: &str) -> Result<Vec<domain::Agreement>, ApiError> {
        let mut conn = self.pool.acquire().await?;
        if store::partner(&mut conn, code).await?.is_none() {
            return Err(ApiError::not_found(format_args!("partner {code}")));
        }
        Ok(store::agreements(&mut conn, code).await?)
    }
}

#[tonic::async_trait]
impl pb::partner_service_server::PartnerService for PartnerApi {
    async fn list_partners(
        &self,
        request: Request<pb::ListPartnersRequest>,
    ) -> Reply<pb::ListPartnersResponse> {
        reply(self.partners_page(request).await)
    }

    async fn get_partner(&self, request: Request<pb::GetPartnerRequest>) -> Reply<pb::Partner> {
        reply(self.partner(request).await)
    }

    async fn upsert_partner(
        &self,
        request: Request<pb::UpsertPartnerRequest>,
    ) -> Reply<pb::Partner> {
        reply(self.save_partner(request).await)
    }

    async fn get_agreement(
        &self,
        request: Request<pb::GetAgreementRequest>,
    ) -> Reply<pb::Agreement> {
        reply(self.agreement(request).await)
    }

    async fn list_agreements(
        &self,
        request: Request<pb::ListAgreementsRequest>,
    ) -> Reply<pb::ListAgreementsResponse> {
        reply(self.agreement_versions(request).await)
    }

    async fn publish_agreement(
        &self,
        request: Request<pb::PublishAgreementRequest>,
    ) -> Reply<pb::Agreement> {
        reply(self.publish(request).await)
    }

    async fn get_calendar(&self, request: Request<pb::GetCalendarRequest>) -> Reply<pb::Calendar> {
        reply(self.calendar(request).await)
    }

    async fn list_calendars(
        &self,
        request: Request<pb::ListCalendarsRequest>,
    ) -> Reply<pb::ListCalendarsResponse> {
        reply(self.calendars(request).await)
    }

    async fn upsert_calendar(
        &self,
        request: Request<pb::UpsertCalendarRequest>,
    ) -> Reply<pb::Calendar> {
        reply(self.save_calendar(request).await)
    }

    async fn add_calendar_exception(
        &self,
        request: Request<pb::AddCalendarExceptionRequest>,
    ) -> Reply<pb::Calendar> {
        reply(self.add_exception(request).await)
    }

    async fn resolve_sla_terms(
        &self,
        request: Request<pb::ResolveSlaTermsRequest>,
    ) -> Reply<pb::ResolvedSlaTerms> {
        reply(self.sla_terms(request).await)
    }

    async fn resolve_clearance_terms(
        &self,
        request: Request<pb::ResolveClearanceTermsRequest>,
    ) -> Reply<pb::ResolvedClearanceTerms> {
        reply(self.clearance_terms(request).await)
    }
}

/// The RPCs' work, in the crate's error type; the trait above converts each
/// outcome once.
impl PartnerApi {
    async fn partners_page(
        &self,
        request: Request<pb::ListPartnersRequest>,
    ) -> Result<pb::ListPartnersResponse, PartnersError> {
        caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(req.page_size >= 0, "page_size", "must not be negative");
        v.finish()?;
        let limit = match i64::from(req.page_size) {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let filters = page_filters(req.kind, req.include_inactive);
        let after = self
            .tokens
            .cursor(&req.page_token, &filters)?
            .unwrap_or_default();
        let kind = convert::kind_from_proto(req.kind);
        let mut conn = self.pool.acquire().await?;
        let rows =
            store::partners(&mut conn, &after, kind, req.include_inactive, limit + 1).await?;
        let more = rows.len() as i64 > limit;
        let page: Vec<_> = rows.into_iter().take(limit as usize).collect();
        let next_page_token = match (more, page.last()) {
            (true, Some((last, _))) => self.tokens.issue(&filters, &last.code),
            _ => String::new(),
        };
        Ok(pb::ListPartnersResponse {
            partners: page
                .iter()
                .map(|(p, at)| partner_to_proto(p, *at))
                .collect(),
            next_page_token,
        })
    }

    async fn partner(
        &self,
        request: Request<pb::GetPartnerRequest>,
    ) -> Result<pb::Partner, PartnersError> {
        caller(&request)?;
        let code = &request.get_ref().code;
        let mut conn = self.pool.acquire().await?;
        let (partner, at) = store::partner(&mut conn, code)
            .await?
            .ok_or_else(|| ApiError::not_found(format_args!("partner {code}")))?;
        Ok(partner_to_proto(&partner, at))
    }

    async fn save_partner(
        &self,
        request: Request<pb::UpsertPartnerRequest>,
    ) -> Result<pb::Partner, PartnersError> {
        let audit = Audit::of(&request)?;
        let mut v = Violations::new();
        let Some(proto) = request.get_ref().partner.as_ref() else {
            return Err(ApiError::invalid_field("partner", "is required").into());
        };
        let partner = convert::partner_from_proto(proto, &mut v);
        let mut tx = self.emitter.begin(&self.pool).await?;
        let at = commands::upsert_partner(&mut tx, &partner, v).await?;
        audit.record(&mut tx, at, &partner.code).await?;
        tx.commit().await?;
        Ok(partner_to_proto(&partner, at))
    }

    async fn agreement(
        &self,
        request: Request<pb::GetAgreementRequest>,
    ) -> Result<pb::Agreement, PartnersError> {
        caller(&request)?;
        let req = request.into_inner();
        let versions = self.versions(&req.partner_code).await?;
        let found = if req.version == 0 {
            domain::in_force(&versions, self.clock.now())
        } else {
            versions.iter().find(|a| a.version == req.version)
        };
        let agreement = found.ok_or_else(|| {
            ApiError::not_found(format_args!(
                "agreement version {} of {}",
                req.version, req.partner_code
            ))
        })?;
        Ok(agreement_to_proto(agreement))
    }

    async fn agreement_versions(
        &self,
        request: Request<pb::ListAgreementsRequest>,
    ) -> Result<pb::ListAgreementsResponse, PartnersError> {
        caller(&request)?;
        let versions = self.versions(&request.get_ref().partner_code).await?;
        Ok(pb::ListAgreementsResponse {
            agreements: versions.iter().map(agreement_to_proto).collect(),
        })
    }

    async fn publish(
        &self,
        request: Request<pb::PublishAgreementRequest>,
    ) -> Result<pb::Agreement, PartnersError> {
        let audit = Audit::of(&request)?;
        let who = audit.caller.subject.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        idempotency::check_request_id(&req.request_id, &mut v);
        let Some(agreement) = req.agreement.as_ref() else {
            v.add("agreement", "is required");
            v.finish()?;
            return Err(ApiError::invalid_field("agreement", "is required").into());
        };
        let effective_from = match &agreement.effective_from {
            Some(t) => {
                let parsed = instant(t);
                v.check(
                    parsed.is_some(),
                    "agreement.effective_from",
                    "is not a valid timestamp",
                );
                parsed
            }
            None => None,
        };
        let body = convert::body_from_proto(agreement);
        let mut tx = self.emitter.begin(&self.pool).await?;
        if v.is_empty() {
            let claim = idempotency::claim::<pb::Agreement>(
                &mut tx,
                "PublishAgreement",
                &req.request_id,
                &req.encode_to_vec(),
            )
            .await?;
            if let Claim::Replay(original) = claim {
                return Ok(original);
            }
        }
        let published = commands::publish_agreement(
            &mut tx,
            &agreement.partner_code,
            effective_from,
            body,
            &who,
            v,
        )
        .await?;
        let response = agreement_to_proto(&published);
        idempotency::complete(&mut tx, "PublishAgreement", &req.request_id, &response).await?;
        audit
            .record(
                &mut tx,
                self.clock.now(),
                &format!("{}@{}", agreement.partner_code, published.version),
            )
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn calendar(
        &self,
        request: Request<pb::GetCalendarRequest>,
    ) -> Result<pb::Calendar, PartnersError> {
        caller(&request)?;
        Ok(self.calendar_proto(&request.get_ref().id).await?)
    }

    async fn calendars(
        &self,
        request: Request<pb::ListCalendarsRequest>,
    ) -> Result<pb::ListCalendarsResponse, PartnersError> {
        caller(&request)?;
        let mut conn = self.pool.acquire().await?;
        let all = store::calendars(&mut conn).await?;
        Ok(pb::ListCalendarsResponse {
            calendars: all
                .iter()
                .map(|c| calendar_to_proto(&c.record, c.revision, c.updated_at))
                .collect(),
        })
    }

    async fn save_calendar(
        &self,
        request: Request<pb::UpsertCalendarRequest>,
    ) -> Result<pb::Calendar, PartnersError> {
        let audit = Audit::of(&request)?;
        let Some(proto) = request.get_ref().calendar.as_ref() else {
            return Err(ApiError::invalid_field("calendar", "is required").into());
        };
        let mut v = Violations::new();
        let record: CalendarRecord = convert::calendar_from_proto(proto, &mut v);
        let mut tx = self.emitter.begin(&self.pool).await?;
        let stored = commands::upsert_calendar(&mut tx, &record, "calendar replaced", v).await?;
        audit.record(&mut tx, stored.updated_at, &record.id).await?;
        tx.commit().await?;
        Ok(calendar_to_proto(
            &stored.record,
            stored.revision,
            stored.updated_at,
        ))
    }

    async fn add_exception(
        &self,
        request: Request<pb::AddCalendarExceptionRequest>,
    ) -> Result<pb::Calendar, PartnersError> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let change = match &req.exception {
            Some(pb::add_calendar_exception_request::Exception::Holiday(h)) => {
                v.check(!h.name.trim().is_empty(), "holiday.name", "is required");
                convert::holiday_from_proto(h, "holiday", &mut v).map(Exception::Holiday)
            }
            Some(pb::add_calendar_exception_request::Exception::HoursOverride(o)) => {
                v.check(
                    !o.name.trim().is_empty(),
                    "hours_override.name",
                    "is required",
                );
                convert::override_from_proto(o, "hours_override", &mut v).map(Exception::Hours)
            }
            None => {
                v.add("exception", "a holiday or an hours_override is required");
                None
            }
        };
        v.finish()?;
        let Some(change) = change else {
            return Err(ApiError::invalid_field("exception", "is invalid").into());
        };
        let mut tx = self.emitter.begin(&self.pool).await?;
        let stored = commands::add_calendar_exception(&mut tx, &req.calendar_id, change).await?;
        audit
            .record(&mut tx, stored.updated_at, &req.calendar_id)
            .await?;
        tx.commit().await?;
        Ok(calendar_to_proto(
            &stored.record,
            stored.revision,
            stored.updated_at,
        ))
    }

    async fn sla_terms(
        &self,
        request: Request<pb::ResolveSlaTermsRequest>,
    ) -> Result<pb::ResolvedSlaTerms, PartnersError> {
        caller(&request)?;
        let req = request.into_inner();
        let at = at_or_now(&req.at, &self.clock)?;
        let versions = self.versions(&req.partner_code).await?;
        let agreement = domain::in_force(&versions, at).ok_or_else(|| {
            ApiError::not_found(format_args!(
                "an agreement of {} in force at {at}",
                req.partner_code
            ))
        })?;
        let priority = convert::priority_from_proto(req.priority);
        let (terms, matched_by) = agreement
            .body
            .terms_for(&req.category_code, priority)
            .ok_or_else(|| {
                ApiError::not_found(format_args!(
                    "terms for category '{}' in agreement version {} of {}",
                    req.category_code, agreement.version, req.partner_code
                ))
            })?;
        Ok(pb::ResolvedSlaTerms {
            partner_code: req.partner_code.clone(),
            agreement_version: agreement.version,
            effective_from: Some(timestamp(agreement.effective_from)),
            terms: Some(convert::terms_to_proto(
                terms,
                domain::warn_at_or_default(&terms.warn_at),
            )),
            matched_by: matched_by.into(),
            escalation_ladder: convert::ladder_to_proto(&req.partner_code, &agreement.body.ladder),
            calendar: Some(self.calendar_proto(&terms.calendar_id).await?),
        })
    }

    async fn clearance_terms(
        &self,
        request: Request<pb::ResolveClearanceTermsRequest>,
    ) -> Result<pb::ResolvedClearanceTerms, PartnersError> {
        caller(&request)?;
        let req = request.into_inner();
        let at = at_or_now(&req.at, &self.clock)?;
        let versions = self.versions(&req.partner_code).await?;
        let agreement = domain::in_force(&versions, at).ok_or_else(|| {
            ApiError::not_found(format_args!(
                "an agreement of {} in force at {at}",
                req.partner_code
            ))
        })?;
        let clearance = agreement
            .body
            .clearance_for(&req.license_type_code)
            .ok_or_else(|| {
                ApiError::not_found(format_args!(
                    "clearance terms for {} in agreement version {} of {}",
                    req.license_type_code, agreement.version, req.partner_code
                ))
            })?;
        Ok(pb::ResolvedClearanceTerms {
            partner_code: req.partner_code.clone(),
            agreement_version: agreement.version,
            clearance: Some(convert::clearance_to_proto(
                clearance,
                domain::warn_at_or_default(&clearance.warn_at),
            )),
            escalation_ladder: convert::ladder_to_proto(&req.partner_code, &agreement.body.ladder),
            calendar: Some(self.calendar_proto(&clearance.calendar_id).await?),
        })
    }
}
