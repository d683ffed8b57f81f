//! `baladiya.intake.v1.IntakeService`: request to domain, domain to store,
//! row to response.

use std::sync::{Arc, Mutex};

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{CallerIdentity, Role, caller};
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, ErrorKind, Violations};
use baladiya_platform::events::{EventType, OutboundEvent, outbox};
use baladiya_platform::idempotency::{self, Claim};
use baladiya_platform::paging::{DEFAULT_PAGE_SIZE, PageTokens, page_size};
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::intake::events::v1 as events;
use baladiya_proto::intake::v1 as pb;
use chrono::{DateTime, Datelike, Utc};
use prost::Message;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::CatalogueCache;
use crate::batch::SubmitWriter;
use crate::cache::ReportCache;
use crate::domain::{self, AttachmentRef, Category, Priority, Submission, ValidReport};
use crate::pii::Vault;
use crate::store::{self, DuplicateSearch, Inserted, NewReport, ReportFilter, ReportRow, Submit};

const SERVICE: &str = "intake";
pub const REPORT_RECEIVED: EventType = EventType::new("intake", "report", "received");
pub const REPORT_DUPLICATE_LINKED: EventType =
    EventType::new("intake", "report", "duplicate_linked");
pub const REPORT_RATED: EventType = EventType::new("intake", "report", "rated");
const TRACKING_BLOCK: i64 = 100;

/// Channels as stored, in proto order.
const CHANNELS: [(pb::Channel, &str); 10] = [
    (pb::Channel::CallCenter940, "call_center_940"),
    (pb::Channel::BaladyPortal, "balady_portal"),
    (pb::Channel::MobileApp, "mobile_app"),
    (pb::Channel::Kiosk, "kiosk"),
    (pb::Channel::SocialMedia, "social_media"),
    (pb::Channel::MunicipalityOffice, "municipality_office"),
    (pb::Channel::MobileServiceCenter, "mobile_service_center"),
    (pb::Channel::MunicipalAdvisor, "municipal_advisor"),
    (pb::Channel::PartnerSystem, "partner_system"),
    (pb::Channel::Open311, "open311"),
];

/// Statuses as stored.
const STATUSES: [(pb::ReportStatus, &str); 8] = [
    (pb::ReportStatus::Received, "received"),
    (pb::ReportStatus::Routed, "routed"),
    (pb::ReportStatus::Acknowledged, "acknowledged"),
    (pb::ReportStatus::InProgress, "in_progress"),
    (pb::ReportStatus::OnHold, "on_hold"),
    (pb::ReportStatus::Resolved, "resolved"),
    (pb::ReportStatus::Closed, "closed"),
    (pb::ReportStatus::Reopened, "reopened"),
];

