//! Submitting a report: the steps of [`Submissions::submit`] (validate and
//! classify, reserve a tracking number, seal the reporter, build the stored
//! report and its `ReportReceived` envelope, hand them to the batch writer)
//! and the path of a report that duplicates an open one
//! ([`link_duplicate`], in a transaction of its own).

use std::sync::{Arc, Mutex};

use baladiya_platform::audit::Audit;
use baladiya_platform::events::{Emitter, Event, OutboundEvent, Tx};
use baladiya_platform::idempotency::{self, Claim};
use baladiya_proto::common::v1 as common;
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::events::v1 as events;
use baladiya_proto::intake::v1 as pb;
use chrono::{DateTime, Datelike, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{REPORT_DUPLICATE_LINKED, REPORT_RECEIVED};
use crate::CatalogueCache;
use crate::batch::SubmitWriter;
use crate::cache::ReportCache;
use crate::convert::{channel_proto, priority_proto, report_proto};
use crate::domain::{self, Catalogue, ChannelName, ReporterData, Submission, ValidReport};
use crate::error::IntakeError;
use crate::pii::{SealedReporter, Vault};
use crate::store::{self, DuplicateSearch, Inserted, NewReport, ReportRow, Submit};

/// The idempotency method of submits.
const SUBMIT_METHOD: &str = "SubmitReport";
/// Tracking sequence numbers reserved from the database at a time.
const TRACKING_BLOCK: i64 = 100;

/// Who is submitting, as far as the channel rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitter {
    /// Anyone the policy lets submit, as any channel.
    AnyChannel,
    /// A channel front-end, which submits only as the stored channel its
    /// token names (none: the claim names no channel intake knows).
    OwnChannel(Option<ChannelName>),
}

/// A submit request as the command takes it: its fields for the rules, and
/// its encoded form (the idempotency digest is of those bytes).
#[derive(Debug)]
pub struct SubmitRequest<'a> {
    pub submission: Submission<'a>,
    pub encoded: Vec<u8>,
}

/// The tracking sequence numbers this process holds: the next one and the
/// end of the block reserved.
#[derive(Debug, Default)]
struct TrackingBlock(Mutex<(i64, i64)>);

impl TrackingBlock {
    /// The next sequence number, reserving a block when this one is used up.
    async fn next(&self, pool: &PgPool) -> Result<i64, IntakeError> {
        {
            let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if t.0 < t.1 {
                t.0 += 1;
                return Ok(t.0 - 1);
            }
        }
        let mut conn = pool.acquire().await?;
        let first = store::reserve_tracking_block(&mut conn).await?;
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t = (first + 1, first + TRACKING_BLOCK);
        Ok(first)
    }
}

/// What a submit needs beyond a transaction: the catalogue it is checked
/// against, the tracking numbers, the keys that seal the reporter, the batch
/// writer, and the report cache a linked duplicate's master leaves.
#[derive(Debug)]
pub struct Submissions {
    pool: PgPool,
    emitter: Emitter,
    vault: Vault,
    catalogue: Arc<CatalogueCache>,
    tracking: TrackingBlock,
    writer: SubmitWriter,
    cache: Arc<ReportCache>,
}

/// A submission that passed, numbered: what the new report's row, response
/// and events are made of.
struct Accepted {
    id: Uuid,
    tracking_number: String,
    at: DateTime<Utc>,
    valid: ValidReport,
    reporter_key: Option<String>,
}

impl Submissions {
    /// The submit path over `pool`, starting its batch writer.
    pub fn start(
        pool: PgPool,
        emitter: Emitter,
        vault: Vault,
        catalogue: Arc<CatalogueCache>,
        cache: Arc<ReportCache>,
    ) -> Self {
        Self {
            writer: SubmitWriter::start(&pool, emitter.clone()),
            tracking: TrackingBlock::default(),
            pool,
            emitter,
            vault,
            catalogue,
            cache,
        }
    }

    /// Submits a report: stored and announced, linked to an open report
    /// nearby it duplicates, or, for a retry, the original's answer.
    pub async fn submit(
        &self,
        submitter: Submitter,
        audit: &Audit,
        request: SubmitRequest<'_>,
    ) -> Result<pb::SubmitReportResponse, IntakeError> {
        let catalogue = self.catalogue.get();
        let now = self.emitter.clock().now();
        let valid = classify(&request.submission, &catalogue, now, submitter)?;
        let tracking_number = self
            .reserve_tracking_number(&catalogue, &valid, now)
            .await?;
        let (sealed, reporter_key) = self.seal_reporter(&valid.reporter);
        let accepted = Accepted {
            id: Uuid::now_v7(),
            tracking_number,
            at: now,
            valid,
            reporter_key,
        };
        let fresh = accepted.response(None, "received");
        let submit = self.stored_report(&accepted, &request, audit, sealed, &fresh);
        let (outcome, submit) = self.write(submit).await?;
        match outcome {
            Inserted::New => Ok(fresh),
            Inserted::SeenBefore => {
                let mut conn = self.pool.acquire().await?;
                let request_id = request.submission.request_id;
                Ok(idempotency::replay(
                    &mut conn,
                    SUBMIT_METHOD,
                    request_id,
                    &submit.request_digest,
                )
                .await?)
            }
            Inserted::Duplicate { master, distance_m } => {
                let duplicate = Duplicate {
                    master,
                    distance_m,
                    report: &submit.report,
                };
                self.link_as_duplicate(&accepted, &request, audit, duplicate)
                    .await
            }
        }
    }

