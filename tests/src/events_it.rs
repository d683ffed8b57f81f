//! The outbox and the idempotent consumer against real NATS and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use baladiya_platform::auth::Role;
use baladiya_platform::events::Namespace;
use baladiya_platform::events::consumer::{self, Consumer};
use baladiya_platform::events::outbox::{self, Relay};
use baladiya_platform::metrics::Metrics;
use baladiya_platform::shutdown;
use sqlx::PgPool;

use crate::probe::{self, Probe, pb};
use crate::{NatsProcess, RunningPlatform, TestEnv, authorized, eventually};

async fn count(pool: &PgPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

async fn write(
    client: &mut pb::probe_service_client::ProbeServiceClient<tonic::transport::Channel>,
    token: &str,
    body: &str,
) -> anyhow::Result<String> {
    Ok(client
        .write_note(authorized(
            pb::WriteNoteRequest {
                body: body.into(),
                hold_ms: 0,
            },
            token,
        ))
        .await?
        .into_inner()
        .note_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_nats_is_down_are_published_once_when_it_returns() -> anyhow::Result<()>
{
    let mut nats = NatsProcess::start().await?;
    let mut env = TestEnv::new();
    env.nats_url = nats.url();
    let config = env.config();
    let platform = RunningPlatform::start(config.clone(), vec![Arc::new(Probe::default())]).await?;
    let js = jetstream::new(env.nats().await?);
    let ns = Namespace::new(&env.namespace);
    eventually(10, "the PROBE stream", || async {
        Ok(crate::stream_events(&js, &ns, &probe::STREAM).await.ok())
    })
    .await?;

    nats.stop();
    let mut client = pb::probe_service_client::ProbeServiceClient::new(platform.channel().await?);
    let token = platform.token(Role::Channel);
    for i in 0..5 {
        write(&mut client, &token, &format!("while-down-{i}")).await?;
    }
    let pool = probe::schema_pool(&config).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await?,
        5,
        "held in the outbox while NATS is down"
    );

    nats.resume().await?;
    let js = jetstream::new(async_nats::connect(nats.url()).await?);
    eventually(30, "all five events published and applied", || async {
        let unsent = count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await?;
        let applied = count(&pool, "SELECT count(DISTINCT note_id) FROM applications").await?;
        Ok((unsent == 0 && applied == 5).then_some(()))
    })
    .await?;
    assert_eq!(
        crate::stream_events(&js, &ns, &probe::STREAM).await?,
        5,
        "each event stored once"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM applications").await?,
        5,
        "each event applied once"
    );
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_died_between_publish_and_mark_sent_causes_no_duplicate() -> anyhow::Result<()>
{
    let env = TestEnv::new();
    let config = env.config();
    let pool = probe::schema_pool(&config).await?;
    let js = jetstream::new(env.nats().await?);
    let ns = Namespace::new(&env.namespace);
    probe::STREAM.ensure(&js, &ns, &config.events).await?;
    let clock = baladiya_platform::app::clock_from_config(&config.clock)?;

    let emitter = probe::emitter(&clock);
    let mut tx = emitter.begin(&pool).await?;
    let (_, event) = probe::write_note(&mut tx, "crash-after-publish").await?;
    tx.commit().await?;

    // The relay published, then died before marking the row sent.
    for unsent in outbox::unsent(&pool, 10).await? {
        outbox::publish(&js, &ns, &unsent).await?;
    }
    let metrics = Metrics::new();
    let relay = Relay::new(
        pool.clone(),
        "probe",
        &emitter,
        js.clone(),
        ns.clone(),
        &config.events,
        metrics.clone(),
    );
    assert_eq!(
        relay.drain().await?,
        Some(1),
        "the restarted relay publishes the row again"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await?,
        0
    );
    assert_eq!(
        crate::stream_events(&js, &ns, &probe::STREAM).await?,
        1,
        "JetStream dropped the duplicate"
    );

    // Past the duplicate window a copy would be stored: the inbox absorbs it.
    let mut headers = event.headers();
    headers.insert("Nats-Msg-Id", format!("{}-late-copy", event.id).as_str());
    js.publish_with_headers(
        ns.subject(&event.subject),
        headers,
        event.payload.clone().into(),
    )
    .await?
    .await?;
    assert_eq!(crate::stream_events(&js, &ns, &probe::STREAM).await?, 2);

    let (trigger, signal) = shutdown::channel();
    let consumer = Consumer::new(
        probe::consumer_spec(),
        probe::Applier {
            faults: Default::default(),
        },
        pool.clone(),
        &emitter,
        js.clone(),
        ns.clone(),
        &config.events,
        metrics.clone(),
    );
    let task = tokio::spawn(consumer.run(signal));
    eventually(20, "both copies delivered", || async {
        let text = metrics.render();
        Ok(
            (text.contains("outcome=\"applied\"} 1") && text.contains("outcome=\"duplicate\"} 1"))
                .then_some(()),
        )
    })
    .await?;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM applications").await?,
        1,
        "applied once"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM inbox").await?, 1);

    // The stored message carries the CloudEvents binary-mode headers.
    let stream = js.get_stream(ns.stream(probe::STREAM.name)).await?;
    let stored = stream.get_raw_message(1).await?;
    let h = &stored.headers;
    let get = |n: &str| h.get(n).map(|v| v.as_str().to_string());
    assert_eq!(get("ce-id"), Some(event.id.to_string()));
    assert_eq!(get("Nats-Msg-Id"), Some(event.id.to_string()));
    assert_eq!(get("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(
        get("ce-type").as_deref(),
        Some("sa.baladiya.probe.note.written.v1")
    );
    assert_eq!(get("ce-source").as_deref(), Some("/baladiya/probe"));
    assert_eq!(get("content-type").as_deref(), Some("application/protobuf"));
    assert_eq!(
        get("ce-dataschema").as_deref(),
        Some("type.googleapis.com/baladiya.probe.v1.NoteWritten")
    );
    assert_eq!(
        stored.subject.as_str(),
        format!("{}.baladiya.probe.note.written", env.namespace)
    );

    trigger.trigger();
    task.await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_poison_is_parked_and_replay_applies_it_once() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let config = env.config();
    let probe = Probe::default();
    probe
        .faults
        .fail_once
        .lock()
        .expect("lock")
        .insert("flaky".into());
    probe
        .faults
        .poison
        .lock()
        .expect("lock")
        .insert("poison".into());
    let platform = RunningPlatform::start(config.clone(), vec![Arc::new(probe.clone())]).await?;
    let mut client = pb::probe_service_client::ProbeServiceClient::new(platform.channel().await?);
    let token = platform.token(Role::Channel);

    // The first write carries a W3C trace context, which must reach the event.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = authorized(
        pb::WriteNoteRequest {
            body: "flaky".into(),
            hold_ms: 0,
        },
        &token,
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01").parse()?,
    );
    client.write_note(request).await?;
    write(&mut client, &token, "poison").await?;
    write(&mut client, &token, "after-poison").await?;

    let pool = probe::schema_pool(&config).await?;
    eventually(30, "flaky retried and applied, poison parked, the next applied", || async {
        let parked = count(&pool, "SELECT count(*) FROM parked_events").await?;
        let applied = count(&pool, "SELECT count(*) FROM applications a JOIN notes n ON n.id = a.note_id WHERE n.body IN ('flaky', 'after-poison')").await?;
        Ok((parked == 1 && applied == 2).then_some(()))
    })
    .await?;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, error FROM parked_events WHERE consumer = $1")
            .bind(probe::CONSUMER)
            .fetch_one(&pool)
            .await?;
    assert_eq!(attempts, 3, "parked after consumer_max_attempts");
    assert!(error.contains("poison"), "{error}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM applications a JOIN notes n ON n.id = a.note_id WHERE n.body = 'poison'").await?,
        0,
        "a failed attempt leaves no writes behind"
    );

    let traceparent: Option<String> =
        sqlx::query_scalar("SELECT o.traceparent FROM outbox o JOIN notes n ON o.ce_subject = n.id::text WHERE n.body = 'flaky'")
            .fetch_one(&pool)
            .await?;
    assert!(
        traceparent.as_deref().is_some_and(|t| t.contains(trace_id)),
        "the event joins the caller's trace: {traceparent:?}"
    );

    eventually(15, "the parked gauge", || async {
        let (_, metrics) = platform.http_get("/metrics").await?;
        Ok(metrics
            .contains("baladiya_parked_events{consumer=\"probe-applier\"} 1")
            .then_some(()))
    })
    .await?;

    // The operator fixes the cause and replays.
    probe.faults.poison.lock().expect("lock").clear();
    assert_eq!(
        consumer::request_replay(&pool, probe::CONSUMER, None).await?,
        1
    );
    eventually(20, "the replayed event applied", || async {
        let replayed = count(
            &pool,
            "SELECT count(*) FROM parked_events WHERE replayed_at IS NOT NULL",
        )
        .await?;
        Ok((replayed == 1).then_some(()))
    })
    .await?;
    assert_eq!(
        count(&pool, "SELECT count(*) FROM applications a JOIN notes n ON n.id = a.note_id WHERE n.body = 'poison'").await?,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM applications").await?,
        3,
        "every event applied exactly once"
    );
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// A transaction wakes its service's relay on commit if it wrote an event,
/// and only then: a writer cannot forget the wake-up, and a read wakes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_relay_only_after_writing_an_event() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let config = env.config();
    let pool = probe::schema_pool(&config).await?;
    let clock = baladiya_platform::app::clock_from_config(&config.clock)?;
    let emitter = probe::emitter(&clock);
    let mut relay = emitter.relay_wake().subscribe();
    let woken =
        |relay: &mut tokio::sync::watch::Receiver<u64>| relay.has_changed().unwrap_or(false);

    let mut tx = emitter.begin(&pool).await?;
    let read: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(tx.conn())
        .await?;
    assert!(read >= 0);
    tx.commit().await?;
    assert!(!woken(&mut relay), "a read wakes nothing");

    let mut tx = emitter.begin(&pool).await?;
    probe::write_note(&mut tx, "noted").await?;
    assert!(!woken(&mut relay), "nothing wakes before the commit");
    tx.rollback().await?;
    assert!(!woken(&mut relay), "a rolled back write wakes nothing");

    let mut tx = emitter.begin(&pool).await?;
    probe::write_note(&mut tx, "noted").await?;
    tx.commit().await?;
    assert!(woken(&mut relay), "a committed event wakes the relay");
    Ok(())
}