/// The stored name of a proto enum value, from a table of pairs.
fn name_of<E: Copy + Into<i32>>(table: &[(E, &'static str)], value: i32) -> Option<&'static str> {
    table
        .iter()
        .find(|(e, _)| (*e).into() == value)
        .map(|(_, n)| *n)
}

/// The proto enum value of a stored name (0, unspecified, if unknown).
fn value_of<E: Copy + Into<i32>>(table: &[(E, &'static str)], name: &str) -> i32 {
    table
        .iter()
        .find(|(_, n)| *n == name)
        .map_or(0, |(e, _)| (*e).into())
}

fn channel_name(c: i32) -> Option<&'static str> {
    name_of(&CHANNELS, c)
}

fn channel_proto(name: &str) -> i32 {
    value_of(&CHANNELS, name)
}

/// The stored channel a channel caller is, if it is one.
fn own_channel(who: &CallerIdentity) -> Option<&'static str> {
    who.channel
        .as_deref()
        .and_then(pb::Channel::from_str_name)
        .and_then(|c| channel_name(c as i32))
}

/// Whether `who` may see a report of `municipality` that came in on `channel`
/// (a channel its own reports; an operator its municipality's).
fn sees(who: &CallerIdentity, municipality: &str, channel: &str) -> bool {
    match who.role {
        Role::Admin => true,
        Role::Operator => who.covers_municipality(municipality),
        Role::Channel => own_channel(who) == Some(channel),
        Role::Partner | Role::Analyst => false,
    }
}

fn status_name(s: i32) -> Option<&'static str> {
    name_of(&STATUSES, s)
}

fn status_proto(name: &str) -> i32 {
    value_of(&STATUSES, name)
}

fn priority_from_proto(p: i32) -> Option<Priority> {
    match common::Priority::try_from(p).ok()? {
        common::Priority::Low => Some(Priority::Low),
        common::Priority::Normal => Some(Priority::Normal),
        common::Priority::High => Some(Priority::High),
        common::Priority::Urgent => Some(Priority::Urgent),
        common::Priority::Unspecified => None,
    }
}

fn priority_proto(p: Priority) -> i32 {
    (match p {
        Priority::Low => common::Priority::Low,
        Priority::Normal => common::Priority::Normal,
        Priority::High => common::Priority::High,
        Priority::Urgent => common::Priority::Urgent,
    }) as i32
}

fn category_proto(c: &Category) -> pb::Category {
    pb::Category {
        code: c.code.clone(),
        name: Some(common::LocalizedText {
            ar: c.name_ar.clone(),
            en: c.name_en.clone(),
        }),
        group: c.group.clone(),
        default_priority: priority_proto(c.default_priority),
        urgent_capable: c.urgent_capable,
        duplicate_radius_meters: c.duplicate_radius_meters,
        duplicate_window_hours: c.duplicate_window_hours,
        active: c.active,
    }
}

fn attachments_proto(a: &[AttachmentRef]) -> Vec<pb::Attachment> {
    a.iter()
        .map(|a| pb::Attachment {
            uri: a.uri.clone(),
            content_type: a.content_type.clone(),
            size_bytes: a.size_bytes,
        })
        .collect()
}

/// A stored report as the API shows it.
pub fn report_proto(r: &ReportRow) -> pb::Report {
    pb::Report {
        id: r.id.to_string(),
        tracking_number: r.tracking_number.clone(),
        status: status_proto(&r.status),
        municipality_code: r.municipality_code.clone(),
        category_code: r.category_code.clone(),
        priority: Priority::parse(&r.priority).map_or(0, priority_proto),
        priority_reason: r.priority_reason.clone(),
        duplicate_of: r.duplicate_of.map(|d| d.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        channel: channel_proto(&r.channel),
        description: r.description.clone(),
        location: Some(common::Location {
            latitude: r.latitude.unwrap_or_default(),
            longitude: r.longitude.unwrap_or_default(),
            national_address_short: r.national_address_short.clone().unwrap_or_default(),
            municipality_code: r.municipality_code.clone(),
        }),
        observed_at: r.observed_at.map(timestamp),
        assignee_code: r.assignee_code.clone().unwrap_or_default(),
        expected_resolution_at: r.expected_resolution_at.map(timestamp),
        supporters: r.supporters.max(0) as u32,
        rating: r.rating_score.map(|score| pb::Rating {
            score: score.max(0) as u32,
            comment: r.rating_comment.clone().unwrap_or_default(),
            rated_at: r.rated_at.map(timestamp),
        }),
        attachments: attachments_proto(&r.attachments),
        status_changed_at: Some(timestamp(r.status_changed_at)),
    }
}

fn meta(id: Uuid, aggregate: Uuid, at: DateTime<Utc>) -> Option<EventMeta> {
    Some(EventMeta {
        event_id: id.to_string(),
        occurred_at: Some(timestamp(at)),
        aggregate_id: aggregate.to_string(),
        recorded_at: None,
    })
}

/// The gRPC service.
pub struct IntakeApi {
    pool: PgPool,
    clock: Clock,
    vault: Vault,
    catalogue: Arc<CatalogueCache>,
    tokens: PageTokens,
    /// The next tracking sequence number and the end of the reserved block.
    tracking: Mutex<(i64, i64)>,
    writer: SubmitWriter,
    cache: Arc<ReportCache>,
}

impl std::fmt::Debug for IntakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeApi").finish()
    }
}

type Reply<T> = Result<Response<T>, Status>;

impl IntakeApi {
    /// The service over its pool, clock, keys and catalogue.
    pub fn new(
        pool: PgPool,
        clock: Clock,
        vault: Vault,
        catalogue: Arc<CatalogueCache>,
        tokens: PageTokens,
        cache: Arc<ReportCache>,
    ) -> Self {
        Self {
            clock,
            vault,
            catalogue,
            writer: SubmitWriter::start(&pool),
            pool,
            tracking: Mutex::new((0, 0)),
            tokens,
            cache,
        }
    }

    /// The next tracking sequence number, reserving a block when needed.
    async fn next_sequence(&self) -> Result<i64, ApiError> {
        {
            let mut t = self.tracking.lock().unwrap_or_else(|p| p.into_inner());
            if t.0 < t.1 {
                t.0 += 1;
                return Ok(t.0 - 1);
            }
        }
        let mut conn = self.pool.acquire().await?;
        let first = store::reserve_tracking_block(&mut conn).await?;
        let mut t = self.tracking.lock().unwrap_or_else(|p| p.into_inner());
        *t = (first + 1, first + TRACKING_BLOCK);
        Ok(first)
    }

    async fn submit(
        &self,
        who_channel: Option<&str>,
        audit: &Audit,
        req: pb::SubmitReportRequest,
    ) -> Result<pb::SubmitReportResponse, ApiError> {
        let catalogue = self.catalogue.get();
        let now = self.clock.now();
        let location = req.location.clone().unwrap_or_default();
        let reporter = req.reporter.clone().unwrap_or_default();
        let attachments: Vec<AttachmentRef> = req
            .attachments
            .iter()
            .map(|a| AttachmentRef {
                uri: a.uri.clone(),
                content_type: a.content_type.clone(),
                size_bytes: a.size_bytes,
            })
            .collect();
        let submission = Submission {
            request_id: &req.request_id,
            channel: channel_name(req.channel),
            category_code: &req.category_code,
            description: &req.description,
            latitude: location.latitude,
            longitude: location.longitude,
            national_address_short: &location.national_address_short,
            municipality_code: &location.municipality_code,
            has_location: req.location.is_some(),
            reporter_name: &reporter.name,
            reporter_phone: &reporter.phone,
            reporter_national_id: &reporter.national_id,
            attachments: &attachments,
            observed_at: req.observed_at.as_ref().map(instant),
            priority_hint: priority_from_proto(req.priority_hint),
        };
        let valid = match domain::validate(&submission, &catalogue, now) {
            Ok(v) => v,
            Err(v) => {
                v.finish()?;
                return Err(ApiError::invalid_field("request", "is invalid"));
            }
        };
        // A channel front-end may only submit as its own channel.
        if let Some(own) = who_channel
            && pb::Channel::from_str_name(own).and_then(|c| channel_name(c as i32))
                != Some(valid.channel)
        {
            return Err(ApiError::permission_denied(
                "a channel may submit only as itself",
            ));
        }
        let area = catalogue
            .area(&valid.municipality_code)
            .ok_or_else(|| ApiError::internal(&"validated municipality has no area"))?;
        let tz: chrono_tz::Tz = area.time_zone.parse().unwrap_or(chrono_tz::Asia::Riyadh);
        let year = now.with_timezone(&tz).year();
        let tracking =
            domain::tracking_number(&area.tracking_prefix, year, self.next_sequence().await?);
        let id = Uuid::now_v7();
        let sealed =
            (!valid.reporter.is_empty()).then(|| self.vault.seal_reporter(&valid.reporter));
        let reporter_key = self.vault.pseudonym(&valid.reporter);
        let digest = idempotency::digest(&req.encode_to_vec());

        let new = NewReport {
            id,
            tracking_number: tracking.clone(),
            request_id: req.request_id.clone(),
            municipality_code: valid.municipality_code.clone(),
            category_code: valid.category.code.clone(),
            priority: valid.priority,
            priority_reason: valid.priority_reason.clone(),
            channel: valid.channel,
            description: valid.description.clone(),
            point: valid.point,
            national_address_short: valid.national_address_short.clone(),
            observed_at: valid.observed_at,
            created_at: now,
            attachments: valid.attachments.clone(),
            reporter_key: reporter_key.clone(),
            reporter: sealed,
        };
        let response = |duplicate_of: Option<Uuid>, status: &str| pb::SubmitReportResponse {
            report: Some(report_proto(&ReportRow {
                id,
                tracking_number: tracking.clone(),
                status: status.to_string(),
                status_changed_at: now,
                municipality_code: valid.municipality_code.clone(),
                category_code: valid.category.code.clone(),
                priority: valid.priority.as_str().into(),
                priority_reason: valid.priority_reason.clone(),
                duplicate_of,
                channel: valid.channel.into(),
                description: valid.description.clone(),
                latitude: valid.point.map(|p| p.lat),
                longitude: valid.point.map(|p| p.lon),
                national_address_short: valid.national_address_short.clone(),
                observed_at: valid.observed_at,
                created_at: now,
                assignee_code: None,
                expected_resolution_at: None,
                supporters: 0,
                attachments: valid.attachments.clone(),
                reporter_key: None,
                rating_score: None,
                rating_comment: None,
                rated_at: None,
            })),
            linked_as_duplicate: duplicate_of.is_some(),
        };
        let fresh = response(None, "received");
        let submit = Submit {
            search: DuplicateSearch {
                category_code: valid.category.code.clone(),
                since: now
                    - chrono::Duration::hours(i64::from(valid.category.duplicate_window_hours)),
                point: valid.point,
                radius_m: f64::from(valid.category.duplicate_radius_meters),
                national_address_short: valid.national_address_short.clone(),
            },
            request_digest: digest.clone(),
            response: fresh.encode_to_vec(),
            event: self.received_event(&valid, id, &tracking, now, reporter_key.as_deref(), None),
            audit: audit.clone(),
            report: new,
        };
        let (outcome, submit) = self.writer.write(submit).await?;
        let new = submit.report;
        match outcome {
            Inserted::New => {
                outbox::committed(crate::SCHEMA);
                Ok(fresh)
            }
            Inserted::SeenBefore => {
                let mut conn = self.pool.acquire().await?;
                Ok(
                    idempotency::replay(&mut conn, "SubmitReport", &req.request_id, &digest)
                        .await?,
                )
            }
            Inserted::Duplicate { master, distance_m } => {
                let mut tx = self.pool.begin().await?;
                let claim = idempotency::claim::<pb::SubmitReportResponse>(
                    &mut tx,
                    "SubmitReport",
                    &req.request_id,
                    &req.encode_to_vec(),
                )
                .await?;
                if let Claim::Replay(original) = claim {
                    return Ok(original);
                }
                store::insert_duplicate(&mut tx, &new, master).await?;
                let master_status = store::report(&mut tx, Some(master), None)
                    .await?
                    .map_or_else(|| "received".to_string(), |m| m.status);
                let linked = response(Some(master), &master_status);
                let received = self.received_event(
                    &valid,
                    id,
                    &tracking,
                    now,
                    reporter_key.as_deref(),
                    Some(master),
                );
                outbox::enqueue(&mut tx, &received)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
                let link_id = Uuid::now_v7();
                let payload = events::ReportLinkedAsDuplicate {
                    meta: meta(link_id, id, now),
                    report_id: id.to_string(),
                    master_report_id: master.to_string(),
                    category_code: valid.category.code.clone(),
                    municipality_code: valid.municipality_code.clone(),
                    channel: channel_proto(valid.channel),
                    reporter_key: reporter_key.clone().unwrap_or_default(),
                    distance_meters: distance_m.round() as u32,
                };
                let event = OutboundEvent::new(
                    SERVICE,
                    REPORT_DUPLICATE_LINKED,
                    &[&valid.municipality_code, &valid.category.code],
                    link_id,
                    id.to_string(),
                    now,
                    &payload,
                );
                outbox::enqueue(&mut tx, &event)
                    .await
                    .map_err(|e| ApiError::internal(&e))?;
                idempotency::complete(&mut tx, "SubmitReport", &req.request_id, &linked).await?;
                audit.record(&mut tx, now, &id.to_string()).await?;
                tx.commit().await?;
                outbox::committed(crate::SCHEMA);
                // Its master gained a supporter.
                self.cache.forget(&master);
                Ok(linked)
            }
        }
    }

    fn received_event(
        &self,
        v: &ValidReport,
        id: Uuid,
        tracking: &str,
        now: DateTime<Utc>,
        reporter_key: Option<&str>,
        duplicate_of: Option<Uuid>,
    ) -> OutboundEvent {
        let event_id = Uuid::now_v7();
        let payload = events::ReportReceived {
            meta: meta(event_id, id, now),
            report_id: id.to_string(),
            tracking_number: tracking.to_string(),
            category_code: v.category.code.clone(),
            category_group: v.category.group.clone(),
            municipality_code: v.municipality_code.clone(),
            location: Some(common::Location {
                latitude: v.point.map_or(0.0, |p| p.lat),
                longitude: v.point.map_or(0.0, |p| p.lon),
                national_address_short: v.national_address_short.clone().unwrap_or_default(),
                municipality_code: v.municipality_code.clone(),
            }),
            channel: channel_proto(v.channel),
            priority: priority_proto(v.priority),
            priority_reason: v.priority_reason.clone(),
            observed_at: v.observed_at.map(timestamp),
            received_at: Some(timestamp(now)),
            reporter_key: reporter_key.unwrap_or_default().to_string(),
            duplicate_of: duplicate_of.map(|d| d.to_string()).unwrap_or_default(),
            attachment_count: v.attachments.len() as u32,
        };
        OutboundEvent::new(
            SERVICE,
            REPORT_RECEIVED,
            &[&v.municipality_code, &v.category.code],
            event_id,
            id.to_string(),
            now,
            &payload,
        )
    }

    fn page_key(req: &pb::ListReportsRequest) -> String {
        let created = req.created.unwrap_or_default();
        format!(
            "{}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}",
            req.municipality_code,
            req.category_code,
            req.status,
            req.channel,
            created.start_time.map(|t| (t.seconds, t.nanos)),
            created.end_time.map(|t| (t.seconds, t.nanos)),
            req.statuses,
            req.category_codes,
        )
    }
}

fn parse_id(text: &str, field: &str) -> Result<Uuid, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid_field(field, "must be a report id (UUID)"))
}

