//! `baladiya.sla.v1.SlaService`: clocks, breaches, escalations, and
//! `PreviewClock`, which runs the live clock code on given instants.

use std::time::Duration;

use baladiya_platform::audit::Audit;
use baladiya_platform::auth::{CallerIdentity, Role, caller};
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, ErrorKind, Violations};
use baladiya_platform::events::{EventType, OutboundEvent, outbox, watermark};
use baladiya_platform::paging::{PageTokens, page_size};
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::sla::events::v1 as ev;
use baladiya_proto::sla::v1 as pb;
use baladiya_worktime::WorkingDuration;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::clock::{self, Input, InputKind, State};
use crate::engine::{self, clock_ref};
use crate::store::{self, ClockRow, EscalationRow};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SlaApi {
    pub pool: PgPool,
    pub clock: Clock,
    pub tokens: PageTokens,
    /// `sla.max_hold_secs`: when a held firing goes out anyway.
    pub max_hold: Duration,
}

type Reply<T> = Result<Response<T>, Status>;

fn state_proto(s: &str) -> i32 {
    (match s {
        "running" => pb::ClockState::Running,
        "paused" => pb::ClockState::Paused,
        "met" => pb::ClockState::Met,
        "breached" => pb::ClockState::Breached,
        "breached_then_met" => pb::ClockState::BreachedThenMet,
        "cancelled" => pb::ClockState::Cancelled,
        _ => pb::ClockState::Unspecified,
    }) as i32
}

fn duration(secs: i64) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(Duration::from_secs(secs.max(0) as u64)).ok()
}

/// How far the watcher knows its producers' streams, as last refreshed by
/// its timer loop.
pub async fn stored_knowledge(pool: &sqlx::PgPool) -> Result<store::Known, Status> {
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

/// Clocks as the API shows them, with what they fired and what they wait for.
async fn with_fired_counts(
    conn: &mut PgConnection,
    rows: &[ClockRow],
    now: DateTime<Utc>,
    known: store::Known,
    max_hold: Duration,
) -> Result<Vec<pb::Clock>, Status> {
    let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
    let fired = store::fired_counts(conn, &ids)
        .await
        .map_err(ApiError::from)?;
    let held = store::held_timers(conn, &ids, now, known)
        .await
        .map_err(ApiError::from)?;
    Ok(rows
        .iter()
        .map(|c| {
            let mut clock = clock_proto(c, fired.get(&c.id).copied().unwrap_or_default(), now);
            clock.held = held.get(&c.id).map(|(t, parked)| {
                let (waiting_on, known_until) = if c.subject_kind == "application" {
                    ("licensing", known.applications)
                } else {
                    ("routing", known.cases)
                };
                pb::HeldTimer {
                    kind: t.kind.clone(),
                    due_at: Some(timestamp(t.due_at)),
                    waiting_on: waiting_on.into(),
                    known_until: known_until.map(timestamp),
                    input_parked: *parked,
                    fires_by: chrono::TimeDelta::from_std(max_hold)
                        .ok()
                        .map(|hold| timestamp(t.due_at + hold)),
                }
            });
            clock
        })
        .collect())
}

fn clock_proto(c: &ClockRow, fired: store::Fired, now: DateTime<Utc>) -> pb::Clock {
    // A running clock past its deadline is breached even before the next recomputation.
    let state = match c.state.as_str() {
        "running" if c.breached_at.is_some_and(|b| b <= now) => "breached",
        s => s,
    };
    pb::Clock {
        id: c.id.to_string(),
        subject_kind: c.subject_kind.clone(),
        subject_id: c.subject_id.to_string(),
        metric: c.metric.clone(),
        partner_code: c.partner_code.clone(),
        agreement_version: c.agreement_version,
        calendar_id: c.calendar_id.clone(),
        target: duration(c.target_secs),
        state: state_proto(state),
        elapsed: duration(c.elapsed_secs),
        deadline: c.deadline.map(timestamp),
        original_deadline: c.original_deadline.map(timestamp),
        warnings_fired: fired.warnings.max(0) as u32,
        escalation_levels_fired: fired.escalations.max(0) as u32,
        started_at: c.started_at.map(timestamp),
        ended_at: c.ended_at.map(timestamp),
        tracking_number: c.tracking_number.clone(),
        breached_at: c.breached_at.filter(|b| *b <= now).map(timestamp),
        held: None,
        breach_provisional: fired.breach_provisional,
        withdrawals: fired.withdrawals.max(0) as u32,
    }
}

fn escalation_proto(e: &EscalationRow) -> pb::Escalation {
    pb::Escalation {
        id: e.id.to_string(),
        clock_id: e.clock_id.to_string(),
        level: e.level.max(0) as u32,
        partner_code: e.partner_code.clone(),
        subject_kind: e.subject_kind.clone(),
        subject_id: e.subject_id.to_string(),
        tracking_number: e.tracking_number.clone(),
        contact: e.contact.clone(),
        agreement_version: e.agreement_version,
        raised_at: Some(timestamp(e.raised_at)),
        overdue_working: duration(e.overdue_working_secs),
        overdue_wall: duration(e.overdue_wall_secs),
        acknowledged_at: e.acknowledged_at.map(timestamp),
        acknowledged_by: e.acknowledged_by.clone().unwrap_or_default(),
        note: e.note.clone().unwrap_or_default(),
        metric: e.metric.clone(),
        webhook_state: e.webhook.as_ref().map(|w| w.0.clone()).unwrap_or_default(),
        webhook_attempts: e.webhook.as_ref().map_or(0, |w| w.1.max(0) as u32),
        provisional: e.provisional,
        withdrawn_at: e.withdrawn.as_ref().map(|w| timestamp(w.0)),
        withdrawal_reason: e
            .withdrawn
            .as_ref()
            .map(|w| w.1.clone())
            .unwrap_or_default(),
    }
}

/// What a caller is limited to (the policy's scopes): a partner to its own
/// clocks and escalations, an operator of a municipality to that one's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Own {
    partner: Option<String>,
    municipality: Option<String>,
}

