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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use baladiya_platform::auth::Role;
use baladiya_proto::sla::events::v1::ClockBreached;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use prost::Message;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, Postgres};
use uuid::Uuid;

use crate::{Env, Figure, Phase, Platform, create_database, drop_database};

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
/// Clones per loading transaction.
const CHUNK: i32 = 50_000;

/// The clones' ids and shifts, for clones `$1 <= n < $2`: clone n is the
/// template moved by `shift`. Burst clones (every `$3`-th, the first `$4`)
/// are parked at `$5 + k × $6` seconds from the template's breach, and the
/// others are at `$7 + n × $8`. `$9` and `$10` are the clock and subject id
/// prefixes.
macro_rules! clones {
    () => {
        "WITH s AS (
             SELECT n,
                    ($9::text || lpad(to_hex(n), 12, '0'))::uuid AS id,
                    ($10::text || lpad(to_hex(n), 12, '0'))::uuid AS subject_id,
                    make_interval(secs => CASE WHEN n % $3::int = 0 AND n / $3::int < $4::int
                                               THEN $5::float8 + (n / $3::int) * $6::float8
                                               ELSE $7::float8 + n * $8::float8 END) AS shift
             FROM generate_series($1::int, $2::int - 1) AS n) "
    };
}

/// A clock's inputs (`[[kind, instant], …]`) with every instant moved by `$shift`.
macro_rules! shifted_inputs {
    ($inputs:literal, $shift:literal) => {
        concat!(
            "(SELECT coalesce(jsonb_agg(jsonb_build_array(i.e->>0, (i.e->>1)::timestamptz + ",
            $shift,
            ") ORDER BY i.o), '[]'::jsonb) FROM jsonb_array_elements(",
            $inputs,
            ") WITH ORDINALITY AS i(e, o))"
        )
    };
}

/// Clones the template clock `$11`.
const INSERT_CLOCKS: &str = concat!(
    clones!(),
    "INSERT INTO sla_watcher.clocks (id, key, subject_kind, subject_id, metric, partner_code,
         agreement_version, calendar_id, target_secs, warn_at, ladder, tracking_number,
         municipality_code, category_code, inputs, state, elapsed_secs, deadline,
         original_deadline, breached_at, started_at, ended_at, updated_at)
     SELECT s.id, s.subject_id::text || substr(t.key, position(':' in t.key)), t.subject_kind,
            s.subject_id, t.metric, t.partner_code, t.agreement_version, t.calendar_id,
            t.target_secs, t.warn_at, t.ladder, t.tracking_number || '-' || s.n,
            t.municipality_code, t.category_code, ",
    shifted_inputs!("t.inputs", "s.shift"),
    ", t.state, t.elapsed_secs, t.deadline + s.shift, t.original_deadline + s.shift,
            t.breached_at + s.shift, t.started_at + s.shift, NULL, now()
     FROM s CROSS JOIN sla_watcher.clocks AS t
     WHERE t.id = $11::uuid"
);

/// Gives every clone the template's timers (`$11` kinds, `$12` seqs, `$13`
/// due instants), clone by clone in id order.
const INSERT_TIMERS: &str = concat!(
    clones!(),
    "INSERT INTO sla_watcher.timers (clock_id, kind, seq, due_at)
     SELECT s.id, unnest($11::text[]), unnest($12::int[]), unnest($13::timestamptz[]) + s.shift
     FROM s"
);

/// The burst's clocks: prefix `$1`, every `$2`-th clone, `$3` of them.
macro_rules! burst {
    () => {
        "WITH b AS (
             SELECT ($1::text || lpad(to_hex(k * $2::int), 12, '0'))::uuid AS id
             FROM generate_series(0, $3::int - 1) AS k) "
    };
}

/// Moves the burst's clocks by `$4` seconds.
const MOVE_CLOCKS: &str = concat!(
    burst!(),
    "UPDATE sla_watcher.clocks AS c
     SET deadline = c.deadline + make_interval(secs => $4::float8),
         original_deadline = c.original_deadline + make_interval(secs => $4::float8),
         breached_at = c.breached_at + make_interval(secs => $4::float8),
         started_at = c.started_at + make_interval(secs => $4::float8),
         inputs = ",
    shifted_inputs!("c.inputs", "make_interval(secs => $4::float8)"),
    ", updated_at = now()
     FROM b WHERE c.id = b.id"
);

