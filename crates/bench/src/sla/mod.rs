//! The SLA watcher's figures, measured on a real `baladiya run --services
//! sla-watcher` process:
//!
//! - its resident memory with 1,000,000 open clocks;
//! - how long after a deadline its `clock breached` event is on NATS (p99)
//!   while 10,000 deadlines fall due within one minute.
//!
//! Method:
//!
//! 1. One real case. `run --services all` starts on a fresh database and
//!    stream namespace, seeded from `deploy/seed`. One report goes in through
//!    `SubmitReport`, is routed, and the watcher starts the case's clocks from
//!    the routing events, as in production. The case's `resolve` clock and its
//!    unfired timers become the template. Under the seed, the timers are two
//!    warnings, the breach, and escalation levels 1 to 3, with level 1 due at
//!    the breach. The platform catches up and is stopped.
//! 2. A million open clocks. SQL clones the template so that 1,000,000 clocks
//!    are open, counting the case's own clocks. Each clone has its own clock
//!    id, subject and key, and a copy of every template timer. Each clone is
//!    the template moved in time: its inputs, start, deadline, breach instant
//!    and timers all move by the same amount. Clone n's deadline depends on
//!    which group it is in:
//!    - every hundredth clone (10,000 in all) is parked ten years ahead;
//!    - the other clones have their deadlines spread over 30 days, starting a
//!      month away (later still if the template's warnings come earlier than
//!      that), so none of their timers falls due during the run.
//!
//!    Clock ids are v7-shaped and increase with n, like the watcher's own
//!    ids, so the load appends to the indexes. `VACUUM (ANALYZE)` then leaves
//!    the tables as autovacuum would after such a load.
//! 3. The burst. The watcher starts on that database, with routing in a
//!    process of its own beside it: the watcher fires a case's timer only
//!    once routing's low watermark (published every
//!    `events.watermark_interval_ms` while routing is idle) has passed the
//!    due instant, so the lag includes waiting for it, as in production.
//!    Once the watcher is ready:
//!    - a plain NATS subscriber here listens on
//!      `<namespace>.baladiya.sla.clock.breached.>`;
//!    - one transaction moves the 10,000 parked clocks so that their
//!      deadlines fall every 6 ms for one minute, from 20 s after the watcher
//!      was ready.
//!
//!    After the move, the parked clocks' warnings are in the past, so they
//!    are marked fired, as they would have been. Escalation level 1, due at
//!    the breach, stays and fires with it, as in production. The watcher picks
//!    up the new timers at its next poll (`sla.timer_poll_ms`), the same way a
//!    replica picks up timers that another replica wrote. The first timer is
//!    due 20 s later.
//! 4. The figures. A breach's lag is the wall-clock instant its event reaches
//!    the subscriber, minus the deadline that the event carries (the instant
//!    its timer was due). The platform uses the real clock here, and both
//!    processes run on the same machine. A breach that never arrives counts
//!    as the time spent waiting for it (60 s after the last deadline). That
//!    is a lower bound, so a missing event can only raise the p99. The
//!    watcher's resident memory is sampled when it is ready, every second
//!    until the last breach arrives, and once more at the end. The figure is
//!    the peak.
//!
//! Why it is fair:
//! - The watcher runs its production code and SQL, and its outbox relay
//!   publishes to JetStream, on the same PostgreSQL and NATS as every other
//!   figure.
//! - Its tables hold every row that a million open clocks have, including
//!   about six timers each, so claiming due timers works against indexes of
//!   realistic size, with planner statistics in place.
//! - The load takes shortcuts to write the rows faster: it runs on several
//!   connections, commits asynchronously, and skips foreign-key checks when
//!   the role may. The rows are consistent by construction, and the watcher
//!   finds the same data either way.
//! - The 10,000 clocks that breach are scattered through the table, and
//!   their clocks and timers were written like the rest.
//!
//! This module runs the four steps and reports the figures; [`plan`] says
//! where each clone goes and watches the burst arrive, [`load`](mod@load)
//! writes the clones on several connections, and [`sql`] holds the
//! statements both run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use baladiya_platform::auth::Role;
use chrono::{TimeDelta, Utc};
use sqlx::{Connection, PgConnection};

use crate::env::{Env, Phase, create_database, delete_streams, drop_database};
use crate::grpc_load::{dev_token, percentile, submit};
use crate::platform::Platform;
use crate::report::Figure;

mod load;
mod plan;
mod sql;

use load::load;
use plan::{Plan, Template};

