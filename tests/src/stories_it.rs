//! End-to-end stories: what citizens, partner bodies, operators and analysts
//! see, through the public gRPC API and the event streams only, with the built
//! binary in both topologies: every service in one process, and each service
//! in its own process. Time is driven through every process's manual clock
//! (`baladiya.admin.v1.ClockService`); nothing sleeps for SLA durations.

use std::collections::BTreeMap;
use std::time::Duration;

use baladiya_platform::auth::Role;
use baladiya_platform::config::Config;
use baladiya_proto::common::v1::Location;
use baladiya_proto::intake::v1 as intake;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use baladiya_proto::kpi::v1 as kpi;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_proto::licensing::v1 as licensing;
use baladiya_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use baladiya_proto::routing::v1 as routing;
use baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient;
use baladiya_proto::sla::v1 as sla;
use baladiya_proto::sla::v1::sla_service_client::SlaServiceClient;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tonic::transport::Channel;

use baladiya_proto::common::v1::Priority;
use baladiya_proto::convert::instant;

use crate::{ChildPlatform, DevToken, TestEnv, authorized, eventually, riyadh, workspace_root};

const SERVICES: [&str; 6] = [
    "partners",
    "intake",
    "routing",
    "licensing",
    "sla-watcher",
    "kpi",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// `baladiya run --services all`.
    AllInOne,
    /// `baladiya run --services <service>`, one process each.
    Split,
}

/// The platform as child processes of the built binary, on a manual clock.
struct Deployed {
    env: TestEnv,
    config: Config,
    processes: Vec<(&'static str, ChildPlatform)>,
}

impl Deployed {
    async fn start(topology: Topology, at: DateTime<Utc>) -> anyhow::Result<Self> {
        let env = TestEnv::new();
        let seed = workspace_root().join("deploy/seed").display().to_string();
        let start = at.to_rfc3339();
        let extra = [
            ("BALADIYA__CLOCK__MODE", "manual"),
            ("BALADIYA__CLOCK__START", start.as_str()),
            ("BALADIYA__SEED__DIR", seed.as_str()),
            ("BALADIYA__EVENTS__OUTBOX_POLL_MS", "100"),
            ("BALADIYA__EVENTS__CONSUMER_BACKOFF_MS", "50"),
            ("BALADIYA__EVENTS__CONSUMER_BACKOFF_MAX_MS", "200"),
        ];
        let groups: Vec<&'static str> = match topology {
            Topology::AllInOne => vec!["all"],
            Topology::Split => SERVICES.to_vec(),
        };
        let mut processes = Vec::new();
        for services in groups {
            // Migrations run under an advisory lock: starting the processes one
            // after another keeps start-up quick and the logs readable.
            processes.push((
                services,
                ChildPlatform::spawn(&env, services, &extra).await?,
            ));
        }
        let deployed = Self {
            config: env.config(),
            env,
            processes,
        };
        crate::sla_watcher_has_the_seed(&deployed.env).await?;
        Ok(deployed)
    }

    /// A channel to the process running `service`.
    async fn channel(&self, service: &str) -> anyhow::Result<Channel> {
        let (_, process) = self
            .processes
            .iter()
            .find(|(s, _)| *s == "all" || *s == service)
            .ok_or_else(|| anyhow::anyhow!("no process runs {service}"))?;
        Ok(Channel::from_shared(format!("http://{}", process.grpc))?
            .connect()
            .await?)
    }

    /// `token`, valid for the two hours a story may take.
    fn token(&self, token: DevToken) -> String {
        token
            .ttl(chrono::Duration::hours(2))
            .mint(&self.config.auth)
    }

    fn as_role(&self, role: Role) -> String {
        self.token(DevToken::new(role).subject(format!("{role:?}").to_lowercase()))
    }

    fn partner(&self, code: &str) -> String {
        self.token(DevToken::partner_system(code))
    }

    fn channel_940(&self) -> String {
        self.citizen_channel("CHANNEL_CALL_CENTER_940")
    }

    fn citizen_channel(&self, channel: &str) -> String {
        self.token(
            DevToken::new(Role::Channel)
                .subject(channel.to_lowercase())
                .channel(channel),
        )
    }

    fn operator(&self, municipality: &str) -> String {
        self.token(
            DevToken::new(Role::Operator)
                .subject("operator")
                .municipality(municipality),
        )
    }

    /// Moves every process's clock to `at`.
    async fn set_time(&self, at: DateTime<Utc>) -> anyhow::Result<()> {
        let grpc = self.processes.iter().map(|(_, p)| p.grpc);
        crate::set_clocks(grpc, at, &self.as_role(Role::Admin)).await
    }

    /// Subscribes to `subject` (without the test's namespace) on NATS.
    async fn subscribe(&self, subject: &str) -> anyhow::Result<async_nats::Subscriber> {
        let nats = self.env.nats().await?;
        let subscriber = nats
            .subscribe(format!("{}.{subject}", self.env.namespace))
            .await?;
        nats.flush().await?;
        Ok(subscriber)
    }

