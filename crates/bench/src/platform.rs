//! A `baladiya` process under measurement: started with the bench's
//! settings and waited on until ready, its resident memory read from
//! `/proc`, and waited on again until it has caught up on its events, so
//! that one measurement does not pay for the previous one's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use baladiya_testkit::{Output, PlatformProcess, Ready, Spawn, free_addr};

use crate::env::Env;

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

/// Waits until the platform has caught up: nothing in any outbox and no
/// consumer behind (two looks in a row, the lag gauges refresh every 5 s),
/// so one measurement does not pay for the previous one's events. Returns
/// when the first of those looks was (to the 3 s between looks).
pub async fn quiesce(http: SocketAddr) -> anyhow::Result<Duration> {
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

/// The body of `GET path` (HTTP/1.1, closed after the answer).
pub async fn http_body(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    Ok(baladiya_testkit::http_get(addr, path).await?.1)
}
