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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use baladiya_platform::auth::Role;
use baladiya_platform::config::AuthConfig;
use baladiya_proto::common::v1::Location;
use baladiya_proto::intake::v1 as intake;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use baladiya_testkit::{
    DevToken, Output, PlatformProcess, Ready, Spawn, authorized, free_addr, with_database,
};
use clap::{Parser, Subcommand};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod kpi;
mod pipeline;
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

/// Latencies and errors of one closed-loop run.
#[derive(Debug, Default)]
struct Run {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Run {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Its rate, p50, p99 and errors, on one line.
    fn summary(&self) -> String {
        format!(
            "{:.0} rps, p50 {:.1} ms, p99 {:.1} ms, {} errors",
            self.rps(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            self.errors
        )
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        percentile(&sorted, p)
    }
}

/// The value at percentile `p` of `sorted` (nearest rank); the default of an
/// empty slice.
fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Deletes the JetStream streams of `namespace` (`<namespace>_<STREAM>`).
async fn delete_streams(env: &Env, namespace: &str) {
    baladiya_testkit::delete_streams(&env.nats, namespace).await;
}

/// `concurrency` callers, each calling `call(n)` in a loop for `seconds`.
async fn closed_loop<F, Fut>(concurrency: usize, seconds: u64, call: F) -> Run
where
    F: Fn(u64, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (call, counter) = (call.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match call(n, worker).await {
                    Ok(()) => run.latencies.push(t.elapsed()),
                    Err(_) => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut total = Run::default();
    for task in tasks {
        if let Ok(run) = task.await {
            total.latencies.extend(run.latencies);
            total.errors += run.errors;
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Up to eight HTTP/2 connections, as a fleet of callers would open.
async fn channels(addr: SocketAddr, concurrency: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..concurrency.clamp(1, 8) {
        out.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// The body of `GET path` (HTTP/1.1, closed after the answer).
async fn http_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    Ok(baladiya_testkit::http_get(addr, path).await?.1)
}

/// Waits until the platform has caught up: nothing in any outbox and no
/// consumer behind (two looks in a row, the lag gauges refresh every 5 s),
/// so one measurement does not pay for the previous one's events. Returns
/// when the first of those looks was (to the 3 s between looks).
async fn quiesce(http: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut quiet = 0;
    let mut first_quiet = Duration::ZERO;
    while quiet < 2 {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the platform did not catch up in 10 minutes"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let metrics = http_body(http, "/metrics").await?;
        let pending: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("baladiya_outbox_backlog_events")
                    || l.starts_with("baladiya_consumer_lag_events")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        quiet = if pending == 0.0 { quiet + 1 } else { 0 };
        if quiet == 1 {
            first_quiet = started.elapsed();
        }
    }
    Ok(first_quiet)
}

/// What every measurement needs to know about this run.
#[derive(Debug, Clone)]
pub struct Env {
    /// `BALADIYA__DATABASE__URL`: a measurement creates its own database
    /// beside it (see [`with_database`]) and drops it when done.
    pub base: String,
    /// `BALADIYA__NATS__URL`.
    pub nats: String,
    /// The `baladiya` binary.
    pub baladiya: PathBuf,
    /// Seconds a closed-loop measurement runs.
    pub seconds: u64,
    /// A run-unique stamp for database and stream namespace names.
    pub stamp: String,
    /// Leave a phase's database in place when it ends (`--keep`).
    pub keep: bool,
}

/// A `baladiya run --services <services>` process, ready.
pub struct Platform {
    process: PlatformProcess,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl Platform {
    /// Starts `services` on `database` with stream namespace `namespace`,
    /// seeded from `deploy/seed`, and waits until `/readyz` answers 200.
    pub async fn start(
        env: &Env,
        services: &str,
        database: &str,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let seed = std::fs::canonicalize("deploy/seed")?;
        let seed = seed.to_str().context("deploy/seed is not UTF-8")?;
        let process = PlatformProcess::spawn(&Spawn {
            binary: &env.baladiya,
            services,
            database_url: database,
            nats_url: &env.nats,
            namespace,
            addrs: (free_addr()?, free_addr()?),
            inherit_env: true,
            env: &[
                ("BALADIYA__AUTH__RATE_LIMIT_PER_SECOND", "0"),
                ("BALADIYA__SEED__DIR", seed),
            ],
            output: Output::NullStdout,
            ready: Ready {
                path: "/readyz",
                every: Duration::from_millis(5),
                within: Duration::from_secs(60),
            },
        })
        .await?;
        let (grpc, http) = (process.grpc, process.http);
        Ok(Self {
            process,
            grpc,
            http,
        })
    }

    /// The process's resident memory now.
    pub fn resident_mib(&self) -> anyhow::Result<f64> {
        resident_mib(self.process.child.id().context("platform pid")?)
    }

    /// Waits until it has caught up (see [`quiesce`]).
    pub async fn quiesce(&self) -> anyhow::Result<Duration> {
        quiesce(self.http).await
    }

    /// Kills it.
    pub async fn stop(mut self) {
        self.process.child.kill().await.ok();
    }
}

/// Creates database `name` (dropped by [`drop_database`]) and returns its URL.
pub async fn create_database(env: &Env, name: &str) -> anyhow::Result<String> {
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&with_database(&env.base, "postgres"))
            .await
            .context("connecting to PostgreSQL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    Ok(with_database(&env.base, name))
}

/// Drops database `name`, closing whatever is still connected.
pub async fn drop_database(env: &Env, name: &str) {
    if env.keep {
        eprintln!("keeping database {name}");
        return;
    }
    baladiya_testkit::drop_database(&env.base, name).await;
}

/// One measurement's figures and the numbers behind them.
#[derive(Default)]
pub struct Phase {
    pub figures: Vec<Figure>,
    pub details: serde_json::Map<String, serde_json::Value>,
}

fn resident_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// One figure of the report.
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// What it is held against, and that limit's value in the same unit.
    pub limit: String,
    pub limit_value: f64,
    /// The floor and aim for value / limit_value, and whether lower
    /// is better (a time, a size) or higher (a rate).
    pub floor: f64,
    pub aim: f64,
    pub lower_is_better: bool,
}

impl Figure {
    fn ratio(&self) -> f64 {
        self.value / self.limit_value
    }

    fn meets_floor(&self) -> bool {
        if self.lower_is_better {
            self.ratio() <= self.floor
        } else {
            self.ratio() >= self.floor
        }
    }
}

/// pgbench running one transaction of two inserts, at `clients`: transactions
/// per second.
async fn pgbench(database_url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("baladiya-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "BEGIN;\n\
         INSERT INTO reports (id, payload) VALUES (gen_random_uuid(), repeat('x', 400));\n\
         INSERT INTO outbox (payload) VALUES (convert_to(repeat('y', 300), 'UTF8'));\n\
         COMMIT;\n",
    )?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-T", &seconds.to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .arg(database_url)
        .output()
        .await
        .context("running pgbench (Debian: postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no tps in pgbench's output")
}

/// Categories of normal priority whose duplicate radius is at most 250 m:
/// each has its own duplicate search, so each multiplies the places.
const CATEGORIES: [&str; 4] = [
    "POTHOLE",
    "WASTE_COLLECTION",
    "CONSTRUCTION_DEBRIS",
    "ROAD_WORKS_DAMAGE",
];

/// The next free place, with its category, on a grid of 60,000 points
/// 0.003° (over 300 m) apart inside Riyadh's service area, once per category
/// of [`CATEGORIES`] (240,000 in all), from a per-process starting point:
/// reports a run submits are farther apart than their category's duplicate
/// radius, so none is linked as a duplicate (a different, heavier request).
fn next_place() -> (f64, f64, &'static str) {
    const ROWS: u64 = 240;
    const PLACES: u64 = ROWS * 250;
    const ALL: u64 = PLACES * CATEGORIES.len() as u64;
    static NEXT: std::sync::LazyLock<AtomicU64> =
        std::sync::LazyLock::new(|| AtomicU64::new(u64::from(std::process::id()) * 7_919 % ALL));
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % ALL;
    let (category, n) = (CATEGORIES[(n / PLACES) as usize], n % PLACES);
    (
        24.36 + (n % ROWS) as f64 * 0.003,
        46.36 + (n / ROWS) as f64 * 0.003,
        category,
    )
}

fn submit_request() -> intake::SubmitReportRequest {
    let (latitude, longitude, category) = next_place();
    intake::SubmitReportRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        channel: intake::Channel::CallCenter940 as i32,
        category_code: category.into(),
        description: "حفرة في الطريق".into(),
        location: Some(Location {
            latitude,
            longitude,
            national_address_short: String::new(),
            municipality_code: "RIYADH".into(),
        }),
        reporter: None,
        attachments: vec![],
        observed_at: None,
        priority_hint: 0,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
        platform_phases(
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

fn report(
    figures: &[Figure],
    details: serde_json::Map<String, serde_json::Value>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    println!(
        "\n{:<44} {:>10} {:>6}  {:<46} {:>7} {:>7} {:>6}",
        "figure", "value", "", "held against", "ratio", "floor", "meets"
    );
    for f in figures {
        println!(
            "{:<44} {:>10.2} {:>6}  {:<46} {:>7.3} {:>7} {:>6}",
            f.name,
            f.value,
            f.unit,
            f.limit,
            f.ratio(),
            if f.floor > 0.0 {
                format!("{}{}", if f.lower_is_better { "≤" } else { "≥" }, f.floor)
            } else {
                "-".into()
            },
            if f.floor > 0.0 {
                if f.meets_floor() { "yes" } else { "NO" }
            } else {
                ""
            }
        );
    }
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("bench/results/{date}.json")));
    let json = serde_json::json!({
        "date": date,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "figures": figures.iter().map(|f| serde_json::json!({
            "name": f.name, "value": f.value, "unit": f.unit, "limit": f.limit,
            "limit_value": f.limit_value, "ratio": f.ratio(), "floor": f.floor,
            "aim": f.aim, "lower_is_better": f.lower_is_better,
            "meets_floor": f.floor <= 0.0 || f.meets_floor(),
        })).collect::<Vec<_>>(),
        "details": details,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    println!("written to {}", path.display());
    Ok(())
}

async fn load(
    grpc: SocketAddr,
    http: Option<SocketAddr>,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let (submitter, reader) = (dev_token(Role::Channel)?, dev_token(Role::Operator)?);
    let pool = channels(grpc, concurrency).await?;
    let (submitted, ids) = submit_closed_loop(pool.clone(), concurrency, seconds, &submitter).await;
    println!("SubmitReport c={concurrency}: {}", submitted.summary());
    let ids = Arc::new(ids);
    anyhow::ensure!(!ids.is_empty(), "no report was submitted");
    if let Some(http) = http {
        let waited = quiesce(http).await?;
        println!(
            "caught up {:.1} s after the last submit",
            waited.as_secs_f64()
        );
    }
    let read = get_closed_loop(pool, concurrency, seconds, ids, &reader).await;
    println!("GetReport c={concurrency}: {}", read.summary());
    Ok(())
}

/// Submits one report (at its own place) and returns its id.
async fn submit(channel: Channel, token: &str) -> anyhow::Result<String> {
    Ok(IntakeServiceClient::new(channel)
        .submit_report(authorized(submit_request(), token))
        .await?
        .into_inner()
        .report
        .context("no report")?
        .id)
}

/// `concurrency` callers submitting over `pool` for `seconds`: the run and
/// the ids of the reports submitted.
async fn submit_closed_loop(
    pool: Vec<Channel>,
    concurrency: usize,
    seconds: u64,
    token: &str,
) -> (Run, Vec<String>) {
    let ids = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (sink, token) = (ids.clone(), token.to_string());
    let run = closed_loop(concurrency, seconds, move |_, worker| {
        let (channel, token, ids) = (
            pool[worker % pool.len()].clone(),
            token.clone(),
            sink.clone(),
        );
        async move {
            let id = submit(channel, &token).await?;
            if let Ok(mut ids) = ids.lock() {
                ids.push(id);
            }
            Ok(())
        }
    })
    .await;
    let ids = ids.lock().map(|v| v.clone()).unwrap_or_default();
    (run, ids)
}

/// `concurrency` callers reading the reports `ids` (spread evenly) over
/// `pool` for `seconds`.
async fn get_closed_loop(
    pool: Vec<Channel>,
    concurrency: usize,
    seconds: u64,
    ids: Arc<Vec<String>>,
    token: &str,
) -> Run {
    let token = token.to_string();
    closed_loop(concurrency, seconds, move |n, worker| {
        let mut client = IntakeServiceClient::new(pool[worker % pool.len()].clone());
        let (ids, token) = (ids.clone(), token.clone());
        async move {
            let id = ids[(n as usize * 7919) % ids.len()].clone();
            client
                .get_report(authorized(
                    intake::GetReportRequest {
                        key: Some(intake::get_report_request::Key::Id(id)),
                    },
                    &token,
                ))
                .await?;
            Ok(())
        }
    })
    .await
}

/// A dev token for the bench's callers: the 940 channel, or an operator.
fn dev_token(role: Role) -> anyhow::Result<String> {
    Ok(DevToken::new(role)
        .subject(format!("bench-{role}"))
        .channel((role == Role::Channel).then_some("CHANNEL_CALL_CENTER_940"))
        .ttl(chrono::Duration::hours(2))
        .try_mint(&AuthConfig::default())?)
}

async fn echo(addr: SocketAddr) -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(addr)
        .await?;
    Ok(())
}

/// The platform all in one process: start to ready, idle memory,
/// SubmitReport beside pgbench, the pipeline, GetReport beside bare tonic.
async fn platform_phases(
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Command::Echo { addr }) => runtime.block_on(echo(addr)),
        Some(Command::Load {
            grpc,
            concurrency,
            http,
        }) => runtime.block_on(load(grpc, http, concurrency, cli.seconds)),
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
