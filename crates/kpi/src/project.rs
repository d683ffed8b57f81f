//! Projections: each domain event becomes the facts indicators are computed
//! from ([`facts_of`], pure), written idempotently ([`apply`]). A fact depends
//! only on its own event, and the lookups (a case's report, a report's
//! channel, a license type's target) are order-free upserts, so applying a
//! stream twice, with duplicates, or interleaved differently with the other
//! streams gives the same rows. The live consumers and `baladiya kpi rebuild`
//! both go through [`apply`].

use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{InboundEvent, streams};
use baladiya_proto::intake::events::v1 as intake;
use baladiya_proto::intake::v1::Channel;
use baladiya_proto::licensing::events::v1 as licensing;
use baladiya_proto::routing::events::v1 as routing;
use baladiya_proto::sla::events::v1 as sla;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::catalogue::Fact;

/// The streams and subjects the projections read: every domain event that
/// feeds an indicator. Partner events (agreements, calendars) feed none: the
/// working time they define reaches the KPIs through the SLA clocks.
pub fn consumer_specs() -> Vec<ConsumerSpec> {
    [
        ("kpi-intake", streams::INTAKE, "baladiya.intake.>"),
        ("kpi-routing", streams::ROUTING, "baladiya.routing.>"),
        ("kpi-sla", streams::SLA, "baladiya.sla.>"),
        ("kpi-licensing", streams::LICENSING, "baladiya.licensing.>"),
    ]
    .into_iter()
    .map(|(name, stream, subject)| ConsumerSpec {
        name: name.into(),
        stream,
        subjects: vec![subject.into()],
    })
    .collect()
}

/// One fact row.
#[derive(Debug, Clone, PartialEq)]
pub struct FactRow {
    pub kind: Fact,
    pub subject: String,
    pub municipality: String,
    pub partner: String,
    pub channel: String,
    pub category: String,
    pub license_type: String,
    pub activity: String,
    pub operator: String,
    pub level: i32,
    pub value: f64,
}

impl FactRow {
    fn new(kind: Fact, subject: &str, value: f64) -> Self {
        Self {
            kind,
            subject: subject.to_string(),
            municipality: String::new(),
            partner: String::new(),
            channel: String::new(),
            category: String::new(),
            license_type: String::new(),
            activity: String::new(),
            operator: String::new(),
            level: 0,
            value,
        }
    }
}

/// Everything one event contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    pub facts: Vec<FactRow>,
    /// (case id, report id).
    pub case_report: Option<(String, String)>,
    /// (report id, channel name).
    pub report_channel: Option<(String, String)>,
    /// (license type, target working days).
    pub license_target: Option<(String, i32)>,
    /// The event a withdrawal retracts (an SLA breach or escalation).
    pub withdrawn: Option<uuid::Uuid>,
}

