//! The `platform` group of phases: `run --services all` from start to ready
//! and idle; `SubmitReport` to intake alone beside pgbench; the pipeline
//! capacity, then the pipeline at half of it; `GetReport` beside the bare
//! tonic server. They share one platform process and the reports it was
//! given, so they run as one sequence here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baladiya_platform::auth::Role;
use baladiya_testkit::{free_addr, with_database};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::baselines::pgbench;
use crate::env::{Env, delete_streams};
use crate::grpc_load::{channels, closed_loop, dev_token, get_closed_loop, ms, submit_closed_loop};
use crate::pipeline;
use crate::platform::Platform;
use crate::report::Figure;

/// The platform all in one process: start to ready, idle memory,
/// SubmitReport beside pgbench, the pipeline, GetReport beside bare tonic.
pub async fn measure(
    env: &Env,
    admin: &mut sqlx::PgConnection,
    database: &str,
    name: &str,
    figures: &mut Vec<Figure>,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    // The platform, from start to ready, then idle.
    eprintln!("platform: starting run --services all…");
    let started = Instant::now();
    let platform = Platform::start(env, "all", database, name).await?;
    let grpc = platform.grpc;
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = platform.resident_mib()?;
    figures.push(Figure {
        name: "run --services all: start to ready".into(),
        value: ready.as_secs_f64(),
        unit: "s",
        limit: "the issue's ceiling of 3 s".into(),
        limit_value: 3.0,
        floor: 1.0,
        aim: 1.0 / 3.0,
        lower_is_better: true,
    });
    figures.push(Figure {
        name: "run --services all: idle resident memory".into(),
        value: idle,
        unit: "MiB",
        limit: "the issue's ceiling of 150 MiB".into(),
        limit_value: 150.0,
        floor: 1.0,
        aim: 50.0 / 150.0,
        lower_is_better: true,
    });

    // SubmitReport, and pgbench's two inserts, at the same concurrency.
    let token = dev_token(Role::Channel)?;
    let pg_name = format!("bench_pg_{}", env.stamp);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {pg_name}")))
        .execute(&mut *admin)
        .await?;
    let pg_url = with_database(&env.base, &pg_name);
    {
        let mut pg = <sqlx::PgConnection as sqlx::Connection>::connect(&pg_url).await?;
        sqlx::raw_sql(
            "CREATE TABLE reports (id uuid PRIMARY KEY, payload text NOT NULL,
                                   created_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE outbox (seq bigserial PRIMARY KEY, payload bytea NOT NULL,
                                  created_at timestamptz NOT NULL DEFAULT now());",
        )
        .execute(&mut pg)
        .await?;
    }
    // How many reports per second the whole platform carries: 32 callers
    // submit for the phase's time, then it finishes their events. These
    // reports are also what GetReport reads below.
    let caught_up = platform.quiesce().await?;
    details.insert(
        "catch_up_after_start_s".into(),
        serde_json::json!(caught_up.as_secs_f64()),
    );
    eprintln!(
        "pipeline capacity: 32 callers for {} s on the whole platform…",
        env.seconds
    );
    let (loaded, report_ids) =
        submit_closed_loop(channels(grpc, 32).await?, 32, env.seconds, &token).await;
    let drained = platform.quiesce().await?;
    let sustained = loaded.latencies.len() as f64 / (loaded.elapsed + drained).as_secs_f64();
    details.insert(
        "pipeline_capacity".into(),
        serde_json::json!({
            "submit_rps_all_in_one_c32": loaded.rps(), "submit_p99_ms": ms(loaded.percentile(99.0)),
            "errors": loaded.errors, "catch_up_s": drained.as_secs_f64(),
            "reports_per_s": sustained,
        }),
    );

    // SubmitReport against intake in a process of its own (as deployed:
    // the downstream services run elsewhere, and on these two cores they
    // would be measured instead), with its relay publishing every event.
    let intake_name = format!("bench_intake_{}", env.stamp);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {intake_name}"
    )))
    .execute(&mut *admin)
    .await?;
    let intake = Platform::start(
        env,
        "intake",
        &with_database(&env.base, &intake_name),
        &intake_name,
    )
    .await?;
    intake.quiesce().await?;
    for concurrency in [1usize, 8, 32] {
        eprintln!(
            "submit: {concurrency} callers for {} s to intake, then pgbench…",
            env.seconds
        );
        let pool = channels(intake.grpc, concurrency).await?;
        let (submitted, _) = submit_closed_loop(pool, concurrency, env.seconds, &token).await;
        // pgbench runs once intake's relay has published everything.
        let drained = intake.quiesce().await?;
        let tps = pgbench(&pg_url, concurrency, env.seconds).await?;
        details.insert(
            format!("submit_report_c{concurrency}"),
            serde_json::json!({
                "rps": submitted.rps(), "p50_ms": ms(submitted.percentile(50.0)),
                "p99_ms": ms(submitted.percentile(99.0)), "errors": submitted.errors,
                "pgbench_tps": tps, "relay_catch_up_s": drained.as_secs_f64(),
            }),
        );
        figures.push(Figure {
            name: format!("SubmitReport rps at c={concurrency}"),
            value: submitted.rps(),
            unit: "rps",
            limit: format!("pgbench two-insert transactions at c={concurrency}"),
            limit_value: tps,
            floor: if concurrency == 32 { 0.7 } else { 0.0 },
            aim: 1.0,
            lower_is_better: false,
        });
    }
    intake.stop().await;
    delete_streams(env, &intake_name).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {intake_name} WITH (FORCE)"
    )))
    .execute(&mut *admin)
    .await
    .ok();

    // The pipeline at half the most it carried.
    eprintln!(
        "pipeline: {:.0} reports/s for {} s…",
        sustained / 2.0,
        env.seconds
    );
    let phase = pipeline::measure(
        &env.nats,
        env.seconds,
        platform.grpc,
        name,
        &token,
        sustained / 2.0,
    )
    .await?;
    figures.extend(phase.figures);
    details.extend(phase.details);

    // GetReport at 64 callers, and the bare tonic server at 64.
    eprintln!("get: GetReport, then a bare tonic server, at 64 callers…");
    let ids = Arc::new(report_ids);
    anyhow::ensure!(!ids.is_empty(), "no report was submitted");
    let reader = dev_token(Role::Operator)?;
    let caught_up = platform.quiesce().await?;
    details.insert(
        "catch_up_before_get_report_s".into(),
        serde_json::json!(caught_up.as_secs_f64()),
    );
    let pool = channels(grpc, 64).await?;
    let read = get_closed_loop(pool, 64, env.seconds, ids, &reader).await;
    let echo_addr = free_addr()?;
    let mut echo = tokio::process::Command::new(std::env::current_exe()?)
        .args(["echo", "--addr", &echo_addr.to_string()])
        .kill_on_drop(true)
        .spawn()?;
    let echo_pool = loop {
        if let Ok(pool) = channels(echo_addr, 64).await {
            break pool;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let echoed = closed_loop(64, env.seconds, move |_, worker| {
        let mut client = HealthClient::new(echo_pool[worker % echo_pool.len()].clone());
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
            Ok(())
        }
    })
    .await;
    echo.kill().await.ok();
    details.insert(
        "get_report_c64".into(),
        serde_json::json!({
            "rps": read.rps(), "p50_ms": ms(read.percentile(50.0)),
            "p99_ms": ms(read.percentile(99.0)), "errors": read.errors,
            "echo_rps": echoed.rps(), "echo_p50_ms": ms(echoed.percentile(50.0)),
            "echo_p99_ms": ms(echoed.percentile(99.0)),
        }),
    );
    figures.push(Figure {
        name: "GetReport rps at c=64".into(),
        value: read.rps(),
        unit: "rps",
        limit: "bare tonic Health/Check at c=64".into(),
        limit_value: echoed.rps(),
        floor: 0.4,
        aim: 0.6,
        lower_is_better: false,
    });

    // Clean up: the platform, its database and streams' namespace, pgbench's.
    platform.stop().await;
    delete_streams(env, name).await;
    for db in [name, pg_name.as_str()] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .execute(&mut *admin)
        .await
        .ok();
    }

    Ok(())
}
