//! `baladiya.licensing.v1.LicensingService`.

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{CallerIdentity, Role, caller};
use baladiya_platform::backdating::BackdatingBound;
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, ErrorKind, Violations};
use baladiya_platform::events::{EventType, OutboundEvent, outbox};
use baladiya_platform::idempotency::{self, Claim};
use baladiya_platform::paging::{PageTokens, page_size};
use baladiya_proto::common::v1::LocalizedText;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::licensing::events::v1 as ev;
use baladiya_proto::licensing::v1 as pb;
use chrono::{DateTime, Datelike, Utc};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, LicenseType, Progress, Status as AppStatus, StepError};
use crate::store::{self, ApplicationRow, LicenseRow};

const SERVICE: &str = "licensing";

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct LicensingApi {
    pub pool: PgPool,
    pub clock: Clock,
    pub tokens: PageTokens,
    pub pseudonym_key: Vec<u8>,
    pub suspend_on_critical: bool,
    /// How far before now an inspection may be said to have happened.
    pub backdating: BackdatingBound,
}

type Reply<T> = Result<Response<T>, Status>;

/// `NOT_FOUND` for those who may know, `PERMISSION_DENIED` for the others.
fn absent(who: &CallerIdentity, what: &str) -> ApiError {
    if who.may_know_absence() {
        ApiError::not_found(what)
    } else {
        ApiError::permission_denied(format!("not a {what} you may act on"))
    }
}

fn step_error(e: StepError) -> ApiError {
    match e {
        StepError::OutOfOrder(m) => ApiError::failed_precondition(m),
        StepError::Field { field, message } => ApiError::invalid_field(field, message),
    }
}

fn status_proto(s: AppStatus) -> i32 {
    (match s {
        AppStatus::UnderReview => pb::ApplicationStatus::UnderReview,
        AppStatus::Returned => pb::ApplicationStatus::Returned,
        AppStatus::PendingClearances => pb::ApplicationStatus::PendingClearances,
        AppStatus::InspectionScheduled => pb::ApplicationStatus::InspectionScheduled,
        AppStatus::Approved => pb::ApplicationStatus::Approved,
        AppStatus::Rejected => pb::ApplicationStatus::Rejected,
        AppStatus::Issued => pb::ApplicationStatus::Issued,
    }) as i32
}

fn application_proto(a: &ApplicationRow) -> pb::Application {
    pb::Application {
        id: a.id.to_string(),
        tracking_number: a.tracking_number.clone(),
        license_type_code: a.license_type_code.clone(),
        status: status_proto(a.progress.status),
        municipality_code: a.municipality_code.clone(),
        facility_name: a.facility_name.clone(),
        activity: a.activity.clone(),
        documents: a.progress.documents.clone(),
        clearances: a
            .progress
            .clearances
            .iter()
            .map(|c| pb::Clearance {
                partner_code: c.partner_code.clone(),
                state: c.state.clone(),
                requested_at: Some(timestamp(c.requested_at)),
                recorded_at: c.recorded_at.map(timestamp),
                note: c.note.clone(),
            })
            .collect(),
        inspections: a
            .progress
            .inspections
            .iter()
            .map(|i| pb::Inspection {
                kind: i.kind.clone(),
                state: i.state.clone(),
                scheduled_for: Some(timestamp(i.scheduled_for)),
                recorded_at: i.recorded_at.map(timestamp),
                notes: i.notes.clone(),
            })
            .collect(),
        reason: a.reason.clone(),
        submitted_at: Some(timestamp(a.submitted_at)),
        license_number: a.license_number.clone().unwrap_or_default(),
        etag: a.version.to_string(),
    }
}

