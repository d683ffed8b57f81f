//! Low watermarks (crates/platform/src/events/watermark.rs) against real
//! PostgreSQL and NATS, each case of the module's soundness argument: a
//! writer whose transaction commits after the relay's read, several relay
//! replicas, clock skew between writer and relay, and a consumer that may act
//! on a watermark only once everything before it on the stream was applied.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use baladiya_platform::clock::Clock;
use baladiya_platform::config::Config;
use baladiya_platform::events::consumer::Consumer;
use baladiya_platform::events::outbox::Relay;
use baladiya_platform::events::{InboundEvent, Namespace, watermark};
use baladiya_platform::metrics::Metrics;
use baladiya_platform::shutdown;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use sqlx::PgPool;

use crate::probe;
use crate::{TestEnv, eventually, instant};

const SUBJECT: &str = "baladiya.probe.watermark";

/// What a subscriber sees on the probe's stream, in the order JetStream
/// stored it: a note stamped at an instant, or a watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Note(DateTime<Utc>),
    Watermark(DateTime<Utc>),
}

/// Subscribes (core NATS, so rolled-up watermarks are seen too) to the
/// probe's subjects and collects what arrives.
async fn watch(env: &TestEnv) -> anyhow::Result<Arc<std::sync::Mutex<Vec<Seen>>>> {
    let nats = env.nats().await?;
    let mut sub = nats
        .subscribe(format!("{}.baladiya.probe.>", env.namespace))
        .await?;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let _keep = nats;
        while let Some(m) = sub.next().await {
            let event = InboundEvent::from_parts(
                m.subject.to_string(),
                &m.headers.clone().unwrap_or_default(),
                m.payload.clone(),
            );
            let Ok(event) = event else { continue };
            let item = if watermark::is_watermark(&event) {
                Seen::Watermark(event.occurred_at)
            } else {
                Seen::Note(event.occurred_at)
            };
            record.lock().expect("lock").push(item);
        }
    });
    Ok(seen)
}

/// Checks the watermark's promise over everything seen: each watermark comes
/// after every note stamped before it.
fn assert_sound(seen: &[Seen], written: &BTreeSet<DateTime<Utc>>) {
    let mut notes = BTreeSet::new();
    for item in seen {
        match item {
            Seen::Note(at) => {
                notes.insert(*at);
            }
            Seen::Watermark(before) => {
                let missing: Vec<_> = written
                    .range(..*before)
                    .filter(|at| !notes.contains(*at))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "watermark {before} published before notes stamped {missing:?}"
                );
            }
        }
    }
}

fn relay(
    pool: &PgPool,
    js: &jetstream::Context,
    env: &TestEnv,
    config: &Config,
    clock: &Clock,
) -> Relay {
    relay_with(pool, js, env, config, clock, Metrics::new())
}

fn relay_with(
    pool: &PgPool,
    js: &jetstream::Context,
    env: &TestEnv,
    config: &Config,
    clock: &Clock,
    metrics: Arc<Metrics>,
) -> Relay {
    Relay::new(
        pool.clone(),
        "probe",
        &probe::emitter(clock),
        js.clone(),
        Namespace::new(&env.namespace),
        &config.events,
        metrics,
    )
    .with_watermarks(SUBJECT, clock.clone(), &config.events)
}

/// What each case starts from: the probe's schema and stream, and a watch
/// on what the stream receives.
struct Setup {
    env: TestEnv,
    config: Config,
    pool: PgPool,
    js: jetstream::Context,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
}

async fn set_up() -> anyhow::Result<Setup> {
    let env = TestEnv::new();
    let config = config(&env);
    let pool = probe::schema_pool(&config).await?;
    let js = jetstream::new(env.nats().await?);
    probe::STREAM
        .ensure(&js, &Namespace::new(&env.namespace), &config.events)
        .await?;
    let seen = watch(&env).await?;
    Ok(Setup {
        env,
        config,
        pool,
        js,
        seen,
    })
}

