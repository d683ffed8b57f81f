//! Who may call what, over real gRPC: the policy table refuses roles before
//! handlers run, scoped callers cannot tell a missing object from someone
//! else's, and every state-changing call leaves an append-only audit row
//! that only admins read.

use std::sync::Arc;

use baladiya_kpi::KpiService;
use baladiya_platform::auth::{DevTokenRequest, Role, mint_dev_token};
use baladiya_platform::config::Config;
use baladiya_proto::admin::v1 as admin;
use baladiya_proto::admin::v1::audit_service_client::AuditServiceClient;
use baladiya_proto::kpi::v1 as kpi;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_proto::routing::v1 as pb;
use baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient;
use baladiya_routing::RoutingService;
use tonic::Code;

use crate::{ReceivedReport, RunningPlatform, TestEnv, authorized, eventually};

fn token(config: &Config, role: Role, partner: Option<&str>, municipality: Option<&str>) -> String {
    mint_dev_token(
        &config.auth,
        &DevTokenRequest {
            subject: format!("{role}-{}", partner.or(municipality).unwrap_or("all")),
            role,
            partner: partner.map(String::from),
            municipality: municipality.map(String::from),
            channel: (role == Role::Channel).then(|| "CHANNEL_CALL_CENTER_940".to_string()),
            ttl: chrono::Duration::hours(1),
        },
    )
    .expect("token")
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_are_enforced_and_every_change_is_audited() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let config = env.config();
    let platform = RunningPlatform::start(
        config.clone(),
        vec![Arc::new(RoutingService), Arc::new(KpiService)],
    )
    .await?;
    let channel = platform.channel().await?;
    let mut routing = RoutingServiceClient::new(channel.clone());
    let admin = platform.token(Role::Admin);
    let analyst = platform.token(Role::Analyst);
    let motls = token(&config, Role::Partner, Some("MOTLS"), None);
    let mewa = token(&config, Role::Partner, Some("MEWA"), None);
    let jeddah = token(&config, Role::Operator, None, Some("JEDDAH"));
    let riyadh = token(&config, Role::Operator, None, Some("RIYADH"));
    let any_operator = token(&config, Role::Operator, None, None);
    let channel_940 = token(&config, Role::Channel, None, None);

    let report_id = uuid::Uuid::now_v7();
    crate::publish_report_received(
        &env,
        &ReceivedReport {
            report_id,
            category: "ROAD_WORKS_DAMAGE",
            group: "roads",
            municipality: "RIYADH",
            duplicate_of: None,
            at: platform.clock.now(),
        },
    )
    .await?;
    let case = eventually(20, "the case", || {
        let mut routing = routing.clone();
        let admin = admin.clone();
        async move {
            let list = routing
                .list_cases(authorized(pb::ListCasesRequest::default(), &admin))
                .await?
                .into_inner();
            Ok(list
                .cases
                .into_iter()
                .find(|c| c.report_id == report_id.to_string()))
        }
    })
    .await?;
    assert_eq!(case.assignee_code, "MOTLS");
    let get = |id: &str, token: &str| authorized(pb::GetCaseRequest { id: id.into() }, token);
    let ack = |token: &str| {
        authorized(
            pb::AcknowledgeCaseRequest {
                action: Some(pb::CaseAction {
                    case_id: case.id.clone(),
                    ..Default::default()
                }),
            },
            token,
        )
    };

    // Roles the policy table does not name are refused before the handler.
    assert_eq!(
        code(routing.acknowledge_case(ack(&analyst)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            routing
                .list_cases(authorized(pb::ListCasesRequest::default(), &channel_940))
                .await
        ),
        Code::PermissionDenied
    );
    // Scoped callers cannot tell someone else's case from a missing one.
    let missing = uuid::Uuid::now_v7().to_string();
    for token in [&mewa, &jeddah] {
        assert_eq!(
            code(routing.get_case(get(&case.id, token)).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(routing.get_case(get(&missing, token)).await),
            Code::PermissionDenied
        );
    }
    assert_eq!(
        code(routing.get_case(get(&missing, &any_operator)).await),
        Code::NotFound
    );
    assert_eq!(
        routing
            .get_case(get(&case.id, &riyadh))
            .await?
            .into_inner()
            .id,
        case.id
    );
    let mewa_list = routing
        .list_cases(authorized(pb::ListCasesRequest::default(), &mewa))
        .await?
        .into_inner();
    assert!(mewa_list.cases.is_empty());
    assert_eq!(
        code(routing.acknowledge_case(ack(&mewa)).await),
        Code::PermissionDenied
    );
    routing.acknowledge_case(ack(&motls)).await?;

    // KPIs: a partner reads its own scorecard only, and no municipal-only indicator.
    let mut kpis = KpiServiceClient::new(channel.clone());
    let card = |partner: &str, token: &str| {
        authorized(
            kpi::GetScorecardRequest {
                subject: Some(kpi::get_scorecard_request::Subject::PartnerCode(
                    partner.into(),
                )),
                period: Some(kpi::Period {
                    granularity: kpi::Granularity::Month.into(),
                    date: "2026-03-01".into(),
                }),
            },
            token,
        )
    };
    kpis.get_scorecard(card("MOTLS", &motls)).await?;
    kpis.get_scorecard(card("MOTLS", &analyst)).await?;
    assert_eq!(
        code(kpis.get_scorecard(card("MOTLS", &mewa)).await),
        Code::PermissionDenied
    );
    let licensing = authorized(
        kpi::GetIndicatorRequest {
            code: "licensing.licenses_issued".into(),
            period: Some(kpi::Period {
                granularity: kpi::Granularity::Month.into(),
                date: "2026-03-01".into(),
            }),
            ..Default::default()
        },
        &mewa,
    );
    assert_eq!(
        code(kpis.get_indicator(licensing).await),
        Code::PermissionDenied
    );

    // The audit log: the acknowledgement, by whom, on what; admins only.
    let mut audit = AuditServiceClient::new(channel.clone());
    let list = |service: &str, token: &str| {
        authorized(
            admin::ListAuditEventsRequest {
                service: service.into(),
                ..Default::default()
            },
            token,
        )
    };
    let events = audit
        .list_audit_events(list("routing", &admin))
        .await?
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (
            e.rpc.as_str(),
            e.role.as_str(),
            e.partner_code.as_str(),
            e.target.as_str()
        ),
        (
            "/baladiya.routing.v1.RoutingService/AcknowledgeCase",
            "partner",
            "MOTLS",
            case.id.as_str()
        )
    );
    assert_eq!(e.actor, "partner-MOTLS");
    assert!(e.at.is_some());
    assert_eq!(
        code(audit.list_audit_events(list("routing", &riyadh)).await),
        Code::PermissionDenied
    );
    let bad = audit
        .list_audit_events(list("roads", &admin))
        .await
        .expect_err("unknown service");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("service"), "{bad:?}");

    // Append-only, whoever asks.
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    for statement in [
        "UPDATE routing.audit_events SET actor = 'someone else'",
        "DELETE FROM routing.audit_events",
        "TRUNCATE routing.audit_events",
    ] {
        let refused = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement);
        assert!(refused.to_string().contains("append-only"), "{refused}");
    }
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_is_told_when_to_retry_and_others_are_not_slowed()
-> anyhow::Result<()> {
    use tonic_types::StatusExt;
    let env = TestEnv::new();
    let mut config = env.config();
    config.auth.rate_limit_per_second = 0.5;
    config.auth.rate_limit_burst = 2;
    let platform = RunningPlatform::start(config.clone(), vec![Arc::new(KpiService)]).await?;
    let mut kpis = KpiServiceClient::new(platform.channel().await?);
    let busy = token(&config, Role::Analyst, Some("BUSY"), None);
    let other = token(&config, Role::Analyst, Some("OTHER"), None);
    let list = |t: &str| authorized(kpi::ListIndicatorsRequest::default(), t);
    kpis.list_indicators(list(&busy)).await?;
    kpis.list_indicators(list(&busy)).await?;
    let refused = kpis
        .list_indicators(list(&busy))
        .await
        .expect_err("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > std::time::Duration::from_millis(1_000)
            && retry <= std::time::Duration::from_secs(2),
        "{retry:?}"
    );
    kpis.list_indicators(list(&other)).await?;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}
