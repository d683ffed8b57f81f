//! `baladiya.sla.v1.SlaService`: clocks, breaches, escalations, and
//! `PreviewClock`, which runs the live clock code on given instants.
//!
//! Each RPC is `reply(self.<inner>(request).await)`: the inner method
//! authorizes, reads the store or calls a command, and converts (see
//! [`crate::convert`]), returning [`SlaError`]; `reply` turns that into a
//! gRPC status once.

use std::time::Duration;

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::caller;
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, Reply, Violations, reply};
use baladiya_platform::events::{Emitter, watermark};
use baladiya_platform::paging::{PageTokens, page_size};
use baladiya_platform::wake::Wake;
use baladiya_proto::convert::instant;
use baladiya_proto::sla::v1 as pb;
use baladiya_worktime::{Calendar, WorkingDuration};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tonic::Request;
use uuid::Uuid;

use crate::commands;
use crate::convert::{
    clock_proto, escalation_filter, escalation_proto, held_timer_proto, preview_proto,
};
use crate::domain::CallerScope;
use crate::domain::sla_clock::{self, Input, InputKind, State, Terms};
use crate::error::SlaError;
use crate::store::{self, ClockRow};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SlaApi {
    pub pool: PgPool,
    /// The service's time source.
    pub time: Clock,
    pub emitter: Emitter,
    /// The timer loop's wake-up.
    pub timers: Wake,
    pub tokens: PageTokens,
    /// `sla.max_hold_secs`: when a held firing goes out anyway.
    pub max_hold: Duration,
}

/// How far the watcher knows its producers' streams, as last refreshed by
/// its timer loop.
pub async fn stored_knowledge(pool: &sqlx::PgPool) -> Result<store::Known, SlaError> {
    let mut known = store::Known::default();
    for (spec, slot) in [
        (crate::consumers::cases_spec(), &mut known.cases),
        (
            crate::consumers::applications_spec(),
            &mut known.applications,
        ),
    ] {
        *slot = watermark::known(pool, &spec.name)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .into_iter()
            .find_map(|k| k.complete_before);
    }
    Ok(known)
}

impl SlaApi {
    /// Clocks as the API shows them, with what they fired and what they
    /// wait for.
    async fn clocks_proto(
        &self,
        conn: &mut PgConnection,
        rows: &[ClockRow],
        now: DateTime<Utc>,
    ) -> Result<Vec<pb::Clock>, SlaError> {
        let known = stored_knowledge(&self.pool).await?;
        let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
        let fired = store::fired_counts(conn, &ids).await?;
        let held = store::held_timers(conn, &ids, now, known).await?;
        Ok(rows
            .iter()
            .map(|c| {
                let mut clock = clock_proto(c, fired.get(&c.id).copied().unwrap_or_default(), now);
                clock.held = held
                    .get(&c.id)
                    .map(|(t, parked)| held_timer_proto(c, t, *parked, known, self.max_hold));
                clock
            })
            .collect())
    }

    async fn clocks_of_subject(
        &self,
        request: Request<pb::GetClocksRequest>,
    ) -> Result<pb::GetClocksResponse, SlaError> {
        let scope = CallerScope::of(caller(&request)?);
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(
            matches!(req.subject_kind.as_str(), "case" | "application"),
            "subject_kind",
            "must be case or application",
        );
        let subject = req.subject_id.parse::<Uuid>().ok();
        v.check(subject.is_some(), "subject_id", "must be a UUID");
        v.finish()?;
        let subject =
            subject.ok_or_else(|| ApiError::invalid_field("subject_id", "must be a UUID"))?;
        let mut conn = self.pool.acquire().await?;
        let now = self.time.now();
        let mut rows = store::clocks_of(&mut conn, &req.subject_kind, subject, false).await?;
        rows.retain(|c| scope.covers(&c.partner_code, &c.municipality_code));
        let clocks = self.clocks_proto(&mut conn, &rows, now).await?;
        Ok(pb::GetClocksResponse { clocks })
    }