fn channel_name(channel: i32) -> String {
    Channel::try_from(channel)
        .unwrap_or(Channel::Unspecified)
        .as_str_name()
        .to_string()
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

fn case_fact(kind: Fact, case: &routing::CaseRef, value: f64) -> FactRow {
    FactRow {
        municipality: case.municipality_code.clone(),
        partner: case.assignee_code.clone(),
        category: case.category_code.clone(),
        ..FactRow::new(kind, &case.case_id, value)
    }
}

fn clock_fact(kind: Fact, clock: &sla::ClockRef, value: f64) -> FactRow {
    let mut row = FactRow {
        municipality: clock.municipality_code.clone(),
        partner: clock.partner_code.clone(),
        ..FactRow::new(kind, &clock.subject_id, value)
    };
    // An application's clock carries its license type where a case's
    // carries its category.
    if clock.subject_kind == "application" {
        row.license_type = clock.category_code.clone();
    } else {
        row.category = clock.category_code.clone();
    }
    row
}

fn hours(d: Option<&prost_types::Duration>) -> f64 {
    d.map_or(0.0, |d| {
        d.seconds as f64 / 3600.0 + f64::from(d.nanos) / 3.6e12
    })
}

fn event_id(text: &str, what: &str) -> Result<uuid::Uuid, HandlerError> {
    text.parse()
        .map_err(|_| HandlerError::Reject(format!("the event's {what} '{text}' is not a UUID")))
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, HandlerError> {
    value.ok_or_else(|| HandlerError::Reject(format!("the event has no {what}")))
}

/// The facts and lookups of one event; events that feed no indicator give
/// an empty projection.
pub fn facts_of(event: &InboundEvent) -> Result<Projection, HandlerError> {
    let name = event
        .ce_type
        .strip_prefix("sa.baladiya.")
        .and_then(|t| t.strip_suffix(".v1"))
        .unwrap_or_default();
    let mut p = Projection::default();
    match name {
        "intake.report.received" => {
            let r: intake::ReportReceived = event.decode()?;
            let channel = channel_name(r.channel);
            p.facts.push(FactRow {
                municipality: r.municipality_code.clone(),
                channel: channel.clone(),
                category: r.category_code.clone(),
                ..FactRow::new(
                    Fact::ReportReceived,
                    &r.report_id,
                    flag(!r.duplicate_of.is_empty()),
                )
            });
            p.report_channel = Some((r.report_id, channel));
        }
        "intake.report.duplicate_linked" => {
            let r: intake::ReportLinkedAsDuplicate = event.decode()?;
            p.report_channel = Some((r.report_id, channel_name(r.channel)));
        }
        "intake.report.rated" => {
            let r: intake::ReportRated = event.decode()?;
            let channel = channel_name(r.channel);
            p.facts.push(FactRow {
                municipality: r.municipality_code.clone(),
                partner: r.assignee_code.clone(),
                channel: channel.clone(),
                category: r.category_code.clone(),
                ..FactRow::new(Fact::Rating, &r.report_id, f64::from(r.score))
            });
            p.report_channel = Some((r.report_id, channel));
        }
        routing_event if routing_event.starts_with("routing.case.") => {
            let event_name = &routing_event["routing.case.".len()..];
            let case = routing_case(event, event_name)?;
            let Some(case) = case else {
                return Ok(p);
            };
            let open = !matches!(event_name, "resolved" | "closed");
            p.facts.push(case_fact(Fact::CaseStatus, &case, flag(open)));
            match event_name {
                "resolved" => p.facts.push(case_fact(Fact::CaseResolved, &case, 1.0)),
                "reopened" => p.facts.push(case_fact(Fact::CaseReopened, &case, 1.0)),
                _ => {}
            }
            p.case_report = Some((case.case_id.clone(), case.report_id.clone()));
        }
        "sla.clock.met" => {
            let m: sla::ClockMet = event.decode()?;
            let clock = required(m.clock.as_ref(), "clock")?;
            let within = flag(!m.breached);
            let (share, amount, value) = match clock.metric.as_str() {
                "acknowledge" => (Fact::AckClock, Fact::AckHours, hours(m.elapsed.as_ref())),
                "resolve" => (
                    Fact::ResolveClock,
                    Fact::ResolveHours,
                    hours(m.elapsed.as_ref()),
                ),
                "decision" => (
                    Fact::DecisionClock,
                    Fact::DecisionDays,
                    m.elapsed_working_days,
                ),
                _ => return Ok(p),
            };
            p.facts.push(clock_fact(share, clock, within));
            p.facts.push(clock_fact(amount, clock, value));
            if clock.metric == "resolve" {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 0.0));
            }
        }
        "sla.clock.breached" => {
            let b: sla::ClockBreached = event.decode()?;
            let clock = required(b.clock.as_ref(), "clock")?;
            p.facts.push(clock_fact(Fact::ClockBreached, clock, 1.0));
            if clock.metric == "resolve" {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 1.0));
            }
        }
        "sla.clock.started" | "sla.clock.cancelled" => {
            let clock = if name == "sla.clock.started" {
                event.decode::<sla::ClockStarted>()?.clock
            } else {
                event.decode::<sla::ClockCancelled>()?.clock
            };
            let clock = required(clock.as_ref(), "clock")?;
            if clock.metric == "resolve" {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 0.0));
            }
        }
        "sla.clock.breach_withdrawn" => {
            let w: sla::ClockBreachWithdrawn = event.decode()?;
            let clock = required(w.clock.as_ref(), "clock")?;
            p.withdrawn = Some(event_id(&w.breach_event_id, "breach_event_id")?);
            if clock.metric == "resolve" && !w.other_breaches {
                p.facts.push(clock_fact(Fact::ResolveOverdue, clock, 0.0));
            }
        }
        "sla.escalation.withdrawn" => {
            let w: sla::EscalationWithdrawn = event.decode()?;
            p.withdrawn = Some(event_id(&w.raised_event_id, "raised_event_id")?);
        }
        "sla.escalation.raised" => {
            let e: sla::EscalationRaised = event.decode()?;
            let clock = required(e.clock.as_ref(), "clock")?;
            let mut row = clock_fact(Fact::Escalation, clock, 1.0);
            row.level = i32::try_from(e.level).unwrap_or(i32::MAX);
            p.facts.push(row);
        }
        "licensing.application.submitted" | "licensing.application.rejected" => {
            let step: licensing::ApplicationStep = event.decode()?;
            let a = required(step.application.as_ref(), "application")?;
            let kind = if name.ends_with("submitted") {
                Fact::ApplicationReceived
            } else {
                Fact::ApplicationRejected
            };
            p.facts.push(FactRow {
                municipality: a.municipality_code.clone(),
                license_type: a.license_type_code.clone(),
                ..FactRow::new(kind, &a.application_id, 1.0)
            });
            p.license_target = Some((
                a.license_type_code.clone(),
                i32::try_from(a.target_days).unwrap_or(i32::MAX),
            ));
        }
        "licensing.license.issued" => {
            let l: licensing::LicenseChanged = event.decode()?;
            p.facts.push(FactRow {
                municipality: l.municipality_code.clone(),
                license_type: l.license_type_code.clone(),
                ..FactRow::new(Fact::LicenseIssued, &l.application_id, 1.0)
            });
        }
        "licensing.facility.inspection_recorded" => {
            let i: licensing::FacilityInspectionRecorded = event.decode()?;
            let row = |kind, value| FactRow {
                municipality: i.municipality_code.clone(),
                activity: i.activity.clone(),
                operator: i.operator_code.clone(),
                ..FactRow::new(kind, &i.inspection_id, value)
            };
            p.facts
                .push(row(Fact::FacilityInspection, flag(i.compliant)));
            p.facts.push(row(
                Fact::InspectionByPrivateOperator,
                flag(i.private_operator),
            ));
        }
        _ => {}
    }
    Ok(p)
}

