//! The integration harness: run the platform against real PostgreSQL and NATS
//! JetStream, in-process or as a child process of the built binary, each test
//! with a fresh database and its own NATS namespace (streams and subjects).
//!
//! URLs come from `BALADIYA__DATABASE__URL` / `BALADIYA__NATS__URL` (which
//! `make test` sets through `scripts/devenv.py`), else the default local ports.
//! All tests live in this crate's one test binary, so the workspace builds it
//! once and runs the tests in parallel.

pub mod harness;
pub mod probe;

#[cfg(test)]
mod fixtures;

#[cfg(test)]
mod cli_it;
#[cfg(test)]
mod deploy_it;
#[cfg(test)]
mod events_it;
#[cfg(test)]
mod faults_it;
#[cfg(test)]
mod intake_it;
#[cfg(test)]
mod kpi_it;
#[cfg(test)]
mod kpi_month_it;
#[cfg(test)]
mod licensing_it;
#[cfg(test)]
mod open311_it;
#[cfg(test)]
mod partners_it;
#[cfg(test)]
mod routing_it;
#[cfg(test)]
mod security_it;
#[cfg(test)]
mod server_it;
#[cfg(test)]
mod sla_faults_it;
#[cfg(test)]
mod sla_it;
#[cfg(test)]
mod sla_oracle_it;
#[cfg(test)]
mod stories_it;
#[cfg(test)]
mod watermark_it;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use baladiya_platform::app::{self, Listeners, ServiceModule, StartError};
use baladiya_platform::auth::Role;
use baladiya_platform::clock::Clock;
use baladiya_platform::config::{ClockMode, Config, Secret};
use baladiya_platform::shutdown::{self, ShutdownTrigger};
use baladiya_testkit::{Output, PlatformProcess, Ready, Spawn};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub use baladiya_testkit::{
    DevToken, authorized, free_port, http_get, http_get_with, http_request,
};
pub use harness::status::fields;
pub use harness::tokens::{partner_token, token};

/// PostgreSQL URL of the server to test against (any database).
fn server_url() -> String {
    std::env::var("BALADIYA__DATABASE__URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// PostgreSQL URL of the server to test against, naming database `name`.
fn database_url(name: &str) -> String {
    baladiya_testkit::with_database(&server_url(), name)
}

/// NATS URL to test against.
pub fn nats_url() -> String {
    std::env::var("BALADIYA__NATS__URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A fresh database and NATS namespace for one test.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub database: String,
    pub namespace: String,
    pub nats_url: String,
}

impl TestEnv {
    /// Names a new database and namespace (created on first use).
    pub fn new() -> Self {
        let id = uuid::Uuid::now_v7().simple().to_string();
        Self {
            database: format!("t_{id}"),
            namespace: format!("t{}", &id[id.len() - 12..]),
            nats_url: nats_url(),
        }
    }

    /// The test database's URL.
    pub fn database_url(&self) -> String {
        database_url(&self.database)
    }

    /// A configuration for this test: loopback port 0, manual clock, dev auth,
    /// quick retries.
    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.server.grpc_addr = "127.0.0.1:0".into();
        c.server.http_addr = "127.0.0.1:0".into();
        c.server.shutdown_grace_ms = 10_000;
        c.database.url = Secret::new(self.database_url());
        c.database.max_connections = 6;
        c.nats.url = self.nats_url.clone();
        c.nats.ack_timeout_ms = 2_000;
        c.events.namespace = self.namespace.clone();
        c.events.outbox_poll_ms = 100;
        c.events.consumer_max_attempts = 3;
        c.events.consumer_backoff_ms = 50;
        c.events.consumer_backoff_max_ms = 200;
        c.telemetry.log_filter = "warn".into();
        c.clock.mode = ClockMode::Manual;
        c.clock.start = "2026-03-01T07:30:00+03:00".into();
        c.seed.dir = workspace_root().join("deploy/seed").display().to_string();
        c
    }

    /// A NATS client for assertions.
    pub async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(&self.nats_url).await?)
    }

    /// Drops the database and the namespace's streams.
    pub async fn cleanup(&self) {
        baladiya_testkit::delete_streams(&self.nats_url, &self.namespace).await;
        baladiya_testkit::drop_database(&server_url(), &self.database).await;
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Installs tracing once per test process and keeps its pipeline alive (a
/// dropped guard shuts the tracer down, which would end trace propagation).
fn init_telemetry(config: &Config) {
    static TELEMETRY: std::sync::OnceLock<Option<baladiya_platform::telemetry::TelemetryGuard>> =
        std::sync::OnceLock::new();
    TELEMETRY.get_or_init(|| baladiya_platform::telemetry::init(&config.telemetry).ok());
}

/// The platform running inside the test process.
pub struct RunningPlatform {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub clock: Clock,
    pub config: Config,
    trigger: ShutdownTrigger,
    handle: JoinHandle<Result<(), StartError>>,
}

impl RunningPlatform {
    /// Starts `modules` with `config` on loopback ports and waits until gRPC answers.
    pub async fn start(
        config: Config,
        modules: Vec<Arc<dyn ServiceModule>>,
    ) -> anyhow::Result<Self> {
        init_telemetry(&config);
        let clock = app::clock_from_config(&config.clock)?;
        let listeners = Listeners::bind(&config.server).await?;
        let grpc = listeners.grpc.local_addr()?;
        let http = listeners.http.local_addr()?;
        let (trigger, signal) = shutdown::channel();
        let handle = tokio::spawn(app::run(
            config.clone(),
            modules,
            clock.clone(),
            listeners,
            signal,
        ));
        let platform = Self {
            grpc,
            http,
            clock,
            config,
            trigger,
            handle,
        };
        platform.wait_serving().await?;
        Ok(platform)
    }

    async fn wait_serving(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if self.handle.is_finished() {
                anyhow::bail!("platform exited during start");
            }
            if let Ok(channel) = Channel::from_shared(format!("http://{}", self.grpc))?
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                if health
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("platform did not start serving")
    }

    /// A gRPC channel to the platform.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.grpc))?
            .connect()
            .await?)
    }

    /// A dev token for `role`.
    pub fn token(&self, role: Role) -> String {
        token(&self.config, role)
    }

    /// GETs a path on the HTTP port: (status, body).
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.http, path).await
    }

    /// Triggers shutdown and waits until the platform has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.trigger.trigger();
        self.handle.await??;
        Ok(())
    }

    /// Fires the shutdown signal without waiting.
    pub fn trigger_shutdown(&self) {
        self.trigger.trigger();
    }

    /// Waits for a shutdown begun by [`Self::trigger_shutdown`].
    pub async fn join(self) -> anyhow::Result<()> {
        self.handle.await??;
        Ok(())
    }
}