    async fn breaches(
        &self,
        request: Request<pb::ListBreachesRequest>,
    ) -> Result<pb::ListBreachesResponse, SlaError> {
        let scope = CallerScope::of(caller(&request)?);
        let req = request.into_inner();
        let partner = scope
            .partner
            .clone()
            .or_else(|| Some(req.partner_code.clone()).filter(|p| !p.is_empty()));
        let municipality = scope.municipality.as_deref();
        let limit = page_size(req.page_size)?;
        let filters = format!("partner={partner:?}&municipality={municipality:?}");
        let after = self.tokens.keyset(&req.page_token, &filters)?;
        let now = self.time.now();
        let mut conn = self.pool.acquire().await?;
        let rows = store::breaches(
            &mut conn,
            partner.as_deref(),
            municipality,
            now,
            after,
            limit + 1,
        )
        .await?;
        let (page, next_page_token) = self.tokens.keyset_page(rows, limit, &filters, |c| {
            (c.breached_at.unwrap_or(now), c.id)
        });
        let clocks = self.clocks_proto(&mut conn, &page, now).await?;
        Ok(pb::ListBreachesResponse {
            clocks,
            next_page_token,
        })
    }

    async fn escalations(
        &self,
        request: Request<pb::ListEscalationsRequest>,
    ) -> Result<pb::ListEscalationsResponse, SlaError> {
        let scope = CallerScope::of(caller(&request)?);
        let req = request.into_inner();
        let partner = scope
            .partner
            .clone()
            .or_else(|| Some(req.partner_code.clone()).filter(|p| !p.is_empty()));
        let municipality = scope.municipality.as_deref();
        let limit = page_size(req.page_size)?;
        let state = escalation_filter(req.state)?;
        let level = (req.level > 0).then_some(req.level as i32);
        let filters = format!(
            "partner={partner:?}&municipality={municipality:?}&level={level:?}&state={state:?}"
        );
        let after = self.tokens.keyset(&req.page_token, &filters)?;
        let mut conn = self.pool.acquire().await?;
        let rows = store::escalations(
            &mut conn,
            partner.as_deref(),
            municipality,
            level,
            state,
            after,
            limit + 1,
        )
        .await?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |e| (e.raised_at, e.id));
        Ok(pb::ListEscalationsResponse {
            escalations: page.iter().map(escalation_proto).collect(),
            next_page_token,
        })
    }

    async fn acknowledge(
        &self,
        request: Request<pb::AcknowledgeEscalationRequest>,
    ) -> Result<pb::Escalation, SlaError> {
        let audit = Audit::of(&request)?;
        let req = request.into_inner();
        let id: Uuid = req
            .escalation_id
            .parse()
            .map_err(|_| ApiError::invalid_field("escalation_id", "must be a UUID"))?;
        let note = req.note.trim();
        if note.chars().count() > 2_000 {
            return Err(ApiError::invalid_field("note", "must be at most 2000 characters").into());
        }
        let mut tx = self.emitter.begin(&self.pool).await?;
        let updated = commands::acknowledge_escalation(&mut tx, &audit, id, note).await?;
        tx.commit().await?;
        self.timers.signal();
        Ok(escalation_proto(&updated))
    }

    async fn preview(
        &self,
        request: Request<pb::PreviewClockRequest>,
    ) -> Result<pb::PreviewClockResponse, SlaError> {
        caller(&request)?;
        let req = request.into_inner();
        // Every field's violations are reported at once, in the request's order.
        let mut v = Violations::new();
        let calendar = self.preview_calendar(&req, &mut v).await?;
        let (target, delays) = preview_durations(&req, &mut v);
        let instants = preview_instants(&req, self.time.now(), &mut v);
        v.finish()?;
        let (Some(calendar), Some(instants)) = (calendar, instants) else {
            return Err(ApiError::invalid_field("calendar", "is required").into());
        };
        let terms = Terms {
            target: calendar.duration(target),
            warn_at: req.warn_at.clone(),
            ladder: delays.iter().map(|d| calendar.duration(*d)).collect(),
        };
        check_reachable(&calendar, instants.start, &terms)?;
        let c = sla_clock::compute(&calendar, &terms, &instants.inputs, instants.as_of);
        if c.state == State::Running && c.deadline.is_none() {
            // Pauses moved a reachable deadline past the span.
            return Err(ApiError::invalid_field("resumes", beyond_span()).into());
        }
        Ok(preview_proto(&c))
    }

    /// The preview's calendar, stored or inline, built; `None` with its
    /// violations recorded.
    async fn preview_calendar(
        &self,
        req: &pb::PreviewClockRequest,
        v: &mut Violations,
    ) -> Result<Option<Calendar>, SlaError> {
        let spec = match &req.calendar {
            Some(pb::preview_clock_request::Calendar::CalendarId(id)) => {
                let mut conn = self.pool.acquire().await?;
                let spec = store::calendar(&mut conn, id).await?;
                v.check(spec.is_some(), "calendar_id", "is not a known calendar");
                spec
            }
            Some(pb::preview_clock_request::Calendar::InlineCalendar(c)) => {
                let mut inner = Violations::new();
                let record = baladiya_agreements::convert::calendar_from_proto(c, &mut inner);
                if let Err(e) = inner.finish() {
                    for f in e.violations {
                        v.add(
                            f.field.replacen("calendar.", "inline_calendar.", 1),
                            f.description,
                        );
                    }
                }
                Some(record.spec)
            }
            None => {
                v.add(
                    "calendar",
                    "a calendar_id or an inline_calendar is required",
                );
                None
            }
        };
        // A stored calendar was checked when it was published; only an inline
        // one is expected to fail here, but name whichever was given.
        let prefix = match &req.calendar {
            Some(pb::preview_clock_request::Calendar::CalendarId(_)) => "calendar_id.",
            _ => "inline_calendar.",
        };
        Ok(match spec.map(|s| s.build()) {
            Some(Ok(c)) => Some(c),
            Some(Err(problems)) => {
                for p in problems {
                    v.add(
                        baladiya_agreements::convert::api_path(prefix, &p.field),
                        p.message,
                    );
                }
                None
            }
            None => None,
        })
    }
}

