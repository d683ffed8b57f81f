//! The scorecard figure: once [`load`](super::load) has written the rows of
//! ten million events, the KPI service restarts on them and `GetScorecard`
//! runs in a closed loop. Also the `scorecards` command, which runs the same
//! loop against a KPI service left running, to profile it.

use anyhow::Context;
use baladiya_platform::auth::Role;
use baladiya_proto::kpi::v1 as kpi_pb;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_testkit::authorized;
use chrono::{DateTime, Datelike, Utc};

use super::load::load;
use super::{PROJECTED_EVENTS, SCORECARD_EVENTS};
use crate::env::Env;
use crate::grpc_load::{Run, channels, closed_loop, dev_token, ms};
use crate::platform::Platform;
use crate::report::Figure;

/// The municipality whose scorecard is timed.
const MUNICIPALITY: &str = "RIYADH";
/// The partner whose scorecard is timed too.
const PARTNER: &str = "MUN-ROADS";

/// Loads the rest of the ten million events' rows, restarts the KPI service
/// and times `GetScorecard`.
pub(super) async fn measure(
    env: &Env,
    database: &str,
    name: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(Figure, serde_json::Value)> {
    let loaded = load(database, SCORECARD_EVENTS - PROJECTED_EVENTS, now).await?;
    let platform = Platform::start(env, "kpi", database, name).await?;
    let token = dev_token(Role::Analyst)?;
    let date = last_whole_month(now)?;
    let period = Some(kpi_pb::Period {
        granularity: kpi_pb::Granularity::Month as i32,
        date: date.clone(),
    });
    let municipal = kpi_pb::GetScorecardRequest {
        subject: Some(kpi_pb::get_scorecard_request::Subject::MunicipalityCode(
            MUNICIPALITY.into(),
        )),
        period: period.clone(),
    };
    let partner = kpi_pb::GetScorecardRequest {
        subject: Some(kpi_pb::get_scorecard_request::Subject::PartnerCode(
            PARTNER.into(),
        )),
        period,
    };
    let pool = channels(platform.grpc, 8).await?;

    // One answer first: it must have counted the loaded facts.
    let channel = pool.first().context("no gRPC connection")?.clone();
    let first = KpiServiceClient::new(channel)
        .get_scorecard(authorized(municipal.clone(), &token))
        .await
        .context("GetScorecard")?
        .into_inner();
    let sample = |code: &str| {
        first
            .indicators
            .iter()
            .find(|i| i.code == code)
            .and_then(|i| i.measurement.as_ref())
            .map_or(0, |m| m.sample_size)
    };
    let (volume, resolved, issued) = (
        sample("complaints.volume"),
        sample("complaints.resolved_within_sla"),
        sample("licensing.licenses_issued"),
    );
    anyhow::ensure!(
        volume > 0 && resolved > 0 && issued > 0,
        "GetScorecard for {MUNICIPALITY} in the month of {date} counted {volume} reports, \
         {resolved} resolve clocks and {issued} licenses: it did not read the loaded facts"
    );
    eprintln!(
        "kpi: {MUNICIPALITY}'s scorecard for the month of {date}: {} indicators, \
         {volume} reports; timing it for {} s at 1 and 8 callers",
        first.indicators.len(),
        env.seconds
    );

    let alone = scorecards(&pool, &token, &municipal, 1, env.seconds).await;
    let eight = scorecards(&pool, &token, &municipal, 8, env.seconds).await;
    let partner_alone = scorecards(&pool, &token, &partner, 1, env.seconds).await;
    platform.stop().await;
    anyhow::ensure!(
        !alone.latencies.is_empty(),
        "no GetScorecard call succeeded ({} failed)",
        alone.errors
    );
    let p99 = ms(alone.percentile(99.0));
    eprintln!("kpi: GetScorecard p99 {p99:.1} ms at 1 caller");
    let figure = Figure {
        name: "GetScorecard p99 over 10,000,000 events".into(),
        value: p99,
        unit: "ms",
        limit: "the issue's ceiling of 100 ms".into(),
        limit_value: 100.0,
        floor: 1.0,
        aim: 0.2,
        lower_is_better: true,
    };
    let details = serde_json::json!({
        "events": SCORECARD_EVENTS,
        "projected_events": PROJECTED_EVENTS,
        "load": loaded,
        "municipality": MUNICIPALITY,
        "partner": PARTNER,
        "month_of": date,
        "indicators": first.indicators.len(),
        "reports_in_month": volume,
        "resolve_clocks_in_month": resolved,
        "licenses_in_month": issued,
        "municipality_c1": run_details(&alone),
        "municipality_c8": run_details(&eight),
        "partner_c1": run_details(&partner_alone),
    });
    Ok((figure, details))
}

/// `municipality`'s scorecard for the month of `date` in a closed loop at
/// `concurrency` callers for `seconds`, against the KPI service at `grpc`.
pub async fn scorecard_load(
    grpc: std::net::SocketAddr,
    municipality: &str,
    date: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Run> {
    let token = dev_token(Role::Analyst)?;
    let request = kpi_pb::GetScorecardRequest {
        subject: Some(kpi_pb::get_scorecard_request::Subject::MunicipalityCode(
            municipality.into(),
        )),
        period: Some(kpi_pb::Period {
            granularity: kpi_pb::Granularity::Month as i32,
            date: date.into(),
        }),
    };
    let pool = channels(grpc, concurrency).await?;
    Ok(scorecards(&pool, &token, &request, concurrency, seconds).await)
}

/// `request` in a closed loop at `concurrency` callers for `seconds`.
async fn scorecards(
    pool: &[tonic::transport::Channel],
    token: &str,
    request: &kpi_pb::GetScorecardRequest,
    concurrency: usize,
    seconds: u64,
) -> Run {
    let (pool, token, request) = (pool.to_vec(), token.to_string(), request.clone());
    closed_loop(concurrency, seconds, move |_, worker| {
        let mut client = KpiServiceClient::new(pool[worker % pool.len()].clone());
        let request = authorized(request.clone(), &token);
        async move {
            client.get_scorecard(request).await?;
            Ok(())
        }
    })
    .await
}

fn run_details(run: &Run) -> serde_json::Value {
    serde_json::json!({
        "calls": run.latencies.len(),
        "rps": run.rps(),
        "p50_ms": ms(run.percentile(50.0)),
        "p99_ms": ms(run.percentile(99.0)),
        "errors": run.errors,
    })
}

/// A day in the last whole month before `now`, as `YYYY-MM-DD`.
fn last_whole_month(now: DateTime<Utc>) -> anyhow::Result<String> {
    let day = now
        .date_naive()
        .with_day(1)
        .and_then(|first| first.pred_opt())
        .and_then(|last| last.with_day(15))
        .context("the middle of last month")?;
    Ok(day.format("%Y-%m-%d").to_string())
}
