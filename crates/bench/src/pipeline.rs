//! The pipeline figure: from `SubmitReport` to the case routed to the SLA
//! clocks started, at half the most reports per second the whole pipeline
//! carried in the `SubmitReport` phases (their reports over their time plus
//! the time to finish their events).
//!
//! Reports are submitted open-loop (a fixed rate, whatever the answers take)
//! so a slow step shows up as latency rather than as a lower rate. The time a
//! report was submitted is taken just before the call; the time its case was
//! routed and its clocks started is when `baladiya.routing.case.routed` and
//! the first `baladiya.sla.clock.started` of its case reach a plain NATS
//! subscriber here: the moment an analyst or a partner system could have
//! seen them. Each hop is timed too (`intake.report.received` seen, then
//! routed, then clocks), so a slow figure names the step that made it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use baladiya_proto::intake::events::v1::ReportReceived;
use baladiya_proto::routing::events::v1::CaseRouted;
use baladiya_proto::sla::events::v1::ClockStarted;
use futures::StreamExt;
use prost::Message;

use crate::env::Phase;
use crate::grpc_load::{channels, ms, percentile, submit};
use crate::report::Figure;

/// When each step was seen, by report id (and case id → report id).
#[derive(Default)]
struct Seen {
    submitted: HashMap<String, Instant>,
    received: HashMap<String, Instant>,
    routed: HashMap<String, Instant>,
    case_report: HashMap<String, String>,
    clocks: HashMap<String, Instant>,
}