fn license_proto(l: &LicenseRow) -> pb::License {
    let status = match l.status.as_str() {
        "active" => pb::LicenseStatus::Active,
        "suspended" => pb::LicenseStatus::Suspended,
        "expired" => pb::LicenseStatus::Expired,
        "renewed" => pb::LicenseStatus::Renewed,
        _ => pb::LicenseStatus::Unspecified,
    };
    pb::License {
        number: l.number.clone(),
        license_type_code: l.license_type_code.clone(),
        application_id: l.application_id.to_string(),
        municipality_code: l.municipality_code.clone(),
        facility_name: l.facility_name.clone(),
        activity: l.activity.clone(),
        status: status as i32,
        valid_from: Some(timestamp(l.valid_from)),
        valid_to: Some(timestamp(l.valid_to)),
        renews: l.renews.clone().unwrap_or_default(),
        suspension_reason: l.suspension_reason.clone().unwrap_or_default(),
    }
}

fn type_proto(t: &LicenseType) -> pb::LicenseType {
    pb::LicenseType {
        code: t.code.clone(),
        name: Some(LocalizedText {
            ar: t.name_ar.clone(),
            en: t.name_en.clone(),
        }),
        target_days: t.target_days,
        required_documents: t.required_documents.clone(),
        required_clearances: t
            .required_clearances
            .iter()
            .map(|c| pb::ClearanceRequirement {
                partner_code: c.partner_code.clone(),
                description: c.description.clone(),
            })
            .collect(),
        required_inspections: t.required_inspections.clone(),
        validity_days: t.validity_days,
        renewal_window_days: t.renewal_window_days,
        grace_days: t.grace_days,
    }
}

/// Puts an event in the outbox: it happened at `at` and was recorded at
/// `recorded_at`, which the event carries where it is later (an inspection
/// recorded after it took place, an expiry found by the sweep).
#[allow(clippy::too_many_arguments)]
async fn emit<M: prost::Message + prost::Name>(
    conn: &mut PgConnection,
    aggregate: &'static str,
    event: &'static str,
    municipality: &str,
    scope: &str,
    subject: &str,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    payload: impl FnOnce(Option<EventMeta>) -> M,
) -> Result<(), ApiError> {
    let id = Uuid::now_v7();
    let meta = Some(EventMeta {
        event_id: id.to_string(),
        occurred_at: Some(timestamp(at)),
        aggregate_id: subject.to_string(),
        recorded_at: (recorded_at > at).then(|| timestamp(recorded_at)),
    });
    let out = OutboundEvent::new(
        SERVICE,
        EventType::new("licensing", aggregate, event),
        &[municipality, scope],
        id,
        subject,
        at,
        &payload(meta),
    )
    .recorded(recorded_at);
    outbox::enqueue(conn, &out)
        .await
        .map_err(|e| ApiError::internal(&e))
}

fn application_ref(a: &ApplicationRow, t: &LicenseType) -> Option<ev::ApplicationRef> {
    Some(ev::ApplicationRef {
        application_id: a.id.to_string(),
        tracking_number: a.tracking_number.clone(),
        license_type_code: a.license_type_code.clone(),
        municipality_code: a.municipality_code.clone(),
        applicant_key: a.applicant_key.clone(),
        target_days: t.target_days,
    })
}

/// What a step emits besides its name.
#[derive(Debug, Default)]
struct StepFacts {
    partner_code: String,
    positive: bool,
    inspection_kind: String,
    note: String,
}

fn parse_id(text: &str, field: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid_field(field, "must be a UUID"))
}

impl LicensingApi {
    fn pseudonym(&self, label: &str, value: &str) -> String {
        baladiya_platform::pseudonym::keyed("ak1", &self.pseudonym_key, label, value)
    }