/// A test configuration whose relays publish a watermark every round, 100
/// ms behind their clock (the figures below assume that margin).
fn config(env: &TestEnv) -> Config {
    let mut config = env.config();
    config.events.watermark_interval_ms = 10;
    config.events.watermark_margin_ms = 100;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_commits_after_the_relay_read_is_covered_by_the_fence() -> anyhow::Result<()>
{
    let Setup {
        env,
        config,
        pool,
        js,
        seen,
    } = set_up().await?;
    let clock = Clock::manual(instant("2026-04-05T07:00:00Z"));
    let relay = relay(&pool, &js, &env, &config, &clock);

    // A writer stamps its note at 07:00 and holds its transaction open.
    let mut writer = probe::emitter(&clock).begin(&pool).await?;
    probe::write_note(&mut writer, "slow writer").await?;
    let stamped = clock.now();
    clock.advance(Duration::from_secs(30)).await?;
    // The relay's round waits for it at the fence (up to a second), finds it
    // still open, and publishes no watermark: nothing it could claim is sure.
    relay.relay_once().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        seen.lock().expect("lock").is_empty(),
        "no watermark while a writer holds the fence: {:?}",
        seen.lock().expect("lock")
    );
    // A round that starts while the writer is open and ends after it
    // commits: the relay's read comes after the commit, so the note goes out
    // before the watermark that covers it.
    let round = tokio::spawn(async move { relay.relay_once().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.commit().await?;
    assert_eq!(round.await??, Some(1));
    eventually(10, "the note and the watermark", || async {
        Ok((seen.lock().expect("lock").len() >= 2).then_some(()))
    })
    .await?;
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got[0], Seen::Note(stamped));
    assert_eq!(
        got[1],
        Seen::Watermark(clock.now() - TimeDelta::milliseconds(100)),
        "the relay's clock less the margin, after the note"
    );
    assert_sound(&got, &BTreeSet::from([stamped]));
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relay_replicas_and_eight_writers_publish_only_sound_watermarks() -> anyhow::Result<()>
{
    let Setup {
        env,
        config,
        pool,
        js,
        seen,
    } = set_up().await?;
    let clock = Clock::manual(instant("2026-04-05T07:00:00Z"));
    let (trigger, signal) = shutdown::channel();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(
                relay(&pool, &js, &env, &config, &clock)
                    .run(signal.clone(), Duration::from_secs(5)),
            )
        })
        .collect();
    // Eight writers, each writing notes stamped by the shared clock, which a
    // ninth task moves on; some writers sit on their transaction a while.
    let ticker = {
        let clock = clock.clone();
        tokio::spawn(async move {
            for _ in 0..300 {
                clock.advance(Duration::from_millis(7)).await.ok();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (pool, clock) = (pool.clone(), clock.clone());
            tokio::spawn(async move {
                let mut stamps = Vec::new();
                for i in 0..25 {
                    let mut tx = probe::emitter(&clock).begin(&pool).await?;
                    let (_, event) = probe::write_note(&mut tx, &format!("w{w}-{i}")).await?;
                    if (w + i) % 5 == 0 {
                        tokio::time::sleep(Duration::from_millis(80)).await;
                    }
                    tx.commit().await?;
                    stamps.push(event.occurred_at);
                }
                anyhow::Ok(stamps)
            })
        })
        .collect();
    let mut written = BTreeSet::new();
    for w in writers {
        written.extend(w.await??);
    }
    ticker.await?;
    // Once everything is out, a last watermark passes every note.
    clock.advance(Duration::from_secs(1)).await?;
    let last = clock.now() - TimeDelta::milliseconds(100);
    eventually(20, "a watermark past every note", || async {
        let got = seen.lock().expect("lock").clone();
        Ok(got.contains(&Seen::Watermark(last)).then_some(got))
    })
    .await?;
    trigger.trigger();
    for r in relays {
        r.await?;
    }
    let got = seen.lock().expect("lock").clone();
    let notes = got.iter().filter(|s| matches!(s, Seen::Note(_))).count();
    assert_eq!(notes, 200, "every note once");
    let marks = got.len() - notes;
    assert!(
        marks >= 10,
        "watermarks kept coming while writers wrote: {marks}"
    );
    assert_sound(&got, &written);
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_within_the_margin_is_covered_and_beyond_it_is_counted_late()
-> anyhow::Result<()> {
    let Setup {
        env,
        config,
        pool,
        js,
        seen,
    } = set_up().await?;
    let start = instant("2026-04-05T07:00:00Z");
    for (skew_ms, late) in [(60, 0), (160, 1)] {
        // The writer's clock is behind the relay's by `skew_ms`.
        let writer_clock = Clock::manual(start);
        let relay_clock = Clock::manual(start + TimeDelta::milliseconds(skew_ms));
        let metrics = Metrics::new();
        let relay = relay_with(&pool, &js, &env, &config, &relay_clock, metrics.clone());
        seen.lock().expect("lock").clear();
        relay.relay_once().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A writer starting after that watermark stamps its note with its
        // own, slower clock.
        let mut tx = probe::emitter(&writer_clock).begin(&pool).await?;
        let (_, note) = probe::write_note(&mut tx, &format!("skew {skew_ms}")).await?;
        tx.commit().await?;
        relay.relay_once().await?;
        let got = eventually(10, "the note and two watermarks", || async {
            let got = seen.lock().expect("lock").clone();
            Ok((got.len() >= 3).then_some(got))
        })
        .await?;
        let Seen::Watermark(first) = got[0] else {
            panic!("a watermark first: {got:?}")
        };
        // Within the margin the first watermark stays below the note; beyond
        // it the note arrives below a published watermark, and is counted.
        assert_eq!(first < note.occurred_at, late == 0, "skew {skew_ms} ms");
        let counted =
            metrics.render().lines().any(|l| {
                l == format!("baladiya_outbox_late_events_total{{schema=\"probe\"}} {late}")
            }) || late == 0
                && !metrics
                    .render()
                    .contains("baladiya_outbox_late_events_total{");
        assert!(
            counted,
            "skew {skew_ms} ms: {late} late\n{}",
            metrics.render()
        );
    }
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_acts_on_a_watermark_only_after_everything_before_it_is_applied()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let mut config = config(&env);
    config.events.consumer_backoff_ms = 100;
    config.events.consumer_max_attempts = 1_000;
    config.events.consumer_backoff_max_ms = 500;
    let pool = probe::schema_pool(&config).await?;
    let js = jetstream::new(env.nats().await?);
    let ns = Namespace::new(&env.namespace);
    probe::STREAM.ensure(&js, &ns, &config.events).await?;
    let clock = Clock::manual(instant("2026-04-05T07:00:00Z"));
    let relay = relay(&pool, &js, &env, &config, &clock);
    let faults = Arc::new(probe::Faults::default());
    faults.poison.lock().expect("lock").insert("stuck".into());
    let consumer = Consumer::new(
        probe::consumer_spec(),
        probe::Applier {
            faults: faults.clone(),
        },
        pool.clone(),
        &probe::emitter(&clock),
        js.clone(),
        ns.clone(),
        &config.events,
        Metrics::new(),
    );
    let (trigger, signal) = shutdown::channel();
    let task = tokio::spawn(consumer.run(signal));
    let known = || async {
        let marks =
            watermark::refresh(&pool, &js, &ns, probe::STREAM.name, probe::CONSUMER).await?;
        anyhow::Ok(marks.into_iter().find_map(|k| k.complete_before))
    };

    // A first note applies; its watermark takes effect.
    let mut tx = probe::emitter(&clock).begin(&pool).await?;
    probe::write_note(&mut tx, "fine").await?;
    tx.commit().await?;
    clock.advance(Duration::from_secs(60)).await?;
    relay.relay_once().await?;
    let first = eventually(20, "the first watermark in effect", || async {
        known().await
    })
    .await?;
    assert_eq!(
        first,
        instant("2026-04-05T07:01:00Z") - TimeDelta::milliseconds(100)
    );

    // A note that keeps failing (being retried), then a later watermark: the
    // watermark is recorded but does not take effect past the stuck note.
    let mut tx = probe::emitter(&clock).begin(&pool).await?;
    probe::write_note(&mut tx, "stuck").await?;
    tx.commit().await?;
    clock.advance(Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    relay.relay_once().await?;
    let recorded: DateTime<Utc> = eventually(20, "the second watermark recorded", || async {
        let at: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT latest_before FROM watermarks WHERE consumer = $1")
                .bind(probe::CONSUMER)
                .fetch_optional(&pool)
                .await?;
        Ok(at.filter(|at| *at > first))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        known().await?,
        Some(first),
        "held behind the note being retried"
    );

    // The note applies at last: the watermark takes effect.
    faults.poison.lock().expect("lock").remove("stuck");
    let now_known = eventually(20, "the second watermark in effect", || async {
        Ok(known().await?.filter(|k| *k > first))
    })
    .await?;
    assert_eq!(now_known, recorded);
    trigger.trigger();
    task.await?;
    pool.close().await;
    env.cleanup().await;
    Ok(())
}