/// The case a routing event is about; `None` for events that change no
/// status (a supporter added).
fn routing_case(
    event: &InboundEvent,
    name: &str,
) -> Result<Option<routing::CaseRef>, HandlerError> {
    let case = match name {
        "routed" => event.decode::<routing::CaseRouted>()?.case,
        "acknowledged" => event.decode::<routing::CaseAcknowledged>()?.case,
        "work_started" => event.decode::<routing::CaseWorkStarted>()?.case,
        "put_on_hold" => event.decode::<routing::CasePutOnHold>()?.case,
        "resumed" => event.decode::<routing::CaseResumed>()?.case,
        "resolved" => event.decode::<routing::CaseResolved>()?.case,
        "rejected" => event.decode::<routing::CaseRejected>()?.case,
        "rerouted" => event.decode::<routing::CaseRerouted>()?.case,
        "reopened" => event.decode::<routing::CaseReopened>()?.case,
        "closed" => event.decode::<routing::CaseClosed>()?.case,
        _ => return Ok(None),
    };
    required(case, "case").map(Some)
}

/// Writes one event's projection; a repeat writes nothing new.
pub async fn apply(conn: &mut PgConnection, event: &InboundEvent) -> Result<(), HandlerError> {
    apply_all(conn, std::slice::from_ref(event)).await
}