    async fn stop(self) -> anyhow::Result<()> {
        for (services, process) in self.processes {
            let code = process.terminate().await?;
            anyhow::ensure!(code == Some(0), "{services} exited with {code:?}");
        }
        self.env.cleanup().await;
        Ok(())
    }
}

/// The public API as each actor calls it.
struct Api {
    intake: IntakeServiceClient<Channel>,
    routing: RoutingServiceClient<Channel>,
    sla: SlaServiceClient<Channel>,
    kpi: KpiServiceClient<Channel>,
    licensing: LicensingServiceClient<Channel>,
}

impl Api {
    async fn of(d: &Deployed) -> anyhow::Result<Self> {
        Ok(Self {
            intake: IntakeServiceClient::new(d.channel("intake").await?),
            routing: RoutingServiceClient::new(d.channel("routing").await?),
            sla: SlaServiceClient::new(d.channel("sla-watcher").await?),
            kpi: KpiServiceClient::new(d.channel("kpi").await?),
            licensing: LicensingServiceClient::new(d.channel("licensing").await?),
        })
    }

    async fn submit(
        &self,
        token: &str,
        category: &str,
        description: &str,
        priority_hint: Priority,
    ) -> anyhow::Result<intake::Report> {
        let response = self
            .intake
            .clone()
            .submit_report(authorized(
                intake::SubmitReportRequest {
                    request_id: uuid::Uuid::now_v7().to_string(),
                    channel: intake::Channel::CallCenter940 as i32,
                    category_code: category.into(),
                    description: description.into(),
                    location: Some(Location {
                        latitude: 24.6900,
                        longitude: 46.6850,
                        national_address_short: String::new(),
                        municipality_code: "RIYADH".into(),
                    }),
                    reporter: None,
                    attachments: vec![],
                    observed_at: None,
                    priority_hint: priority_hint as i32,
                },
                token,
            ))
            .await?
            .into_inner();
        response
            .report
            .ok_or_else(|| anyhow::anyhow!("SubmitReport answered without a report"))
    }

    /// The report's case once it is routed to `assignee`.
    async fn case_of(
        &self,
        report: &intake::Report,
        assignee: &str,
        token: &str,
    ) -> anyhow::Result<routing::Case> {
        eventually(30, "the case routed", || async {
            let cases = self
                .routing
                .clone()
                .list_cases(authorized(
                    routing::ListCasesRequest {
                        page_size: 500,
                        ..Default::default()
                    },
                    token,
                ))
                .await?
                .into_inner()
                .cases;
            Ok(cases
                .into_iter()
                .find(|c| c.report_id == report.id && c.assignee_code == assignee))
        })
        .await
    }

    /// The case's clocks by `metric:owner`, once `n` exist.
    async fn clocks(
        &self,
        case_id: &str,
        n: usize,
        token: &str,
    ) -> anyhow::Result<BTreeMap<String, sla::Clock>> {
        crate::harness::sla::case_clocks(&self.sla, case_id, n, token).await
    }

    fn action(case: &routing::Case, note: &str) -> Option<routing::CaseAction> {
        Some(routing::CaseAction {
            case_id: case.id.clone(),
            note: note.into(),
            ..Default::default()
        })
    }

    async fn report_status(
        &self,
        report: &intake::Report,
        status: intake::ReportStatus,
        token: &str,
    ) -> anyhow::Result<()> {
        eventually(30, "the report's status", || async {
            let now = self
                .intake
                .clone()
                .get_report(authorized(
                    intake::GetReportRequest {
                        key: Some(intake::get_report_request::Key::Id(report.id.clone())),
                    },
                    token,
                ))
                .await?
                .into_inner();
            Ok((now.status == status as i32).then_some(()))
        })
        .await
    }

    async fn scorecard(
        &self,
        subject: kpi::get_scorecard_request::Subject,
        token: &str,
    ) -> anyhow::Result<BTreeMap<String, (Option<f64>, u64)>> {
        let card = self
            .kpi
            .clone()
            .get_scorecard(authorized(
                kpi::GetScorecardRequest {
                    subject: Some(subject),
                    period: Some(kpi::Period {
                        granularity: kpi::Granularity::Month.into(),
                        date: "2026-11-15".into(),
                    }),
                },
                token,
            ))
            .await?
            .into_inner();
        Ok(card
            .indicators
            .into_iter()
            .map(|i| {
                let m = i.measurement.unwrap_or_default();
                (i.code, (m.value, m.sample_size))
            })
            .collect())
    }
}

impl Api {
    /// An indicator for November 2026 in Riyadh, broken down by `breakdown`.
    async fn november(
        &self,
        code: &str,
        breakdown: kpi::Dimension,
        token: &str,
    ) -> anyhow::Result<kpi::IndicatorValue> {
        Ok(self
            .kpi
            .clone()
            .get_indicator(authorized(
                kpi::GetIndicatorRequest {
                    code: code.into(),
                    filters: Some(kpi::Filters {
                        municipality_code: "RIYADH".into(),
                        ..Default::default()
                    }),
                    period: Some(kpi::Period {
                        granularity: kpi::Granularity::Month.into(),
                        date: "2026-11-15".into(),
                    }),
                    breakdown: breakdown.into(),
                },
                token,
            ))
            .await?
            .into_inner())
    }