/// Moves the burst's timers by `$4` seconds. Those now in the past (the
/// warnings; never the breach) count as fired, as they would have.
const MOVE_TIMERS: &str = concat!(
    burst!(),
    "UPDATE sla_watcher.timers AS t
     SET due_at = t.due_at + make_interval(secs => $4::float8),
         fired_at = CASE WHEN t.kind <> 'breach'
                          AND t.due_at + make_interval(secs => $4::float8) < now()
                         THEN t.due_at + make_interval(secs => $4::float8) END
     FROM b WHERE t.clock_id = b.id"
);

/// Runs the SLA watcher's phase on its own database and stream namespace,
/// both removed afterwards, even after a failure.
pub async fn measure(env: &Env) -> anyhow::Result<Phase> {
    let name = format!("bench_sla_{}", env.stamp);
    let database = create_database(env, &name).await?;
    let result = measure_on(env, &database, &name).await;
    crate::delete_streams(env, &name).await;
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
        crate::percentile(lags, 50.0),
        crate::percentile(lags, 99.0),
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
    let token = crate::dev_token(Role::Channel)?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", platform.grpc))?
        .connect()
        .await
        .context("connecting to the platform")?;
    crate::submit(channel, &token)
        .await
        .context("SubmitReport")?;
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

/// The clock every clone copies: the case's running resolve clock.
struct Template {
    id: Uuid,
    partner: String,
    calendar: String,
    target_secs: i64,
    /// Its unfired timers: kinds, seqs and due instants, in due order.
    kinds: Vec<String>,
    seqs: Vec<i32>,
    dues: Vec<DateTime<Utc>>,
    /// When its breach timer is due.
    breach: DateTime<Utc>,
}

impl Template {
    /// The id of an open resolve clock with its breach still to come.
    async fn find(conn: &mut PgConnection) -> anyhow::Result<Option<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT c.id FROM sla_watcher.clocks AS c
             WHERE c.metric = 'resolve' AND c.ended_at IS NULL AND c.deadline IS NOT NULL
               AND EXISTS (SELECT 1 FROM sla_watcher.timers AS t
                           WHERE t.clock_id = c.id AND t.kind = 'breach' AND t.fired_at IS NULL)
             ORDER BY c.started_at LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await?)
    }

    async fn read(conn: &mut PgConnection) -> anyhow::Result<Self> {
        let id = Self::find(conn)
            .await?
            .context("the template clock is gone")?;
        let (partner, calendar, target_secs): (String, String, i64) = sqlx::query_as(
            "SELECT partner_code, calendar_id, target_secs FROM sla_watcher.clocks WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        let timers: Vec<(String, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT kind, seq, due_at FROM sla_watcher.timers
             WHERE clock_id = $1 AND fired_at IS NULL ORDER BY due_at, seq",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let breach = timers
            .iter()
            .find(|(kind, _, _)| kind == "breach")
            .map(|(_, _, due)| *due)
            .context("the template clock has no breach timer")?;
        Ok(Self {
            id,
            partner,
            calendar,
            target_secs,
            kinds: timers.iter().map(|t| t.0.clone()).collect(),
            seqs: timers.iter().map(|t| t.1).collect(),
            dues: timers.iter().map(|t| t.2).collect(),
            breach,
        })
    }
}

/// Where each clone goes (see [`clones!`]).
struct Plan {
    clones: i32,
    template: Uuid,
    kinds: Vec<String>,
    seqs: Vec<i32>,
    dues: Vec<DateTime<Utc>>,
    /// `<v7 timestamp>-7001-8000-` and `…-7002-8000-`: a clone's clock and
    /// subject ids are the prefix and n in 12 hex digits.
    clock_prefix: String,
    subject_prefix: String,
    /// Where the burst's breaches are parked, and that instant less the
    /// template's breach, in seconds.
    parked_at: DateTime<Utc>,
    parked_offset: f64,
    /// The other clones' first deadline less the template's breach, and the
    /// spacing of their deadlines, in seconds.
    background_offset: f64,
    background_step: f64,
}

