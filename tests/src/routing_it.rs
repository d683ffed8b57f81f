//! The routing service over gRPC, with real PostgreSQL and NATS: cases come
//! from `report received` events, rules from `deploy/seed/routing`.

use std::sync::Arc;
use std::time::Duration;

use baladiya_platform::auth::Role;
use baladiya_proto::common::v1::{Location, Priority};
use baladiya_proto::convert::timestamp;
use baladiya_proto::routing::v1 as pb;
use baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient;
use baladiya_routing::RoutingModule;
use futures::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::tokens::scoped_token;
use crate::{RunningPlatform, TestEnv, authorized, eventually, partner_token};

struct Routing {
    platform: RunningPlatform,
    client: RoutingServiceClient<Channel>,
    admin: String,
    env: TestEnv,
}

impl Routing {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new();
        let mut config = env.config();
        config.sections.insert(
            "routing".into(),
            toml::Value::Table(toml::toml! { auto_close_check_secs = 1 }),
        );
        let platform = RunningPlatform::start(config, vec![Arc::new(RoutingModule)]).await?;
        let client = RoutingServiceClient::new(platform.channel().await?);
        let admin = platform.token(Role::Admin);
        Ok(Self {
            platform,
            client,
            admin,
            env,
        })
    }

    /// Publishes a `report received` event as intake would; returns the report id.
    async fn receive(
        &self,
        category: &str,
        group: &str,
        municipality: &str,
        duplicate_of: Option<&str>,
    ) -> anyhow::Result<String> {
        let report_id = uuid::Uuid::now_v7();
        self.publish_received(report_id, category, group, municipality, duplicate_of)
            .await?;
        Ok(report_id.to_string())
    }

    async fn publish_received(
        &self,
        report_id: uuid::Uuid,
        category: &str,
        group: &str,
        municipality: &str,
        duplicate_of: Option<&str>,
    ) -> anyhow::Result<()> {
        crate::publish_report_received(
            &self.env,
            &crate::ReceivedReport {
                report_id,
                category,
                group,
                municipality,
                duplicate_of,
                at: self.platform.clock.now(),
            },
        )
        .await
    }

    /// Waits for the case of a report.
    async fn case_of(&self, report_id: &str) -> anyhow::Result<pb::Case> {
        let client = self.client.clone();
        let admin = self.admin.clone();
        eventually(20, "the case", || {
            let (mut client, admin) = (client.clone(), admin.clone());
            async move {
                let list = client
                    .list_cases(authorized(
                        pb::ListCasesRequest {
                            page_size: 500,
                            ..Default::default()
                        },
                        &admin,
                    ))
                    .await?
                    .into_inner();
                Ok(list.cases.into_iter().find(|c| c.report_id == report_id))
            }
        })
        .await
    }

    async fn get(&self, id: &str, token: &str) -> Result<pb::Case, tonic::Status> {
        Ok(self
            .client
            .clone()
            .get_case(authorized(pb::GetCaseRequest { id: id.into() }, token))
            .await?
            .into_inner())
    }

    async fn count_cases(&self) -> anyhow::Result<i64> {
        let pool = baladiya_platform::db::schema_pool(&self.platform.config.database, "routing")?;
        let n = sqlx::query_scalar("SELECT count(*) FROM cases")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(n)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.platform.stop().await?;
        self.env.cleanup().await;
        Ok(())
    }
}