/// Open clocks the watcher runs with, the case's own clocks included.
const OPEN_CLOCKS: i64 = 1_000_000;
/// Clocks whose deadlines fall due during the run.
const BURST: i32 = 10_000;
/// Every `STRIDE`-th clone is one of them.
const STRIDE: i32 = 100;
/// The burst's deadlines are spread evenly over this many seconds...
const SPREAD_SECS: i64 = 60;
/// ...starting this many seconds after the watcher is ready.
const LEAD_SECS: i64 = 20;
/// How long to wait for breach events after the last deadline.
const GRACE_SECS: i64 = 60;
/// Where the burst's clocks are parked until the watcher is ready.
const PARKED_DAYS: i64 = 3650;
/// The other clones' deadlines are spread over this many days...
const BACKGROUND_DAYS: i64 = 30;
/// ...starting this many days from now (plus the template's warning lead).
const BACKGROUND_FROM_DAYS: i64 = 30;

/// Runs the SLA watcher's phase on its own database and stream namespace,
/// both removed afterwards, even after a failure.
pub async fn measure(env: &Env) -> anyhow::Result<Phase> {
    let name = format!("bench_sla_{}", env.stamp);
    let database = create_database(env, &name).await?;
    let result = measure_on(env, &database, &name).await;
    delete_streams(env, &name).await;
    drop_database(env, &name).await;
    result
}

