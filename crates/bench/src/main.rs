//! `make bench`: the platform's figures, each beside a limit measured in the
//! same run on the same machine, quoted as a ratio. It asserts nothing about
//! speed; it prints a table and writes `bench/results/<date>.json`.
//!
//! Measured here:
//! - `baladiya run --services all`: start to ready, and idle resident memory;
//! - `SubmitReport` over gRPC at 1, 8 and 32 concurrent callers to intake in
//!   a process of its own (`run --services intake`, its relay publishing each
//!   report's event), beside pgbench running one transaction of two inserts
//!   (a row and an outbox row) on the same PostgreSQL at the same concurrency;
//! - `GetReport` at 64 callers, beside a bare tonic server answering
//!   `grpc.health.v1.Health/Check` (this binary's `echo` command, its own
//!   process like the platform) at the same concurrency;
//! - the pipeline, from `SubmitReport` to the case routed and its SLA clocks
//!   started, at half the most reports per second the whole platform carried
//!   (32 callers submitting, then every event applied) ([`pipeline`]);
//! - the SLA watcher alone with 1,000,000 open clocks: its memory, and how
//!   late breaches are published while 10,000 deadlines fall due in a minute
//!   ([`sla`]);
//! - the KPI service alone: projection throughput, and `GetScorecard` over
//!   10,000,000 events ([`kpi`]).
//!
//! Before each measurement the platform catches up on the events the last
//! one caused (outboxes empty, no consumer behind), and how long that took is
//! recorded: a submitted report also runs routing, SLA clocks and the KPI
//! projection on the same cores.
//!
//! This file holds the command line and the order of the run. The pieces:
//! [`env`](mod@env) (what every measurement shares: the run's settings, its
//! databases and streams), [`platform`] (a `baladiya` process under
//! measurement), [`grpc_load`] (closed-loop gRPC callers and the `load`
//! command), [`baselines`] (the limits measured beside the platform:
//! pgbench and the bare tonic server), [`platform_phases`], [`pipeline`],
//! [`sla`] and [`kpi`] (the measurements), and [`report`](mod@report) (the
//! table and the results JSON).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use baladiya_platform::auth::Role;
use baladiya_testkit::with_database;
use clap::{Parser, Subcommand};

use crate::env::Env;
use crate::grpc_load::dev_token;
use crate::report::{Figure, report};

mod baselines;
mod env;
mod grpc_load;
mod kpi;
mod pipeline;
mod platform;
mod platform_phases;
mod report;
mod sla;

#[derive(Debug, Parser)]
#[command(
    name = "baladiya-bench",
    about = "Baladiya's figures beside this machine's limits"
)]
struct Cli {
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The `baladiya` binary to measure.
    #[arg(long, default_value = "target/release/baladiya")]
    baladiya: PathBuf,
    /// Where the results go (`bench/results/<date>.json` by default).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run one group of phases only: `platform` (start, submit, pipeline,
    /// GetReport), `sla` or `kpi`.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Keep the databases of the `sla` and `kpi` phases, to study their plans.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The groups of phases `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Platform,
    Sla,
    Kpi,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve `grpc.health.v1` and nothing else: the bare tonic baseline.
    Echo {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Drive `SubmitReport` (then `GetReport` on what was submitted) against a
    /// running platform, to profile it under load (`perf record -p <pid>`).
    Load {
        /// The platform's gRPC address.
        #[arg(long)]
        grpc: SocketAddr,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// The platform's HTTP address: when given, `GetReport` starts only
        /// once the submitted reports' events are all applied, so a profile
        /// of it sees reads alone.
        #[arg(long)]
        http: Option<SocketAddr>,
    },
    /// Submit open-loop at `rate` per second to a running platform (all
    /// services, stream namespace `namespace`) and time each report to its
    /// case routed and clocks started, hop by hop, to profile the pipeline.
    Pipeline {
        /// The platform's gRPC address.
        #[arg(long)]
        grpc: SocketAddr,
        /// Its NATS server.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Its `events.namespace`.
        #[arg(long)]
        namespace: String,
        /// Reports submitted per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
    },
    /// Call `GetScorecard` for a municipality's month in a closed loop
    /// against a running KPI service (one a `--keep` run left loaded), to
    /// profile it.
    Scorecards {
        /// The KPI service's gRPC address.
        #[arg(long)]
        grpc: SocketAddr,
        #[arg(long, default_value = "RIYADH")]
        municipality: String,
        /// A day of the month to read, `YYYY-MM-DD`.
        #[arg(long)]
        date: String,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let base = std::env::var("BALADIYA__DATABASE__URL")
        .context("BALADIYA__DATABASE__URL (make bench sets it)")?;
    let nats = std::env::var("BALADIYA__NATS__URL").context("BALADIYA__NATS__URL")?;
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let name = format!("bench_{stamp}");
    let database = with_database(&base, &name);
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&with_database(&base, "postgres"))
            .await
            .context("connecting to PostgreSQL")?;
    let mut figures: Vec<Figure> = Vec::new();
    let mut details = serde_json::Map::new();

    let env = Env {
        base: base.clone(),
        nats: nats.clone(),
        baladiya: cli.baladiya.clone(),
        seconds: cli.seconds,
        stamp: stamp.clone(),
        keep: cli.keep,
    };
    let runs = |group: Only| cli.only.is_none_or(|only| only == group);
    if runs(Only::Platform) {
        platform_phases::measure(
            &env,
            &mut admin,
            &database,
            &name,
            &mut figures,
            &mut details,
        )
        .await?;
    }

    // The SLA watcher alone with a million open clocks, then the KPI
    // service alone; a phase that fails is reported and the others still run.
    let mut failed = Vec::new();
    for name in ["sla", "kpi"] {
        let phase = match name {
            "sla" if runs(Only::Sla) => sla::measure(&env).await,
            "kpi" if runs(Only::Kpi) => kpi::measure(&env).await,
            _ => continue,
        };
        match phase {
            Ok(phase) => {
                figures.extend(phase.figures);
                details.extend(phase.details);
            }
            Err(e) => {
                eprintln!("{name}: failed: {e:#}");
                details.insert(
                    format!("{name}_failed"),
                    serde_json::json!(format!("{e:#}")),
                );
                failed.push(name);
            }
        }
    }

    report(&figures, details, cli.out.as_deref())?;
    anyhow::ensure!(failed.is_empty(), "phases failed: {}", failed.join(", "));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Command::Echo { addr }) => runtime.block_on(baselines::echo(addr)),
        Some(Command::Load {
            grpc,
            concurrency,
            http,
        }) => runtime.block_on(grpc_load::load(grpc, http, concurrency, cli.seconds)),
        Some(Command::Pipeline {
            grpc,
            nats,
            namespace,
            rate,
        }) => runtime.block_on(async {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate: must be a positive number of reports per second, got {rate}"
            );
            eprintln!(
                "pipeline: {rate:.0} reports/s for {} s, then waiting for their clocks…",
                cli.seconds
            );
            let token = dev_token(Role::Channel)?;
            let phase =
                pipeline::measure(&nats, cli.seconds, grpc, &namespace, &token, rate).await?;
            println!("{}", serde_json::to_string_pretty(&phase.details)?);
            Ok(())
        }),
        Some(Command::Scorecards {
            grpc,
            municipality,
            date,
            concurrency,
        }) => runtime.block_on(async {
            let run =
                kpi::scorecard_load(grpc, &municipality, &date, concurrency, cli.seconds).await?;
            println!("GetScorecard c={concurrency}: {}", run.summary());
            Ok(())
        }),
        None => runtime.block_on(run(cli)),
    }
}
