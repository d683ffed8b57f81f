//! A scripted month of domain events (November 2026 in Riyadh) published to
//! real JetStream, projected by the KPI service into real PostgreSQL, and
//! measured over gRPC against values computed by hand in the comments; then
//! the rebuild compared with the live tables, and the dashboard rendered in
//! headless Chromium compared with the gRPC answers.

use std::sync::Arc;

use baladiya_kpi::KpiService;
use baladiya_kpi::catalogue::{Catalogue, Unit};
use baladiya_kpi::dashboard::format_value;
use baladiya_kpi::rebuild::{self, Mode};
use baladiya_platform::auth::Role;
use baladiya_platform::events::{EventType, Namespace, OutboundEvent, outbox, streams};
use baladiya_proto::convert::timestamp;
use baladiya_proto::events::v1::EventMeta;
use baladiya_proto::intake::events::v1 as intake;
use baladiya_proto::intake::v1::Channel;
use baladiya_proto::kpi::v1 as pb;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_proto::licensing::events::v1 as licensing;
use baladiya_proto::routing::events::v1 as routing;
use baladiya_proto::sla::events::v1 as sla;
use chrono::{DateTime, Utc};
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

use crate::{RunningPlatform, TestEnv, authorized, eventually, instant};

/// Publishes events as their producing services would.
struct Bus {
    js: async_nats::jetstream::Context,
    ns: Namespace,
    published: usize,
}

impl Bus {
    async fn new(env: &TestEnv) -> anyhow::Result<Self> {
        let js = async_nats::jetstream::new(env.nats().await?);
        let ns = Namespace::new(&env.namespace);
        for s in [
            streams::INTAKE,
            streams::ROUTING,
            streams::SLA,
            streams::LICENSING,
        ] {
            s.ensure(&js, &ns, &env.config().events).await?;
        }
        Ok(Self {
            js,
            ns,
            published: 0,
        })
    }

    async fn publish<M: prost::Message + prost::Name>(
        &mut self,
        kind: EventType,
        scope: &[&str],
        aggregate: &str,
        at: DateTime<Utc>,
        build: impl FnOnce(Option<EventMeta>) -> M,
    ) -> anyhow::Result<()> {
        let id = Uuid::now_v7();
        let payload = build(Some(EventMeta {
            event_id: id.to_string(),
            occurred_at: Some(timestamp(at)),
            aggregate_id: aggregate.to_string(),
            recorded_at: None,
        }));
        let event = OutboundEvent::new("script", kind, scope, id, aggregate, at, &payload);
        outbox::publish(&self.js, &self.ns, &event).await?;
        self.published += 1;
        Ok(())
    }