async fn measure_on(env: &Env, database: &str, namespace: &str) -> anyhow::Result<Phase> {
    // 1. One real case, whose resolve clock is the template.
    let started = Instant::now();
    open_one_case(env, database, namespace).await?;
    let case_s = started.elapsed().as_secs_f64();
    let mut conn = PgConnection::connect(database)
        .await
        .context("connecting to the SLA bench database")?;
    sqlx::raw_sql("SET TIME ZONE 'UTC'")
        .execute(&mut conn)
        .await?;
    let template = Template::read(&mut conn).await?;
    let existing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sla_watcher.clocks WHERE ended_at IS NULL")
            .fetch_one(&mut conn)
            .await?;
    let clones = i32::try_from(OPEN_CLOCKS - existing).context("clone count")?;
    anyhow::ensure!(
        clones > (BURST - 1) * STRIDE,
        "{clones} clones cannot hold {BURST} burst clocks"
    );
    eprintln!(
        "sla: template clock {} ({}, {}, {} timers: {})",
        template.id,
        template.partner,
        template.calendar,
        template.kinds.len(),
        template.kinds.join(", ")
    );

    // 2. A million open clocks.
    let plan = Arc::new(Plan::new(&template, clones, Utc::now())?);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    eprintln!(
        "sla: loading {} clocks and {} timers on {workers} connections…",
        thousands(i64::from(clones)),
        thousands(i64::from(clones) * template.kinds.len() as i64),
    );
    let loading = Instant::now();
    let fk_skipped = load(database, plan.clone(), workers).await?;
    let load_s = loading.elapsed().as_secs_f64();
    eprintln!("sla: loaded in {load_s:.1} s; VACUUM (ANALYZE)…");
    let vacuuming = Instant::now();
    sqlx::raw_sql("VACUUM (ANALYZE) sla_watcher.clocks, sla_watcher.timers")
        .execute(&mut conn)
        .await
        .context("VACUUM (ANALYZE) of the clocks")?;
    let vacuum_s = vacuuming.elapsed().as_secs_f64();
    let (open, pending_timers): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sla_watcher.clocks WHERE ended_at IS NULL),
                (SELECT count(*) FROM sla_watcher.timers WHERE fired_at IS NULL)",
    )
    .fetch_one(&mut conn)
    .await?;
    eprintln!(
        "sla: vacuumed in {vacuum_s:.1} s; {} open clocks, {} pending timers",
        thousands(open),
        thousands(pending_timers)
    );

    // 3. The watcher, and the burst. Routing runs beside it in a process of
    // its own: the watcher fires a case's timers only once routing's
    // watermark has passed them, so the figure includes that wait.
    let routing = Platform::start(env, "routing", database, namespace).await?;
    let starting = Instant::now();
    let watcher = Platform::start(env, "sla-watcher", database, namespace).await?;
    let ready_s = starting.elapsed().as_secs_f64();
    let ready_at = Utc::now();
    let mut rss = vec![watcher.resident_mib()?];
    let nats = async_nats::connect(&env.nats)
        .await
        .context("connecting to NATS")?;
    let mut breaches = nats
        .subscribe(format!("{namespace}.baladiya.sla.clock.breached.>"))
        .await?;
    nats.flush().await?;
    let first = ready_at + TimeDelta::seconds(LEAD_SECS);
    let others_in_window = plan.schedule(&mut conn, first).await?;
    eprintln!(
        "sla: watcher ready in {ready_s:.1} s at {:.0} MiB; {} deadlines over {SPREAD_SECS} s from {}",
        rss[0],
        thousands(i64::from(BURST)),
        first.format("%H:%M:%S%.3f")
    );
    let mut arrivals = plan
        .receive(&watcher, &mut breaches, first, &mut rss)
        .await?;
    rss.push(watcher.resident_mib()?);
    watcher.stop().await;
    routing.stop().await;

    // 4. The figures.
    let peak = rss.iter().copied().fold(0.0, f64::max);
    let lags = &mut arrivals.lags_ms;
    lags.sort_unstable_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(lags, 50.0),
        percentile(lags, 99.0),
        lags.last().copied().unwrap_or_default(),
    );
    eprintln!(
        "sla: {} of {} breaches published; lag p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms; peak RSS {peak:.0} MiB",
        thousands(arrivals.received as i64),
        thousands(i64::from(BURST)),
    );
    let mut phase = Phase::default();
    phase.details.insert(
        "sla_watcher_open_clocks".into(),
        serde_json::json!({
            "open_clocks": open,
            "pending_timers": pending_timers,
            "template": {
                "metric": "resolve", "partner_code": template.partner,
                "calendar_id": template.calendar, "target_secs": template.target_secs,
                "timers": template.kinds,
            },
            "one_case_through_the_platform_s": case_s,
            "load_s": load_s,
            "load_connections": workers,
            "load_skipped_foreign_key_checks": fk_skipped,
            "vacuum_analyze_s": vacuum_s,
            "watcher_start_to_ready_s": ready_s,
            "rss_at_ready_mib": rss.first().copied().unwrap_or_default(),
            "rss_at_end_mib": rss.last().copied().unwrap_or_default(),
            "rss_peak_mib": peak,
            "rss_samples": rss.len(),
        }),
    );
    phase.details.insert(
        "sla_breach_burst".into(),
        serde_json::json!({
            "expected": BURST,
            "received": arrivals.received,
            "missing": arrivals.missing,
            "duplicates": arrivals.duplicates,
            "unexpected": arrivals.unexpected,
            "p50_ms": p50, "p99_ms": p99, "max_ms": max,
            "spread_s": SPREAD_SECS,
            "first_deadline_after_ready_s": LEAD_SECS,
            "other_timers_due_in_window": others_in_window,
            "missing_counted_as_ms_waited": true,
        }),
    );
    phase.figures.push(Figure {
        name: "SLA watcher, 1,000,000 open clocks: memory".into(),
        value: peak,
        unit: "MiB",
        limit: "the issue's ceiling of 1 GiB".into(),
        limit_value: 1024.0,
        floor: 1.0,
        aim: 0.25,
        lower_is_better: true,
    });
    phase.figures.push(Figure {
        name: "deadline -> breach published, p99, 10k/min".into(),
        value: p99,
        unit: "ms",
        limit: "the issue's ceiling of 1 s".into(),
        limit_value: 1000.0,
        floor: 1.0,
        aim: 0.25,
        lower_is_better: true,
    });
    Ok(phase)
}

/// Starts the whole platform, submits one report, waits until the SLA
/// watcher has started its case's resolve clock, lets the platform catch up
/// and stops it.
async fn open_one_case(env: &Env, database: &str, namespace: &str) -> anyhow::Result<()> {
    eprintln!("sla: one real case through the whole platform, for a template clock…");
    let platform = Platform::start(env, "all", database, namespace).await?;
    let token = dev_token(Role::Channel)?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", platform.grpc))?
        .connect()
        .await
        .context("connecting to the platform")?;
    submit(channel, &token).await.context("SubmitReport")?;
    let mut conn = PgConnection::connect(database)
        .await
        .context("connecting to the SLA bench database")?;
    let waiting = Instant::now();
    while Template::find(&mut conn).await?.is_none() {
        anyhow::ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "the SLA watcher started no resolve clock within 60 s of SubmitReport"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    platform.quiesce().await?;
    platform.stop().await;
    Ok(())
}

/// A signed duration in seconds, to the microsecond.
fn seconds(d: TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// A signed duration in milliseconds.
fn millis(d: TimeDelta) -> f64 {
    seconds(d) * 1000.0
}

/// `1234567` as `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