fn act(case: &pb::Case) -> Option<pb::CaseAction> {
    Some(pb::CaseAction {
        case_id: case.id.clone(),
        ..Default::default()
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Do {
    Acknowledge,
    StartWork,
    Note,
    Hold,
    Resume,
    Resolve,
    Reject,
    Reroute,
    Reopen,
    Close,
}

const ALL: [Do; 10] = [
    Do::Acknowledge,
    Do::StartWork,
    Do::Note,
    Do::Hold,
    Do::Resume,
    Do::Resolve,
    Do::Reject,
    Do::Reroute,
    Do::Reopen,
    Do::Close,
];

async fn perform(
    client: &mut RoutingServiceClient<Channel>,
    token: &str,
    case: &pb::Case,
    what: Do,
) -> Result<pb::Case, tonic::Status> {
    let a = || pb::CaseAction {
        case_id: case.id.clone(),
        note: "step".into(),
        ..Default::default()
    };
    let r = match what {
        Do::Acknowledge => {
            client
                .acknowledge_case(authorized(
                    pb::AcknowledgeCaseRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
        Do::StartWork => {
            client
                .start_work(authorized(
                    pb::StartWorkRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
        Do::Note => {
            client
                .add_case_note(authorized(
                    pb::AddCaseNoteRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
        Do::Hold => {
            client
                .put_case_on_hold(authorized(
                    pb::PutCaseOnHoldRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
        Do::Resume => {
            client
                .resume_case(authorized(
                    pb::ResumeCaseRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
        Do::Resolve => {
            client
                .resolve_case(authorized(
                    pb::ResolveCaseRequest {
                        action: Some(a()),
                        resolution: "fixed".into(),
                        proof_uris: vec![],
                    },
                    token,
                ))
                .await
        }
        Do::Reject => {
            client
                .reject_case(authorized(
                    pb::RejectCaseRequest {
                        action: Some(a()),
                        reason: "not ours".into(),
                        suggested_assignee_code: "MEWA".into(),
                    },
                    token,
                ))
                .await
        }
        Do::Reroute => {
            let to = if case.assignee_code == "MUN-ROADS" {
                "MUN-CLEANING"
            } else {
                "MUN-ROADS"
            };
            client
                .reroute_case(authorized(
                    pb::RerouteCaseRequest {
                        action: Some(a()),
                        assignee_code: to.into(),
                        reason: "operator".into(),
                    },
                    token,
                ))
                .await
        }
        Do::Reopen => {
            client
                .reopen_case(authorized(
                    pb::ReopenCaseRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
        Do::Close => {
            client
                .close_case(authorized(
                    pb::CloseCaseRequest { action: Some(a()) },
                    token,
                ))
                .await
        }
    };
    r.map(|r| r.into_inner())
}

use pb::CaseStatus as S;

/// The allowed transitions, written out by hand from the lifecycle.
fn expected(from: S, what: Do) -> Option<S> {
    match (from, what) {
        (S::Routed, Do::Acknowledge) => Some(S::Acknowledged),
        (S::Acknowledged | S::Reopened, Do::StartWork) => Some(S::InProgress),
        (S::Acknowledged | S::InProgress | S::Reopened, Do::Hold) => Some(S::OnHold),
        (S::OnHold, Do::Resume) => Some(S::InProgress),
        (S::Acknowledged | S::InProgress | S::Reopened, Do::Resolve) => Some(S::Resolved),
        (S::Routed | S::Acknowledged | S::InProgress, Do::Reject) => Some(S::Triage),
        (
            S::Routed | S::Acknowledged | S::InProgress | S::OnHold | S::Triage | S::Reopened,
            Do::Reroute,
        ) => Some(S::Routed),
        (S::Resolved, Do::Reopen) => Some(S::Reopened),
        (S::Resolved, Do::Close) => Some(S::Closed),
        (s, Do::Note) if s != S::Closed => Some(s),
        _ => None,
    }
}

/// How to bring a fresh case to a state.
fn path_to(state: S) -> &'static [Do] {
    match state {
        S::Routed => &[],
        S::Acknowledged => &[Do::Acknowledge],
        S::InProgress => &[Do::Acknowledge, Do::StartWork],
        S::OnHold => &[Do::Acknowledge, Do::Hold],
        S::Resolved => &[Do::Acknowledge, Do::Resolve],
        S::Triage => &[Do::Reject],
        S::Reopened => &[Do::Acknowledge, Do::Resolve, Do::Reopen],
        S::Closed => &[Do::Acknowledge, Do::Resolve, Do::Close],
        S::Unspecified => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_pair_is_allowed_or_refused_as_the_lifecycle_says() -> anyhow::Result<()> {
    let r = Routing::start().await?;
    let states = [
        S::Routed,
        S::Acknowledged,
        S::InProgress,
        S::OnHold,
        S::Resolved,
        S::Triage,
        S::Reopened,
        S::Closed,
    ];
    let mut reports = Vec::new();
    for _ in 0..states.len() * ALL.len() {
        reports.push(r.receive("POTHOLE", "roads", "RIYADH", None).await?);
    }
    let mut client = r.client.clone();
    let mut pairs = 0;
    let mut i = 0;
    for state in states {
        for what in ALL {
            let mut case = r.case_of(&reports[i]).await?;
            i += 1;
            for step in path_to(state) {
                case = perform(&mut client, &r.admin, &case, *step).await?;
            }
            assert_eq!(case.status, state as i32, "set-up of {state:?}");
            let result = perform(&mut client, &r.admin, &case, what).await;
            match (expected(state, what), result) {
                (Some(to), Ok(after)) => {
                    assert_eq!(after.status, to as i32, "{what:?} from {state:?}")
                }
                (None, Err(status)) => {
                    assert_eq!(
                        status.code(),
                        Code::FailedPrecondition,
                        "{what:?} from {state:?}: {status:?}"
                    );
                    let name = state
                        .as_str_name()
                        .trim_start_matches("CASE_STATUS_")
                        .to_lowercase();
                    assert!(
                        status.message().contains(&name),
                        "names the state: {}",
                        status.message()
                    );
                }
                (Some(_), Err(status)) => {
                    panic!("{what:?} from {state:?} should be allowed: {status:?}")
                }
                (None, Ok(after)) => panic!(
                    "{what:?} from {state:?} should be refused, got {:?}",
                    after.status
                ),
            }
            pairs += 1;
        }
    }
    assert_eq!(pairs, 80);
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_by_precedence_and_explain_why() -> anyhow::Result<()> {
    let r = Routing::start().await?;
    let mut client = r.client.clone();
    let explain = |category: &str, group: &str, municipality: &str, point: Option<(f64, f64)>| {
        pb::ExplainRoutingRequest {
            category_code: category.into(),
            category_group: group.into(),
            location: Some(Location {
                municipality_code: municipality.into(),
                latitude: point.map_or(0.0, |p| p.0),
                longitude: point.map_or(0.0, |p| p.1),
                ..Default::default()
            }),
            priority: Priority::Normal as i32,
        }
    };
    let winner = |e: &pb::ExplainRoutingResponse| {
        e.winner
            .as_ref()
            .map(|w| w.assignee_code.clone())
            .unwrap_or_default()
    };
    let jeddah = client
        .explain_routing(authorized(
            explain("WATER_LEAK", "water", "JEDDAH", None),
            &r.admin,
        ))
        .await?
        .into_inner();
    assert_eq!(
        winner(&jeddah),
        "NWC",
        "the municipality-specific rule wins"
    );
    let mewa = jeddah
        .verdicts
        .iter()
        .find(|v| {
            v.rule
                .as_ref()
                .is_some_and(|r| r.assignee_code == "MEWA" && r.category_code == "WATER_LEAK")
        })
        .expect("verdict");
    assert!(
        mewa.matched && mewa.reason.starts_with("less specific than rule"),
        "{}",
        mewa.reason
    );
    let motls = jeddah
        .verdicts
        .iter()
        .find(|v| {
            v.rule
                .as_ref()
                .is_some_and(|r| r.category_code == "TRAFFIC_SIGNAL")
        })
        .expect("verdict");
    assert!(
        !motls.matched && motls.reason.contains("TRAFFIC_SIGNAL is not WATER_LEAK"),
        "{}",
        motls.reason
    );

    assert_eq!(
        winner(
            &client
                .explain_routing(authorized(
                    explain("WATER_LEAK", "water", "RIYADH", None),
                    &r.admin
                ))
                .await?
                .into_inner()
        ),
        "MEWA"
    );
    assert_eq!(
        winner(
            &client
                .explain_routing(authorized(
                    explain("POTHOLE", "roads", "RIYADH", None),
                    &r.admin
                ))
                .await?
                .into_inner()
        ),
        "MUN-ROADS"
    );
    assert_eq!(
        winner(
            &client
                .explain_routing(authorized(explain("UFO", "", "RIYADH", None), &r.admin))
                .await?
                .into_inner()
        ),
        "MUN-TRIAGE"
    );

    // An area rule beats the group rule inside its polygon only.
    let operator = r.platform.token(Role::Operator);
    let area = [
        (24.60, 46.60),
        (24.60, 46.80),
        (24.80, 46.80),
        (24.80, 46.60),
    ]
    .iter()
    .map(|(lat, lon)| Location {
        latitude: *lat,
        longitude: *lon,
        ..Default::default()
    })
    .collect();
    let rule = client
        .upsert_routing_rule(authorized(
            pb::UpsertRoutingRuleRequest {
                rule: Some(pb::RoutingRule {
                    category_group: "roads".into(),
                    area,
                    assignee_code: "OP-ROADS-CENTRAL".into(),
                    description: "central Riyadh roads contractor".into(),
                    ..Default::default()
                }),
            },
            &operator,
        ))
        .await?
        .into_inner();
    assert_eq!((rule.version, rule.updated_by.as_str()), (1, "test"));
    let inside = explain("POTHOLE", "roads", "RIYADH", Some((24.70, 46.70)));
    let outside = explain("POTHOLE", "roads", "RIYADH", Some((24.90, 46.70)));
    assert_eq!(
        winner(
            &client
                .explain_routing(authorized(inside.clone(), &r.admin))
                .await?
                .into_inner()
        ),
        "OP-ROADS-CENTRAL"
    );
    assert_eq!(
        winner(
            &client
                .explain_routing(authorized(outside, &r.admin))
                .await?
                .into_inner()
        ),
        "MUN-ROADS"
    );

    let mut changed = rule.clone();
    changed.assignee_code = "OP-ROADS-NEW".into();
    let changed = client
        .upsert_routing_rule(authorized(
            pb::UpsertRoutingRuleRequest {
                rule: Some(changed),
            },
            &operator,
        ))
        .await?
        .into_inner();
    assert_eq!(changed.version, 2);
    client
        .delete_routing_rule(authorized(
            pb::DeleteRoutingRuleRequest {
                id: rule.id.clone(),
            },
            &operator,
        ))
        .await?;
    assert_eq!(
        winner(
            &client
                .explain_routing(authorized(inside, &r.admin))
                .await?
                .into_inner()
        ),
        "MUN-ROADS"
    );
    let pool = baladiya_platform::db::schema_pool(&r.platform.config.database, "routing")?;
    let versions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM rule_versions WHERE rule_id = $1::uuid ORDER BY version",
    )
    .bind(&rule.id)
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        versions,
        ["created", "changed", "deleted"],
        "who changed what and when"
    );
    pool.close().await;

    let bad = client
        .upsert_routing_rule(authorized(
            pb::UpsertRoutingRuleRequest {
                rule: Some(pb::RoutingRule {
                    category_code: "X".into(),
                    category_group: "y".into(),
                    assignee_code: "lower".into(),
                    ..Default::default()
                }),
            },
            &operator,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let partner = partner_token(&r.platform.config, "MOTLS");
    let denied = client
        .delete_routing_rule(authorized(
            pb::DeleteRoutingRuleRequest { id: rule.id },
            &partner,
        ))
        .await
        .expect_err("partners do not edit rules");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Reports are routed by the same rules.
    let report = r
        .receive("ROAD_WORKS_DAMAGE", "roads", "RIYADH", None)
        .await?;
    let case = r.get(&r.case_of(&report).await?.id, &r.admin).await?;
    assert_eq!(case.assignee_code, "MOTLS");
    assert_eq!(case.history[0].action, "routed");
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_add_supporters_and_replays_create_no_second_case() -> anyhow::Result<()> {
    let r = Routing::start().await?;
    let master = r
        .receive("SEWAGE_OVERFLOW", "water", "RIYADH", None)
        .await?;
    let case = r.case_of(&master).await?;
    let dup = uuid::Uuid::now_v7();
    r.publish_received(dup, "SEWAGE_OVERFLOW", "water", "RIYADH", Some(&master))
        .await?;
    // The same duplicate published again (a new event id): counted once.
    r.publish_received(dup, "SEWAGE_OVERFLOW", "water", "RIYADH", Some(&master))
        .await?;
    r.receive("SEWAGE_OVERFLOW", "water", "RIYADH", Some(&master))
        .await?;
    let supported = eventually(20, "two supporters", || async {
        let c = r.get(&case.id, &r.admin).await?;
        Ok((c.supporters == 2).then_some(c))
    })
    .await?;
    assert_eq!(supported.supporters, 2);
    assert_eq!(r.count_cases().await?, 1, "duplicates open no case");

    // The same report received again: no second case.
    let master_id: uuid::Uuid = master.parse()?;
    r.publish_received(master_id, "SEWAGE_OVERFLOW", "water", "RIYADH", None)
        .await?;
    // Replay the whole stream from the start: reset the durable consumer.
    let js = async_nats::jetstream::new(r.env.nats().await?);
    let stream = js.get_stream(format!("{}_INTAKE", r.env.namespace)).await?;
    stream.delete_consumer("routing-reports").await?;
    let another = r.receive("POTHOLE", "roads", "RIYADH", None).await?;
    r.case_of(&another).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(r.count_cases().await?, 2, "the replay created nothing new");
    assert_eq!(r.get(&case.id, &r.admin).await?.supporters, 2);
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_see_and_act_on_their_own_cases_only() -> anyhow::Result<()> {
    let r = Routing::start().await?;
    let motls_report = r
        .receive("TRAFFIC_SIGNAL", "traffic", "RIYADH", None)
        .await?;
    let mewa_report = r.receive("WATER_LEAK", "water", "RIYADH", None).await?;
    let motls_case = r.case_of(&motls_report).await?;
    let mewa_case = r.case_of(&mewa_report).await?;
    let motls = partner_token(&r.platform.config, "MOTLS");
    let mewa = partner_token(&r.platform.config, "MEWA");
    let mut client = r.client.clone();

    let own = client
        .list_cases(authorized(pb::ListCasesRequest::default(), &motls))
        .await?
        .into_inner();
    assert_eq!(
        own.cases
            .iter()
            .map(|c| c.assignee_code.as_str())
            .collect::<Vec<_>>(),
        ["MOTLS"]
    );
    let sneaky = client
        .list_cases(authorized(
            pb::ListCasesRequest {
                assignee_code: "MEWA".into(),
                ..Default::default()
            },
            &motls,
        ))
        .await?
        .into_inner();
    assert!(
        sneaky.cases.iter().all(|c| c.assignee_code == "MOTLS"),
        "a filter cannot widen a partner's view"
    );
    assert_eq!(
        r.get(&mewa_case.id, &motls)
            .await
            .expect_err("not theirs")
            .code(),
        Code::PermissionDenied
    );
    let missing = r
        .get(&uuid::Uuid::now_v7().to_string(), &motls)
        .await
        .expect_err("no hint");
    assert_eq!(
        missing.code(),
        Code::PermissionDenied,
        "a partner cannot tell missing from forbidden"
    );
    let ack = client
        .acknowledge_case(authorized(
            pb::AcknowledgeCaseRequest {
                action: act(&mewa_case),
            },
            &motls,
        ))
        .await
        .expect_err("only the assignee");
    assert_eq!(ack.code(), Code::PermissionDenied);
    let close = client
        .close_case(authorized(
            pb::CloseCaseRequest {
                action: act(&motls_case),
            },
            &motls,
        ))
        .await
        .expect_err("operators close");
    assert_eq!(close.code(), Code::PermissionDenied);

    // The assignee acknowledges; a stale etag loses with ABORTED.
    let stale = motls_case.etag.clone();
    let acked = client
        .acknowledge_case(authorized(
            pb::AcknowledgeCaseRequest {
                action: Some(pb::CaseAction {
                    etag: stale.clone(),
                    ..act(&motls_case).expect("action")
                }),
            },
            &motls,
        ))
        .await?
        .into_inner();
    assert_eq!(acked.status, S::Acknowledged as i32);
    let lost = client
        .start_work(authorized(
            pb::StartWorkRequest {
                action: Some(pb::CaseAction {
                    etag: stale,
                    ..act(&motls_case).expect("action")
                }),
            },
            &motls,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(lost.code(), Code::Aborted);

    // Instants: never in the future, never older than the back-dating bound
    // (before the previous step: see the back-dating test).
    let now = r.platform.clock.now();
    for (at, why) in [
        (now + chrono::Duration::minutes(5), "future"),
        (now - chrono::Duration::days(1), "older than the bound"),
    ] {
        let refused = client
            .start_work(authorized(
                pb::StartWorkRequest {
                    action: Some(pb::CaseAction {
                        occurred_at: Some(timestamp(at)),
                        ..act(&motls_case).expect("action")
                    }),
                },
                &motls,
            ))
            .await
            .expect_err(why);
        assert_eq!(refused.code(), Code::InvalidArgument, "{why}");
    }
    let _ = mewa;
    r.stop().await
}

/// Routing's one absence rule is the platform's
/// (`CallerIdentity::may_know_absence`), for reading a case and for acting on
/// one: an operator of every municipality is told a case is missing; an
/// operator of one municipality, or a channel, is told `PERMISSION_DENIED`,
/// as for a case that is not theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_callers_who_may_know_absence_are_told_a_case_is_missing() -> anyhow::Result<()> {
    let r = Routing::start().await?;
    let config = &r.platform.config;
    let any_operator = scoped_token(config, Role::Operator, None, None);
    let riyadh = scoped_token(config, Role::Operator, None, Some("RIYADH"));
    let channel = r.platform.token(Role::Channel);
    let missing_id = uuid::Uuid::now_v7().to_string();
    let missing = Some(pb::CaseAction {
        case_id: missing_id.clone(),
        ..Default::default()
    });
    let mut client = r.client.clone();

    let read = r
        .get(&missing_id, &any_operator)
        .await
        .expect_err("missing");
    assert_eq!(read.code(), Code::NotFound, "{read:?}");
    let read = r.get(&missing_id, &riyadh).await.expect_err("no hint");
    assert_eq!(read.code(), Code::PermissionDenied, "{read:?}");

    let close = |token: &str| {
        authorized(
            pb::CloseCaseRequest {
                action: missing.clone(),
            },
            token,
        )
    };
    let closed = client
        .close_case(close(&any_operator))
        .await
        .expect_err("missing");
    assert_eq!(closed.code(), Code::NotFound, "{closed:?}");
    let closed = client
        .close_case(close(&riyadh))
        .await
        .expect_err("no hint");
    assert_eq!(closed.code(), Code::PermissionDenied, "{closed:?}");
    assert_eq!(closed.message(), "not your case");

    let reopened = client
        .reopen_case(authorized(
            pb::ReopenCaseRequest {
                action: missing.clone(),
            },
            &channel,
        ))
        .await
        .expect_err("no hint");
    assert_eq!(reopened.code(), Code::PermissionDenied, "{reopened:?}");
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_then_reroute_gives_a_clean_event_sequence_and_quiet_cases_close()
-> anyhow::Result<()> {
    let r = Routing::start().await?;
    let report = r
        .receive("ROAD_WORKS_DAMAGE", "roads", "RIYADH", None)
        .await?;
    let case = r.case_of(&report).await?;
    assert_eq!(case.assignee_code, "MOTLS");
    let motls = partner_token(&r.platform.config, "MOTLS");
    let mewa = partner_token(&r.platform.config, "MEWA");
    let operator = r.platform.token(Role::Operator);
    let channel = r.platform.token(Role::Channel);
    let mut client = r.client.clone();

    let rejected = client
        .reject_case(authorized(
            pb::RejectCaseRequest {
                action: act(&case),
                reason: "the water main burst, not our works".into(),
                suggested_assignee_code: "MEWA".into(),
            },
            &motls,
        ))
        .await?
        .into_inner();
    assert_eq!(
        (rejected.status, rejected.assignee_code.as_str()),
        (S::Triage as i32, "MUN-TRIAGE")
    );
    let rerouted = client
        .reroute_case(authorized(
            pb::RerouteCaseRequest {
                action: act(&case),
                assignee_code: "MEWA".into(),
                reason: "as suggested".into(),
            },
            &operator,
        ))
        .await?
        .into_inner();
    assert_eq!(
        (rerouted.status, rerouted.assignee_code.as_str()),
        (S::Routed as i32, "MEWA")
    );
    client
        .acknowledge_case(authorized(
            pb::AcknowledgeCaseRequest { action: act(&case) },
            &mewa,
        ))
        .await?;
    client
        .resolve_case(authorized(
            pb::ResolveCaseRequest {
                action: act(&case),
                resolution: "main repaired".into(),
                proof_uris: vec!["https://files.example/fix.jpg".into()],
            },
            &mewa,
        ))
        .await?;

    let history = r.get(&case.id, &r.admin).await?.history;
    let steps: Vec<(&str, &str)> = history
        .iter()
        .map(|h| (h.action.as_str(), h.assignee_code.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("routed", "MOTLS"),
            ("rejected", "MUN-TRIAGE"),
            ("rerouted", "MEWA"),
            ("acknowledged", "MEWA"),
            ("resolved", "MEWA")
        ]
    );
    assert!(history[1].note.contains("suggested: MEWA"));
    assert!(history[2].actor.starts_with("operator:"));

    // The reopen period: 14 days.
    r.platform
        .clock
        .advance(Duration::from_secs(15 * 86_400))
        .await?;
    let late = client
        .reopen_case(authorized(
            pb::ReopenCaseRequest { action: act(&case) },
            &channel,
        ))
        .await
        .expect_err("too late to reopen");
    assert_eq!(late.code(), Code::FailedPrecondition);
    // Quiet for longer than 7 days: closes by itself.
    let closed = eventually(20, "the automatic close", || async {
        let c = r.get(&case.id, &r.admin).await?;
        Ok((c.status == S::Closed as i32).then_some(c))
    })
    .await?;
    assert_eq!(
        closed.history.last().map(|h| h.actor.as_str()),
        Some("system")
    );

    // The events, in order, for this case.
    let js = async_nats::jetstream::new(r.env.nats().await?);
    let stream = format!("{}_ROUTING", r.env.namespace);
    let mut sequence = Vec::new();
    for m in crate::harness::streams::stream_messages(&js, &stream, 100, Duration::from_millis(500))
        .await?
    {
        let subject = m.subject.to_string();
        // Case events only: the stream also carries routing's watermarks.
        if let [_, _, _, "case", event, _, assignee] =
            subject.split('.').collect::<Vec<_>>().as_slice()
        {
            sequence.push(format!("{event}@{assignee}"));
        }
    }
    assert_eq!(
        sequence,
        [
            "routed@MOTLS",
            "rejected@MOTLS",
            "rerouted@MEWA",
            "acknowledged@MEWA",
            "resolved@MEWA",
            "closed@MEWA"
        ]
    );
    r.stop().await
}

/// The violated fields of an `INVALID_ARGUMENT`, with their descriptions.
fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_back_dated_within_the_bound_keeps_both_instants_and_older_is_refused()
-> anyhow::Result<()> {
    let r = Routing::start().await?;
    let report = r
        .receive("ROAD_WORKS_DAMAGE", "roads", "RIYADH", None)
        .await?;
    let case = r.case_of(&report).await?;
    let motls = partner_token(&r.platform.config, "MOTLS");
    let mut client = r.client.clone();
    let pool = baladiya_platform::db::schema_pool(&r.platform.config.database, "routing")?;
    let count = |sql: &'static str| {
        let (pool, id) = (pool.clone(), case.id.clone());
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(&pool)
                .await
        }
    };
    let acknowledged_events =
        "SELECT count(*) FROM outbox WHERE ce_subject = $1 AND ce_type LIKE '%.acknowledged.v1'";
    let acknowledge_audits =
        "SELECT count(*) FROM audit_events WHERE target = $1 AND rpc LIKE '%/AcknowledgeCase'";
    let acknowledge_at = |at: chrono::DateTime<chrono::Utc>| pb::AcknowledgeCaseRequest {
        action: Some(pb::CaseAction {
            occurred_at: Some(timestamp(at)),
            ..act(&case).expect("action")
        }),
    };

    // A partner system syncing 20 minutes after the case was routed sends an
    // acknowledgement from 16 minutes ago: beyond the 15-minute bound.
    r.platform
        .clock
        .advance(Duration::from_secs(20 * 60))
        .await?;
    let now = r.platform.clock.now();
    let refused = client
        .acknowledge_case(authorized(
            acknowledge_at(now - chrono::Duration::minutes(16)),
            &motls,
        ))
        .await
        .expect_err("older than the bound");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let found = violations(&refused);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "action.occurred_at");
    assert!(
        found[0].1.contains("must be within 900 seconds before now"),
        "{}",
        found[0].1
    );
    // Nothing written: no history entry, no event, no audit row, same state.
    let unchanged = r.get(&case.id, &r.admin).await?;
    assert_eq!(unchanged.status, S::Routed as i32);
    assert_eq!(unchanged.history.len(), 1, "only the routing step");
    assert_eq!(count(acknowledged_events).await?, 0);
    assert_eq!(count(acknowledge_audits).await?, 0);

    // Five minutes back is within the bound: accepted, both instants kept.
    let happened = now - chrono::Duration::minutes(5);
    let acked = client
        .acknowledge_case(authorized(acknowledge_at(happened), &motls))
        .await?
        .into_inner();
    assert_eq!(acked.status, S::Acknowledged as i32);
    let entry = acked.history.last().expect("the acknowledgement");
    assert_eq!(entry.action, "acknowledged");
    assert_eq!(entry.occurred_at, Some(timestamp(happened)));
    assert_eq!(entry.recorded_at, Some(timestamp(now)));
    let read = r.get(&case.id, &r.admin).await?;
    assert_eq!(read.history.last(), Some(entry), "as stored");
    let (audit_at, audit_occurred): (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT at, occurred_at FROM audit_events WHERE target = $1 AND rpc LIKE '%/AcknowledgeCase'",
    )
    .bind(&case.id)
    .fetch_one(&pool)
    .await?;
    assert_eq!((audit_at, audit_occurred), (now, Some(happened)));

    // Within the bound but before the case's previous step: refused too.
    let before_ack = happened - chrono::Duration::minutes(1);
    let refused = client
        .start_work(authorized(
            pb::StartWorkRequest {
                action: Some(pb::CaseAction {
                    occurred_at: Some(timestamp(before_ack)),
                    ..act(&case).expect("action")
                }),
            },
            &motls,
        ))
        .await
        .expect_err("before the previous step");
    let found = violations(&refused);
    assert_eq!(found[0].0, "action.occurred_at");
    assert!(found[0].1.contains("previous step"), "{}", found[0].1);

    // The published event says when it happened and when it was recorded.
    let js = async_nats::jetstream::new(r.env.nats().await?);
    let stream = js
        .get_stream(format!("{}_ROUTING", r.env.namespace))
        .await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.baladiya.routing.case.acknowledged.>", r.env.namespace),
            ..Default::default()
        })
        .await?;
    let message = eventually(20, "the acknowledged event", || {
        let consumer = consumer.clone();
        async move {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_millis(500))
                .messages()
                .await?;
            batch
                .next()
                .await
                .transpose()
                .map_err(|e| anyhow::anyhow!("fetching the event: {e}"))
        }
    })
    .await?;
    let headers = message.headers.clone().unwrap_or_default();
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
    assert_eq!(
        header("ce-time"),
        Some(happened.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );
    assert_eq!(
        header(baladiya_platform::events::RECORDED_AT_HEADER),
        Some(now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );
    use prost::Message as _;
    let payload =
        baladiya_proto::routing::events::v1::CaseAcknowledged::decode(message.payload.as_ref())?;
    let meta = payload.meta.unwrap_or_default();
    assert_eq!(meta.occurred_at, Some(timestamp(happened)));
    assert_eq!(meta.recorded_at, Some(timestamp(now)));
    pool.close().await;
    r.stop().await
}