/// The preview's target and escalation delays, checked against the bounds
/// every agreement and license type is held to (so a preview answers what a
/// live clock could be asked), and its warning fractions.
fn preview_durations(
    req: &pb::PreviewClockRequest,
    v: &mut Violations,
) -> (WorkingDuration, Vec<WorkingDuration>) {
    let working = |d: &baladiya_proto::common::v1::WorkingDuration| WorkingDuration {
        days: d.days,
        minutes: d.minutes,
    };
    let target = req.target.as_ref().map(working).unwrap_or_default();
    v.check(
        !target.is_zero(),
        "target",
        "must be a positive working duration",
    );
    for (part, why) in target.excess(baladiya_worktime::MAX_TARGET) {
        v.add(format!("target.{part}"), why);
    }
    for (i, f) in req.warn_at.iter().enumerate() {
        v.check(
            f.is_finite() && *f > 0.0 && *f < 1.0,
            &format!("warn_at[{i}]"),
            "must be strictly between 0 and 1",
        );
    }
    v.check(
        req.warn_at.windows(2).all(|w| w[0] < w[1]),
        "warn_at",
        "must be strictly increasing",
    );
    let delays: Vec<WorkingDuration> = req.escalation_delays.iter().map(working).collect();
    v.check(
        delays.windows(2).all(|w| w[0] < w[1]),
        "escalation_delays",
        "must be strictly increasing",
    );
    for (i, d) in delays.iter().enumerate() {
        for (part, why) in d.excess(baladiya_worktime::MAX_DELAY) {
            v.add(format!("escalation_delays[{i}].{part}"), why);
        }
    }
    (target, delays)
}

/// The instants of a preview and the clock inputs they make.
struct PreviewInstants {
    start: DateTime<Utc>,
    as_of: DateTime<Utc>,
    inputs: Vec<Input>,
}

