//! Closed-loop gRPC load: callers that each send the next request when the
//! last one answered, for a fixed time, and the [`Run`] of latencies and
//! errors they leave. Also the intake requests the bench sends (reports at
//! places far enough apart not to be duplicates), the dev tokens it sends
//! them with, and the `load` command that drives them against a running
//! platform, to profile it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use baladiya_platform::auth::Role;
use baladiya_platform::config::AuthConfig;
use baladiya_proto::common::v1::Location;
use baladiya_proto::intake::v1 as intake;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use baladiya_testkit::{DevToken, authorized};
use tonic::transport::Channel;

use crate::platform::quiesce;

/// Latencies and errors of one closed-loop run.
#[derive(Debug, Default)]
pub struct Run {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Its rate, p50, p99 and errors, on one line.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} rps, p50 {:.1} ms, p99 {:.1} ms, {} errors",
            self.rps(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            self.errors
        )
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        percentile(&sorted, p)
    }
}

/// The value at percentile `p` of `sorted` (nearest rank); the default of an
/// empty slice.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `concurrency` callers, each calling `call(n)` in a loop for `seconds`.
pub async fn closed_loop<F, Fut>(concurrency: usize, seconds: u64, call: F) -> Run
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
pub async fn channels(addr: SocketAddr, concurrency: usize) -> anyhow::Result<Vec<Channel>> {
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

/// Submits one report (at its own place) and returns its id.
pub async fn submit(channel: Channel, token: &str) -> anyhow::Result<String> {
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
pub async fn submit_closed_loop(
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
pub async fn get_closed_loop(
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
pub fn dev_token(role: Role) -> anyhow::Result<String> {
    Ok(DevToken::new(role)
        .subject(format!("bench-{role}"))
        .channel((role == Role::Channel).then_some("CHANNEL_CALL_CENTER_940"))
        .ttl(chrono::Duration::hours(2))
        .try_mint(&AuthConfig::default())?)
}

pub async fn load(
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