/// Writes the projections of `events` with one statement per table, however
/// many events there are: what lets the projection keep up with a busy
/// stream. A repeat writes nothing new; an event that cannot be projected
/// fails the whole call (and writes nothing, with the caller's transaction).
pub async fn apply_all(
    conn: &mut PgConnection,
    events: &[InboundEvent],
) -> Result<(), HandlerError> {
    let projections = events.iter().map(facts_of).collect::<Result<Vec<_>, _>>()?;
    let mut facts = FactColumns::default();
    let (mut cases, mut case_reports) = (Vec::new(), Vec::new());
    let (mut reports, mut channels) = (Vec::new(), Vec::new());
    for (event, p) in events.iter().zip(&projections) {
        for f in &p.facts {
            facts.push(event, f);
        }
        if let Some((case_id, report_id)) = &p.case_report {
            cases.push(case_id.as_str());
            case_reports.push(report_id.as_str());
        }
        if let Some((report_id, channel)) = &p.report_channel {
            reports.push(report_id.as_str());
            channels.push(channel.as_str());
        }
    }
    // Retractions first, so a withdrawn event in the same batch writes nothing.
    let (withdrawn, withdrawn_by, withdrawn_at): (Vec<uuid::Uuid>, Vec<uuid::Uuid>, Vec<_>) =
        events
            .iter()
            .zip(&projections)
            .filter_map(|(event, p)| p.withdrawn.map(|w| (w, event.id, event.occurred_at)))
            .collect();
    if !withdrawn.is_empty() {
        sqlx::query(
            "WITH kept AS (
                 INSERT INTO withdrawn_events (event_id, withdrawn_by, withdrawn_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[])
                 ON CONFLICT (event_id) DO NOTHING),
             states_gone AS (DELETE FROM states WHERE event_id = ANY($1))
             DELETE FROM facts WHERE event_id = ANY($1)",
        )
        .bind(&withdrawn)
        .bind(&withdrawn_by)
        .bind(&withdrawn_at)
        .execute(&mut *conn)
        .await?;
    }
    if !facts.event_id.is_empty() {
        sqlx::query(
            "INSERT INTO facts (event_id, kind, subject, occurred_at, municipality, partner, channel,
                                category, license_type, activity, operator, level, value)
             SELECT f.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                                    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                                    $11::text[], $12::int4[], $13::float8[])
                  AS f(event_id, kind, subject, occurred_at, municipality, partner, channel,
                       category, license_type, activity, operator, level, value)
             WHERE NOT EXISTS (SELECT 1 FROM withdrawn_events w WHERE w.event_id = f.event_id)
             ON CONFLICT (event_id, kind) DO NOTHING",
        )
        .bind(&facts.event_id)
        .bind(&facts.kind)
        .bind(&facts.subject)
        .bind(&facts.occurred_at)
        .bind(&facts.municipality)
        .bind(&facts.partner)
        .bind(&facts.channel)
        .bind(&facts.category)
        .bind(&facts.license_type)
        .bind(&facts.activity)
        .bind(&facts.operator)
        .bind(&facts.level)
        .bind(&facts.value)
        .execute(&mut *conn)
        .await?;
    }
    link_states(conn, &facts).await?;
    if !cases.is_empty() {
        sqlx::query(
            "INSERT INTO case_reports (case_id, report_id)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (case_id) DO NOTHING",
        )
        .bind(&cases)
        .bind(&case_reports)
        .execute(&mut *conn)
        .await?;
    }
    if !reports.is_empty() {
        sqlx::query(
            "INSERT INTO report_channels (report_id, channel)
             SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT (report_id) DO NOTHING",
        )
        .bind(&reports)
        .bind(&channels)
        .execute(&mut *conn)
        .await?;
    }
    let (mut types, mut days, mut as_of, mut ids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (event, p) in events.iter().zip(&projections) {
        if let Some((license_type, target)) = &p.license_target {
            types.push(license_type.as_str());
            days.push(*target);
            as_of.push(event.occurred_at);
            ids.push(event.id);
        }
    }
    if !types.is_empty() {
        // The latest event wins, whatever order they are applied in. The
        // rows are locked in license-type order, so batches applied side by
        // side wait for each other instead of deadlocking.
        sqlx::query(
            "INSERT INTO license_type_targets (license_type, target_days, as_of, event_id)
             SELECT DISTINCT ON (license_type) license_type, target_days, as_of, event_id
               FROM UNNEST($1::text[], $2::int4[], $3::timestamptz[], $4::uuid[])
                    AS t(license_type, target_days, as_of, event_id)
              ORDER BY license_type, as_of DESC, event_id DESC
             ON CONFLICT (license_type) DO UPDATE
                SET target_days = excluded.target_days, as_of = excluded.as_of,
                    event_id = excluded.event_id
              WHERE (license_type_targets.as_of, license_type_targets.event_id)
                  < (excluded.as_of, excluded.event_id)",
        )
        .bind(&types)
        .bind(&days)
        .bind(&as_of)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Copies the state facts ([`Fact::STATES`]) among `facts` into `states`
/// and sets `until` on the states of their subjects: each holds until the
/// next one of its subject and kind, in (instant, event id) order, whatever
/// order they arrived in. Recomputing the few states of each touched subject
/// is what makes it order-free and idempotent. Two transactions writing
/// states of the same subject at once (batches applied side by side, or two
/// replicas) take turns on a per-subject lock, so the second one's statement
/// sees the first one's states.
async fn link_states(conn: &mut PgConnection, facts: &FactColumns<'_>) -> Result<(), HandlerError> {
    let rows: Vec<usize> = (0..facts.kind.len())
        .filter(|&at| Fact::STATES.iter().any(|f| f.as_str() == facts.kind[at]))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let (subjects, kinds) = (pick(&facts.subject, &rows), pick(&facts.kind, &rows));
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('kpi.states'), hashtext(kind || '/' || subject))
           FROM (SELECT DISTINCT subject, kind FROM UNNEST($1::text[], $2::text[]) AS t(subject, kind)
                  ORDER BY kind, subject) t",
    )
    .bind(&subjects)
    .bind(&kinds)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO states (event_id, kind, subject, occurred_at, municipality, partner, category, value)
         SELECT s.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
                                $6::text[], $7::text[], $8::float8[])
              AS s(event_id, kind, subject, occurred_at, municipality, partner, category, value)
         WHERE NOT EXISTS (SELECT 1 FROM withdrawn_events w WHERE w.event_id = s.event_id)
         ON CONFLICT (event_id, kind) DO NOTHING",
    )
    .bind(pick(&facts.event_id, &rows))
    .bind(&kinds)
    .bind(&subjects)
    .bind(pick(&facts.occurred_at, &rows))
    .bind(pick(&facts.municipality, &rows))
    .bind(pick(&facts.partner, &rows))
    .bind(pick(&facts.category, &rows))
    .bind(pick(&facts.value, &rows))
    .execute(&mut *conn)
    .await?;
    // Each touched subject's states are read through `states_by_subject`
    // (the window keeps the lateral subquery from being flattened into a
    // join over the whole table, which a planner picks while it is small
    // and then pays for on every batch as it grows).
    sqlx::query(
        "UPDATE states s SET until = n.next
           FROM (SELECT DISTINCT subject, kind
                   FROM UNNEST($1::text[], $2::text[]) AS t(subject, kind)) t
          CROSS JOIN LATERAL (
                 SELECT o.event_id, o.kind,
                        lead(o.occurred_at) OVER (ORDER BY o.occurred_at, o.event_id) AS next
                   FROM states o
                  WHERE o.subject = t.subject AND o.kind = t.kind) n
          WHERE s.event_id = n.event_id AND s.kind = n.kind AND s.until IS DISTINCT FROM n.next",
    )
    .bind(&subjects)
    .bind(&kinds)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The values of `column` at `rows`.
