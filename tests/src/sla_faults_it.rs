//! Late knowledge under faults, over real PostgreSQL and NATS with driven
//! clocks: a MEWA water leak from Thursday 13:00 is acknowledged on Sunday at
//! 09:50, ten minutes before its 10:00 deadline, and the watcher learns of it
//! only after the deadline, because it was stopped, or because NATS was. In
//! each case nothing fires and the clock is met.

use std::sync::Arc;
use std::time::Duration;

use baladiya_partners::PartnersModule;
use baladiya_platform::app::ServiceModule;
use baladiya_platform::auth::Role;
use baladiya_platform::config::Config;
use baladiya_proto::routing::v1 as routing;
use baladiya_proto::sla::v1 as pb;
use baladiya_routing::RoutingModule;
use baladiya_sla_watcher::SlaWatcherModule;

use crate::{
    NatsProcess, ReceivedReport, RunningPlatform, TestEnv, authorized, eventually, partner_token,
    publish_report_received, riyadh,
};

fn config_at(env: &TestEnv, at: &str) -> Config {
    let mut config = env.config();
    config.clock.start = riyadh(at).to_rfc3339();
    config
}

async fn start(
    config: &Config,
    modules: Vec<Arc<dyn ServiceModule>>,
) -> anyhow::Result<RunningPlatform> {
    RunningPlatform::start(config.clone(), modules).await
}

/// A MEWA water leak routed now; returns (case id, MEWA's acknowledge clock id).
async fn water_leak(
    env: &TestEnv,
    producer: &RunningPlatform,
    watcher: &RunningPlatform,
) -> anyhow::Result<(String, String)> {
    let report_id = uuid::Uuid::now_v7();
    publish_report_received(
        env,
        &ReceivedReport {
            report_id,
            category: "WATER_LEAK",
            group: "water",
            municipality: "RIYADH",
            duplicate_of: None,
            at: producer.clock.now(),
        },
    )
    .await?;
    let admin = producer.token(Role::Admin);
    let cases =
        routing::routing_service_client::RoutingServiceClient::new(producer.channel().await?);
    let case = crate::case_of_report(&cases, &admin, report_id).await?;
    let ack = clock_of(watcher, &case.id, &admin).await?;
    Ok((case.id, ack.id))
}

/// MEWA's acknowledge clock of a case, once it exists.
async fn clock_of(
    watcher: &RunningPlatform,
    case_id: &str,
    admin: &str,
) -> anyhow::Result<pb::Clock> {
    let sla = pb::sla_service_client::SlaServiceClient::new(watcher.channel().await?);
    eventually(30, "MEWA's acknowledge clock", || {
        let (mut sla, admin) = (sla.clone(), admin.to_string());
        async move {
            let clocks = sla
                .get_clocks(authorized(
                    pb::GetClocksRequest {
                        subject_kind: "case".into(),
                        subject_id: case_id.into(),
                    },
                    &admin,
                ))
                .await?
                .into_inner()
                .clocks;
            Ok(clocks
                .into_iter()
                .find(|c| c.metric == "acknowledge" && c.partner_code == "MEWA"))
        }
    })
    .await
}

/// MEWA acknowledges the case (at the producer's clock's now).
async fn acknowledge(producer: &RunningPlatform, case_id: &str) -> anyhow::Result<()> {
    routing::routing_service_client::RoutingServiceClient::new(producer.channel().await?)
        .acknowledge_case(authorized(
            routing::AcknowledgeCaseRequest {
                action: Some(routing::CaseAction {
                    case_id: case_id.into(),
                    ..Default::default()
                }),
            },
            &partner_token(&producer.config, "MEWA"),
        ))
        .await?;
    Ok(())
}

/// What the watcher published for a clock (warning, breached, ...).
async fn fired(env: &TestEnv, clock_id: &str) -> anyhow::Result<Vec<String>> {
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT ce_type FROM sla_watcher.outbox WHERE ce_subject = $1 ORDER BY seq",
    )
    .bind(clock_id)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    Ok(kinds
        .into_iter()
        .map(|t| {
            t.trim_start_matches("sa.baladiya.sla.")
                .trim_end_matches(".v1")
                .to_string()
        })
        .collect())
}