    /// The application's clocks by metric, once `n` exist.
    async fn application_clocks(
        &self,
        id: &str,
        n: usize,
        token: &str,
    ) -> anyhow::Result<BTreeMap<String, sla::Clock>> {
        eventually(30, "the application's clocks", || async {
            let clocks = self
                .sla
                .clone()
                .get_clocks(authorized(
                    sla::GetClocksRequest {
                        subject_kind: "application".into(),
                        subject_id: id.into(),
                    },
                    token,
                ))
                .await?
                .into_inner()
                .clocks;
            Ok((clocks.len() >= n)
                .then(|| clocks.into_iter().map(|c| (c.metric.clone(), c)).collect()))
        })
        .await
    }
}

impl Api {
    /// Waits until the SLA watcher has applied what just happened to clock
    /// `key` (`metric:owner` of a case, or the metric of an application): the
    /// story moves time on only once the watcher knows, as months or hours of
    /// real time would let it.
    async fn clock_reaches(
        &self,
        subject: (&str, &str),
        key: &str,
        state: sla::ClockState,
        token: &str,
    ) -> anyhow::Result<()> {
        eventually(30, "the SLA watcher to apply the change", || async {
            let clocks = self
                .sla
                .clone()
                .get_clocks(authorized(
                    sla::GetClocksRequest {
                        subject_kind: subject.0.into(),
                        subject_id: subject.1.into(),
                    },
                    token,
                ))
                .await?
                .into_inner()
                .clocks;
            Ok(clocks
                .iter()
                .any(|c| {
                    let name = if subject.0 == "case" {
                        format!("{}:{}", c.metric, c.partner_code)
                    } else {
                        c.metric.clone()
                    };
                    name == key && c.state == state as i32
                })
                .then_some(()))
        })
        .await
    }
}

fn deadline(clock: &sla::Clock) -> Option<DateTime<Utc>> {
    clock.deadline.as_ref().and_then(instant)
}

/// Messages on `subscriber` until none arrives for a moment.
async fn drain(subscriber: &mut async_nats::Subscriber, at_least: usize) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let wait = if seen.len() < at_least {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(750)
        };
        match tokio::time::timeout(wait, subscriber.next()).await {
            Ok(Some(message)) => seen.push(message.subject.to_string()),
            _ => return seen,
        }
    }
}