fn pick<T: Copy>(column: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&at| column[at]).collect()
}

/// Fact rows as one array per column, for `UNNEST`.
#[derive(Default)]
struct FactColumns<'a> {
    event_id: Vec<Uuid>,
    kind: Vec<&'static str>,
    subject: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    municipality: Vec<&'a str>,
    partner: Vec<&'a str>,
    channel: Vec<&'a str>,
    category: Vec<&'a str>,
    license_type: Vec<&'a str>,
    activity: Vec<&'a str>,
    operator: Vec<&'a str>,
    level: Vec<i32>,
    value: Vec<f64>,
}

impl<'a> FactColumns<'a> {
    fn push(&mut self, event: &InboundEvent, f: &'a FactRow) {
        self.event_id.push(event.id);
        self.kind.push(f.kind.as_str());
        self.subject.push(&f.subject);
        self.occurred_at.push(event.occurred_at);
        self.municipality.push(&f.municipality);
        self.partner.push(&f.partner);
        self.channel.push(&f.channel);
        self.category.push(&f.category);
        self.license_type.push(&f.license_type);
        self.activity.push(&f.activity);
        self.operator.push(&f.operator);
        self.level.push(f.level);
        self.value.push(f.value);
    }
}

/// The live projection consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Project;

impl EventHandler for Project {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &InboundEvent,
    ) -> Result<(), HandlerError> {
        apply(conn, event).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[InboundEvent],
    ) -> Result<(), HandlerError> {
        apply_all(conn, events).await
    }

    /// Facts depend only on their own event and `until` is recomputed under
    /// a per-subject lock, so batches may commit in any order.
    fn batches_at_once(&self) -> usize {
        BATCHES_AT_ONCE
    }
}

/// How many batches each projection consumer applies at once.
const BATCHES_AT_ONCE: usize = 4;