/// The built `baladiya` binary (`make test` builds it first).
pub fn baladiya_binary() -> PathBuf {
    if let Ok(path) = std::env::var("BALADIYA_BIN") {
        return PathBuf::from(path);
    }
    // target/debug/deps/<test binary> -> target/debug/baladiya
    let exe = std::env::current_exe().expect("current exe");
    let debug = exe.parent().and_then(Path::parent).expect("target dir");
    debug.join("baladiya")
}

/// The platform running as a child process of the built binary.
pub struct ChildPlatform {
    pub child: tokio::process::Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl ChildPlatform {
    /// Runs `baladiya run --services <services>` against `env`, with extra
    /// environment, and waits for `/healthz`.
    pub async fn spawn(
        env: &TestEnv,
        services: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::spawn_logging(env, services, extra, None).await
    }

    /// [`Self::spawn`], with the process's stdout and stderr written to `log`.
    pub async fn spawn_logging(
        env: &TestEnv,
        services: &str,
        extra: &[(&str, &str)],
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        Self::spawn_on(env, services, extra, (grpc, http), log).await
    }

    /// [`Self::spawn_logging`] on given gRPC and HTTP addresses (a process
    /// restarted after a crash comes back where its callers expect it).
    pub async fn spawn_on(
        env: &TestEnv,
        services: &str,
        extra: &[(&str, &str)],
        (grpc, http): (SocketAddr, SocketAddr),
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let binary = baladiya_binary();
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: run `cargo build --bin baladiya`",
            binary.display()
        );
        let process = PlatformProcess::spawn(&Spawn {
            binary: &binary,
            services,
            database_url: &env.database_url(),
            nats_url: &env.nats_url,
            namespace: &env.namespace,
            addrs: (grpc, http),
            inherit_env: false,
            env: extra,
            // Appended to: a restarted process keeps its predecessor's story.
            output: log.map_or(Output::Inherit, Output::Log),
            ready: Ready {
                path: "/healthz",
                every: Duration::from_millis(50),
                within: Duration::from_secs(10),
            },
        })
        .await?;
        Ok(Self {
            child: process.child,
            grpc,
            http,
        })
    }

    /// Kills the process outright (SIGKILL): no drain, no flush.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Sends SIGTERM and returns the exit code.
    pub async fn terminate(mut self) -> anyhow::Result<Option<i32>> {
        let pid = self.child.id().context("child already exited")?;
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        Ok(exit.code())
    }
}