/// The preview's instants (start, stop, as of, pauses, resumes), each within
/// the span working time is measured in (2000 to 2200 UTC): nothing outside
/// it is a real clock, and every answer then fits a protobuf Timestamp.
/// `None` with the violations recorded; `as_of` defaults to `now`.
fn preview_instants(
    req: &pb::PreviewClockRequest,
    now: DateTime<Utc>,
    v: &mut Violations,
) -> Option<PreviewInstants> {
    let in_range = |at: DateTime<Utc>, field: &str, v: &mut Violations| {
        if baladiya_worktime::instant_in_range(at) {
            Some(at)
        } else {
            v.add(field, baladiya_worktime::instant_range_message());
            None
        }
    };
    let mut parse = |t: &Option<prost_types::Timestamp>, field: &str| match t.as_ref().map(instant)
    {
        None => None,
        Some(None) => {
            v.add(field, "is not a valid timestamp");
            None
        }
        Some(Some(at)) => in_range(at, field, v),
    };
    let start = parse(&req.start, "start");
    let stop = parse(&req.stop, "stop");
    let as_of = match req.as_of {
        Some(_) => parse(&req.as_of, "as_of"),
        None => Some(now),
    };
    v.check(req.start.is_some(), "start", "is required");
    let mut inputs: Vec<Input> = Vec::new();
    for (name, kind, instants) in [
        ("pauses", InputKind::Pause, &req.pauses),
        ("resumes", InputKind::Resume, &req.resumes),
    ] {
        for (i, t) in instants.iter().enumerate() {
            let field = format!("{name}[{i}]");
            match instant(t) {
                Some(at) => {
                    if let Some(at) = in_range(at, &field, v) {
                        inputs.push(Input { at, kind })
                    }
                }
                None => v.add(field, "is not a valid timestamp"),
            }
        }
    }
    let (start, as_of) = (start?, as_of?);
    inputs.push(Input {
        at: start,
        kind: InputKind::Start,
    });
    if let Some(at) = stop {
        inputs.push(Input {
            at,
            kind: InputKind::Stop,
        });
    }
    Some(PreviewInstants {
        start,
        as_of,
        inputs,
    })
}

/// Why a deadline cannot be answered on the calendar.
fn beyond_span() -> String {
    format!(
        "the deadline would fall after {}, the end of measured working time, on this calendar",
        baladiya_worktime::LATEST_INSTANT.to_rfc3339()
    )
}

/// Within the bounds, a calendar open a few minutes a week can still push a
/// deadline past the measured span: says so rather than answer a clock with
/// no deadline.
fn check_reachable(
    calendar: &Calendar,
    start: DateTime<Utc>,
    terms: &Terms,
) -> Result<(), ApiError> {
    let mut v = Violations::new();
    let beyond = beyond_span();
    v.check(
        calendar.add_working(start, terms.target).is_some(),
        "target",
        &beyond,
    );
    for (i, delay) in terms.ladder.iter().enumerate() {
        v.check(
            calendar.add_working(start, terms.target + *delay).is_some(),
            &format!("escalation_delays[{i}]"),
            &beyond,
        );
    }
    v.finish()
}

#[tonic::async_trait]
impl pb::sla_service_server::SlaService for SlaApi {
    async fn get_clocks(
        &self,
        request: Request<pb::GetClocksRequest>,
    ) -> Reply<pb::GetClocksResponse> {
        reply(self.clocks_of_subject(request).await)
    }

    async fn list_breaches(
        &self,
        request: Request<pb::ListBreachesRequest>,
    ) -> Reply<pb::ListBreachesResponse> {
        reply(self.breaches(request).await)
    }

    async fn list_escalations(
        &self,
        request: Request<pb::ListEscalationsRequest>,
    ) -> Reply<pb::ListEscalationsResponse> {
        reply(self.escalations(request).await)
    }

    async fn acknowledge_escalation(
        &self,
        request: Request<pb::AcknowledgeEscalationRequest>,
    ) -> Reply<pb::Escalation> {
        reply(self.acknowledge(request).await)
    }

    async fn preview_clock(
        &self,
        request: Request<pb::PreviewClockRequest>,
    ) -> Reply<pb::PreviewClockResponse> {
        reply(self.preview(request).await)
    }
}