/// Submits at `rate` per second for `seconds` and times each report through
/// routing and the SLA watcher of the platform serving gRPC on `grpc`, whose
/// events go to the NATS server at `nats_url` (namespace `namespace`).
pub async fn measure(
    nats_url: &str,
    seconds: u64,
    grpc: SocketAddr,
    namespace: &str,
    token: &str,
    rate: f64,
) -> anyhow::Result<Phase> {
    let nats = async_nats::connect(nats_url)
        .await
        .context("connecting to NATS")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut received = nats
        .subscribe(format!("{namespace}.baladiya.intake.report.received.>"))
        .await?;
    let mut routed = nats
        .subscribe(format!("{namespace}.baladiya.routing.case.routed.>"))
        .await?;
    let mut started = nats
        .subscribe(format!("{namespace}.baladiya.sla.clock.started.>"))
        .await?;
    let listener = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(m) = received.next() => {
                        let at = Instant::now();
                        if let Ok(event) = ReportReceived::decode(m.payload)
                            && let Ok(mut seen) = seen.lock()
                        {
                            seen.received.entry(event.report_id).or_insert(at);
                        }
                    }
                    Some(m) = routed.next() => {
                        let at = Instant::now();
                        if let Ok(event) = CaseRouted::decode(m.payload)
                            && let Some(case) = event.case
                            && let Ok(mut seen) = seen.lock()
                        {
                            seen.routed.entry(case.report_id.clone()).or_insert(at);
                            seen.case_report.insert(case.case_id, case.report_id);
                        }
                    }
                    Some(m) = started.next() => {
                        let at = Instant::now();
                        if let Ok(event) = ClockStarted::decode(m.payload)
                            && let Some(clock) = event.clock
                            && clock.subject_kind == "case"
                            && let Ok(mut seen) = seen.lock()
                        {
                            seen.clocks.entry(clock.subject_id).or_insert(at);
                        }
                    }
                    else => break,
                }
            }
        })
    };
    nats.flush().await?;

    let pool = channels(grpc, 8).await?;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut calls = Vec::new();
    let mut n: u64 = 1_000_000;
    while Instant::now() < until {
        ticks.tick().await;
        n += 1;
        let channel = pool[n as usize % pool.len()].clone();
        let (seen, token) = (seen.clone(), token.to_string());
        calls.push(tokio::spawn(async move {
            let at = Instant::now();
            let id = submit(channel, &token).await?;
            if let Ok(mut seen) = seen.lock() {
                seen.submitted.insert(id, at);
            }
            anyhow::Ok(())
        }));
    }
    let sent = calls.len();
    let mut errors = 0;
    for call in calls {
        if !matches!(call.await, Ok(Ok(()))) {
            errors += 1;
        }
    }
    // Wait for the stragglers: every accepted report routed with clocks.
    let waiting = Instant::now();
    loop {
        let done = seen.lock().is_ok_and(|s| {
            s.submitted.keys().all(|report| {
                s.case_report
                    .iter()
                    .any(|(case, r)| r == report && s.clocks.contains_key(case))
            })
        });
        if done || waiting.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    listener.abort();

    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let (mut to_routed, mut to_clocks) = (Vec::new(), Vec::new());
    // Each hop alone: submit → received seen, received → routed seen,
    // routed → first clock seen.
    let (mut hop_received, mut hop_routed, mut hop_clocks) = (Vec::new(), Vec::new(), Vec::new());
    for (case, report) in &seen.case_report {
        let Some(at) = seen.submitted.get(report) else {
            continue;
        };
        let received = seen.received.get(report);
        let routed = seen.routed.get(report);
        let clocks = seen.clocks.get(case);
        if let Some(r) = routed {
            to_routed.push(r.saturating_duration_since(*at));
        }
        if let Some(c) = clocks {
            to_clocks.push(c.saturating_duration_since(*at));
        }
        if let Some(received) = received {
            hop_received.push(received.saturating_duration_since(*at));
            if let Some(r) = routed {
                hop_routed.push(r.saturating_duration_since(*received));
            }
        }
        if let (Some(r), Some(c)) = (routed, clocks) {
            hop_clocks.push(c.saturating_duration_since(*r));
        }
    }
    for hop in [&mut hop_received, &mut hop_routed, &mut hop_clocks] {
        hop.sort_unstable();
    }
    // A report that never reached its clocks counts as the whole wait, not
    // as nothing: the p99 of the others alone would flatter a lossy run.
    let incomplete = seen.submitted.len().saturating_sub(to_clocks.len());
    let waited = waiting.elapsed() + Duration::from_secs(seconds);
    to_clocks.extend(std::iter::repeat_n(waited, incomplete));
    to_routed.sort_unstable();
    to_clocks.sort_unstable();
    let p99 = percentile(&to_clocks, 99.0);
    let mut phase = Phase::default();
    phase.details.insert(
        "pipeline".into(),
        serde_json::json!({
            "rate_per_s": rate, "submitted": sent, "errors": errors,
            "routed_p50_ms": ms(percentile(&to_routed, 50.0)),
            "routed_p99_ms": ms(percentile(&to_routed, 99.0)),
            "clocks_p50_ms": ms(percentile(&to_clocks, 50.0)),
            "clocks_p99_ms": ms(p99),
            "never_reached_clocks": incomplete,
            "hop_submit_to_received_p50_ms": ms(percentile(&hop_received, 50.0)),
            "hop_submit_to_received_p99_ms": ms(percentile(&hop_received, 99.0)),
            "hop_received_to_routed_p50_ms": ms(percentile(&hop_routed, 50.0)),
            "hop_received_to_routed_p99_ms": ms(percentile(&hop_routed, 99.0)),
            "hop_routed_to_clocks_p50_ms": ms(percentile(&hop_clocks, 50.0)),
            "hop_routed_to_clocks_p99_ms": ms(percentile(&hop_clocks, 99.0)),
            "never_reached_counted_as_ms": ms(waited),
        }),
    );
    phase.figures.push(Figure {
        name: "submit -> routed -> clocks started, p99".into(),
        value: ms(p99),
        unit: "ms",
        limit: format!("the issue's ceiling of 200 ms, at {rate:.0}/s"),
        limit_value: 200.0,
        floor: 1.0,
        aim: 0.25,
        lower_is_better: true,
    });
    Ok(phase)
}