    async fn report(
        &mut self,
        id: &str,
        channel: Channel,
        at: &str,
        duplicate_of: &str,
    ) -> anyhow::Result<()> {
        self.publish(
            EventType::new("intake", "report", "received"),
            &["RIYADH", "POTHOLE"],
            id,
            instant(at),
            |meta| intake::ReportReceived {
                meta,
                report_id: id.into(),
                category_code: "POTHOLE".into(),
                municipality_code: "RIYADH".into(),
                channel: channel.into(),
                duplicate_of: duplicate_of.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn case(
        &mut self,
        event: &str,
        case: &str,
        partner: &str,
        at: &str,
    ) -> anyhow::Result<()> {
        let case_ref = Some(routing::CaseRef {
            case_id: case.into(),
            report_id: format!("R{}", &case[1..]),
            assignee_code: partner.into(),
            municipality_code: "RIYADH".into(),
            category_code: "POTHOLE".into(),
            ..Default::default()
        });
        let kind = |name: &'static str| EventType::new("routing", "case", name);
        let scope = ["RIYADH", partner];
        let at = instant(at);
        match event {
            "routed" => {
                self.publish(kind("routed"), &scope, case, at, |meta| {
                    routing::CaseRouted {
                        meta,
                        case: case_ref,
                        ..Default::default()
                    }
                })
                .await
            }
            "acknowledged" => {
                self.publish(kind("acknowledged"), &scope, case, at, |meta| {
                    routing::CaseAcknowledged {
                        meta,
                        case: case_ref,
                    }
                })
                .await
            }
            "resolved" => {
                self.publish(kind("resolved"), &scope, case, at, |meta| {
                    routing::CaseResolved {
                        meta,
                        case: case_ref,
                        ..Default::default()
                    }
                })
                .await
            }
            "reopened" => {
                self.publish(kind("reopened"), &scope, case, at, |meta| {
                    routing::CaseReopened {
                        meta,
                        case: case_ref,
                        ..Default::default()
                    }
                })
                .await
            }
            "closed" => {
                self.publish(kind("closed"), &scope, case, at, |meta| {
                    routing::CaseClosed {
                        meta,
                        case: case_ref,
                        automatic: true,
                    }
                })
                .await
            }
            other => anyhow::bail!("the script has no case event {other}"),
        }
    }

    fn clock(
        kind: &str,
        subject: &str,
        metric: &str,
        partner: &str,
        category: &str,
    ) -> sla::ClockRef {
        sla::ClockRef {
            clock_id: format!("{subject}-{metric}"),
            subject_kind: kind.into(),
            subject_id: subject.into(),
            metric: metric.into(),
            partner_code: partner.into(),
            municipality_code: "RIYADH".into(),
            category_code: category.into(),
            ..Default::default()
        }
    }

    /// A case clock that stopped after `hours` of working time.
    async fn met(
        &mut self,
        case: &str,
        metric: &str,
        partner: &str,
        hours: f64,
        late: bool,
        at: &str,
    ) -> anyhow::Result<()> {
        let clock = Self::clock("case", case, metric, partner, "POTHOLE");
        self.publish(
            EventType::new("sla", "clock", "met"),
            &[partner],
            case,
            instant(at),
            |meta| sla::ClockMet {
                meta,
                clock: Some(clock),
                breached: late,
                elapsed: Some(prost_types::Duration {
                    seconds: (hours * 3600.0) as i64,
                    nanos: 0,
                }),
                elapsed_working_days: hours / 7.0,
            },
        )
        .await
    }

    async fn breached(&mut self, case: &str, metric: &str, at: &str) -> anyhow::Result<()> {
        let clock = Self::clock("case", case, metric, "MOTLS", "POTHOLE");
        self.publish(
            EventType::new("sla", "clock", "breached"),
            &["MOTLS"],
            case,
            instant(at),
            |meta| sla::ClockBreached {
                meta,
                clock: Some(clock),
                ..Default::default()
            },
        )
        .await
    }

    async fn resolve_started(&mut self, case: &str, at: &str) -> anyhow::Result<()> {
        let clock = Self::clock("case", case, "resolve", "MOTLS", "POTHOLE");
        self.publish(
            EventType::new("sla", "clock", "started"),
            &["MOTLS"],
            case,
            instant(at),
            |meta| sla::ClockStarted {
                meta,
                clock: Some(clock),
                ..Default::default()
            },
        )
        .await
    }

    async fn escalation(&mut self, case: &str, level: u32, at: &str) -> anyhow::Result<()> {
        let clock = Self::clock("case", case, "resolve", "MOTLS", "POTHOLE");
        self.publish(
            EventType::new("sla", "escalation", "raised"),
            &["MOTLS"],
            case,
            instant(at),
            |meta| sla::EscalationRaised {
                meta,
                escalation_id: format!("{case}-{level}"),
                clock: Some(clock),
                level,
                ..Default::default()
            },
        )
        .await
    }

    async fn rated(
        &mut self,
        report: &str,
        partner: &str,
        channel: Channel,
        score: u32,
        at: &str,
    ) -> anyhow::Result<()> {
        self.publish(
            EventType::new("intake", "report", "rated"),
            &["RIYADH", "POTHOLE"],
            report,
            instant(at),
            |meta| intake::ReportRated {
                meta,
                report_id: report.into(),
                score,
                category_code: "POTHOLE".into(),
                municipality_code: "RIYADH".into(),
                assignee_code: partner.into(),
                channel: channel.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn application(
        &mut self,
        event: &'static str,
        id: &str,
        license_type: &str,
        at: &str,
    ) -> anyhow::Result<()> {
        let target_days = match license_type {
            "BUILDING_PERMIT" => 15,
            "LAND_SUBDIVISION" => 60,
            _ => 5,
        };
        self.publish(
            EventType::new("licensing", "application", event),
            &["RIYADH", license_type],
            id,
            instant(at),
            |meta| licensing::ApplicationStep {
                meta,
                application: Some(licensing::ApplicationRef {
                    application_id: id.into(),
                    license_type_code: license_type.into(),
                    municipality_code: "RIYADH".into(),
                    target_days,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
    }

    async fn decision(
        &mut self,
        id: &str,
        license_type: &str,
        days: f64,
        late: bool,
        at: &str,
    ) -> anyhow::Result<()> {
        let clock = Self::clock("application", id, "decision", "RIYADH", license_type);
        self.publish(
            EventType::new("sla", "clock", "met"),
            &["RIYADH"],
            id,
            instant(at),
            |meta| sla::ClockMet {
                meta,
                clock: Some(clock),
                breached: late,
                elapsed: Some(prost_types::Duration {
                    seconds: (days * 7.0 * 3600.0) as i64,
                    nanos: 0,
                }),
                elapsed_working_days: days,
            },
        )
        .await
    }

    async fn issued(&mut self, id: &str, license_type: &str, at: &str) -> anyhow::Result<()> {
        self.publish(
            EventType::new("licensing", "license", "issued"),
            &["RIYADH", license_type],
            id,
            instant(at),
            |meta| licensing::LicenseChanged {
                meta,
                license_number: format!("L-{id}"),
                license_type_code: license_type.into(),
                municipality_code: "RIYADH".into(),
                application_id: id.into(),
                ..Default::default()
            },
        )
        .await
    }

    async fn inspection(&mut self, i: usize, at: &str) -> anyhow::Result<()> {
        let id = format!("I{i}");
        let private = i < 6;
        self.publish(
            EventType::new("licensing", "facility", "inspection_recorded"),
            &["RIYADH", "food"],
            &id,
            instant(at),
            |meta| licensing::FacilityInspectionRecorded {
                meta,
                inspection_id: id.clone(),
                activity: if i.is_multiple_of(2) {
                    "restaurant"
                } else {
                    "barbershop"
                }
                .into(),
                operator_code: if private { "PRIV1" } else { "MUNI" }.into(),
                private_operator: private,
                compliant: !(i == 0 || i == 6),
                municipality_code: "RIYADH".into(),
                ..Default::default()
            },
        )
        .await
    }
}

/// November 2026 in Riyadh (UTC+3), with a few events either side of it.
/// Hand-computed values are in the tests that read them.
async fn scripted_month(bus: &mut Bus) -> anyhow::Result<()> {
    use Channel::{BaladyPortal as Portal, CallCenter940 as C940, MobileApp as Mobile};
    // Reports: R1-R7 in November (R6 a duplicate of R1; R7 at 23:30 on the
    // last evening, 20:30 UTC), R8 ten minutes into December in Riyadh (still
    // 30 November in UTC), R9 on the last minute of October.
    bus.report("R1", C940, "2026-11-02T08:00:00+03:00", "")
        .await?;
    bus.report("R2", C940, "2026-11-03T08:00:00+03:00", "")
        .await?;
    bus.report("R3", C940, "2026-11-05T08:00:00+03:00", "")
        .await?;
    bus.report("R4", Portal, "2026-11-06T08:00:00+03:00", "")
        .await?;
    bus.report("R5", Portal, "2026-11-07T08:00:00+03:00", "")
        .await?;
    bus.report("R6", Mobile, "2026-11-08T08:00:00+03:00", "R1")
        .await?;
    bus.report("R7", C940, "2026-11-30T23:30:00+03:00", "")
        .await?;
    bus.report("R8", C940, "2026-12-01T00:10:00+03:00", "")
        .await?;
    bus.report("R9", Portal, "2026-10-31T23:59:00+03:00", "")
        .await?;

    // Cases C1-C4 with MOTLS, C5 with MEWA.
    for (case, partner, day) in [
        ("C1", "MOTLS", "02"),
        ("C2", "MOTLS", "03"),
        ("C3", "MOTLS", "05"),
        ("C4", "MOTLS", "06"),
        ("C5", "MEWA", "07"),
    ] {
        bus.case(
            "routed",
            case,
            partner,
            &format!("2026-11-{day}T09:00:00+03:00"),
        )
        .await?;
    }
    bus.case("acknowledged", "C1", "MOTLS", "2026-11-02T11:00:00+03:00")
        .await?;
    bus.case("acknowledged", "C2", "MOTLS", "2026-11-04T12:00:00+03:00")
        .await?;
    bus.case("acknowledged", "C4", "MOTLS", "2026-11-06T10:00:00+03:00")
        .await?;
    bus.case("acknowledged", "C5", "MEWA", "2026-11-07T12:00:00+03:00")
        .await?;
    bus.case("resolved", "C5", "MEWA", "2026-11-08T10:00:00+03:00")
        .await?;
    bus.case("resolved", "C1", "MOTLS", "2026-11-10T10:00:00+03:00")
        .await?;
    bus.case("closed", "C5", "MEWA", "2026-11-15T10:00:00+03:00")
        .await?;
    bus.case("resolved", "C2", "MOTLS", "2026-11-20T10:00:00+03:00")
        .await?;
    bus.case("reopened", "C2", "MOTLS", "2026-11-22T10:00:00+03:00")
        .await?;
    bus.case("resolved", "C4", "MOTLS", "2026-11-25T10:00:00+03:00")
        .await?;

    // Clocks. Acknowledge: C1 2h, C2 10h late, C4 1h, C5 3h (MEWA).
    bus.met(
        "C1",
        "acknowledge",
        "MOTLS",
        2.0,
        false,
        "2026-11-02T11:00:00+03:00",
    )
    .await?;
    bus.met(
        "C2",
        "acknowledge",
        "MOTLS",
        10.0,
        true,
        "2026-11-04T12:00:00+03:00",
    )
    .await?;
    bus.met(
        "C4",
        "acknowledge",
        "MOTLS",
        1.0,
        false,
        "2026-11-06T10:00:00+03:00",
    )
    .await?;
    bus.met(
        "C5",
        "acknowledge",
        "MEWA",
        3.0,
        false,
        "2026-11-07T12:00:00+03:00",
    )
    .await?;
    // Resolve: C5 5h, C1 20h, C2 40h late, C4 30h.
    bus.met(
        "C5",
        "resolve",
        "MEWA",
        5.0,
        false,
        "2026-11-08T10:00:00+03:00",
    )
    .await?;
    bus.met(
        "C1",
        "resolve",
        "MOTLS",
        20.0,
        false,
        "2026-11-10T10:00:00+03:00",
    )
    .await?;
    bus.met(
        "C2",
        "resolve",
        "MOTLS",
        40.0,
        true,
        "2026-11-20T10:00:00+03:00",
    )
    .await?;
    bus.met(
        "C4",
        "resolve",
        "MOTLS",
        30.0,
        false,
        "2026-11-25T10:00:00+03:00",
    )
    .await?;
    // Breaches: C2 acknowledge and resolve, C3 acknowledge and resolve; C3
    // stays open and overdue; C2's new resolve clock after the reopen is not.
    bus.breached("C2", "acknowledge", "2026-11-03T20:00:00+03:00")
        .await?;
    bus.resolve_started("C3", "2026-11-05T09:00:00+03:00")
        .await?;
    bus.breached("C3", "acknowledge", "2026-11-06T09:00:00+03:00")
        .await?;
    bus.breached("C3", "resolve", "2026-11-12T09:00:00+03:00")
        .await?;
    bus.breached("C2", "resolve", "2026-11-18T09:00:00+03:00")
        .await?;
    bus.resolve_started("C2", "2026-11-22T10:00:00+03:00")
        .await?;
    // Escalations: C3 level 1 and 2, C2 level 1.
    bus.escalation("C3", 1, "2026-11-13T09:00:00+03:00").await?;
    bus.escalation("C3", 2, "2026-11-16T09:00:00+03:00").await?;
    bus.escalation("C2", 1, "2026-11-19T09:00:00+03:00").await?;
    // Ratings: R5 3 (MEWA, portal), R1 5 (MOTLS, 940), R4 4 (MOTLS, portal).
    bus.rated("R5", "MEWA", Portal, 3, "2026-11-09T10:00:00+03:00")
        .await?;
    bus.rated("R1", "MOTLS", C940, 5, "2026-11-11T10:00:00+03:00")
        .await?;
    bus.rated("R4", "MOTLS", Portal, 4, "2026-11-26T10:00:00+03:00")
        .await?;

    // Licensing. A3 was submitted in October; A5 is rejected (its decision
    // clock ends but no license is issued).
    bus.application(
        "submitted",
        "A3",
        "LAND_SUBDIVISION",
        "2026-10-01T09:00:00+03:00",
    )
    .await?;
    bus.application(
        "submitted",
        "A1",
        "BUILDING_PERMIT",
        "2026-11-01T09:00:00+03:00",
    )
    .await?;
    bus.application(
        "submitted",
        "A2",
        "BUILDING_PERMIT",
        "2026-11-02T09:00:00+03:00",
    )
    .await?;
    bus.application(
        "submitted",
        "A4",
        "PROFESSIONAL_LICENSE",
        "2026-11-03T09:00:00+03:00",
    )
    .await?;
    bus.application(
        "submitted",
        "A5",
        "PROFESSIONAL_LICENSE",
        "2026-11-04T09:00:00+03:00",
    )
    .await?;
    bus.decision(
        "A4",
        "PROFESSIONAL_LICENSE",
        3.0,
        false,
        "2026-11-06T09:00:00+03:00",
    )
    .await?;
    bus.issued("A4", "PROFESSIONAL_LICENSE", "2026-11-06T09:00:00+03:00")
        .await?;
    bus.decision(
        "A5",
        "PROFESSIONAL_LICENSE",
        4.0,
        false,
        "2026-11-09T09:00:00+03:00",
    )
    .await?;
    bus.application(
        "rejected",
        "A5",
        "PROFESSIONAL_LICENSE",
        "2026-11-09T09:00:00+03:00",
    )
    .await?;
    bus.decision(
        "A1",
        "BUILDING_PERMIT",
        12.0,
        false,
        "2026-11-18T09:00:00+03:00",
    )
    .await?;
    bus.issued("A1", "BUILDING_PERMIT", "2026-11-18T09:00:00+03:00")
        .await?;
    bus.decision(
        "A2",
        "BUILDING_PERMIT",
        17.5,
        true,
        "2026-11-24T09:00:00+03:00",
    )
    .await?;
    bus.issued("A2", "BUILDING_PERMIT", "2026-11-24T09:00:00+03:00")
        .await?;
    bus.decision(
        "A3",
        "LAND_SUBDIVISION",
        63.0,
        true,
        "2026-11-26T09:00:00+03:00",
    )
    .await?;
    bus.issued("A3", "LAND_SUBDIVISION", "2026-11-26T09:00:00+03:00")
        .await?;
    // Commercial licenses: A4 and A8 in November 2026, A6 and A7 a year
    // earlier; A9 (29 November) is published last of all, after December's
    // events: a late event.
    bus.issued("A8", "FOOD_ESTABLISHMENT", "2026-11-20T09:00:00+03:00")
        .await?;
    bus.issued("A6", "PROFESSIONAL_LICENSE", "2025-11-10T09:00:00+03:00")
        .await?;
    bus.issued("A7", "FOOD_ESTABLISHMENT", "2025-11-12T09:00:00+03:00")
        .await?;
    bus.issued("A10", "PROFESSIONAL_LICENSE", "2026-12-02T09:00:00+03:00")
        .await?;

    // Ten facility inspections: I0-I5 by a private operator (I0 not
    // compliant), I6-I9 by the municipality (I6 not compliant).
    for i in 0..10 {
        bus.inspection(i, &format!("2026-11-{:02}T10:00:00+03:00", 10 + i))
            .await?;
    }
    bus.issued("A9", "PROFESSIONAL_LICENSE", "2026-11-29T09:00:00+03:00")
        .await?;
    Ok(())
}

struct Kpi {
    client: KpiServiceClient<GrpcChannel>,
    token: String,
}

fn month(date: &str) -> Option<pb::Period> {
    Some(pb::Period {
        granularity: pb::Granularity::Month.into(),
        date: date.into(),
    })
}

impl Kpi {
    async fn indicator(
        &mut self,
        code: &str,
        filters: pb::Filters,
        period: Option<pb::Period>,
        breakdown: pb::Dimension,
    ) -> anyhow::Result<pb::IndicatorValue> {
        Ok(self
            .client
            .get_indicator(authorized(
                pb::GetIndicatorRequest {
                    code: code.into(),
                    filters: Some(filters),
                    period,
                    breakdown: breakdown.into(),
                },
                &self.token,
            ))
            .await?
            .into_inner())
    }

    /// (value, target, status, sample) for November in Riyadh.
    async fn november(
        &mut self,
        code: &str,
        filters: pb::Filters,
    ) -> anyhow::Result<(Option<f64>, Option<f64>, pb::Status, u64)> {
        let v = self
            .indicator(
                code,
                filters,
                month("2026-11-15"),
                pb::Dimension::Unspecified,
            )
            .await?;
        let m = v.measurement.unwrap_or_default();
        Ok((m.value, m.target, m.status(), m.sample_size))
    }

    async fn scorecard(
        &mut self,
        subject: pb::get_scorecard_request::Subject,
    ) -> anyhow::Result<pb::Scorecard> {
        Ok(self
            .client
            .get_scorecard(authorized(
                pb::GetScorecardRequest {
                    subject: Some(subject),
                    period: month("2026-11-15"),
                },
                &self.token,
            ))
            .await?
            .into_inner())
    }
}

/// A breakdown as (key, value) pairs.
fn values_by_key(v: &pb::IndicatorValue) -> Vec<(String, Option<f64>)> {
    v.breakdown
        .iter()
        .map(|r| (r.key.clone(), r.measurement.as_ref().and_then(|m| m.value)))
        .collect()
}

fn riyadh() -> pb::Filters {
    pb::Filters {
        municipality_code: "RIYADH".into(),
        ..Default::default()
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

/// Starts the KPI service, publishes the month and waits until every event
/// is projected.
async fn month_projected(env: &TestEnv) -> anyhow::Result<(RunningPlatform, Kpi, usize)> {
    month_projected_with(env, env.config()).await
}

async fn month_projected_with(
    env: &TestEnv,
    config: baladiya_platform::config::Config,
) -> anyhow::Result<(RunningPlatform, Kpi, usize)> {
    let platform = RunningPlatform::start(config, vec![Arc::new(KpiService)]).await?;
    let mut bus = Bus::new(env).await?;
    scripted_month(&mut bus).await?;
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let expected = bus.published as i64;
    eventually(60, "every scripted event projected", || {
        let pool = pool.clone();
        async move {
            let (done, parked): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM kpi.inbox), (SELECT count(*) FROM kpi.parked_events)",
            )
            .fetch_one(&pool)
            .await?;
            anyhow::ensure!(parked == 0, "{parked} event(s) parked");
            Ok((done == expected).then_some(()))
        }
    })
    .await?;
    pool.close().await;
    let kpi = Kpi {
        client: KpiServiceClient::new(platform.channel().await?),
        token: platform.token(Role::Analyst),
    };
    Ok((platform, kpi, bus.published))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_month_gives_the_hand_computed_indicators() -> anyhow::Result<()> {
    use pb::Status::{Amber, Green, NoTarget, Red};
    let env = TestEnv::new();
    let (platform, mut kpi, _) = month_projected(&env).await?;
    let motls = pb::Filters {
        partner_code: "MOTLS".into(),
        ..Default::default()
    };

    // Complaints in Riyadh. Volume: R1-R7 (R7 at 23:30 on 30 November).
    assert_eq!(
        kpi.november("complaints.volume", riyadh()).await?,
        (Some(7.0), None, NoTarget, 7)
    );
    // Duplicates: R6 of 7.
    let (dup, ..) = kpi.november("complaints.duplicate_rate", riyadh()).await?;
    assert!(close(dup, 1.0 / 7.0));
    // Acknowledged within SLA: C1, C4, C5 of C1, C2, C4, C5 = 0.75 against
    // 0.95 (AMBER from 0.9025): RED. MOTLS alone: C1, C4 of C1, C2, C4.
    assert_eq!(
        kpi.november("complaints.acknowledged_within_sla", riyadh())
            .await?,
        (Some(0.75), Some(0.95), Red, 4)
    );
    let (ack_motls, _, _, n) = kpi
        .november("complaints.acknowledged_within_sla", motls.clone())
        .await?;
    assert!(close(ack_motls, 2.0 / 3.0) && n == 3);
    // Through the 940 channel (a case's channel is its report's): C1 met, C2 late.
    let c940 = pb::Filters {
        channel: Channel::CallCenter940.into(),
        ..riyadh()
    };
    assert_eq!(
        kpi.november("complaints.acknowledged_within_sla", c940)
            .await?
            .0,
        Some(0.5)
    );
    // Exact median and nearest-rank p90 of 1, 2, 3, 10 hours: 2.5 and 10;
    // resolve 5, 20, 30, 40: 25 and 40. MOTLS acknowledge 1, 2, 10: 2 and 10.
    assert_eq!(
        kpi.november("complaints.median_hours_to_acknowledge", riyadh())
            .await?
            .0,
        Some(2.5)
    );
    assert_eq!(
        kpi.november("complaints.p90_hours_to_acknowledge", riyadh())
            .await?
            .0,
        Some(10.0)
    );
    assert_eq!(
        kpi.november("complaints.median_hours_to_resolve", riyadh())
            .await?
            .0,
        Some(25.0)
    );
    assert_eq!(
        kpi.november("complaints.p90_hours_to_resolve", riyadh())
            .await?
            .0,
        Some(40.0)
    );
    assert_eq!(
        kpi.november("complaints.median_hours_to_acknowledge", motls.clone())
            .await?
            .0,
        Some(2.0)
    );
    assert_eq!(
        kpi.november("complaints.resolved_within_sla", riyadh())
            .await?
            .0,
        Some(0.75)
    );
    // Backlog at the end of November: C2 (reopened) and C3; overdue: C3 only.
    assert_eq!(
        kpi.november("complaints.open_backlog", riyadh()).await?.0,
        Some(2.0)
    );
    assert_eq!(
        kpi.november("complaints.overdue_backlog", riyadh())
            .await?
            .0,
        Some(1.0)
    );
    assert_eq!(
        kpi.november("complaints.open_backlog", motls.clone())
            .await?
            .0,
        Some(2.0)
    );
    // Reopen rate: C2 of 4 resolved = 0.25 against 0.05 (AMBER to 0.075): RED.
    assert_eq!(
        kpi.november("complaints.reopen_rate", riyadh()).await?,
        (Some(0.25), Some(0.05), Red, 4)
    );

    // Partners: 4 breaches and 3 escalations (level 1 twice, level 2 once).
    assert_eq!(
        kpi.november("partners.breaches", motls.clone()).await?.0,
        Some(4.0)
    );
    let escalations = kpi
        .indicator(
            "partners.escalations",
            motls.clone(),
            month("2026-11-01"),
            pb::Dimension::EscalationLevel,
        )
        .await?;
    assert_eq!(
        escalations.measurement.as_ref().and_then(|m| m.value),
        Some(3.0)
    );
    let levels = values_by_key(&escalations);
    assert_eq!(
        levels,
        [("1".to_string(), Some(2.0)), ("2".to_string(), Some(1.0))]
    );

    // Citizens: ratings 3, 5, 4: mean 4.0 against 4: GREEN; MOTLS 4.5.
    assert_eq!(
        kpi.november("citizens.average_satisfaction", riyadh())
            .await?,
        (Some(4.0), Some(4.0), Green, 3)
    );
    assert_eq!(
        kpi.november("citizens.average_satisfaction", motls.clone())
            .await?
            .0,
        Some(4.5)
    );
    // Response rate 3 ratings / 4 resolved; by channel: 940 1/2 (C1, C2),
    // portal 2/2 (C4, C5).
    let response = kpi
        .indicator(
            "citizens.rating_response_rate",
            riyadh(),
            month("2026-11-30"),
            pb::Dimension::Channel,
        )
        .await?;
    assert_eq!(
        response.measurement.as_ref().and_then(|m| m.value),
        Some(0.75)
    );
    let by_channel = values_by_key(&response);
    assert_eq!(
        by_channel,
        [
            ("CHANNEL_BALADY_PORTAL".to_string(), Some(1.0)),
            ("CHANNEL_CALL_CENTER_940".to_string(), Some(0.5)),
        ]
    );

    // Licensing: received A1, A2, A4, A5; rejected A5; issued A1-A4, A8, A9.
    assert_eq!(
        kpi.november("licensing.applications_received", riyadh())
            .await?
            .0,
        Some(4.0)
    );
    assert_eq!(
        kpi.november("licensing.applications_rejected", riyadh())
            .await?
            .0,
        Some(1.0)
    );
    assert_eq!(
        kpi.november("licensing.licenses_issued", riyadh()).await?.0,
        Some(6.0)
    );
    // Median days to license over issued licenses 3, 12, 17.5, 63 (A5's 4
    // days ended in a rejection): 14.75, no single target. Per license type:
    // building permits 12 and 17.5 -> 14.75 within 15 (GREEN); the land
    // subdivision 63 against 60, within 20% (AMBER); professional 3 of 5.
    let median = kpi
        .indicator(
            "licensing.median_days_to_license",
            riyadh(),
            month("2026-11-15"),
            pb::Dimension::LicenseType,
        )
        .await?;
    let overall = median.measurement.unwrap_or_default();
    assert_eq!(
        (overall.value, overall.target, overall.status()),
        (Some(14.75), None, NoTarget)
    );
    let rows: Vec<(String, Option<f64>, Option<f64>, pb::Status)> = median
        .breakdown
        .iter()
        .map(|r| {
            let m = r.measurement.unwrap_or_default();
            (r.key.clone(), m.value, m.target, m.status())
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "BUILDING_PERMIT".to_string(),
                Some(14.75),
                Some(15.0),
                Green
            ),
            (
                "LAND_SUBDIVISION".to_string(),
                Some(63.0),
                Some(60.0),
                Amber
            ),
            (
                "PROFESSIONAL_LICENSE".to_string(),
                Some(3.0),
                Some(5.0),
                Green
            ),
        ]
    );
    let building = pb::Filters {
        license_type_code: "BUILDING_PERMIT".into(),
        ..riyadh()
    };
    assert_eq!(
        kpi.november("licensing.median_days_to_license", building)
            .await?
            .1,
        Some(15.0)
    );
    // Within target: A1 and A4 of A1-A4 = 0.5: RED.
    assert_eq!(
        kpi.november("licensing.share_within_target", riyadh())
            .await?,
        (Some(0.5), Some(0.9), Red, 4)
    );

    // Inspections: 8 of 10 compliant (RED against 0.9); 6 of 10 private
    // (AMBER against 0.7, to 0.525); by operator 5/6 and 3/4.
    assert_eq!(
        kpi.november("inspections.facility_compliance_rate", riyadh())
            .await?,
        (Some(0.8), Some(0.9), Red, 10)
    );
    assert_eq!(
        kpi.november("inspections.private_operator_share", riyadh())
            .await?,
        (Some(0.6), Some(0.7), Amber, 10)
    );
    let by_operator = kpi
        .indicator(
            "inspections.facility_compliance_rate",
            riyadh(),
            month("2026-11-15"),
            pb::Dimension::Operator,
        )
        .await?;
    let ops = values_by_key(&by_operator);
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0].0, "MUNI");
    assert!(close(ops[0].1, 0.75) && ops[1].0 == "PRIV1" && close(ops[1].1, 5.0 / 6.0));

    // Business: commercial licenses A4, A8 and the late A9 = 3, against A6
    // and A7 a year earlier: +50% (GREEN against +10%).
    assert_eq!(
        kpi.november("business.new_commercial_licenses", riyadh())
            .await?
            .0,
        Some(3.0)
    );
    assert_eq!(
        kpi.november("business.new_commercial_licenses_growth", riyadh())
            .await?,
        (Some(0.5), Some(0.1), Green, 3)
    );

    // Period boundaries in Asia/Riyadh: R7 (23:30 on 30 November) is that
    // day's; R8 (00:10 on 1 December, still 30 November in UTC) is December's.
    let day = |date: &str| {
        Some(pb::Period {
            granularity: pb::Granularity::Day.into(),
            date: date.into(),
        })
    };
    let on = kpi
        .indicator(
            "complaints.volume",
            riyadh(),
            day("2026-11-30"),
            pb::Dimension::Unspecified,
        )
        .await?;
    assert_eq!(on.measurement.as_ref().and_then(|m| m.value), Some(1.0));
    let period = on.period.clone().unwrap_or_default();
    assert_eq!(
        (period.label.as_str(), period.time_zone.as_str()),
        ("2026-11-30", "Asia/Riyadh")
    );
    assert_eq!(
        period.start,
        Some(timestamp(instant("2026-11-29T21:00:00Z")))
    );
    let series = kpi
        .client
        .get_time_series(authorized(
            pb::GetTimeSeriesRequest {
                code: "complaints.volume".into(),
                filters: Some(riyadh()),
                granularity: pb::Granularity::Month.into(),
                from_date: "2026-10-01".into(),
                to_date: "2026-12-31".into(),
            },
            &kpi.token,
        ))
        .await?
        .into_inner();
    let points: Vec<(String, Option<f64>)> = series
        .points
        .iter()
        .map(|p| {
            (
                p.period
                    .as_ref()
                    .map(|p| p.label.clone())
                    .unwrap_or_default(),
                p.measurement.as_ref().and_then(|m| m.value),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            ("2026-10".to_string(), Some(1.0)),
            ("2026-11".to_string(), Some(7.0)),
            ("2026-12".to_string(), Some(1.0)),
        ]
    );
    // The week of Sunday 22 November has no report (R7 is on Monday 30th).
    let week = kpi
        .indicator(
            "complaints.volume",
            riyadh(),
            Some(pb::Period {
                granularity: pb::Granularity::Week.into(),
                date: "2026-11-24".into(),
            }),
            pb::Dimension::Unspecified,
        )
        .await?;
    assert_eq!(
        week.period.as_ref().map(|p| p.label.as_str()),
        Some("2026-11-22..2026-11-28")
    );
    assert_eq!(
        week.measurement.as_ref().map(|m| (m.value, m.sample_size)),
        Some((Some(0.0), 0))
    );

    // A partner's scorecard has the partner indicators only.
    let card = kpi
        .scorecard(pb::get_scorecard_request::Subject::PartnerCode(
            "MOTLS".into(),
        ))
        .await?;
    let catalogue = Catalogue::builtin()?;
    assert!(card.indicators.iter().all(|i| {
        catalogue.get(&i.code).is_some_and(|c| {
            c.dimensions
                .contains(&baladiya_kpi::catalogue::Dimension::Partner)
        })
    }));
    let breaches = card
        .indicators
        .iter()
        .find(|i| i.code == "partners.breaches")
        .expect("breaches");
    assert_eq!(
        breaches.measurement.as_ref().and_then(|m| m.value),
        Some(4.0)
    );
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kpi_requests_name_the_field() -> anyhow::Result<()> {
    use tonic_types::StatusExt;
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(KpiService)]).await?;
    let mut client = KpiServiceClient::new(platform.channel().await?);
    let token = platform.token(Role::Analyst);
    let fields = |status: tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    let bad = client
        .get_indicator(authorized(
            pb::GetIndicatorRequest {
                code: "licensing.licenses_issued".into(),
                filters: Some(pb::Filters {
                    channel: Channel::Kiosk.into(),
                    ..Default::default()
                }),
                period: Some(pb::Period {
                    granularity: pb::Granularity::Unspecified.into(),
                    date: "2026-13-01".into(),
                }),
                breakdown: pb::Dimension::Partner.into(),
            },
            &token,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(bad),
        [
            "filters.channel",
            "breakdown",
            "period.granularity",
            "period.date"
        ]
    );
    let unknown = client
        .get_indicator(authorized(
            pb::GetIndicatorRequest {
                code: "roads.smoothness".into(),
                period: month("2026-11-01"),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(fields(unknown), ["code"]);
    let no_subject = client
        .get_scorecard(authorized(
            pb::GetScorecardRequest {
                subject: None,
                period: None,
            },
            &token,
        ))
        .await
        .expect_err("no subject");
    assert_eq!(fields(no_subject), ["municipality_code", "period"]);
    let too_long = client
        .get_time_series(authorized(
            pb::GetTimeSeriesRequest {
                code: "complaints.volume".into(),
                granularity: pb::Granularity::Day.into(),
                from_date: "2020-01-01".into(),
                to_date: "2026-01-01".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("too many points");
    assert_eq!(fields(too_long), ["to_date"]);
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// Every row of the live projection tables, for exact comparison.
async fn table_dump(pool: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for table in rebuild::TABLES {
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM kpi.{table} t ORDER BY t::text"
        )))
        .fetch_all(pool)
        .await?;
        out.extend(rows.into_iter().map(|r| format!("{table} {r}")));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_streams_equals_the_live_projections_and_repeats_change_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let (platform, mut kpi, published) = month_projected(&env).await?;
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let live = table_dump(&pool).await?;
    let card = kpi
        .scorecard(pb::get_scorecard_request::Subject::MunicipalityCode(
            "RIYADH".into(),
        ))
        .await?;

    // Rebuilt into fresh tables and compared: no row differs.
    let mut lines = Vec::new();
    let report = rebuild::rebuild(&env.config(), Mode::Check, |l| lines.push(l)).await?;
    assert_eq!(report.differences.values().sum::<i64>(), 0, "{report:?}");
    assert_eq!(
        report.events.values().sum::<u64>(),
        published as u64,
        "{report:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("events done")),
        "progress: {lines:?}"
    );
    assert_eq!(
        table_dump(&pool).await?,
        live,
        "a check leaves the live tables alone"
    );

    // Swapped in, twice: the same rows and the same scorecard.
    for _ in 0..2 {
        let report = rebuild::rebuild(&env.config(), Mode::Swap, |_| {}).await?;
        assert_eq!(
            report.rows.get("facts").copied(),
            Some(live.iter().filter(|r| r.starts_with("facts ")).count() as i64)
        );
        assert_eq!(table_dump(&pool).await?, live);
    }
    assert_eq!(
        kpi.scorecard(pb::get_scorecard_request::Subject::MunicipalityCode(
            "RIYADH".into()
        ))
        .await?,
        card
    );

    // A duplicated event (the same id again) changes nothing either.
    let (subject, headers_event): (String, Uuid) =
        sqlx::query_as("SELECT subject, event_id FROM kpi.facts WHERE kind = 'rating' LIMIT 1")
            .fetch_one(&pool)
            .await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("SET search_path TO kpi")
        .execute(&mut *conn)
        .await?;
    let rating = baladiya_platform::events::InboundEvent {
        id: headers_event,
        subject: "baladiya.intake.report.rated.RIYADH.POTHOLE".into(),
        ce_type: "sa.baladiya.intake.report.rated.v1".into(),
        source: "/baladiya/intake".into(),
        aggregate_id: subject.clone(),
        occurred_at: instant("2026-11-26T10:00:00+03:00"),
        dataschema: <intake::ReportRated as prost::Name>::type_url(),
        payload: prost::Message::encode_to_vec(&intake::ReportRated {
            report_id: subject,
            score: 1,
            municipality_code: "RIYADH".into(),
            ..Default::default()
        })
        .into(),
        traceparent: None,
        recorded_at: None,
        stream_sequence: 0,
    };
    baladiya_kpi::project::apply(&mut conn, &rating)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(table_dump(&pool).await?, live);

    drop(conn);

    // The command line does the same and says so.
    let output = tokio::process::Command::new(crate::baladiya_binary())
        .args(["kpi", "rebuild", "--check"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BALADIYA__DATABASE__URL", env.database_url())
        .env("BALADIYA__NATS__URL", &env.nats_url)
        .env("BALADIYA__EVENTS__NAMESPACE", &env.namespace)
        .env("BALADIYA__TELEMETRY__LOG_FILTER", "warn")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("replayed") && stderr.contains("kpi rebuild:"),
        "{stdout}\n{stderr}"
    );
    // A case's states arriving out of order, and again, are linked in the
    // order they happened: each holds until the next one.
    // (After the check above: these events are not in the streams.)
    let mut conn = pool.acquire().await?;
    sqlx::query("SET search_path TO kpi")
        .execute(&mut *conn)
        .await?;
    let case_ref = routing::CaseRef {
        case_id: "C-ORDER".into(),
        report_id: "R-ORDER".into(),
        municipality_code: "RIYADH".into(),
        assignee_code: "MUN-ROADS".into(),
        category_code: "POTHOLE".into(),
        ..Default::default()
    };
    let event = |name: &str, at: &str, dataschema: String, payload: Vec<u8>| {
        baladiya_platform::events::InboundEvent {
            id: Uuid::now_v7(),
            subject: format!("baladiya.routing.case.{name}.RIYADH.MUN-ROADS"),
            ce_type: format!("sa.baladiya.routing.case.{name}.v1"),
            source: "/baladiya/routing".into(),
            aggregate_id: "C-ORDER".into(),
            occurred_at: instant(at),
            dataschema,
            payload: payload.into(),
            traceparent: None,
            recorded_at: None,
            stream_sequence: 0,
        }
    };
    let routed = event(
        "routed",
        "2026-11-27T10:00:00+03:00",
        <routing::CaseRouted as prost::Name>::type_url(),
        prost::Message::encode_to_vec(&routing::CaseRouted {
            case: Some(case_ref.clone()),
            ..Default::default()
        }),
    );
    let resolved = event(
        "resolved",
        "2026-11-27T11:00:00+03:00",
        <routing::CaseResolved as prost::Name>::type_url(),
        prost::Message::encode_to_vec(&routing::CaseResolved {
            case: Some(case_ref.clone()),
            ..Default::default()
        }),
    );
    let reopened = event(
        "reopened",
        "2026-11-27T12:00:00+03:00",
        <routing::CaseReopened as prost::Name>::type_url(),
        prost::Message::encode_to_vec(&routing::CaseReopened {
            case: Some(case_ref.clone()),
            ..Default::default()
        }),
    );
    for e in [&reopened, &routed, &resolved, &routed] {
        baladiya_kpi::project::apply(&mut conn, e)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let spans: Vec<(f64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT value, until FROM kpi.states WHERE subject = 'C-ORDER' AND kind = 'case_status'
          ORDER BY occurred_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    assert_eq!(
        spans,
        vec![
            (1.0, Some(instant("2026-11-27T11:00:00+03:00"))),
            (0.0, Some(instant("2026-11-27T12:00:00+03:00"))),
            (1.0, None),
        ]
    );
    drop(conn);
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// Renders a page in headless Chromium and returns the DOM it built.
async fn chromium_dom(url: &str) -> anyhow::Result<String> {
    // `make test` sets BALADIYA_TEST_CHROMIUM (installing Debian's package if needed).
    let chromium = std::env::var("BALADIYA_TEST_CHROMIUM")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            ["chromium", "chromium-browser"]
                .into_iter()
                .find(|c| std::process::Command::new(c).arg("--version").output().is_ok())
                .map(String::from)
        })
        .ok_or_else(|| {
            anyhow::anyhow!("Chromium is not installed: run `python3 scripts/devenv.py browser` (make test does)")
        })?;
    let profile = tempfile_dir()?;
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            url,
        ])
        .output()
        .await?;
    std::fs::remove_dir_all(&profile).ok();
    anyhow::ensure!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("baladiya-chromium-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The text between `start` and the next `end` after position `from`.
fn between<'a>(text: &'a str, from: usize, start: &str, end: &str) -> Option<(&'a str, usize)> {
    let s = text[from..].find(start)? + from + start.len();
    let e = text[s..].find(end)? + s;
    Some((&text[s..e], e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_in_chromium_the_numbers_grpc_gives() -> anyhow::Result<()> {
    let env = TestEnv::new();
    // Chromium cannot send a bearer token from the command line; here a login
    // proxy would. The token checks are tested below over plain HTTP.
    let mut config = env.config();
    config.sections.insert(
        "kpi".into(),
        toml::Value::Table(toml::toml! { dashboard_requires_token = false }),
    );
    let (platform, mut kpi, _) = month_projected_with(&env, config).await?;
    let catalogue = Catalogue::builtin()?;
    for (subject, query) in [
        (
            pb::get_scorecard_request::Subject::MunicipalityCode("RIYADH".into()),
            "municipality=RIYADH",
        ),
        (
            pb::get_scorecard_request::Subject::PartnerCode("MOTLS".into()),
            "partner=MOTLS",
        ),
    ] {
        let card = kpi.scorecard(subject).await?;
        let url = format!(
            "http://{}/dashboard?{query}&granularity=month&date=2026-11-15&lang=en",
            platform.http
        );
        let dom = chromium_dom(&url).await?;
        assert!(dom.contains(r#"dir="ltr""#) && dom.contains("Performance scorecard"));
        assert!(
            !dom.contains("http://") && !dom.contains("https://"),
            "no external assets"
        );
        let mut shown = 0;
        for indicator in &card.indicators {
            let row_start = dom
                .find(&format!(r#"data-code="{}""#, indicator.code))
                .ok_or_else(|| anyhow::anyhow!("{} is not on the page", indicator.code))?;
            let (raw, at) =
                between(&dom, row_start, r#"class="value" data-value=""#, "\"").expect("value");
            let (text, _) = between(&dom, at, r#"<bdi dir="ltr">"#, "<").expect("value text");
            let (status, _) = between(&dom, row_start, r#"data-status=""#, "\"").expect("status");
            let (sample, _) = between(&dom, row_start, r#"data-sample=""#, "\"").expect("sample");
            let m = indicator.measurement.unwrap_or_default();
            let unit = catalogue
                .get(&indicator.code)
                .map_or(Unit::Count, |c| c.unit);
            assert_eq!(text, format_value(unit, m.value), "{}", indicator.code);
            assert_eq!(raw.parse::<f64>().ok(), m.value, "{}", indicator.code);
            assert_eq!(sample.parse::<u64>()?, m.sample_size, "{}", indicator.code);
            let expected_status = match m.status() {
                pb::Status::Green => "green",
                pb::Status::Amber => "amber",
                pb::Status::Red => "red",
                pb::Status::NoTarget => "no-target",
                _ => "no-data",
            };
            assert_eq!(status, expected_status, "{}", indicator.code);
            shown += 1;
        }
        assert_eq!(shown, card.indicators.len());
        assert!(
            dom.contains("<svg class=\"spark\""),
            "a trend chart per indicator"
        );
    }
    // In Arabic, right to left, with Arabic names.
    let dom = chromium_dom(&format!(
        "http://{}/dashboard?municipality=RIYADH&granularity=month&date=2026-11-15",
        platform.http
    ))
    .await?;
    assert!(
        dom.contains(r#"dir="rtl""#)
            && dom.contains("بطاقة الأداء")
            && dom.contains("نسبة امتثال المنشآت")
    );
    let (status, body) = platform.http_get("/dashboard?granularity=month").await?;
    assert_eq!(status, 400);
    assert!(body.contains("municipality or partner"), "{body}");
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_token_and_shows_each_caller_its_own_scorecards()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(KpiService)]).await?;
    let config = &platform.config;
    let token = |role, partner: Option<&str>, municipality: Option<&str>| {
        baladiya_platform::auth::mint_dev_token(
            &config.auth,
            &baladiya_platform::auth::DevTokenRequest {
                subject: "viewer".into(),
                role,
                partner: partner.map(String::from),
                municipality: municipality.map(String::from),
                channel: None,
                ttl: chrono::Duration::hours(1),
            },
        )
    };
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let addr = platform.http;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::http_get_with(addr, path, &headers).await
        }
    };
    let riyadh = "/dashboard?municipality=RIYADH&date=2026-11-15";
    assert_eq!(get(riyadh, vec![]).await?.0, 401);
    assert_eq!(
        get(riyadh, vec![("Authorization", "Bearer not-a-token".into())])
            .await?
            .0,
        401
    );
    let operator = token(Role::Operator, None, Some("RIYADH"))?;
    let (status, body) = get(
        riyadh,
        vec![("Authorization", format!("Bearer {operator}"))],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data-code=\"complaints.volume\""));
    let jeddah = token(Role::Operator, None, Some("JEDDAH"))?;
    assert_eq!(
        get(
            riyadh,
            vec![("Cookie", format!("theme=dark; baladiya_token={jeddah}"))]
        )
        .await?
        .0,
        403
    );
    let motls = token(Role::Partner, Some("MOTLS"), None)?;
    assert_eq!(
        get(
            "/dashboard?partner=MOTLS",
            vec![("Cookie", format!("baladiya_token={motls}"))]
        )
        .await?
        .0,
        200
    );
    assert_eq!(
        get(
            "/dashboard?partner=MEWA",
            vec![("Cookie", format!("baladiya_token={motls}"))]
        )
        .await?
        .0,
        403
    );
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// The SLA events of a withdrawn breach and escalation, and of a breach that
/// stands, as the KPI consumer receives them.
fn withdrawal_history() -> Vec<baladiya_platform::events::InboundEvent> {
    let clock = |id: &str| sla::ClockRef {
        clock_id: id.into(),
        subject_kind: "case".into(),
        subject_id: format!("case-{id}"),
        metric: "resolve".into(),
        partner_code: "MEWA".into(),
        municipality_code: "RIYADH".into(),
        category_code: "WATER_LEAK".into(),
        ..Default::default()
    };
    let at = |text: &str| instant(text);
    let meta = |id: Uuid, t: DateTime<Utc>, clock: &str| {
        Some(EventMeta {
            event_id: id.to_string(),
            occurred_at: Some(timestamp(t)),
            aggregate_id: clock.into(),
            recorded_at: None,
        })
    };
    let event = |kind: &str,
                 id: Uuid,
                 t: &str,
                 clock_id: &str,
                 payload: &dyn Fn(Option<EventMeta>) -> Vec<u8>,
                 schema: String| {
        let (aggregate, name) = kind.split_once('.').expect("aggregate.event");
        let out = OutboundEvent {
            id,
            subject: format!("baladiya.sla.{aggregate}.{name}.MEWA"),
            ce_type: format!("sa.baladiya.sla.{kind}.v1"),
            source: "/baladiya/sla-watcher".into(),
            aggregate_id: clock_id.into(),
            occurred_at: at(t),
            dataschema: schema,
            payload: payload(meta(id, at(t), clock_id)),
            traceparent: None,
            recorded_at: None,
        };
        baladiya_platform::events::InboundEvent::from_parts(
            out.subject.clone(),
            &out.headers(),
            out.payload.clone().into(),
        )
        .expect("inbound")
    };
    let type_url = |name: &str| format!("type.googleapis.com/baladiya.sla.events.v1.{name}");
    let (b1, e1, b2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    vec![
        event(
            "clock.breached",
            b1,
            "2026-11-25T07:00:00Z",
            "c1",
            &|meta| {
                prost::Message::encode_to_vec(&sla::ClockBreached {
                    meta,
                    clock: Some(clock("c1")),
                    provisional: true,
                    ..Default::default()
                })
            },
            type_url("ClockBreached"),
        ),
        event(
            "escalation.raised",
            e1,
            "2026-11-25T07:00:00Z",
            "c1",
            &|meta| {
                prost::Message::encode_to_vec(&sla::EscalationRaised {
                    meta,
                    clock: Some(clock("c1")),
                    level: 1,
                    provisional: true,
                    ..Default::default()
                })
            },
            type_url("EscalationRaised"),
        ),
        event(
            "clock.breached",
            b2,
            "2026-11-25T08:00:00Z",
            "c2",
            &|meta| {
                prost::Message::encode_to_vec(&sla::ClockBreached {
                    meta,
                    clock: Some(clock("c2")),
                    ..Default::default()
                })
            },
            type_url("ClockBreached"),
        ),
        event(
            "clock.breach_withdrawn",
            Uuid::now_v7(),
            "2026-11-25T07:20:00Z",
            "c1",
            &|meta| {
                prost::Message::encode_to_vec(&sla::ClockBreachWithdrawn {
                    meta,
                    clock: Some(clock("c1")),
                    breach_event_id: b1.to_string(),
                    ..Default::default()
                })
            },
            type_url("ClockBreachWithdrawn"),
        ),
        event(
            "escalation.withdrawn",
            Uuid::now_v7(),
            "2026-11-25T07:20:00Z",
            "c1",
            &|meta| {
                prost::Message::encode_to_vec(&sla::EscalationWithdrawn {
                    meta,
                    clock: Some(clock("c1")),
                    level: 1,
                    raised_event_id: e1.to_string(),
                    ..Default::default()
                })
            },
            type_url("EscalationWithdrawn"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_breaches_and_escalations_are_netted_out_in_any_order() -> anyhow::Result<()> {
    let history = withdrawal_history();
    let mut dumps = Vec::new();
    // In stream order and reversed (withdrawals before what they withdraw),
    // each event in a transaction of its own.
    for order in [history.clone(), history.iter().rev().cloned().collect()] {
        let env = TestEnv::new();
        let config = env.config();
        baladiya_platform::db::ensure_database(&config.database).await?;
        let pool = baladiya_platform::db::schema_pool(&config.database, "kpi")?;
        baladiya_platform::db::migrate(
            &pool,
            "kpi",
            &baladiya_platform::app::ServiceModule::migrator(&KpiService),
        )
        .await?;
        for event in &order {
            let mut tx = pool.begin().await?;
            baladiya_kpi::project::apply(&mut tx, event)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tx.commit().await?;
        }
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM facts WHERE kind IN ('clock_breached', 'escalation') GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&pool)
        .await?;
        assert_eq!(
            counts,
            [("clock_breached".to_string(), 1)],
            "only the breach that stands counts; the withdrawn escalation is gone"
        );
        let overdue: Vec<(String, f64)> = sqlx::query_as(
            "SELECT subject, value FROM states WHERE kind = 'resolve_overdue' AND until IS NULL ORDER BY subject",
        )
        .fetch_all(&pool)
        .await?;
        assert_eq!(
            overdue,
            [("case-c1".to_string(), 0.0), ("case-c2".to_string(), 1.0)],
            "the withdrawn breach's case is not overdue"
        );
        dumps.push(table_dump(&pool).await?);
        pool.close().await;
        env.cleanup().await;
    }
    assert_eq!(dumps[0], dumps[1], "any order, the same tables");
    Ok(())
}