    /// One application step: lock, check, change, record, emit.
    async fn step(
        &self,
        audit: &Audit,
        id: &str,
        event: &'static str,
        change: impl FnOnce(
            &mut ApplicationRow,
            &LicenseType,
            DateTime<Utc>,
        ) -> Result<StepFacts, StepError>,
    ) -> Reply<pb::Application> {
        let who = &audit.caller;
        let id = parse_id(id, "id")?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        // Stamped under the outbox fence: see `baladiya_platform::events::watermark`.
        let now = outbox::fenced_now(&mut tx, &self.clock)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let mut a = store::application(&mut tx, id, true)
            .await
            .map_err(ApiError::from)?
            .filter(|a| who.covers_municipality(&a.municipality_code))
            .ok_or_else(|| absent(who, "application"))?;
        let t = store::license_type(&mut tx, &a.license_type_code)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::internal(&"application of an unknown license type"))?;
        let facts = change(&mut a, &t, now).map_err(step_error)?;
        a.version += 1;
        a.last_step_at = now;
        store::update_application(&mut tx, &a)
            .await
            .map_err(ApiError::from)?;
        emit(
            &mut tx,
            "application",
            event,
            &a.municipality_code,
            &a.license_type_code,
            &a.id.to_string(),
            now,
            now,
            |meta| ev::ApplicationStep {
                meta,
                application: application_ref(&a, &t),
                partner_code: facts.partner_code,
                positive: facts.positive,
                inspection_kind: facts.inspection_kind,
                note: facts.note,
            },
        )
        .await?;
        audit.record(&mut tx, now, &a.id.to_string()).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(application_proto(&a)))
    }
}

/// Puts a license event (issued, renewed, suspended, expired) in the outbox:
/// it happened at `at`, and was recorded at `recorded_at`.
async fn license_changed(
    conn: &mut PgConnection,
    event: &'static str,
    l: &LicenseRow,
    at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
) -> Result<(), ApiError> {
    emit(
        conn,
        "license",
        event,
        &l.municipality_code,
        &l.license_type_code,
        &l.number,
        at,
        recorded_at,
        |meta| ev::LicenseChanged {
            meta,
            license_number: l.number.clone(),
            license_type_code: l.license_type_code.clone(),
            municipality_code: l.municipality_code.clone(),
            holder_key: l.holder_key.clone(),
            application_id: l.application_id.to_string(),
            valid_from: Some(timestamp(l.valid_from)),
            valid_to: Some(timestamp(l.valid_to)),
            renews: l.renews.clone().unwrap_or_default(),
            submitted_at: Some(timestamp(l.submitted_at)),
        },
    )
    .await
}

/// Marks licenses past validity and grace as expired, each once.
pub async fn expire(pool: &PgPool, clock: &Clock) -> Result<usize, ApiError> {
    let now = clock.now();
    let mut tx = pool.begin().await?;
    let due = store::expired(&mut tx, now, 100).await?;
    for l in &due {
        store::set_license_status(&mut tx, &l.number, "expired", None).await?;
        license_changed(&mut tx, "expired", l, l.valid_to, now).await?;
    }
    tx.commit().await?;
    outbox::committed(crate::SCHEMA);
    Ok(due.len())
}