    /// The report's tracking number: its municipality's prefix, the year in
    /// the municipality's time zone, the next sequence number.
    async fn reserve_tracking_number(
        &self,
        catalogue: &Catalogue,
        valid: &ValidReport,
        now: DateTime<Utc>,
    ) -> Result<String, IntakeError> {
        let area = catalogue
            .area(&valid.municipality_code)
            .ok_or(IntakeError::NoServiceArea)?;
        let tz: chrono_tz::Tz = area.time_zone.parse().unwrap_or(chrono_tz::Asia::Riyadh);
        let year = now.with_timezone(&tz).year();
        let sequence = self.tracking.next(&self.pool).await?;
        Ok(domain::tracking_number(
            &area.tracking_prefix,
            year,
            sequence,
        ))
    }

    /// The reporter's data encrypted (none for an anonymous report), and the
    /// pseudonym events carry instead.
    fn seal_reporter(&self, reporter: &ReporterData) -> (Option<SealedReporter>, Option<String>) {
        let sealed = (!reporter.is_empty()).then(|| self.vault.seal_reporter(reporter));
        (sealed, self.vault.pseudonym(reporter))
    }

    /// What the batch writer stores for a new report: the report, where its
    /// duplicate would be, the answer a retry gets (`fresh`), its
    /// `ReportReceived` envelope and its audit record.
    fn stored_report(
        &self,
        accepted: &Accepted,
        request: &SubmitRequest<'_>,
        audit: &Audit,
        sealed: Option<SealedReporter>,
        fresh: &pb::SubmitReportResponse,
    ) -> Submit {
        use prost::Message;
        Submit {
            search: accepted.duplicate_search(),
            request_digest: idempotency::digest(&request.encoded),
            response: fresh.encode_to_vec(),
            event: accepted.received_event(&self.emitter, None),
            audit: audit.clone(),
            report: accepted.new_report(request.submission.request_id, sealed),
        }
    }

    /// Hands `submit` to the batch writer; what became of it once its batch
    /// committed, and the submit handed back.
    async fn write(&self, submit: Submit) -> Result<(Inserted, Submit), IntakeError> {
        self.writer.write(submit).await
    }

    /// Stores a report that duplicates `duplicate.master` in a transaction of
    /// its own, and forgets the master's cached row (it gained a supporter).
    async fn link_as_duplicate(
        &self,
        accepted: &Accepted,
        request: &SubmitRequest<'_>,
        audit: &Audit,
        duplicate: Duplicate<'_>,
    ) -> Result<pb::SubmitReportResponse, IntakeError> {
        let master = duplicate.master;
        let mut tx = self.emitter.begin(&self.pool).await?;
        match link_duplicate(&mut tx, accepted, request, audit, duplicate).await? {
            Linked::Replayed(original) => Ok(original),
            Linked::Now(linked) => {
                tx.commit().await?;
                self.cache.forget(&master);
                Ok(linked)
            }
        }
    }
}

/// Checks a submission against every rule and the channel rule.
fn classify(
    submission: &Submission<'_>,
    catalogue: &Catalogue,
    now: DateTime<Utc>,
    submitter: Submitter,
) -> Result<ValidReport, IntakeError> {
    let valid = match domain::validate(submission, catalogue, now) {
        Ok(v) => v,
        Err(v) => {
            v.finish()?;
            return Err(IntakeError::InvalidRequest);
        }
    };
    // A channel front-end may only submit as its own channel.
    if let Submitter::OwnChannel(own) = submitter
        && own != Some(valid.channel)
    {
        return Err(IntakeError::SubmitAsOtherChannel);
    }
    Ok(valid)
}

impl Accepted {
    /// The report as stored: received, or following `duplicate_of` in its
    /// `status`.
    fn row(&self, duplicate_of: Option<Uuid>, status: &str) -> ReportRow {
        let v = &self.valid;
        ReportRow {
            id: self.id,
            tracking_number: self.tracking_number.clone(),
            status: status.to_string(),
            status_changed_at: self.at,
            municipality_code: v.municipality_code.clone(),
            category_code: v.category.code.clone(),
            priority: v.priority.as_str().into(),
            priority_reason: v.priority_reason.clone(),
            duplicate_of,
            channel: v.channel.into(),
            description: v.description.clone(),
            latitude: v.point.map(|p| p.lat),
            longitude: v.point.map(|p| p.lon),
            national_address_short: v.national_address_short.clone(),
            observed_at: v.observed_at,
            created_at: self.at,
            assignee_code: None,
            expected_resolution_at: None,
            supporters: 0,
            attachments: v.attachments.clone(),
            reporter_key: None,
            rating_score: None,
            rating_comment: None,
            rated_at: None,
        }
    }