impl Own {
    fn of(who: &CallerIdentity) -> Self {
        match who.role {
            Role::Partner => Self {
                partner: Some(who.partner.clone().unwrap_or_default()),
                municipality: None,
            },
            Role::Operator => Self {
                partner: None,
                municipality: who.municipality.clone(),
            },
            _ => Self::default(),
        }
    }

    fn sees(&self, partner: &str, municipality: &str) -> bool {
        self.partner.as_deref().is_none_or(|p| p == partner)
            && self
                .municipality
                .as_deref()
                .is_none_or(|m| m == municipality)
    }
}

#[tonic::async_trait]
impl pb::sla_service_server::SlaService for SlaApi {
    async fn get_clocks(
        &self,
        request: Request<pb::GetClocksRequest>,
    ) -> Reply<pb::GetClocksResponse> {
        let own = Own::of(caller(&request)?);
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
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let now = self.clock.now();
        let mut rows = store::clocks_of(&mut conn, &req.subject_kind, subject, false)
            .await
            .map_err(ApiError::from)?;
        rows.retain(|c| own.sees(&c.partner_code, &c.municipality_code));
        let known = stored_knowledge(&self.pool).await?;
        let clocks = with_fired_counts(&mut conn, &rows, now, known, self.max_hold).await?;
        Ok(Response::new(pb::GetClocksResponse { clocks }))
    }