/// Waits until the clock is met, and checks that nothing but its start,
/// two warnings and its end was ever published for it.
async fn met_without_breach(
    env: &TestEnv,
    watcher: &RunningPlatform,
    case_id: &str,
    clock_id: &str,
) -> anyhow::Result<()> {
    let admin = watcher.token(Role::Admin);
    eventually(30, "the acknowledge clock met", || async {
        let c = clock_of(watcher, case_id, &admin).await?;
        Ok((c.state == pb::ClockState::Met as i32).then_some(()))
    })
    .await?;
    assert_eq!(
        fired(env, clock_id).await?,
        [
            "clock.started",
            "clock.warning",
            "clock.warning",
            "clock.met"
        ],
        "no breach, no escalation, nothing withdrawn"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_stopped_across_a_deadline_fires_nothing_the_producer_had_already_undone()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let producer = start(
        &config_at(&env, "2026-04-02 13:00"),
        vec![Arc::new(PartnersModule), Arc::new(RoutingModule)],
    )
    .await?;
    let watcher = start(
        &config_at(&env, "2026-04-02 13:00"),
        vec![Arc::new(SlaWatcherModule)],
    )
    .await?;
    crate::sla_watcher_has_the_seed(&env).await?;
    let (case_id, clock_id) = water_leak(&env, &producer, &watcher).await?;
    // The warnings at 08:00 and 09:00 fire while the watcher runs.
    for p in [&producer, &watcher] {
        p.clock.set(riyadh("2026-04-05 09:50")).await?;
    }
    eventually(30, "two warnings", || async {
        let f = fired(&env, &clock_id).await?;
        Ok((f.iter().filter(|k| *k == "clock.warning").count() == 2).then_some(()))
    })
    .await?;
    // The watcher stops; MEWA acknowledges at 09:50; the watcher comes back
    // at 10:30, past the deadline and past the ten-minute hold.
    watcher.stop().await?;
    acknowledge(&producer, &case_id).await?;
    producer.clock.set(riyadh("2026-04-05 10:30")).await?;
    let watcher = start(
        &config_at(&env, "2026-04-05 10:30"),
        vec![Arc::new(SlaWatcherModule)],
    )
    .await?;
    met_without_breach(&env, &watcher, &case_id, &clock_id).await?;
    watcher.stop().await?;
    producer.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_across_a_deadline_fires_nothing_and_the_acknowledgement_arrives_after()
-> anyhow::Result<()> {
    let mut nats = NatsProcess::start().await?;
    let mut env = TestEnv::new();
    env.nats_url = nats.url();
    let config = config_at(&env, "2026-04-02 13:00");
    let platform = start(
        &config,
        vec![
            Arc::new(PartnersModule),
            Arc::new(RoutingModule),
            Arc::new(SlaWatcherModule),
        ],
    )
    .await?;
    crate::sla_watcher_has_the_seed(&env).await?;
    let (case_id, clock_id) = water_leak(&env, &platform, &platform).await?;
    platform.clock.set(riyadh("2026-04-05 09:50")).await?;
    eventually(30, "two warnings", || async {
        let f = fired(&env, &clock_id).await?;
        Ok((f.iter().filter(|k| *k == "clock.warning").count() == 2).then_some(()))
    })
    .await?;
    // NATS goes down; MEWA acknowledges at 09:50 (routing keeps it in its
    // outbox); the deadline passes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.stop();
    acknowledge(&platform, &case_id).await?;
    platform.clock.set(riyadh("2026-04-05 10:05")).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !fired(&env, &clock_id)
            .await?
            .iter()
            .any(|k| k == "clock.breached"),
        "nothing fires while routing cannot say what happened"
    );
    // NATS returns: the acknowledgement arrives and the clock is met.
    nats.resume().await?;
    met_without_breach(&env, &platform, &case_id, &clock_id).await?;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}