    /// The answer to the submit.
    fn response(&self, duplicate_of: Option<Uuid>, status: &str) -> pb::SubmitReportResponse {
        pb::SubmitReportResponse {
            report: Some(report_proto(&self.row(duplicate_of, status))),
            linked_as_duplicate: duplicate_of.is_some(),
        }
    }

    /// The report to insert, under the request's `request_id`.
    fn new_report(&self, request_id: &str, reporter: Option<SealedReporter>) -> NewReport {
        let v = &self.valid;
        NewReport {
            id: self.id,
            tracking_number: self.tracking_number.clone(),
            request_id: request_id.to_string(),
            municipality_code: v.municipality_code.clone(),
            category_code: v.category.code.clone(),
            priority: v.priority,
            priority_reason: v.priority_reason.clone(),
            channel: v.channel,
            description: v.description.clone(),
            point: v.point,
            national_address_short: v.national_address_short.clone(),
            observed_at: v.observed_at,
            created_at: self.at,
            attachments: v.attachments.clone(),
            reporter_key: self.reporter_key.clone(),
            reporter,
        }
    }

    /// Where an open report this one duplicates would be: its category,
    /// within the category's radius and window.
    fn duplicate_search(&self) -> DuplicateSearch {
        let category = &self.valid.category;
        DuplicateSearch {
            category_code: category.code.clone(),
            since: self.at - chrono::Duration::hours(i64::from(category.duplicate_window_hours)),
            point: self.valid.point,
            radius_m: f64::from(category.duplicate_radius_meters),
            national_address_short: self.valid.national_address_short.clone(),
        }
    }

    /// The `ReportReceived` event, ready for the outbox.
    fn received_event(&self, emitter: &Emitter, duplicate_of: Option<Uuid>) -> OutboundEvent {
        let v = &self.valid;
        let scope = [v.municipality_code.as_str(), v.category.code.as_str()];
        let event = Event::new(REPORT_RECEIVED, self.id, self.at).scoped(&scope);
        emitter.envelope(event, |meta| events::ReportReceived {
            meta,
            report_id: self.id.to_string(),
            tracking_number: self.tracking_number.clone(),
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
            received_at: Some(timestamp(self.at)),
            reporter_key: self.reporter_key.clone().unwrap_or_default(),
            duplicate_of: duplicate_of.map(|d| d.to_string()).unwrap_or_default(),
            attachment_count: v.attachments.len() as u32,
        })
    }
}

/// The open report a submit duplicates, and the submit's report as the
/// batch writer handed it back.
struct Duplicate<'a> {
    master: Uuid,
    distance_m: f64,
    report: &'a NewReport,
}

/// What linking a duplicate came to.
enum Linked {
    /// A retry of a submit already linked: the original answer; nothing
    /// written.
    Replayed(pb::SubmitReportResponse),
    /// Linked now; the transaction is to be committed.
    Now(pb::SubmitReportResponse),
}

/// Stores a submitted report as a duplicate of an open report nearby: it
/// follows its master's status, the master gains a supporter, and both
/// `ReportReceived` (naming the master) and `ReportLinkedAsDuplicate` are
/// emitted.
async fn link_duplicate(
    tx: &mut Tx,
    accepted: &Accepted,
    request: &SubmitRequest<'_>,
    audit: &Audit,
    duplicate: Duplicate<'_>,
) -> Result<Linked, IntakeError> {
    let Duplicate {
        master,
        distance_m,
        report,
    } = duplicate;
    let request_id = request.submission.request_id;
    let claim = idempotency::claim::<pb::SubmitReportResponse>(
        tx,
        SUBMIT_METHOD,
        request_id,
        &request.encoded,
    )
    .await?;
    if let Claim::Replay(original) = claim {
        return Ok(Linked::Replayed(original));
    }
    store::insert_duplicate(tx, report, master).await?;
    let master_status = store::report(tx, Some(master), None)
        .await?
        .map_or_else(|| "received".to_string(), |m| m.status);
    let linked = accepted.response(Some(master), &master_status);
    let received = accepted.received_event(tx.emitter(), Some(master));
    tx.enqueue(&received).await?;
    let (id, v) = (accepted.id, &accepted.valid);
    tx.emit(
        Event::new(REPORT_DUPLICATE_LINKED, id, accepted.at)
            .scoped(&[&v.municipality_code, &v.category.code]),
        |meta| events::ReportLinkedAsDuplicate {
            meta,
            report_id: id.to_string(),
            master_report_id: master.to_string(),
            category_code: v.category.code.clone(),
            municipality_code: v.municipality_code.clone(),
            channel: channel_proto(v.channel),
            reporter_key: accepted.reporter_key.clone().unwrap_or_default(),
            distance_meters: distance_m.round() as u32,
        },
    )
    .await?;
    idempotency::complete(tx, SUBMIT_METHOD, request_id, &linked).await?;
    audit.record(tx, accepted.at, &id.to_string()).await?;
    Ok(Linked::Now(linked))
}
