//! A test-only service module built exactly like a real one: a schema with
//! migrations, a stream, a gRPC write that emits an event through the outbox,
//! and an idempotent consumer that applies the event. Faults can be injected
//! into the consumer to exercise retries and parking.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::auth::{Role, caller};
use baladiya_platform::policy::{Rule, Scope};

/// The probe's rows of the policy: any caller may write a note.
const PROBE_POLICY: &[Rule] = &[Rule {
    method: "/baladiya.probe.v1.ProbeService/WriteNote",
    grants: &[
        (Role::Channel, Scope::All),
        (Role::Partner, Scope::All),
        (Role::Operator, Scope::All),
        (Role::Analyst, Scope::All),
    ],
}];
use baladiya_platform::clock::Clock;
use baladiya_platform::error::{ApiError, Violations};
use baladiya_platform::events::consumer::{ConsumerSpec, EventHandler, HandlerError};
use baladiya_platform::events::{
    Emitter, Event, EventType, InboundEvent, OutboundEvent, StreamSpec, Tx,
};
use baladiya_platform::grpc::Mounted;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// Generated code of `baladiya.probe.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("baladiya.probe.v1");
    /// Encoded descriptor set, for reflection.
    pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe_descriptor.bin"));
}

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The stream the probe publishes to.
pub const STREAM: StreamSpec = StreamSpec {
    name: "PROBE",
    subjects: &["baladiya.probe.>"],
    watermark: Some("baladiya.probe.watermark"),
};
/// The probe's one event.
pub const NOTE_WRITTEN: EventType = EventType::new("probe", "note", "written");
/// The probe consumer's durable name.
pub const CONSUMER: &str = "probe-applier";

/// Faults the consumer applies to notes by body.
#[derive(Debug, Default)]
pub struct Faults {
    /// Bodies whose first application fails after writing (then succeeds).
    pub fail_once: Mutex<HashSet<String>>,
    /// Bodies whose application always fails, until removed.
    pub poison: Mutex<HashSet<String>>,
}

/// The probe service module.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub faults: Arc<Faults>,
}

impl ServiceModule for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn description(&self) -> &'static str {
        "test-only: writes notes and applies their events"
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        std::slice::from_ref(&STREAM)
    }
    fn start<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        mounted: &'a mut Mounted,
    ) -> BoxFuture<'a, Result<Vec<BackgroundTask>, StartError>> {
        Box::pin(async move {
            mounted.add_descriptors(pb::DESCRIPTOR);
            mounted.add(ctx.protect_with(
                PROBE_POLICY,
                pb::probe_service_server::ProbeServiceServer::new(ProbeApi {
                    pool: ctx.pool.clone(),
                    emitter: ctx.emitter.clone(),
                }),
            ));
            Ok(vec![ctx.consumer(
                consumer_spec(),
                Applier {
                    faults: self.faults.clone(),
                },
            )])
        })
    }
}

/// The probe's schema on the test's database, migrated.
pub async fn schema_pool(config: &baladiya_platform::config::Config) -> anyhow::Result<PgPool> {
    baladiya_platform::db::ensure_database(&config.database).await?;
    let pool = baladiya_platform::db::schema_pool(&config.database, "probe")?;
    baladiya_platform::db::migrate(&pool, "probe", &Probe::default().migrator()).await?;
    Ok(pool)
}

/// The probe consumer's subscription.
pub fn consumer_spec() -> ConsumerSpec {
    ConsumerSpec {
        name: CONSUMER.into(),
        stream: STREAM,
        subjects: vec![
            "baladiya.probe.note.>".into(),
            "baladiya.probe.watermark".into(),
        ],
    }
}

/// The probe's emitter reading `clock` (a writer with a clock of its own,
/// as a test of skew needs, makes its own).
pub fn emitter(clock: &Clock) -> Emitter {
    Emitter::new("probe", clock.clone())
}

/// Writes a note and its event in one transaction (also used directly by tests).
pub async fn write_note(tx: &mut Tx, body: &str) -> Result<(Uuid, OutboundEvent), sqlx::Error> {
    let note_id = Uuid::now_v7();
    sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
        .bind(note_id)
        .bind(body)
        .execute(tx.conn())
        .await?;
    let as_sqlx = |e: baladiya_platform::events::EventError| sqlx::Error::Protocol(e.to_string());
    let now = tx.fenced_now().await.map_err(as_sqlx)?;
    let event = tx
        .emitter()
        .envelope(Event::new(NOTE_WRITTEN, note_id, now), |meta| {
            pb::NoteWritten {
                meta,
                note_id: note_id.to_string(),
                body: body.to_string(),
            }
        });
    tx.enqueue(&event).await.map_err(as_sqlx)?;
    Ok((note_id, event))
}

struct ProbeApi {
    pool: PgPool,
    emitter: Emitter,
}

#[tonic::async_trait]
impl pb::probe_service_server::ProbeService for ProbeApi {
    async fn write_note(
        &self,
        request: Request<pb::WriteNoteRequest>,
    ) -> Result<Response<pb::WriteNoteResponse>, Status> {
        caller(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        v.check(!req.body.trim().is_empty(), "body", "is required");
        v.check(req.hold_ms <= 10_000, "hold_ms", "must be at most 10000");
        v.finish()?;
        let mut tx = self
            .emitter
            .begin(&self.pool)
            .await
            .map_err(ApiError::from)?;
        let (note_id, _) = write_note(&mut tx, &req.body)
            .await
            .map_err(ApiError::from)?;
        if req.hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.hold_ms.into())).await;
        }
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::WriteNoteResponse {
            note_id: note_id.to_string(),
        }))
    }
}

/// Applies NoteWritten events: one `applications` row per application.
#[derive(Debug, Clone)]
pub struct Applier {
    pub faults: Arc<Faults>,
}

impl EventHandler for Applier {
    async fn handle(&self, tx: &mut Tx, event: &InboundEvent) -> Result<(), HandlerError> {
        let note: pb::NoteWritten = event.decode()?;
        let note_id: Uuid = note
            .note_id
            .parse()
            .map_err(|_| HandlerError::Reject("note_id is not a UUID".into()))?;
        sqlx::query("INSERT INTO applications (note_id, event_id) VALUES ($1, $2)")
            .bind(note_id)
            .bind(event.id)
            .execute(tx.conn())
            .await?;
        // Fail after writing, so a failure that leaked its writes would show.
        if self
            .faults
            .fail_once
            .lock()
            .expect("lock")
            .remove(&note.body)
        {
            return Err(HandlerError::Retry("injected failure (once)".into()));
        }
        if self
            .faults
            .poison
            .lock()
            .expect("lock")
            .contains(&note.body)
        {
            return Err(HandlerError::Retry("injected failure (poison)".into()));
        }
        Ok(())
    }
}