impl Plan {
    fn new(template: &Template, clones: i32, now: DateTime<Utc>) -> anyhow::Result<Self> {
        let unix_ms = u64::try_from(now.timestamp_millis()).context("time before 1970")?;
        let prefix = |tag: u16| {
            format!(
                "{:08x}-{:04x}-7{tag:03x}-8000-",
                unix_ms >> 16,
                unix_ms & 0xffff
            )
        };
        let earliest = template
            .dues
            .iter()
            .min()
            .copied()
            .unwrap_or(template.breach);
        let lead = (template.breach - earliest).max(TimeDelta::zero());
        let parked_at = now + TimeDelta::days(PARKED_DAYS);
        let background_at = now + TimeDelta::days(BACKGROUND_FROM_DAYS) + lead;
        Ok(Self {
            clones,
            template: template.id,
            kinds: template.kinds.clone(),
            seqs: template.seqs.clone(),
            dues: template.dues.clone(),
            clock_prefix: prefix(1),
            subject_prefix: prefix(2),
            parked_at,
            parked_offset: seconds(parked_at - template.breach),
            background_offset: seconds(background_at - template.breach),
            background_step: seconds(TimeDelta::days(BACKGROUND_DAYS)) / f64::from(clones),
        })
    }

    fn burst_step() -> f64 {
        SPREAD_SECS as f64 / f64::from(BURST)
    }

    /// Clone n's clock id, as [`clones!`] makes it.
    fn clock_id(&self, n: i32) -> anyhow::Result<Uuid> {
        Ok(Uuid::parse_str(&format!("{}{n:012x}", self.clock_prefix))?)
    }

    /// `query` with the [`clones!`] parameters for clones `lo..hi`.
    fn bind<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
        lo: i32,
        hi: i32,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(lo)
            .bind(hi)
            .bind(STRIDE)
            .bind(BURST)
            .bind(self.parked_offset)
            .bind(Self::burst_step())
            .bind(self.background_offset)
            .bind(self.background_step)
            .bind(self.clock_prefix.as_str())
            .bind(self.subject_prefix.as_str())
    }

    /// Moves the burst's clocks so that their deadlines fall every
    /// [`Plan::burst_step`] from `first`. Returns how many other timers
    /// (not breaches) fall due in that window.
    async fn schedule(&self, conn: &mut PgConnection, first: DateTime<Utc>) -> anyhow::Result<i64> {
        let by = seconds(first - self.parked_at);
        let mut tx = conn.begin().await?;
        let mut moved = Vec::new();
        for (statement, what) in [(MOVE_CLOCKS, "clocks"), (MOVE_TIMERS, "timers")] {
            moved.push(
                sqlx::query(statement)
                    .bind(self.clock_prefix.as_str())
                    .bind(STRIDE)
                    .bind(BURST)
                    .bind(by)
                    .execute(&mut *tx)
                    .await
                    .with_context(|| format!("moving the burst's {what}"))?
                    .rows_affected(),
            );
        }
        let moved = moved[0];
        tx.commit().await?;
        anyhow::ensure!(
            moved == BURST as u64,
            "moved {moved} burst clocks, not {BURST}"
        );
        anyhow::ensure!(
            Utc::now() < first - TimeDelta::seconds(1),
            "scheduling the burst ended less than a second before its first deadline"
        );
        let window_end = first + TimeDelta::seconds(SPREAD_SECS + GRACE_SECS);
        let (due_breaches, others): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE kind = 'breach'), count(*) FILTER (WHERE kind <> 'breach')
             FROM sla_watcher.timers WHERE fired_at IS NULL AND due_at <= $1",
        )
        .bind(window_end)
        .fetch_one(&mut *conn)
        .await?;
        anyhow::ensure!(
            due_breaches == i64::from(BURST),
            "{due_breaches} breach timers fall due in the window, not {BURST}"
        );
        Ok(others)
    }

    /// Receives breach events until every burst clock's has arrived, or
    /// until [`GRACE_SECS`] after the last deadline. Samples the watcher's
    /// resident memory every second.
    async fn receive(
        &self,
        watcher: &Platform,
        breaches: &mut async_nats::Subscriber,
        first: DateTime<Utc>,
        rss: &mut Vec<f64>,
    ) -> anyhow::Result<Arrivals> {
        let step = TimeDelta::microseconds((Self::burst_step() * 1e6).round() as i64);
        let mut expected = HashMap::with_capacity(BURST as usize);
        for k in 0..BURST {
            expected.insert(self.clock_id(k * STRIDE)?, first + step * k);
        }
        let last = first + step * (BURST - 1);
        let give_up_at = last + TimeDelta::seconds(GRACE_SECS);
        let give_up = tokio::time::sleep_until(
            tokio::time::Instant::now() + (give_up_at - Utc::now()).to_std().unwrap_or_default(),
        );
        tokio::pin!(give_up);
        let mut sampling = tokio::time::interval(Duration::from_secs(1));
        let mut arrived: HashSet<Uuid> = HashSet::with_capacity(BURST as usize);
        let mut out = Arrivals::default();
        while arrived.len() < expected.len() {
            tokio::select! {
                message = breaches.next() => {
                    let at = Utc::now();
                    let message = message.context("the NATS subscription ended")?;
                    let event = ClockBreached::decode(message.payload).ok();
                    let id = event.as_ref().and_then(|e| e.clock_id.parse::<Uuid>().ok());
                    match (event, id.and_then(|id| expected.get(&id).map(|d| (id, *d)))) {
                        (Some(event), Some((id, planned))) => {
                            if !arrived.insert(id) {
                                out.duplicates += 1;
                                continue;
                            }
                            let deadline = event
                                .deadline
                                .as_ref()
                                .and_then(baladiya_proto::convert::instant)
                                .unwrap_or(planned);
                            out.lags_ms.push(millis(at - deadline));
                        }
                        _ => out.unexpected += 1,
                    }
                }
                _ = sampling.tick() => rss.push(watcher.resident_mib()?),
                () = &mut give_up => break,
            }
        }
        out.received = arrived.len();
        let waited = Utc::now();
        for (id, deadline) in &expected {
            if !arrived.contains(id) {
                out.missing += 1;
                out.lags_ms.push(millis(waited - *deadline));
            }
        }
        Ok(out)
    }
}