#[tonic::async_trait]
impl pb::intake_service_server::IntakeService for IntakeApi {
    async fn submit_report(
        &self,
        request: Request<pb::SubmitReportRequest>,
    ) -> Reply<pb::SubmitReportResponse> {
        // Who may submit is the policy's (crate baladiya_platform::policy).
        let who = caller(&request)?;
        let own_channel = (who.role == Role::Channel)
            .then(|| who.channel.clone())
            .flatten();
        let audit = Audit::of(&request)?;
        Ok(Response::new(
            self.submit(own_channel.as_deref(), &audit, request.into_inner())
                .await?,
        ))
    }

    async fn get_report(&self, request: Request<pb::GetReportRequest>) -> Reply<pb::Report> {
        let who = caller(&request)?.clone();
        let (id, tracking) = match request.into_inner().key {
            Some(pb::get_report_request::Key::Id(id)) => (Some(parse_id(&id, "id")?), None),
            Some(pb::get_report_request::Key::TrackingNumber(t)) if !t.trim().is_empty() => {
                (None, Some(t.trim().to_uppercase()))
            }
            _ => {
                return Err(ApiError::invalid_field(
                    "key",
                    "an id or a tracking_number is required",
                )
                .into());
            }
        };
        let row = match self.cache.get(id, tracking.as_deref()) {
            Some(kept) => Some(kept),
            None => {
                let epoch = self.cache.epoch();
                let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
                let row = store::report(&mut conn, id, tracking.as_deref())
                    .await
                    .map_err(ApiError::from)?;
                let row = row.map(Arc::new);
                if let Some(r) = &row {
                    self.cache.keep(epoch, r.clone());
                }
                row
            }
        };
        // Whether a report exists is not revealed to those who may not see it.
        let row = match row {
            Some(r) if sees(&who, &r.municipality_code, &r.channel) => r,
            None if who.may_know_absence() => return Err(ApiError::not_found("report").into()),
            _ => return Err(ApiError::permission_denied("not a report you may read").into()),
        };
        Ok(Response::new(report_proto(&row)))
    }