/// A private nats-server this test can stop and restart.
pub struct NatsProcess {
    pub port: u16,
    store: PathBuf,
    child: Option<std::process::Child>,
    config: Option<NatsConfigFile>,
}

/// A configuration file a [`NatsProcess`] runs with, the environment it reads,
/// and a user and password the readiness probe connects as.
struct NatsConfigFile {
    file: PathBuf,
    env: Vec<(String, String)>,
    probe: (String, String),
}

impl NatsProcess {
    pub fn binary() -> PathBuf {
        if let Ok(path) = std::env::var("BALADIYA_TEST_NATS_SERVER") {
            return PathBuf::from(path);
        }
        let venv = workspace_root().join(".venv/bin/nats-server");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("nats-server")
        }
    }

    /// Starts a JetStream server on a free port with a fresh store.
    pub async fn start() -> anyhow::Result<Self> {
        let store =
            std::env::temp_dir().join(format!("baladiya-nats-{}", uuid::Uuid::now_v7().simple()));
        let mut nats = Self {
            port: free_port(),
            store,
            child: None,
            config: None,
        };
        nats.resume().await?;
        Ok(nats)
    }

    /// Starts a server from a configuration file (its port, store and
    /// monitoring port replaced by private ones), with `env` for the
    /// variables it reads; `probe` is a user and password it accepts.
    pub async fn start_with_config(
        file: &Path,
        env: &[(&str, &str)],
        probe: (&str, &str),
    ) -> anyhow::Result<Self> {
        let store =
            std::env::temp_dir().join(format!("baladiya-nats-{}", uuid::Uuid::now_v7().simple()));
        // The file names its own store directory; a private copy points at
        // ours. NATS resolves includes beside the including file, so what the
        // original includes is copied beside the copy.
        std::fs::create_dir_all(&store)?;
        let text = std::fs::read_to_string(file)?;
        let beside = file.parent().unwrap_or(std::path::Path::new("."));
        for line in text.lines() {
            if let Some(included) = line.trim_start().strip_prefix("include ") {
                let included = included.trim_end_matches(';').trim().trim_matches('"');
                std::fs::copy(beside.join(included), store.join(included))?;
            }
        }
        let private: String = text
            .lines()
            .map(|line| {
                if line.trim_start().starts_with("store_dir:") {
                    format!("  store_dir: {:?}", store.join("js").display().to_string())
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let copy = store.join("nats.conf");
        std::fs::write(&copy, private)?;
        let mut nats = Self {
            port: free_port(),
            store,
            child: None,
            config: Some(NatsConfigFile {
                file: copy,
                env: env
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
                probe: (probe.0.to_string(), probe.1.to_string()),
            }),
        };
        nats.resume().await?;
        Ok(nats)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let mut command = std::process::Command::new(Self::binary());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        match &self.config {
            Some(config) => {
                command.arg("-c").arg(&config.file).args(["-m", "-1"]);
                command.envs(config.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            None => {
                command.args(["-js", "-sd"]).arg(&self.store);
            }
        }
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", Self::binary().display()))?;
        self.child = Some(child);
        let options = || match &self.config {
            Some(NatsConfigFile {
                probe: (user, password),
                ..
            }) if !user.is_empty() => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            _ => async_nats::ConnectOptions::new(),
        };
        for _ in 0..100 {
            if let Ok(client) = options().connect(self.url()).await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("nats-server did not start on {}", self.port)
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A `report received` event as intake publishes it.
#[derive(Debug, Clone)]
pub struct ReceivedReport<'a> {
    pub report_id: uuid::Uuid,
    pub category: &'a str,
    pub group: &'a str,
    pub municipality: &'a str,
    pub duplicate_of: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// Publishes a `report received` event on the test's namespace, as intake would.
pub async fn publish_report_received(env: &TestEnv, r: &ReceivedReport<'_>) -> anyhow::Result<()> {
    use baladiya_platform::events::{EventType, Namespace, OutboundEvent, outbox, streams};
    use baladiya_proto::convert::timestamp;
    let id = uuid::Uuid::now_v7();
    let payload = baladiya_proto::intake::events::v1::ReportReceived {
        meta: Some(baladiya_proto::events::v1::EventMeta {
            event_id: id.to_string(),
            occurred_at: Some(timestamp(r.at)),
            aggregate_id: r.report_id.to_string(),
            recorded_at: None,
        }),
        report_id: r.report_id.to_string(),
        tracking_number: format!("RUH-2026-{}", &r.report_id.simple().to_string()[24..]),
        category_code: r.category.into(),
        category_group: r.group.into(),
        municipality_code: r.municipality.into(),
        location: Some(baladiya_proto::common::v1::Location {
            municipality_code: r.municipality.into(),
            ..Default::default()
        }),
        priority: baladiya_proto::common::v1::Priority::Normal as i32,
        received_at: Some(timestamp(r.at)),
        duplicate_of: r.duplicate_of.unwrap_or_default().into(),
        ..Default::default()
    };
    let event = OutboundEvent::new(
        "intake",
        EventType::new("intake", "report", "received"),
        &[r.municipality, r.category],
        id,
        r.report_id.to_string(),
        r.at,
        &payload,
    );
    let js = async_nats::jetstream::new(env.nats().await?);
    let ns = Namespace::new(&env.namespace);
    streams::INTAKE
        .ensure(&js, &ns, &env.config().events)
        .await?;
    outbox::publish(&js, &ns, &event).await?;
    Ok(())
}

/// The domain events on a stream (of `spec`, in namespace `ns`): its messages
/// less the watermark it keeps, if it carries them (each replaces the one
/// before, so there is at most one).
pub async fn stream_events(
    js: &async_nats::jetstream::Context,
    ns: &baladiya_platform::events::Namespace,
    spec: &baladiya_platform::events::StreamSpec,
) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(ns.stream(spec.name)).await?;
    let messages = stream.info().await?.state.messages;
    let watermark = match spec.watermark {
        Some(subject) => u64::from(
            stream
                .get_last_raw_message_by_subject(&ns.subject(subject))
                .await
                .is_ok(),
        ),
        None => 0,
    };
    Ok(messages - watermark)
}

/// The case routing opened for a report, once it exists (read as `admin`).
pub async fn case_of_report(
    routing: &baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient<Channel>,
    admin: &str,
    report_id: uuid::Uuid,
) -> anyhow::Result<baladiya_proto::routing::v1::Case> {
    use baladiya_proto::routing::v1::ListCasesRequest;
    eventually(30, "the case", || {
        let mut routing = routing.clone();
        async move {
            let list = routing
                .list_cases(authorized(
                    ListCasesRequest {
                        page_size: 500,
                        ..Default::default()
                    },
                    admin,
                ))
                .await?
                .into_inner();
            Ok(list
                .cases
                .into_iter()
                .find(|c| c.report_id == report_id.to_string()))
        }
    })
    .await
}

/// Polls `check` until it returns `Some`, for up to `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An RFC 3339 instant.
pub fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Riyadh wall time (`YYYY-MM-DD HH:MM`) as an instant.
pub fn riyadh(text: &str) -> DateTime<Utc> {
    use chrono::TimeZone;
    chrono_tz::Asia::Riyadh
        .from_local_datetime(
            &chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("time"),
        )
        .single()
        .expect("single")
        .with_timezone(&Utc)
}

/// Waits until the SLA watcher holds its replica of the seeded agreements and
/// calendars: a case arriving before that waits in retries.
pub async fn sla_watcher_has_the_seed(env: &TestEnv) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let count = |file: &str, table: &str| {
        std::fs::read_to_string(workspace_root().join(file))
            .unwrap_or_default()
            .matches(&format!("[[{table}]]"))
            .count() as i64
    };
    let expected = [
        (
            count("deploy/seed/partners/agreements.toml", "agreement"),
            "agreements",
        ),
        (
            count("deploy/seed/partners/calendars.toml", "calendar"),
            "calendars",
        ),
    ];
    eventually(60, "the SLA watcher's replica of the seed", || async {
        for (count, table) in &expected {
            let have: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM sla_watcher.{table}"
            )))
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            if have < *count {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    pool.close().await;
    Ok(())
}

/// Moves the manual clock of every platform process at `grpc` to `at`
/// (`baladiya.admin.v1.ClockService/SetTime`, as `token`).
pub async fn set_clocks(
    grpc: impl IntoIterator<Item = SocketAddr>,
    at: DateTime<Utc>,
    token: &str,
) -> anyhow::Result<()> {
    use baladiya_proto::admin::v1::{SetTimeRequest, clock_service_client::ClockServiceClient};
    for addr in grpc {
        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        ClockServiceClient::new(channel)
            .set_time(authorized(
                SetTimeRequest {
                    time: Some(baladiya_proto::convert::timestamp(at)),
                },
                token,
            ))
            .await?;
    }
    Ok(())
}