#[tonic::async_trait]
impl pb::licensing_service_server::LicensingService for LicensingApi {
    async fn list_license_types(
        &self,
        request: Request<pb::ListLicenseTypesRequest>,
    ) -> Reply<pb::ListLicenseTypesResponse> {
        caller(&request)?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let types = store::license_types(&mut conn)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListLicenseTypesResponse {
            license_types: types.iter().map(type_proto).collect(),
        }))
    }

    async fn submit_application(
        &self,
        request: Request<pb::SubmitApplicationRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        idempotency::check_request_id(&req.request_id, &mut v);
        v.require(&req.applicant_id, "applicant_id");
        v.require(&req.municipality_code, "municipality_code");
        v.require(&req.facility_name, "facility_name");
        v.check(
            req.facility_name.chars().count() <= 300,
            "facility_name",
            "must be at most 300 characters",
        );
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        // Stamped under the outbox fence: see `baladiya_platform::events::watermark`.
        let now = outbox::fenced_now(&mut tx, &self.clock)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let t = store::license_type(&mut tx, &req.license_type_code)
            .await
            .map_err(ApiError::from)?;
        match &t {
            None if req.license_type_code.trim().is_empty() => {
                v.add("license_type_code", "is required");
            }
            None => v.add(
                "license_type_code",
                format!("'{}' is not a license type", req.license_type_code),
            ),
            Some(t) => {
                for d in domain::missing_documents(t, &req.documents) {
                    v.add(
                        format!("documents.{d}"),
                        "is required for this license type",
                    );
                }
            }
        }
        v.finish()?;
        let t = t.ok_or_else(|| ApiError::invalid_field("license_type_code", "is required"))?;
        if let Claim::Replay(original) = idempotency::claim::<pb::Application>(
            &mut tx,
            "SubmitApplication",
            &req.request_id,
            &req.encode_to_vec(),
        )
        .await?
        {
            return Ok(Response::new(original));
        }
        let seq = store::next_number(&mut tx, "application_seq")
            .await
            .map_err(ApiError::from)?;
        let a = ApplicationRow {
            id: Uuid::now_v7(),
            tracking_number: format!("APP-{}-{seq:07}", now.year()),
            license_type_code: t.code.clone(),
            applicant_key: self.pseudonym("applicant", &req.applicant_id),
            municipality_code: req.municipality_code.trim().to_string(),
            facility_name: req.facility_name.trim().to_string(),
            activity: req.activity.trim().to_string(),
            progress: Progress {
                status: AppStatus::UnderReview,
                documents: req.documents.clone(),
                clearances: vec![],
                inspections: vec![],
            },
            reason: String::new(),
            submitted_at: now,
            last_step_at: now,
            version: 1,
            license_number: None,
        };
        store::insert_application(&mut tx, &a)
            .await
            .map_err(ApiError::from)?;
        emit(
            &mut tx,
            "application",
            "submitted",
            &a.municipality_code,
            &a.license_type_code,
            &a.id.to_string(),
            now,
            now,
            |meta| ev::ApplicationStep {
                meta,
                application: application_ref(&a, &t),
                ..Default::default()
            },
        )
        .await?;
        let response = application_proto(&a);
        idempotency::complete(&mut tx, "SubmitApplication", &req.request_id, &response).await?;
        audit.record(&mut tx, now, &a.id.to_string()).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(response))
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Reply<pb::Application> {
        let who = caller(&request)?.clone();
        let id = parse_id(&request.get_ref().id, "id")?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        // A partner reads the applications it was asked to clear; an operator
        // of a municipality that municipality's.
        let a = store::application(&mut conn, id, false)
            .await
            .map_err(ApiError::from)?
            .filter(|a| {
                who.covers_municipality(&a.municipality_code)
                    && (who.role != Role::Partner
                        || a.progress
                            .clearances
                            .iter()
                            .any(|c| Some(c.partner_code.as_str()) == who.partner.as_deref()))
            })
            .ok_or_else(|| absent(&who, "application"))?;
        Ok(Response::new(application_proto(&a)))
    }

    async fn list_applications(
        &self,
        request: Request<pb::ListApplicationsRequest>,
    ) -> Reply<pb::ListApplicationsResponse> {
        let who = caller(&request)?.clone();
        let mut req = request.into_inner();
        if who.role == Role::Operator
            && let Some(own) = &who.municipality
        {
            if !req.municipality_code.is_empty() && req.municipality_code != *own {
                return Err(ApiError::permission_denied(
                    "operators see their own municipality only",
                )
                .into());
            }
            req.municipality_code = own.clone();
        }
        let limit = page_size(req.page_size)?;
        let status = AppStatus::ALL
            .into_iter()
            .find(|s| status_proto(*s) == req.status);
        if req.status != 0 && status.is_none() {
            return Err(ApiError::invalid_field("status", "is not an application status").into());
        }
        let opt = |s: &str| Some(s.to_string()).filter(|x| !x.is_empty());
        let (ty, muni) = (opt(&req.license_type_code), opt(&req.municipality_code));
        let filters = format!("{ty:?}|{status:?}|{muni:?}");
        let after = self.tokens.keyset(&req.page_token, &filters)?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let rows = store::applications(
            &mut conn,
            ty.as_deref(),
            status,
            muni.as_deref(),
            after,
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |a| (a.submitted_at, a.id));
        Ok(Response::new(pb::ListApplicationsResponse {
            applications: page.iter().map(application_proto).collect(),
            next_page_token,
        }))
    }

    async fn return_for_correction(
        &self,
        request: Request<pb::ReturnForCorrectionRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        if req.reason.trim().is_empty() {
            return Err(ApiError::invalid_field("reason", "is required").into());
        }
        self.step(&audit, &req.id, "returned_for_correction", |a, _, _| {
            a.progress.return_for_correction()?;
            a.reason = req.reason.trim().to_string();
            Ok(StepFacts {
                note: a.reason.clone(),
                ..Default::default()
            })
        })
        .await
    }

    async fn resubmit_application(
        &self,
        request: Request<pb::ResubmitApplicationRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        self.step(&audit, &req.id, "resubmitted", |a, t, _| {
            let mut docs = a.progress.documents.clone();
            docs.extend(req.documents.iter().cloned());
            if let Some(d) = domain::missing_documents(t, &docs).first() {
                return Err(StepError::Field {
                    field: format!("documents.{d}"),
                    message: "is required for this license type".into(),
                });
            }
            a.progress.resubmit(&req.documents)?;
            Ok(StepFacts::default())
        })
        .await
    }

    async fn request_clearance(
        &self,
        request: Request<pb::RequestClearanceRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let partner = req.partner_code.trim().to_string();
        if partner.is_empty() {
            return Err(ApiError::invalid_field("partner_code", "is required").into());
        }
        self.step(&audit, &req.id, "clearance_requested", |a, _, now| {
            a.progress.request_clearance(&partner, now)?;
            Ok(StepFacts {
                partner_code: partner.clone(),
                ..Default::default()
            })
        })
        .await
    }

    async fn record_clearance(
        &self,
        request: Request<pb::RecordClearanceRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let who = &audit.caller;
        let req = request.into_inner();
        // The partner body itself records its clearance (or an admin for it).
        let own = who.role == Role::Admin
            || (who.role == Role::Partner
                && who.partner.as_deref() == Some(req.partner_code.as_str()));
        if !own {
            return Err(ApiError::permission_denied(
                "only the partner body records its own clearance",
            )
            .into());
        }
        if !req.granted && req.note.trim().is_empty() {
            return Err(
                ApiError::invalid_field("note", "is required when a clearance is refused").into(),
            );
        }
        self.step(&audit, &req.id, "clearance_recorded", |a, _, now| {
            a.progress
                .record_clearance(&req.partner_code, req.granted, req.note.trim(), now)?;
            Ok(StepFacts {
                partner_code: req.partner_code.clone(),
                positive: req.granted,
                note: req.note.trim().to_string(),
                ..Default::default()
            })
        })
        .await
    }

    async fn schedule_inspection(
        &self,
        request: Request<pb::ScheduleInspectionRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let when = req
            .scheduled_for
            .as_ref()
            .and_then(instant)
            .ok_or_else(|| ApiError::invalid_field("scheduled_for", "is required"))?;
        self.step(&audit, &req.id, "inspection_scheduled", |a, t, _| {
            a.progress.schedule_inspection(t, &req.kind, when)?;
            Ok(StepFacts {
                inspection_kind: req.kind.clone(),
                ..Default::default()
            })
        })
        .await
    }

    async fn record_inspection(
        &self,
        request: Request<pb::RecordInspectionRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        self.step(&audit, &req.id, "inspection_recorded", |a, _, now| {
            a.progress
                .record_inspection(&req.kind, req.passed, req.notes.trim(), now)?;
            Ok(StepFacts {
                inspection_kind: req.kind.clone(),
                positive: req.passed,
                note: req.notes.trim().to_string(),
                ..Default::default()
            })
        })
        .await
    }

    async fn approve_application(
        &self,
        request: Request<pb::ApproveApplicationRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let id = request.into_inner().id;
        self.step(&audit, &id, "approved", |a, t, _| {
            a.progress.approve(t)?;
            Ok(StepFacts {
                positive: true,
                ..Default::default()
            })
        })
        .await
    }

    async fn reject_application(
        &self,
        request: Request<pb::RejectApplicationRequest>,
    ) -> Reply<pb::Application> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        if req.reason.trim().is_empty() {
            return Err(ApiError::invalid_field("reason", "is required").into());
        }
        self.step(&audit, &req.id, "rejected", |a, _, _| {
            a.progress.reject()?;
            a.reason = req.reason.trim().to_string();
            Ok(StepFacts {
                note: a.reason.clone(),
                ..Default::default()
            })
        })
        .await
    }

    async fn issue_license(&self, request: Request<pb::IssueLicenseRequest>) -> Reply<pb::License> {
        let audit = Audit::of(&request)?;
        let id = parse_id(&request.get_ref().application_id, "application_id")?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        // Stamped under the outbox fence: see `baladiya_platform::events::watermark`.
        let now = outbox::fenced_now(&mut tx, &self.clock)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let mut a = store::application(&mut tx, id, true)
            .await
            .map_err(ApiError::from)?
            .filter(|a| audit.caller.covers_municipality(&a.municipality_code))
            .ok_or_else(|| absent(&audit.caller, "application"))?;
        let t = store::license_type(&mut tx, &a.license_type_code)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::internal(&"unknown type"))?;
        a.progress.issue().map_err(step_error)?;
        let number = store::next_license_number(&mut tx, &t.code, now)
            .await
            .map_err(ApiError::from)?;
        let l = LicenseRow {
            number,
            license_type_code: t.code.clone(),
            application_id: a.id,
            municipality_code: a.municipality_code.clone(),
            facility_name: a.facility_name.clone(),
            activity: a.activity.clone(),
            holder_key: a.applicant_key.clone(),
            status: "active".into(),
            valid_from: now,
            valid_to: now + chrono::Duration::days(i64::from(t.validity_days)),
            renews: None,
            suspension_reason: None,
            submitted_at: a.submitted_at,
        };
        store::insert_license(&mut tx, &l)
            .await
            .map_err(ApiError::from)?;
        a.license_number = Some(l.number.clone());
        a.version += 1;
        a.last_step_at = now;
        store::update_application(&mut tx, &a)
            .await
            .map_err(ApiError::from)?;
        license_changed(&mut tx, "issued", &l, now, now).await?;
        audit.record(&mut tx, now, &l.number).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(license_proto(&l)))
    }

    async fn get_license(&self, request: Request<pb::GetLicenseRequest>) -> Reply<pb::License> {
        let who = caller(&request)?.clone();
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let l = store::license(&mut conn, &request.get_ref().number, false)
            .await
            .map_err(ApiError::from)?
            .filter(|l| who.covers_municipality(&l.municipality_code))
            .ok_or_else(|| absent(&who, "license"))?;
        Ok(Response::new(license_proto(&l)))
    }

    async fn renew_license(&self, request: Request<pb::RenewLicenseRequest>) -> Reply<pb::License> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        idempotency::check_request_id(&req.request_id, &mut v);
        v.require(&req.number, "number");
        v.finish()?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        // Stamped under the outbox fence: see `baladiya_platform::events::watermark`.
        let now = outbox::fenced_now(&mut tx, &self.clock)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        if let Claim::Replay(original) = idempotency::claim::<pb::License>(
            &mut tx,
            "RenewLicense",
            &req.request_id,
            &req.encode_to_vec(),
        )
        .await?
        {
            return Ok(Response::new(original));
        }
        let old = store::license(&mut tx, &req.number, true)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("license"))?;
        if old.status != "active" {
            return Err(ApiError::failed_precondition(format!(
                "only an active license is renewed; it is {}",
                old.status
            ))
            .into());
        }
        let t = store::license_type(&mut tx, &old.license_type_code)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::internal(&"unknown type"))?;
        let (from, to) = domain::renewal(&t, old.valid_to, now).map_err(step_error)?;
        let number = store::next_license_number(&mut tx, &t.code, now)
            .await
            .map_err(ApiError::from)?;
        let new = LicenseRow {
            number,
            valid_from: from,
            valid_to: to,
            renews: Some(old.number.clone()),
            status: "active".into(),
            suspension_reason: None,
            ..old.clone()
        };
        store::insert_license(&mut tx, &new)
            .await
            .map_err(ApiError::from)?;
        store::set_license_status(&mut tx, &old.number, "renewed", None)
            .await
            .map_err(ApiError::from)?;
        license_changed(&mut tx, "renewed", &new, now, now).await?;
        let response = license_proto(&new);
        idempotency::complete(&mut tx, "RenewLicense", &req.request_id, &response).await?;
        audit.record(&mut tx, now, &new.number).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(response))
    }

    async fn suspend_license(
        &self,
        request: Request<pb::SuspendLicenseRequest>,
    ) -> Reply<pb::License> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        if req.reason.trim().is_empty() {
            return Err(ApiError::invalid_field("reason", "is required").into());
        }
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        // Stamped under the outbox fence: see `baladiya_platform::events::watermark`.
        let now = outbox::fenced_now(&mut tx, &self.clock)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let l = store::license(&mut tx, &req.number, true)
            .await
            .map_err(ApiError::from)?
            .filter(|l| audit.caller.covers_municipality(&l.municipality_code))
            .ok_or_else(|| absent(&audit.caller, "license"))?;
        if l.status != "active" {
            return Err(ApiError::new(
                ErrorKind::FailedPrecondition,
                format!("only an active license is suspended; it is {}", l.status),
            )
            .into());
        }
        store::set_license_status(&mut tx, &l.number, "suspended", Some(req.reason.trim()))
            .await
            .map_err(ApiError::from)?;
        license_changed(&mut tx, "suspended", &l, now, now).await?;
        let l = store::license(&mut tx, &req.number, false)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("license"))?;
        audit.record(&mut tx, now, &l.number).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(license_proto(&l)))
    }

    async fn record_facility_inspection(
        &self,
        request: Request<pb::RecordFacilityInspectionRequest>,
    ) -> Reply<pb::FacilityInspection> {
        let audit = Audit::of(&request)?;
        let who = &audit.caller;
        let req = request.into_inner();
        let mut v = Violations::new();
        idempotency::check_request_id(&req.request_id, &mut v);
        v.require(&req.license_number, "license_number");
        v.check(
            matches!(req.activity.as_str(), "PUBLIC_HEALTH" | "COMMERCIAL_MARKET"),
            "activity",
            "must be PUBLIC_HEALTH or COMMERCIAL_MARKET",
        );
        v.require(&req.operator_code, "operator_code");
        v.check(
            !req.items.is_empty(),
            "items",
            "at least one checklist item is required",
        );
        for (i, item) in req.items.iter().enumerate() {
            v.require(&item.code, &format!("items[{i}].code"));
            v.check(
                item.passed
                    || pb::Severity::try_from(item.severity)
                        .is_ok_and(|s| s != pb::Severity::Unspecified),
                &format!("items[{i}].severity"),
                "is required for a failed item",
            );
        }
        // When it happened: unset means now; a given instant lies within the
        // back-dating bound, so nobody moves a result into a period already
        // reported.
        let now = self.clock.now();
        let at = match req.inspected_at.as_ref().map(instant) {
            None => now,
            Some(Some(t)) => v
                .absorb(self.backdating.check("inspected_at", t, now))
                .map_or(now, |()| t),
            Some(None) => {
                v.add("inspected_at", "is not a valid timestamp");
                now
            }
        };
        v.finish()?;
        let private = req.operator_code != "MUNICIPAL";
        let allowed = match who.role {
            Role::Admin | Role::Operator => true,
            Role::Partner => private && who.partner.as_deref() == Some(req.operator_code.as_str()),
            _ => false,
        };
        if !allowed {
            return Err(ApiError::permission_denied(
                "inspections are recorded by municipal inspectors or the operator itself",
            )
            .into());
        }
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        if let Claim::Replay(original) = idempotency::claim::<pb::FacilityInspection>(
            &mut tx,
            "RecordFacilityInspection",
            &req.request_id,
            &req.encode_to_vec(),
        )
        .await?
        {
            return Ok(Response::new(original));
        }
        let license = store::license(&mut tx, &req.license_number, true)
            .await
            .map_err(ApiError::from)?
            .filter(|l| who.covers_municipality(&l.municipality_code))
            .ok_or_else(|| absent(who, "license"))?;
        let failed = |s: pb::Severity| {
            req.items
                .iter()
                .filter(|i| !i.passed && i.severity == s as i32)
                .count() as u32
        };
        let (minor, major, critical) = (
            failed(pb::Severity::Minor),
            failed(pb::Severity::Major),
            failed(pb::Severity::Critical),
        );
        let compliant = req.items.iter().all(|i| i.passed);
        let suspend = critical > 0 && self.suspend_on_critical && license.status == "active";
        let id = Uuid::now_v7();
        let items = serde_json::Value::Array(
            req.items
                .iter()
                .map(|i| serde_json::json!({ "code": i.code, "passed": i.passed, "severity": i.severity, "note": i.note }))
                .collect(),
        );
        store::insert_facility_inspection(
            &mut tx,
            id,
            &license,
            &req.activity,
            &req.operator_code,
            private,
            compliant,
            &items,
            at,
            now,
            suspend,
        )
        .await
        .map_err(ApiError::from)?;
        if suspend {
            store::set_license_status(
                &mut tx,
                &license.number,
                "suspended",
                Some("critical violation in a compliance inspection"),
            )
            .await
            .map_err(ApiError::from)?;
            license_changed(&mut tx, "suspended", &license, at, now).await?;
        }
        emit(
            &mut tx,
            "facility",
            "inspection_recorded",
            &license.municipality_code,
            &req.activity,
            &id.to_string(),
            at,
            now,
            |meta| ev::FacilityInspectionRecorded {
                meta,
                inspection_id: id.to_string(),
                license_number: license.number.clone(),
                activity: req.activity.clone(),
                operator_code: req.operator_code.clone(),
                private_operator: private,
                compliant,
                minor_violations: minor,
                major_violations: major,
                critical_violations: critical,
                municipality_code: license.municipality_code.clone(),
            },
        )
        .await?;
        let response = pb::FacilityInspection {
            id: id.to_string(),
            license_number: license.number.clone(),
            activity: req.activity.clone(),
            operator_code: req.operator_code.clone(),
            private_operator: private,
            compliant,
            items: req.items.clone(),
            inspected_at: Some(timestamp(at)),
            suspended_license: suspend,
            municipality_code: license.municipality_code.clone(),
            recorded_at: Some(timestamp(now)),
        };
        idempotency::complete(
            &mut tx,
            "RecordFacilityInspection",
            &req.request_id,
            &response,
        )
        .await?;
        audit
            .record_action(&mut tx, now, at, &id.to_string())
            .await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        Ok(Response::new(response))
    }
}