    async fn list_breaches(
        &self,
        request: Request<pb::ListBreachesRequest>,
    ) -> Reply<pb::ListBreachesResponse> {
        let own = Own::of(caller(&request)?);
        let req = request.into_inner();
        let partner = own
            .partner
            .clone()
            .or_else(|| Some(req.partner_code.clone()).filter(|p| !p.is_empty()));
        let municipality = own.municipality.as_deref();
        let limit = page_size(req.page_size)?;
        let filters = format!("partner={partner:?}&municipality={municipality:?}");
        let after = self.tokens.keyset(&req.page_token, &filters)?;
        let now = self.clock.now();
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let rows = store::breaches(
            &mut conn,
            partner.as_deref(),
            municipality,
            now,
            after,
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let (page, next_page_token) = self.tokens.keyset_page(rows, limit, &filters, |c| {
            (c.breached_at.unwrap_or(now), c.id)
        });
        let known = stored_knowledge(&self.pool).await?;
        let clocks = with_fired_counts(&mut conn, &page, now, known, self.max_hold).await?;
        Ok(Response::new(pb::ListBreachesResponse {
            clocks,
            next_page_token,
        }))
    }

    async fn list_escalations(
        &self,
        request: Request<pb::ListEscalationsRequest>,
    ) -> Reply<pb::ListEscalationsResponse> {
        let own = Own::of(caller(&request)?);
        let req = request.into_inner();
        let partner = own
            .partner
            .clone()
            .or_else(|| Some(req.partner_code.clone()).filter(|p| !p.is_empty()));
        let municipality = own.municipality.as_deref();
        let limit = page_size(req.page_size)?;
        let state = match pb::EscalationState::try_from(req.state) {
            Ok(pb::EscalationState::Open) => store::EscalationFilter::Open,
            Ok(pb::EscalationState::Acknowledged) => store::EscalationFilter::Acknowledged,
            Ok(pb::EscalationState::Withdrawn) => store::EscalationFilter::Withdrawn,
            Ok(pb::EscalationState::Unspecified) => store::EscalationFilter::Any,
            Err(_) => {
                return Err(ApiError::invalid_field("state", "is not an escalation state").into());
            }
        };
        let level = (req.level > 0).then_some(req.level as i32);
        let filters = format!(
            "partner={partner:?}&municipality={municipality:?}&level={level:?}&state={state:?}"
        );
        let after = self.tokens.keyset(&req.page_token, &filters)?;
        let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
        let rows = store::escalations(
            &mut conn,
            partner.as_deref(),
            municipality,
            level,
            state,
            after,
            limit + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let (page, next_page_token) = self
            .tokens
            .keyset_page(rows, limit, &filters, |e| (e.raised_at, e.id));
        Ok(Response::new(pb::ListEscalationsResponse {
            escalations: page.iter().map(escalation_proto).collect(),
            next_page_token,
        }))
    }

    async fn acknowledge_escalation(
        &self,
        request: Request<pb::AcknowledgeEscalationRequest>,
    ) -> Reply<pb::Escalation> {
        let audit = Audit::of(&request)?;
        let who = audit.caller.clone();
        let own = Own::of(&who);
        let req = request.into_inner();
        let id: Uuid = req
            .escalation_id
            .parse()
            .map_err(|_| ApiError::invalid_field("escalation_id", "must be a UUID"))?;
        let note = req.note.trim();
        if note.chars().count() > 2_000 {
            return Err(ApiError::invalid_field("note", "must be at most 2000 characters").into());
        }
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        let found = store::escalation(&mut tx, id)
            .await
            .map_err(ApiError::from)?;
        let clock = match &found {
            Some(e) => store::clock(&mut tx, e.clock_id)
                .await
                .map_err(ApiError::from)?,
            None => None,
        };
        // Whether it exists is not revealed to those limited to their own.
        let (e, c) = match (found, clock) {
            (Some(e), Some(c)) if own.sees(&e.partner_code, &c.municipality_code) => (e, c),
            (None, _) if who.may_know_absence() => {
                return Err(ApiError::not_found("escalation").into());
            }
            (Some(_), None) => return Err(ApiError::internal(&"escalation without clock").into()),
            _ => return Err(ApiError::permission_denied("not your escalation").into()),
        };
        if e.acknowledged_at.is_some() {
            return Err(ApiError::new(
                ErrorKind::FailedPrecondition,
                "the escalation was already acknowledged",
            )
            .into());
        }
        let now = self.clock.now();
        store::acknowledge_escalation(&mut tx, id, &who.subject, note, now)
            .await
            .map_err(ApiError::from)?;
        let event_id = Uuid::now_v7();
        let payload = ev::EscalationAcknowledged {
            meta: Some(EventMeta {
                event_id: event_id.to_string(),
                occurred_at: Some(timestamp(now)),
                aggregate_id: c.id.to_string(),
                recorded_at: None,
            }),
            escalation_id: id.to_string(),
            clock: clock_ref(&c),
            level: e.level.max(0) as u32,
            acknowledged_by: who.subject.clone(),
        };
        let out = OutboundEvent::new(
            "sla-watcher",
            EventType::new("sla", "escalation", "acknowledged"),
            &[&e.partner_code],
            event_id,
            c.id.to_string(),
            now,
            &payload,
        );
        outbox::enqueue(&mut tx, &out)
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let updated = store::escalation(&mut tx, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("escalation"))?;
        audit.record(&mut tx, now, &id.to_string()).await?;
        tx.commit().await.map_err(ApiError::from)?;
        outbox::committed(crate::SCHEMA);
        engine::timers_changed();
        Ok(Response::new(escalation_proto(&updated)))
    }

    async fn preview_clock(
        &self,
        request: Request<pb::PreviewClockRequest>,
    ) -> Reply<pb::PreviewClockResponse> {
        caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let spec = match &req.calendar {
            Some(pb::preview_clock_request::Calendar::CalendarId(id)) => {
                let mut conn = self.pool.acquire().await.map_err(ApiError::from)?;
                let spec = store::calendar(&mut conn, id)
                    .await
                    .map_err(ApiError::from)?;
                v.check(spec.is_some(), "calendar_id", "is not a known calendar");
                spec
            }
            Some(pb::preview_clock_request::Calendar::InlineCalendar(c)) => {
                let mut inner = Violations::new();
                let record = baladiya_partners::convert::calendar_from_proto(c, &mut inner);
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
        let calendar = match spec.map(|s| s.build()) {
            Some(Ok(c)) => Some(c),
            Some(Err(problems)) => {
                for p in problems {
                    v.add(
                        baladiya_partners::convert::api_path(prefix, &p.field),
                        p.message,
                    );
                }
                None
            }
            None => None,
        };
        let wd = |d: &Option<baladiya_proto::common::v1::WorkingDuration>| {
            d.map(|d| WorkingDuration {
                days: d.days,
                minutes: d.minutes,
            })
            .unwrap_or_default()
        };
        let target = wd(&req.target);
        v.check(
            !target.is_zero(),
            "target",
            "must be a positive working duration",
        );
        // The bounds every agreement and license type is held to, so a
        // preview answers what a live clock could be asked.
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
        let delays: Vec<WorkingDuration> = req
            .escalation_delays
            .iter()
            .map(|d| wd(&Some(*d)))
            .collect();
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
        // Instants within the span working time is measured in (2000 to
        // 2200 UTC): nothing outside it is a real clock, and every answer
        // then fits a protobuf Timestamp.
        let in_range = |at: DateTime<Utc>, field: &str, v: &mut Violations| {
            if baladiya_worktime::instant_in_range(at) {
                Some(at)
            } else {
                v.add(field, baladiya_worktime::instant_range_message());
                None
            }
        };
        let mut parse =
            |t: &Option<prost_types::Timestamp>, field: &str| match t.as_ref().map(instant) {
                None => None,
                Some(None) => {
                    v.add(field, "is not a valid timestamp");
                    None
                }
                Some(Some(at)) => in_range(at, field, &mut v),
            };
        let start = parse(&req.start, "start");
        let stop = parse(&req.stop, "stop");
        let as_of = match req.as_of {
            Some(_) => parse(&req.as_of, "as_of"),
            None => Some(self.clock.now()),
        };
        v.check(req.start.is_some(), "start", "is required");
        let mut inputs: Vec<Input> = Vec::new();
        for (i, t) in req.pauses.iter().enumerate() {
            let field = format!("pauses[{i}]");
            match instant(t) {
                Some(at) => {
                    if let Some(at) = in_range(at, &field, &mut v) {
                        inputs.push(Input {
                            at,
                            kind: InputKind::Pause,
                        })
                    }
                }
                None => v.add(field, "is not a valid timestamp"),
            }
        }
        for (i, t) in req.resumes.iter().enumerate() {
            let field = format!("resumes[{i}]");
            match instant(t) {
                Some(at) => {
                    if let Some(at) = in_range(at, &field, &mut v) {
                        inputs.push(Input {
                            at,
                            kind: InputKind::Resume,
                        })
                    }
                }
                None => v.add(field, "is not a valid timestamp"),
            }
        }
        v.finish()?;
        let (Some(calendar), Some(start), Some(as_of)) = (calendar, start, as_of) else {
            return Err(ApiError::invalid_field("calendar", "is required").into());
        };
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
        let terms = clock::Terms {
            target: calendar.duration(target),
            warn_at: req.warn_at.clone(),
            ladder: delays.iter().map(|d| calendar.duration(*d)).collect(),
        };
        // Within the bounds, a calendar open a few minutes a week can still
        // push a deadline past the measured span; say so rather than answer
        // a clock with no deadline.
        let mut v = Violations::new();
        let beyond = format!(
            "the deadline would fall after {}, the end of measured working time, on this calendar",
            baladiya_worktime::LATEST_INSTANT.to_rfc3339()
        );
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
        v.finish()?;
        let c = clock::compute(&calendar, &terms, &inputs, as_of);
        if c.state == State::Running && c.deadline.is_none() {
            // Pauses moved a reachable deadline past the span.
            return Err(ApiError::invalid_field("resumes", beyond).into());
        }
        let state = match c.state {
            State::Pending => pb::ClockState::Unspecified,
            State::Running => pb::ClockState::Running,
            State::Paused => pb::ClockState::Paused,
            State::Met => pb::ClockState::Met,
            State::Breached => pb::ClockState::Breached,
            State::BreachedThenMet => pb::ClockState::BreachedThenMet,
            State::Cancelled => pb::ClockState::Cancelled,
        };
        let unset = prost_types::Timestamp::default;
        Ok(Response::new(pb::PreviewClockResponse {
            state: state as i32,
            deadline: c.deadline.map(timestamp),
            original_deadline: c.original_deadline.map(timestamp),
            warnings: c
                .warnings
                .iter()
                .map(|w| w.map_or_else(unset, timestamp))
                .collect(),
            breach: c.breach.map(timestamp),
            escalations: c
                .escalations
                .iter()
                .map(|w| w.map_or_else(unset, timestamp))
                .collect(),
            elapsed: prost_types::Duration::try_from(c.elapsed).ok(),
        }))
    }
}
