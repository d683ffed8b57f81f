//! `baladiya.licensing.v1.LicensingService`: converts the request, checks
//! the caller, runs a command in a transaction (or reads the store),
//! converts the answer. Nothing else: the rules are in `domain` and
//! `access`, the state changes in `commands`.
//!
//! Each trait method takes the caller (`Audit::of`/`caller`, refused by the
//! interceptor's own status) and converts the outcome of its inner method
//! once with `reply`. Creates that take a `request_id` claim it here, in the
//! command's transaction, before the command runs, and store the answer
//! after.

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::caller;
use baladiya_platform::backdating::BackdatingBound;
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{Reply, Violations, reply};
use baladiya_platform::events::Emitter;
use baladiya_platform::idempotency::{self, Claim};
use baladiya_platform::paging::{PageTokens, page_size};
use baladiya_proto::convert::instant;
use baladiya_proto::licensing::v1 as pb;
use prost::Message;
use sqlx::PgPool;
use tonic::Request;

use crate::convert::{self, application_proto, license_proto};
use crate::error::LicensingError;
use crate::{access, commands, store};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct LicensingApi {
    pub pool: PgPool,
    pub clock: Clock,
    pub emitter: Emitter,
    pub tokens: PageTokens,
    pub pseudonym_key: Vec<u8>,
    pub suspend_on_critical: bool,
    /// How far before now an inspection may be said to have happened.
    pub backdating: BackdatingBound,
}

#[tonic::async_trait]
impl pb::licensing_service_server::LicensingService for LicensingApi {
    async fn list_license_types(
        &self,
        request: Request<pb::ListLicenseTypesRequest>,
    ) -> Reply<pb::ListLicenseTypesResponse> {
        reply(self.license_types(request).await)
    }