/// What the subscriber saw of the burst.
#[derive(Debug, Default)]
struct Arrivals {
    /// One lag per burst clock, in ms; for a missing breach, the time waited.
    lags_ms: Vec<f64>,
    received: usize,
    missing: usize,
    duplicates: u64,
    /// Breach events of clocks outside the burst, or undecodable ones.
    unexpected: u64,
}

/// Loads every clone on `workers` connections, `CHUNK` clones per
/// transaction. Returns whether foreign-key checks were skipped (that needs
/// a role allowed to set `session_replication_role`).
async fn load(database: &str, plan: Arc<Plan>, workers: usize) -> anyhow::Result<bool> {
    let chunks: Vec<(i32, i32)> = (0..plan.clones)
        .step_by(CHUNK as usize)
        .map(|lo| (lo, lo.saturating_add(CHUNK).min(plan.clones)))
        .collect();
    let progress = Arc::new(Progress {
        chunks,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        started: Instant::now(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        tasks.spawn(load_chunks(
            database.to_string(),
            plan.clone(),
            progress.clone(),
        ));
    }
    let mut skipped = true;
    while let Some(joined) = tasks.join_next().await {
        skipped &= joined.context("a loading task failed")??;
    }
    Ok(skipped)
}

/// The loaders' shared work list.
struct Progress {
    chunks: Vec<(i32, i32)>,
    next: AtomicUsize,
    done: AtomicUsize,
    started: Instant,
}

/// Loads chunks until none is left. Returns whether foreign-key checks were skipped.
async fn load_chunks(
    database: String,
    plan: Arc<Plan>,
    progress: Arc<Progress>,
) -> anyhow::Result<bool> {
    let mut conn = PgConnection::connect(&database)
        .await
        .context("connecting to the SLA bench database")?;
    sqlx::raw_sql("SET TIME ZONE 'UTC'; SET synchronous_commit = off")
        .execute(&mut conn)
        .await?;
    let skipped = sqlx::raw_sql("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .is_ok();
    let total = progress.chunks.len();
    let tenth = total.div_ceil(10).max(1);
    loop {
        let i = progress.next.fetch_add(1, Ordering::Relaxed);
        let Some(&(lo, hi)) = progress.chunks.get(i) else {
            return Ok(skipped);
        };
        let mut tx = conn.begin().await?;
        plan.bind(sqlx::query(INSERT_CLOCKS), lo, hi)
            .bind(plan.template)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cloning clocks {lo}..{hi}"))?;
        plan.bind(sqlx::query(INSERT_TIMERS), lo, hi)
            .bind(plan.kinds.as_slice())
            .bind(plan.seqs.as_slice())
            .bind(plan.dues.as_slice())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("cloning the timers of clocks {lo}..{hi}"))?;
        tx.commit().await?;
        let done = progress.done.fetch_add(1, Ordering::Relaxed) + 1;
        if done.is_multiple_of(tenth) || done == total {
            eprintln!(
                "sla:   {}% loaded ({:.0} s)",
                done * 100 / total,
                progress.started.elapsed().as_secs_f64()
            );
        }
    }
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