    async fn list_reports(
        &self,
        request: Request<pb::ListReportsRequest>,
    ) -> Reply<pb::ListReportsResponse> {
        let who = caller(&request)?.clone();
        let mut req = request.into_inner();
        // A channel lists its own reports; an operator its municipality's.
        match who.role {
            Role::Channel => {
                let own = own_channel(&who)
                    .ok_or_else(|| ApiError::permission_denied("the token names no channel"))?;
                if req.channel != 0 && channel_name(req.channel) != Some(own) {
                    return Err(
                        ApiError::permission_denied("a channel lists its own reports").into(),
                    );
                }
                req.channel = channel_proto(own);
            }
            Role::Operator if who.municipality.is_some() => {
                let own = who.municipality.clone().unwrap_or_default();
                if !req.municipality_code.is_empty() && req.municipality_code != own {
                    return Err(ApiError::permission_denied(
                        "operators see their own municipality only",
                    )
                    .into());
                }
                req.municipality_code = own;
            }
            _ => {}
        }
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
        let key = Self::page_key(&req);
        let after = v
            .absorb(self.tokens.keyset(&req.page_token, &key))
            .flatten();
        let limit = v.absorb(page_size(req.page_size));
        v.finish()?;
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        let filter = ReportFilter {
            municipality_code: Some(req.municipality_code.clone()).filter(|x| !x.is_empty()),
            category_codes: Some(req.category_code.clone())
                .into_iter()
                .chain(req.category_codes.iter().cloned())
                .filter(|x| !x.is_empty())
                .collect(),
            statuses: Some(req.status)
                .into_iter()
                .chain(req.statuses.iter().copied())
                .filter_map(status_name)
                .map(String::from)
                .collect(),
            channel: channel_name(req.channel).map(String::from),
            created_from: from.flatten(),
            created_to: to.flatten(),
        };
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let rows = store::reports(&mut conn, &filter, after, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &key, |r| (r.created_at, r.id));
        Ok(Response::new(pb::ListReportsResponse {
            reports: page.iter().map(report_proto).collect(),
            next_page_token,
        }))
    }