    async fn submit_application(
        &self,
        request: Request<pb::SubmitApplicationRequest>,
    ) -> Reply<pb::Application> {
        reply(self.submit(request).await)
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Reply<pb::Application> {
        reply(self.application(request).await)
    }

    async fn list_applications(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Reply<pb::ListApplicationsResponse> {
        reply(self.applications_page(request).await)
    }

    async fn return_for_correction(
        &self,
        request: Request<pb::ReturnForCorrectionRequest>,
    ) -> Reply<pb::Application> {
        reply(self.return_to_applicant(request).await)
    }

    async fn resubmit_application(
        &self,
        request: Request<pb::ResubmitApplicationRequest>,
    ) -> Reply<pb::Application> {
        reply(self.resubmit(request).await)
    }

    async fn request_clearance(
        &self,
        request: Request<pb::RequestClearanceRequest>,
    ) -> Reply<pb::Application> {
        reply(self.ask_for_clearance(request).await)
    }

    async fn record_clearance(
        &self,
        request: Request<pb::RecordClearanceRequest>,
    ) -> Reply<pb::Application> {
        reply(self.clearance_answer(request).await)
    }

    async fn schedule_inspection(
        &self,
        request: Request<pb::ScheduleInspectionRequest>,
    ) -> Reply<pb::Application> {
        reply(self.inspection_appointment(request).await)
    }

    async fn record_inspection(
        &self,
        request: Request<pb::RecordInspectionRequest>,
    ) -> Reply<pb::Application> {
        reply(self.inspection_result(request).await)
    }

    async fn approve_application(
        &self,
        request: Request<pb::ApproveApplicationRequest>,
    ) -> Reply<pb::Application> {
        reply(self.approve(request).await)
    }

    async fn reject_application(
        &self,
        request: Request<pb::RejectApplicationRequest>,
    ) -> Reply<pb::Application> {
        reply(self.reject(request).await)
    }

    async fn issue_license(&self, request: Request<pb::IssueLicenseRequest>) -> Reply<pb::License> {
        reply(self.issue(request).await)
    }

    async fn get_license(&self, request: Request<pb::GetLicenseRequest>) -> Reply<pb::License> {
        reply(self.license(request).await)
    }

    async fn renew_license(&self, request: Request<pb::RenewLicenseRequest>) -> Reply<pb::License> {
        reply(self.renew(request).await)
    }

    async fn suspend_license(
        &self,
        request: Request<pb::SuspendLicenseRequest>,
    ) -> Reply<pb::License> {
        reply(self.suspend(request).await)
    }

    async fn record_facility_inspection(
        &self,
        request: Request<pb::RecordFacilityInspectionRequest>,
    ) -> Reply<pb::FacilityInspection> {
        reply(self.compliance_inspection(request).await)
    }
}

type Outcome<T> = Result<T, LicensingError>;

/// Reads.
impl LicensingApi {
    async fn license_types(
        &self,
        request: Request<pb::ListLicenseTypesRequest>,
    ) -> Outcome<pb::ListLicenseTypesResponse> {
        caller(&request)?;
        let mut conn = self.pool.acquire().await?;
        let types = store::license_types(&mut conn).await?;
        Ok(pb::ListLicenseTypesResponse {
            license_types: types.iter().map(convert::license_type_proto).collect(),
        })
    }

    async fn application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Outcome<pb::Application> {
        let who = caller(&request)?;
        let id = convert::id(&request.get_ref().id, "id")?;
        let mut conn = self.pool.acquire().await?;
        let found = store::application(&mut conn, id, false).await?;
        let a = access::application_to_read(who, found)?;
        Ok(application_proto(&a))
    }

    async fn applications_page(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Outcome<pb::ListApplicationsResponse> {
        let who = caller(&request)?;
        let req = request.get_ref();
        let municipality = access::listed_municipality(who, &req.municipality_code)?;
        let limit = page_size(req.page_size)?;
        let status = convert::status_filter(req.status)?;
        let given = |s: &str| Some(s.to_string()).filter(|x| !x.is_empty());
        let (ty, muni) = (given(&req.license_type_code), given(&municipality));
        let filters = format!("{ty:?}|{status:?}|{muni:?}");
        let after = self.tokens.keyset(&req.page_token, &filters)?;
        let mut conn = self.pool.acquire().await?;
        let rows = store::applications(
            &mut conn,
            ty.as_deref(),
            status,
            muni.as_deref(),
            after,
            limit + 1,
        )
        .await?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |a| (a.submitted_at, a.id));
        Ok(pb::ListApplicationsResponse {
            applications: page.iter().map(application_proto).collect(),
            next_page_token,
        })
    }

    async fn license(&self, request: Request<pb::GetLicenseRequest>) -> Outcome<pb::License> {
        let who = caller(&request)?;
        let mut conn = self.pool.acquire().await?;
        let found = store::license(&mut conn, &request.get_ref().number, false).await?;
        let l = access::license_in_scope(who, found)?;
        Ok(license_proto(&l))
    }
}

/// Applications: submission and steps.
impl LicensingApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitApplicationRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = convert::submission_violations(&req);
        let mut tx = self.emitter.begin(&self.pool).await?;
        let found = store::license_type(&mut tx, &req.license_type_code).await?;
        convert::check_license_type(&mut v, &req, found.as_ref());
        v.finish()?;
        let t = found.ok_or(LicensingError::InvalidField {
            field: "license_type_code",
            message: "is required",
        })?;
        if let Claim::Replay(original) = idempotency::claim::<pb::Application>(
            &mut tx,
            "SubmitApplication",
            &req.request_id,
            &req.encode_to_vec(),
        )
        .await?
        {
            return Ok(original);
        }
        let applicant_key = baladiya_platform::pseudonym::keyed(
            "ak1",
            &self.pseudonym_key,
            "applicant",
            &req.applicant_id,
        );
        let new = convert::new_application(&req, applicant_key);
        let a = commands::submit_application(&mut tx, &audit, &t, new).await?;
        let response = application_proto(&a);
        idempotency::complete(&mut tx, "SubmitApplication", &req.request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn return_to_applicant(
        &self,
        request: Request<pb::ReturnForCorrectionRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let reason = convert::required(&req.reason, "reason")?;
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::return_for_correction(&mut tx, &audit, id, &reason).await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn resubmit(
        &self,
        request: Request<pb::ResubmitApplicationRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::resubmit_application(&mut tx, &audit, id, &req.documents).await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn ask_for_clearance(
        &self,
        request: Request<pb::RequestClearanceRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let partner = convert::required(&req.partner_code, "partner_code")?;
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::request_clearance(&mut tx, &audit, id, &partner).await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn clearance_answer(
        &self,
        request: Request<pb::RecordClearanceRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        access::may_record_clearance(&audit.caller, &req.partner_code)?;
        if !req.granted && req.note.trim().is_empty() {
            return Err(LicensingError::InvalidField {
                field: "note",
                message: "is required when a clearance is refused",
            });
        }
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::record_clearance(
            &mut tx,
            &audit,
            id,
            &req.partner_code,
            req.granted,
            req.note.trim(),
        )
        .await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn inspection_appointment(
        &self,
        request: Request<pb::ScheduleInspectionRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let when =
            req.scheduled_for
                .as_ref()
                .and_then(instant)
                .ok_or(LicensingError::InvalidField {
                    field: "scheduled_for",
                    message: "is required",
                })?;
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::schedule_inspection(&mut tx, &audit, id, &req.kind, when).await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn inspection_result(
        &self,
        request: Request<pb::RecordInspectionRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::record_inspection(
            &mut tx,
            &audit,
            id,
            &req.kind,
            req.passed,
            req.notes.trim(),
        )
        .await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveApplicationRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::approve_application(&mut tx, &audit, id).await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }

    async fn reject(
        &self,
        request: Request<pb::RejectApplicationRequest>,
    ) -> Outcome<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let reason = convert::required(&req.reason, "reason")?;
        let id = convert::id(&req.id, "id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let a = commands::reject_application(&mut tx, &audit, id, &reason).await?;
        tx.commit().await?;
        Ok(application_proto(&a))
    }
}

/// Licenses and compliance inspections.
impl LicensingApi {
    async fn issue(&self, request: Request<pb::IssueLicenseRequest>) -> Outcome<pb::License> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let id = convert::id(&req.application_id, "application_id")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let l = commands::issue_license(&mut tx, &audit, id).await?;
        tx.commit().await?;
        Ok(license_proto(&l))
    }

    async fn renew(&self, request: Request<pb::RenewLicenseRequest>) -> Outcome<pb::License> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        idempotency::check_request_id(&req.request_id, &mut v);
        v.require(&req.number, "number");
        v.finish()?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        if let Claim::Replay(original) = idempotency::claim::<pb::License>(
            &mut tx,
            "RenewLicense",
            &req.request_id,
            &req.encode_to_vec(),
        )
        .await?
        {
            return Ok(original);
        }
        let l = commands::renew_license(&mut tx, &audit, &req.number).await?;
        let response = license_proto(&l);
        idempotency::complete(&mut tx, "RenewLicense", &req.request_id, &response).await?;
        tx.commit().await?;
        Ok(response)
    }

    async fn suspend(&self, request: Request<pb::SuspendLicenseRequest>) -> Outcome<pb::License> {
        let audit = Audit::of(&request)?;
        let req = request.get_ref();
        let reason = convert::required(&req.reason, "reason")?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        let l = commands::suspend_license(&mut tx, &audit, &req.number, &reason).await?;
        tx.commit().await?;
        Ok(license_proto(&l))
    }

    async fn compliance_inspection(
        &self,
        request: Request<pb::RecordFacilityInspectionRequest>,
    ) -> Outcome<pb::FacilityInspection> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let now = self.clock.now();
        let report = convert::inspection_report(&req, now, self.backdating)?;
        access::may_record_facility_inspection(
            &audit.caller,
            &report.operator_code,
            report.private_operator(),
        )?;
        let mut tx = self.emitter.begin(&self.pool).await?;
        if let Claim::Replay(original) = idempotency::claim::<pb::FacilityInspection>(
            &mut tx,
            "RecordFacilityInspection",
            &req.request_id,
            &req.encode_to_vec(),
        )
        .await?
        {
            return Ok(original);
        }
        let inspection = commands::record_facility_inspection(
            &mut tx,
            &audit,
            report,
            self.suspend_on_critical,
            now,
        )
        .await?;
        let response = convert::facility_inspection_proto(&inspection);
        idempotency::complete(
            &mut tx,
            "RecordFacilityInspection",
            &req.request_id,
            &response,
        )
        .await?;
        tx.commit().await?;
        Ok(response)
    }
}
