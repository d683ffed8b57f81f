//! `baladiya run --services <services>` as a child process, started and
//! waited for until an HTTP endpoint answers 200.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

use crate::http::http_get;

/// Where the child's output goes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// This process's stdout and stderr.
    Inherit,
    /// Stdout discarded, stderr this process's.
    NullStdout,
    /// Stdout and stderr appended to a file (a restarted process keeps its
    /// predecessor's story).
    Log(&'a Path),
}

/// When the child counts as started: `path` on its HTTP port answers 200,
/// asked every `every`, for at most `within`.
#[derive(Debug, Clone, Copy)]
pub struct Ready<'a> {
    pub path: &'a str,
    pub every: Duration,
    pub within: Duration,
}

/// How to start the platform.
#[derive(Debug, Clone)]
pub struct Spawn<'a> {
    /// The `baladiya` binary.
    pub binary: &'a Path,
    /// `--services`: `all`, or names separated by commas.
    pub services: &'a str,
    /// `database.url`, `nats.url` and `events.namespace`.
    pub database_url: &'a str,
    pub nats_url: &'a str,
    pub namespace: &'a str,
    /// `server.grpc_addr` and `server.http_addr`.
    pub addrs: (SocketAddr, SocketAddr),
    /// Whether the child sees this process's environment; when not, it sees
    /// only `PATH` and what is set here.
    pub inherit_env: bool,
    /// More environment, set last (so it may override the above).
    pub env: &'a [(&'a str, &'a str)],
    pub output: Output<'a>,
    pub ready: Ready<'a>,
}

/// A started platform process (killed when dropped).
#[derive(Debug)]
pub struct PlatformProcess {
    pub child: tokio::process::Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl PlatformProcess {
    /// Starts the platform as `spec` says (logs filtered to `warn`, stdin
    /// closed) and waits until it is ready.
    pub async fn spawn(spec: &Spawn<'_>) -> anyhow::Result<Self> {
        let (grpc, http) = spec.addrs;
        let mut command = tokio::process::Command::new(spec.binary);
        command.args(["run", "--services", spec.services]);
        if !spec.inherit_env {
            command
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default());
        }
        command
            .env("BALADIYA__SERVER__GRPC_ADDR", grpc.to_string())
            .env("BALADIYA__SERVER__HTTP_ADDR", http.to_string())
            .env("BALADIYA__DATABASE__URL", spec.database_url)
            .env("BALADIYA__NATS__URL", spec.nats_url)
            .env("BALADIYA__EVENTS__NAMESPACE", spec.namespace)
            .env("BALADIYA__TELEMETRY__LOG_FILTER", "warn")
            .envs(spec.env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match spec.output {
            Output::Inherit => {}
            Output::NullStdout => {
                command.stdout(Stdio::null());
            }
            Output::Log(log) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)?;
                command.stdout(file.try_clone()?).stderr(file);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", spec.binary.display()))?;
        let mut process = Self { child, grpc, http };
        process.wait_ready(spec.services, spec.ready).await?;
        Ok(process)
    }

    async fn wait_ready(&mut self, services: &str, ready: Ready<'_>) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            if matches!(http_get(self.http, ready.path).await, Ok((200, _))) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("baladiya run --services {services} exited during start: {status}");
            }
            anyhow::ensure!(
                started.elapsed() < ready.within,
                "baladiya run --services {services}: {} did not answer 200 in {:?}",
                ready.path,
                ready.within
            );
            tokio::time::sleep(ready.every).await;
        }
    }
}