    async fn rate_report(&self, request: Request<pb::RateReportRequest>) -> Reply<pb::Report> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
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
        let id =
            id.ok_or_else(|| ApiError::invalid_field("report_id", "must be a report id (UUID)"))?;
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let row = store::report_for_update(&mut tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("report"))?;
        if !matches!(row.status.as_str(), "resolved" | "closed") {
            return Err(ApiError::failed_precondition(format!(
                "a report can be rated once it is resolved or closed; it is {}",
                row.status
            ))
            .into());
        }
        if row.rating_score.is_some() {
            return Err(ApiError::new(
                ErrorKind::FailedPrecondition,
                "this report was already rated",
            )
            .into());
        }
        store::rate(&mut tx, id, req.score, comment, now)
            .await
            .map_err(ApiError::from)?;
        let event_id = Uuid::now_v7();
        let payload = events::ReportRated {
            meta: meta(event_id, id, now),
            report_id: id.to_string(),
            score: req.score,
            has_comment: !comment.is_empty(),
            category_code: row.category_code.clone(),
            municipality_code: row.municipality_code.clone(),
            assignee_code: row.assignee_code.clone().unwrap_or_default(),
            channel: channel_proto(&row.channel),
        };
        let event = OutboundEvent::new(
            SERVICE,
            REPORT_RATED,
            &[&row.municipality_code, &row.category_code],
            event_id,
            id.to_string(),
            now,
            &payload,
        );
        outbox::enqueue(&mut tx, &event)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let rated = store::report_for_update(&mut tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("report"))?;
        audit.record(&mut tx, now, &id.to_string()).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        self.cache.forget(&id);
        Ok(Response::new(report_proto(&rated)))
    }

    async fn list_categories(
        &self,
        request: Request<pb::ListCategoriesRequest>,
    ) -> Reply<pb::ListCategoriesResponse> {
        caller(&request)?;
        let include_inactive = request.get_ref().include_inactive;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let catalogue = store::load_catalogue(&mut conn)
            .await
            .map_err(ApiError::from)?;
        let mut categories: Vec<&Category> = catalogue
            .categories
            .values()
            .filter(|c| include_inactive || c.active)
            .collect();
        categories.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(Response::new(pb::ListCategoriesResponse {
            categories: categories.into_iter().map(category_proto).collect(),
        }))
    }

    async fn get_reporter_contact(
        &self,
        request: Request<pb::GetReporterContactRequest>,
    ) -> Reply<pb::Reporter> {
        let audit = Audit::of(&request)?;
        let who = &audit.caller;
        let id = parse_id(&request.get_ref().report_id, "report_id")?;
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let report = store::report(&mut tx, Some(id), None)
            .await
            .map_err(ApiError::from)?;
        let hidden = || ApiError::permission_denied("not a report you may read");
        match &report {
            Some(r) if sees(who, &r.municipality_code, &r.channel) => {}
            None if who.may_know_absence() => {
                return Err(ApiError::not_found("report").into());
            }
            _ => return Err(hidden().into()),
        }
        let sealed = store::sealed_reporter(&mut tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("reporter contact (the report is anonymous)"))?;
        let contact = self.vault.open_reporter(&sealed).ok_or_else(|| {
            ApiError::internal(&format!(
                "reporter of {id} is sealed under key {}, which this process does not have",
                sealed.key_id
            ))
        })?;
        // The read is recorded before anything is returned.
        audit
            .record(&mut tx, self.clock.now(), &id.to_string())
            .await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::Reporter {
            name: contact.name.unwrap_or_default(),
            phone: contact.phone.unwrap_or_default(),
            national_id: contact.national_id.unwrap_or_default(),
        }))
    }

    async fn upsert_category(
        &self,
        request: Request<pb::UpsertCategoryRequest>,
    ) -> Reply<pb::Category> {
        let audit = Audit::of(&request)?;
        let Some(c) = request.into_inner().category else {
            return Err(ApiError::invalid_field("category", "is required").into());
        };
        let mut v = Violations::new();
        let default_priority = priority_from_proto(c.default_priority);
        v.check(
            default_priority.is_some(),
            "category.default_priority",
            "is required",
        );
        let name = c.name.unwrap_or_default();
        let category = Category {
            code: c.code.trim().to_string(),
            name_ar: name.ar,
            name_en: name.en,
            group: c.group,
            default_priority: default_priority.unwrap_or(Priority::Normal),
            urgent_capable: c.urgent_capable,
            duplicate_radius_meters: c.duplicate_radius_meters,
            duplicate_window_hours: c.duplicate_window_hours,
            active: c.active,
        };
        category.check("category.", &mut v);
        v.finish()?;
        let now = self.clock.now();
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        store::put_category(&mut tx, &category, now, false)
            .await
            .map_err(ApiError::from)?;
        audit.record(&mut tx, now, &category.code).await?;
        tx.commit().await.map_err(ApiError::from)?;
        if let Err(e) = self.catalogue.reload(&self.pool).await {
            tracing::warn!(error = %e, "catalogue reload after an edit failed; the periodic reload will catch up");
        }
        Ok(Response::new(category_proto(&category)))
    }
}