/// A pothole left by road works, reported on 940, goes to the Ministry of
/// Transport, which does not acknowledge it: warnings, a breach, escalation
/// level 1 and then level 2 on its subject; it acknowledges the escalations,
/// resolves late, the citizen rates it, and the scorecards show all of it.
async fn road_works_pothole_escalates_and_resolves_late(topology: Topology) -> anyhow::Result<()> {
    // Sunday 1 November 2026, 09:00 in Riyadh; sa-gov works 07:30-14:30,
    // Sunday to Thursday.
    let d = Deployed::start(topology, riyadh("2026-11-01 09:00")).await?;
    let api = Api::of(&d).await?;
    let operator = d.operator("RIYADH");
    let motls = d.partner("MOTLS");
    let mut escalations = d.subscribe("baladiya.sla.escalation.raised.MOTLS").await?;

    let report = api
        .submit(
            &d.channel_940(),
            "ROAD_WORKS_DAMAGE",
            "حفرة خلفتها أعمال الطريق أمام المدرسة",
            Priority::Unspecified,
        )
        .await?;
    let case = api.case_of(&report, "MOTLS", &operator).await?;
    assert_eq!(case.tracking_number, report.tracking_number);
    let clocks = api.clocks(&case.id, 3, &operator).await?;
    let ack = clocks
        .get("acknowledge:MOTLS")
        .unwrap_or_else(|| panic!("no acknowledge clock: {:?}", clocks.keys()));
    let resolve = clocks
        .get("resolve:MOTLS")
        .unwrap_or_else(|| panic!("no resolve clock: {:?}", clocks.keys()));
    // 480 working minutes: 330 on Sunday, 150 from Monday 07:30.
    assert_eq!(deadline(ack), Some(riyadh("2026-11-02 10:00")));
    // Five working days of 420 minutes: Sunday 09:00 to the next Sunday 09:00.
    assert_eq!(deadline(resolve), Some(riyadh("2026-11-08 09:00")));

    // Not acknowledged: breach and level 1 at Monday 10:00.
    d.set_time(riyadh("2026-11-02 10:30")).await?;
    assert_eq!(drain(&mut escalations, 1).await.len(), 1, "level 1, once");
    // Level 2 a working day after the breach: Tuesday 10:00.
    d.set_time(riyadh("2026-11-03 10:30")).await?;
    assert_eq!(drain(&mut escalations, 1).await.len(), 1, "level 2, once");

    let open = api
        .sla
        .clone()
        .list_escalations(authorized(
            sla::ListEscalationsRequest {
                state: sla::EscalationState::Open as i32,
                ..Default::default()
            },
            &motls,
        ))
        .await?
        .into_inner()
        .escalations;
    let mut levels: Vec<u32> = open
        .iter()
        .filter(|e| e.clock_id == ack.id)
        .map(|e| e.level)
        .collect();
    levels.sort_unstable();
    assert_eq!(levels, [1, 2]);
    for escalation in open.iter().filter(|e| e.clock_id == ack.id) {
        api.sla
            .clone()
            .acknowledge_escalation(authorized(
                sla::AcknowledgeEscalationRequest {
                    escalation_id: escalation.id.clone(),
                    note: "the contractor is on site tomorrow".into(),
                },
                &motls,
            ))
            .await?;
    }
    let mut routing_api = api.routing.clone();
    routing_api
        .acknowledge_case(authorized(
            routing::AcknowledgeCaseRequest {
                action: Api::action(&case, ""),
            },
            &motls,
        ))
        .await?;
    routing_api
        .start_work(authorized(
            routing::StartWorkRequest {
                action: Api::action(&case, ""),
            },
            &motls,
        ))
        .await?;

    api.clock_reaches(
        ("case", &case.id),
        "acknowledge:MOTLS",
        sla::ClockState::BreachedThenMet,
        &operator,
    )
    .await?;

    // Resolved on Sunday 8 November at 11:00, two hours after the deadline:
    // the resolve clock breached at 09:00 and raised its own level 1.
    d.set_time(riyadh("2026-11-08 11:00")).await?;
    assert_eq!(
        drain(&mut escalations, 1).await.len(),
        1,
        "level 1 of the resolve clock"
    );
    routing_api
        .resolve_case(authorized(
            routing::ResolveCaseRequest {
                action: Api::action(&case, ""),
                resolution: "asphalt patched and the road reopened".into(),
                proof_uris: vec![],
            },
            &motls,
        ))
        .await?;
    let clocks = eventually(30, "both clocks stopped", || async {
        let c = api.clocks(&case.id, 3, &operator).await?;
        let stopped = |k: &str| {
            c.get(k)
                .is_some_and(|c| c.state == sla::ClockState::BreachedThenMet as i32)
        };
        Ok((stopped("acknowledge:MOTLS") && stopped("resolve:MOTLS")).then_some(c))
    })
    .await?;
    assert_eq!(clocks["acknowledge:MOTLS"].escalation_levels_fired, 2);
    assert_eq!(clocks["resolve:MOTLS"].escalation_levels_fired, 1);

    // The citizen rates it, once intake has heard it is resolved.
    let channel = d.channel_940();
    api.report_status(&report, intake::ReportStatus::Resolved, &operator)
        .await?;
    api.intake
        .clone()
        .rate_report(authorized(
            intake::RateReportRequest {
                report_id: report.id.clone(),
                score: 2,
                comment: "took a week".into(),
            },
            &channel,
        ))
        .await?;

    // The scorecards show the breaches, the escalations, the late
    // resolution and the rating.
    let analyst = d.as_role(Role::Analyst);
    let partner = eventually(30, "the partner scorecard", || async {
        let card = api
            .scorecard(
                kpi::get_scorecard_request::Subject::PartnerCode("MOTLS".into()),
                &analyst,
            )
            .await?;
        let value = |code: &str| card.get(code).and_then(|(v, _)| *v);
        Ok((value("partners.escalations") == Some(3.0)).then_some(card))
    })
    .await?;
    assert_eq!(partner["partners.breaches"].0, Some(2.0), "{partner:?}");
    let city = eventually(30, "the municipality scorecard", || async {
        let card = api
            .scorecard(
                kpi::get_scorecard_request::Subject::MunicipalityCode("RIYADH".into()),
                &analyst,
            )
            .await?;
        let rated = card
            .get("citizens.average_satisfaction")
            .is_some_and(|(v, _)| v.is_some());
        Ok(rated.then_some(card))
    })
    .await?;
    assert_eq!(city["citizens.average_satisfaction"], (Some(2.0), 1));
    assert_eq!(city["complaints.resolved_within_sla"], (Some(0.0), 1));
    assert_eq!(city["complaints.acknowledged_within_sla"], (Some(0.0), 1));
    assert_eq!(city["complaints.volume"].0, Some(1.0));
    d.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_road_works_pothole_all_in_one() -> anyhow::Result<()> {
    road_works_pothole_escalates_and_resolves_late(Topology::AllInOne).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_road_works_pothole_split() -> anyhow::Result<()> {
    road_works_pothole_escalates_and_resolves_late(Topology::Split).await
}

fn elapsed_minutes(clock: &sla::Clock) -> i64 {
    clock.elapsed.as_ref().map_or(0, |d| d.seconds / 60)
}

/// An urgent sewage overflow on a Friday night runs on the 24x7 calendar. The
/// Ministry of Environment, Water and Agriculture rejects it as not theirs, an
/// operator reroutes it to the water company, which resolves it in time: each
/// body's clocks hold the time it had the case, and no one is in breach.
async fn urgent_sewage_overflow_is_rerouted_and_resolved_in_time(
    topology: Topology,
) -> anyhow::Result<()> {
    let d = Deployed::start(topology, riyadh("2026-11-06 22:00")).await?;
    let api = Api::of(&d).await?;
    let operator = d.operator("RIYADH");
    let (mewa, nwc) = (d.partner("MEWA"), d.partner("NWC"));

    let report = api
        .submit(
            &d.channel_940(),
            "SEWAGE_OVERFLOW",
            "طفح مجاري يغمر الشارع أمام المنازل",
            Priority::Urgent,
        )
        .await?;
    let case = api.case_of(&report, "MEWA", &operator).await?;
    let clocks = api.clocks(&case.id, 3, &operator).await?;
    // Urgent terms: 60 and 720 minutes on the 24x7 calendar, Friday night or not.
    assert_eq!(clocks["acknowledge:MEWA"].calendar_id, "24x7");
    assert_eq!(
        deadline(&clocks["acknowledge:MEWA"]),
        Some(riyadh("2026-11-06 23:00"))
    );
    assert_eq!(
        deadline(&clocks["resolve:MEWA"]),
        Some(riyadh("2026-11-07 10:00"))
    );

    d.set_time(riyadh("2026-11-06 22:20")).await?;
    let mut routing_api = api.routing.clone();
    routing_api
        .reject_case(authorized(
            routing::RejectCaseRequest {
                action: Api::action(&case, ""),
                reason: "the sewer network here is the water company's".into(),
                suggested_assignee_code: "NWC".into(),
            },
            &mewa,
        ))
        .await?;
    api.clock_reaches(
        ("case", &case.id),
        "acknowledge:MEWA",
        sla::ClockState::Cancelled,
        &operator,
    )
    .await?;
    d.set_time(riyadh("2026-11-06 22:40")).await?;
    routing_api
        .reroute_case(authorized(
            routing::RerouteCaseRequest {
                action: Api::action(&case, ""),
                assignee_code: "NWC".into(),
                reason: "as MEWA suggests".into(),
            },
            &operator,
        ))
        .await?;
    let clocks = api.clocks(&case.id, 5, &operator).await?;
    assert_eq!(
        deadline(&clocks["acknowledge:NWC"]),
        Some(riyadh("2026-11-06 23:40")),
        "NWC's hour starts at the reroute"
    );
    assert_eq!(
        deadline(&clocks["resolve:NWC"]),
        Some(riyadh("2026-11-07 10:40"))
    );

    d.set_time(riyadh("2026-11-06 23:00")).await?;
    routing_api
        .acknowledge_case(authorized(
            routing::AcknowledgeCaseRequest {
                action: Api::action(&case, ""),
            },
            &nwc,
        ))
        .await?;
    routing_api
        .start_work(authorized(
            routing::StartWorkRequest {
                action: Api::action(&case, ""),
            },
            &nwc,
        ))
        .await?;
    api.clock_reaches(
        ("case", &case.id),
        "acknowledge:NWC",
        sla::ClockState::Met,
        &operator,
    )
    .await?;
    d.set_time(riyadh("2026-11-07 06:00")).await?;
    routing_api
        .resolve_case(authorized(
            routing::ResolveCaseRequest {
                action: Api::action(&case, ""),
                resolution: "line cleared and the street disinfected".into(),
                proof_uris: vec![],
            },
            &nwc,
        ))
        .await?;

    let clocks = eventually(30, "NWC's clocks met", || async {
        let c = api.clocks(&case.id, 5, &operator).await?;
        let met = |k: &str| {
            c.get(k)
                .is_some_and(|c| c.state == sla::ClockState::Met as i32)
        };
        Ok((met("acknowledge:NWC") && met("resolve:NWC")).then_some(c))
    })
    .await?;
    // Twenty minutes were MEWA's, until it rejected the case; the rest NWC's.
    for metric in ["acknowledge:MEWA", "resolve:MEWA"] {
        let c = &clocks[metric];
        assert_eq!(c.state, sla::ClockState::Cancelled as i32, "{metric}");
        assert_eq!(elapsed_minutes(c), 20, "{metric}");
        assert_eq!(
            c.ended_at.as_ref().and_then(instant),
            Some(riyadh("2026-11-06 22:20"))
        );
    }
    assert_eq!(elapsed_minutes(&clocks["acknowledge:NWC"]), 20);
    assert_eq!(elapsed_minutes(&clocks["resolve:NWC"]), 440);

    let analyst = d.as_role(Role::Analyst);
    let city = eventually(30, "the municipality scorecard", || async {
        let card = api
            .scorecard(
                kpi::get_scorecard_request::Subject::MunicipalityCode("RIYADH".into()),
                &analyst,
            )
            .await?;
        let resolved = card
            .get("complaints.resolved_within_sla")
            .is_some_and(|(_, n)| *n == 1);
        Ok(resolved.then_some(card))
    })
    .await?;
    assert_eq!(city["complaints.resolved_within_sla"], (Some(1.0), 1));
    for partner in ["MEWA", "NWC"] {
        let card = api
            .scorecard(
                kpi::get_scorecard_request::Subject::PartnerCode(partner.into()),
                &analyst,
            )
            .await?;
        assert_eq!(
            card["partners.breaches"].0,
            Some(0.0),
            "{partner}: {card:?}"
        );
        assert_eq!(card["partners.escalations"].0, Some(0.0), "{partner}");
    }
    d.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_urgent_sewage_overflow_all_in_one() -> anyhow::Result<()> {
    urgent_sewage_overflow_is_rerouted_and_resolved_in_time(Topology::AllInOne).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_urgent_sewage_overflow_split() -> anyhow::Result<()> {
    urgent_sewage_overflow_is_rerouted_and_resolved_in_time(Topology::Split).await
}

/// A building permit and a land subdivision, both issued in November: the
/// permit is returned for correction, resubmitted, waits on a Ministry of
/// Justice clearance that escalates, passes its site inspection and is issued
/// within its 15 working days (the correction time does not count); the
/// subdivision, submitted in August, is issued after its 60. November's KPIs
/// show one license within target and one outside.
async fn building_permit_within_and_subdivision_outside_target(
    topology: Topology,
) -> anyhow::Result<()> {
    let d = Deployed::start(topology, riyadh("2026-08-02 09:00")).await?;
    let api = Api::of(&d).await?;
    let officer = d.operator("RIYADH");
    let applicant = d.citizen_channel("CHANNEL_BALADY_PORTAL");
    let moj = d.partner("MOJ");
    let mut licensing_api = api.licensing.clone();
    let submit = |license_type: &str, documents: &[&str]| licensing::SubmitApplicationRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        license_type_code: license_type.into(),
        applicant_id: "balady-account-5566778899".into(),
        municipality_code: "RIYADH".into(),
        facility_name: "مخطط الياسمين".into(),
        activity: "residential".into(),
        documents: documents.iter().map(|d| d.to_string()).collect(),
    };
    let clearance = |id: &str| licensing::RequestClearanceRequest {
        id: id.into(),
        partner_code: "MOJ".into(),
    };
    let granted = |id: &str| licensing::RecordClearanceRequest {
        id: id.into(),
        partner_code: "MOJ".into(),
        granted: true,
        note: "deed verified".into(),
    };

    // August: the subdivision arrives and MOJ clears it the next day.
    let subdivision = licensing_api
        .submit_application(authorized(
            submit("LAND_SUBDIVISION", &["survey_plan", "ownership_deed"]),
            &applicant,
        ))
        .await?
        .into_inner();
    licensing_api
        .request_clearance(authorized(clearance(&subdivision.id), &officer))
        .await?;
    d.set_time(riyadh("2026-08-03 10:00")).await?;
    licensing_api
        .record_clearance(authorized(granted(&subdivision.id), &moj))
        .await?;

    api.clock_reaches(
        ("application", &subdivision.id),
        "clearance",
        sla::ClockState::Met,
        &officer,
    )
    .await?;

    // November: the building permit.
    let mut escalations = d.subscribe("baladiya.sla.escalation.raised.MOJ").await?;
    d.set_time(riyadh("2026-11-01 08:00")).await?;
    let permit = licensing_api
        .submit_application(authorized(
            submit(
                "BUILDING_PERMIT",
                &["site_plan", "architectural_drawings", "ownership_deed"],
            ),
            &applicant,
        ))
        .await?
        .into_inner();
    d.set_time(riyadh("2026-11-01 10:00")).await?;
    licensing_api
        .return_for_correction(authorized(
            licensing::ReturnForCorrectionRequest {
                id: permit.id.clone(),
                reason: "the drawings are not stamped by a licensed office".into(),
            },
            &officer,
        ))
        .await?;
    d.set_time(riyadh("2026-11-02 10:00")).await?;
    licensing_api
        .resubmit_application(authorized(
            licensing::ResubmitApplicationRequest {
                id: permit.id.clone(),
                documents: vec!["architectural_drawings".into()],
            },
            &applicant,
        ))
        .await?;
    d.set_time(riyadh("2026-11-02 11:00")).await?;
    licensing_api
        .request_clearance(authorized(clearance(&permit.id), &officer))
        .await?;
    let clocks = api.application_clocks(&permit.id, 2, &officer).await?;
    // Five working days from Monday 11:00.
    assert_eq!(
        deadline(&clocks["clearance"]),
        Some(riyadh("2026-11-09 11:00"))
    );

    // MOJ is late: the clearance breaches and escalates, once.
    d.set_time(riyadh("2026-11-09 12:00")).await?;
    assert_eq!(drain(&mut escalations, 1).await.len(), 1, "level 1, once");
    let open = api
        .sla
        .clone()
        .list_escalations(authorized(
            sla::ListEscalationsRequest {
                state: sla::EscalationState::Open as i32,
                ..Default::default()
            },
            &moj,
        ))
        .await?
        .into_inner()
        .escalations;
    let escalation = open
        .iter()
        .find(|e| e.clock_id == clocks["clearance"].id)
        .expect("the clearance escalation");
    api.sla
        .clone()
        .acknowledge_escalation(authorized(
            sla::AcknowledgeEscalationRequest {
                escalation_id: escalation.id.clone(),
                note: "the deed registry was migrating".into(),
            },
            &moj,
        ))
        .await?;
    d.set_time(riyadh("2026-11-09 13:00")).await?;
    licensing_api
        .record_clearance(authorized(granted(&permit.id), &moj))
        .await?;
    api.clock_reaches(
        ("application", &permit.id),
        "clearance",
        sla::ClockState::BreachedThenMet,
        &officer,
    )
    .await?;

    d.set_time(riyadh("2026-11-10 09:00")).await?;
    licensing_api
        .schedule_inspection(authorized(
            licensing::ScheduleInspectionRequest {
                id: permit.id.clone(),
                kind: "SITE".into(),
                scheduled_for: Some(baladiya_proto::convert::timestamp(riyadh(
                    "2026-11-11 10:00",
                ))),
            },
            &officer,
        ))
        .await?;
    d.set_time(riyadh("2026-11-11 10:00")).await?;
    licensing_api
        .record_inspection(authorized(
            licensing::RecordInspectionRequest {
                id: permit.id.clone(),
                kind: "SITE".into(),
                passed: true,
                notes: "setbacks and height as drawn".into(),
            },
            &officer,
        ))
        .await?;
    d.set_time(riyadh("2026-11-12 10:00")).await?;
    for id in [&permit.id, &subdivision.id] {
        licensing_api
            .approve_application(authorized(
                licensing::ApproveApplicationRequest { id: id.clone() },
                &officer,
            ))
            .await?;
        licensing_api
            .issue_license(authorized(
                licensing::IssueLicenseRequest {
                    application_id: id.clone(),
                },
                &officer,
            ))
            .await?;
    }

    // The permit's decision clock: 3,480 working minutes (the day returned
    // to the applicant does not count) against 15 days of 420.
    let permit_clocks = eventually(30, "the permit's decision met", || async {
        let c = api.application_clocks(&permit.id, 2, &officer).await?;
        Ok((c["decision"].state == sla::ClockState::Met as i32).then_some(c))
    })
    .await?;
    assert_eq!(elapsed_minutes(&permit_clocks["decision"]), 3_480);
    assert_eq!(
        permit_clocks["clearance"].state,
        sla::ClockState::BreachedThenMet as i32
    );
    let subdivision_clocks = eventually(30, "the subdivision decided late", || async {
        let c = api.application_clocks(&subdivision.id, 2, &officer).await?;
        Ok((c["decision"].state == sla::ClockState::BreachedThenMet as i32).then_some(c))
    })
    .await?;
    assert_eq!(
        subdivision_clocks["clearance"].state,
        sla::ClockState::Met as i32
    );

    let analyst = d.as_role(Role::Analyst);
    let share = eventually(30, "both licenses in November's KPIs", || async {
        let v = api
            .november(
                "licensing.share_within_target",
                kpi::Dimension::LicenseType,
                &analyst,
            )
            .await?;
        let n = v.measurement.as_ref().map_or(0, |m| m.sample_size);
        Ok((n == 2).then_some(v))
    })
    .await?;
    assert_eq!(share.measurement.as_ref().and_then(|m| m.value), Some(0.5));
    let by_type: BTreeMap<String, Option<f64>> = share
        .breakdown
        .iter()
        .map(|r| (r.key.clone(), r.measurement.as_ref().and_then(|m| m.value)))
        .collect();
    assert_eq!(
        by_type.get("BUILDING_PERMIT"),
        Some(&Some(1.0)),
        "{by_type:?}"
    );
    assert_eq!(
        by_type.get("LAND_SUBDIVISION"),
        Some(&Some(0.0)),
        "{by_type:?}"
    );
    d.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_building_permit_and_subdivision_all_in_one() -> anyhow::Result<()> {
    building_permit_within_and_subdivision_outside_target(Topology::AllInOne).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_building_permit_and_subdivision_split() -> anyhow::Result<()> {
    building_permit_within_and_subdivision_outside_target(Topology::Split).await
}

/// A month of facility compliance inspections in Riyadh, by the municipality
/// and by a private operator: November's compliance rate and private-operator
/// share are the hand-counted ones, with the month's edges in Riyadh time (an
/// inspection at 23:30 on 30 November counts; one at 00:30 on 1 December,
/// still 30 November in UTC, does not).
async fn a_month_of_inspections_gives_compliance_and_private_share(
    topology: Topology,
) -> anyhow::Result<()> {
    let d = Deployed::start(topology, riyadh("2026-10-04 09:00")).await?;
    let api = Api::of(&d).await?;
    let officer = d.operator("RIYADH");
    let applicant = d.citizen_channel("CHANNEL_BALADY_PORTAL");
    let private = d.partner("OP-INSPECT");
    let mut licensing_api = api.licensing.clone();

    // October: four restaurants licensed.
    let mut licenses = Vec::new();
    for name in ["مطعم الواحة", "مطعم النخيل", "مخبز الريان", "مقهى الديرة"]
    {
        let app = licensing_api
            .submit_application(authorized(
                licensing::SubmitApplicationRequest {
                    request_id: uuid::Uuid::now_v7().to_string(),
                    license_type_code: "FOOD_ESTABLISHMENT".into(),
                    applicant_id: "balady-account-1029384756".into(),
                    municipality_code: "RIYADH".into(),
                    facility_name: name.into(),
                    activity: "restaurant".into(),
                    documents: vec![
                        "commercial_registration".into(),
                        "lease_contract".into(),
                        "health_certificates".into(),
                    ],
                },
                &applicant,
            ))
            .await?
            .into_inner();
        licensing_api
            .schedule_inspection(authorized(
                licensing::ScheduleInspectionRequest {
                    id: app.id.clone(),
                    kind: "PUBLIC_HEALTH".into(),
                    scheduled_for: Some(baladiya_proto::convert::timestamp(riyadh(
                        "2026-10-05 09:00",
                    ))),
                },
                &officer,
            ))
            .await?;
        licensing_api
            .record_inspection(authorized(
                licensing::RecordInspectionRequest {
                    id: app.id.clone(),
                    kind: "PUBLIC_HEALTH".into(),
                    passed: true,
                    notes: String::new(),
                },
                &officer,
            ))
            .await?;
        licensing_api
            .approve_application(authorized(
                licensing::ApproveApplicationRequest { id: app.id.clone() },
                &officer,
            ))
            .await?;
        let license = licensing_api
            .issue_license(authorized(
                licensing::IssueLicenseRequest {
                    application_id: app.id.clone(),
                },
                &officer,
            ))
            .await?
            .into_inner();
        licenses.push(license.number);
    }

    // November: twenty inspections. Fourteen by the private operator, two of
    // them finding a minor violation; the municipality's six all compliant.
    let item = |code: &str, passed: bool, severity: licensing::Severity| licensing::ChecklistItem {
        code: code.into(),
        passed,
        severity: severity as i32,
        note: String::new(),
    };
    let mut times: Vec<DateTime<Utc>> = (1..=19)
        .map(|day| riyadh(&format!("2026-11-{day:02} 10:00")))
        .collect();
    times.push(riyadh("2026-11-30 23:30"));
    times.push(riyadh("2026-12-01 00:30"));
    for (i, at) in times.iter().enumerate() {
        let in_december = i == 20;
        let by_private = !in_december && i % 10 < 7;
        let compliant = !in_december && i != 3 && i != 13;
        d.set_time(*at).await?;
        let items = if compliant {
            vec![item("CLEANLINESS", true, licensing::Severity::Unspecified)]
        } else {
            vec![
                item("CLEANLINESS", true, licensing::Severity::Unspecified),
                item("SIGNAGE", false, licensing::Severity::Minor),
            ]
        };
        let recorded = licensing_api
            .record_facility_inspection(authorized(
                licensing::RecordFacilityInspectionRequest {
                    request_id: uuid::Uuid::now_v7().to_string(),
                    license_number: licenses[i % licenses.len()].clone(),
                    activity: "PUBLIC_HEALTH".into(),
                    operator_code: if by_private {
                        "OP-INSPECT"
                    } else {
                        "MUNICIPAL"
                    }
                    .into(),
                    items,
                    inspected_at: None,
                },
                if by_private { &private } else { &officer },
            ))
            .await?
            .into_inner();
        assert_eq!(recorded.compliant, compliant, "inspection {i}");
        assert_eq!(recorded.private_operator, by_private, "inspection {i}");
    }

    let analyst = d.as_role(Role::Analyst);
    let compliance = eventually(30, "November's twenty inspections projected", || async {
        let v = api
            .november(
                "inspections.facility_compliance_rate",
                kpi::Dimension::Operator,
                &analyst,
            )
            .await?;
        let n = v.measurement.as_ref().map_or(0, |m| m.sample_size);
        Ok((n == 20).then_some(v))
    })
    .await?;
    let m = compliance.measurement.unwrap_or_default();
    assert_eq!((m.value, m.target), (Some(0.9), Some(0.9)));
    assert_eq!(m.status(), kpi::Status::Green);
    let by_operator: BTreeMap<String, (Option<f64>, u64)> = compliance
        .breakdown
        .iter()
        .map(|r| {
            let m = r.measurement.unwrap_or_default();
            (r.key.clone(), (m.value, m.sample_size))
        })
        .collect();
    assert_eq!(by_operator.get("MUNICIPAL"), Some(&(Some(1.0), 6)));
    assert_eq!(
        by_operator.get("OP-INSPECT"),
        Some(&(Some(12.0 / 14.0), 14))
    );
    let share = api
        .november(
            "inspections.private_operator_share",
            kpi::Dimension::Unspecified,
            &analyst,
        )
        .await?
        .measurement
        .unwrap_or_default();
    assert_eq!((share.value, share.sample_size), (Some(0.7), 20));
    assert_eq!(share.status(), kpi::Status::Green);
    d.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_a_month_of_inspections_all_in_one() -> anyhow::Result<()> {
    a_month_of_inspections_gives_compliance_and_private_share(Topology::AllInOne).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_a_month_of_inspections_split() -> anyhow::Result<()> {
    a_month_of_inspections_gives_compliance_and_private_share(Topology::Split).await
}
