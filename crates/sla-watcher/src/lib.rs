//! SLA watcher (`baladiya.sla.v1.SlaService`, schema `sla_watcher`): runs
//! every SLA clock in the responsible body's working time, warns, breaches and
//! escalates to partner bodies level by level, exactly once.
//!
//! Its rooms:
//! - [`domain`]: the pure rules: one SLA clock computed from its inputs
//!   ([`domain::sla_clock`], the edge rules) and which clocks a subject has
//!   from its event log ([`domain::derive`]);
//! - [`commands`]: every state change: recomputation after events, late
//!   agreement versions and calendar changes (these in resumable steps; all
//!   withdraw whatever fired and turned out wrong), firing durable timers
//!   with `FOR UPDATE SKIP LOCKED` once the watcher knows every event up to
//!   their instant, raising and acknowledging escalations;
//! - [`consumers`]: case and application events with their producers'
//!   watermarks, and the replica of partner agreements and calendars;
//! - [`store`]: SQL, by table family; [`replica_format`]: how the replica is
//!   stored; [`api`] and [`convert`]: gRPC; [`webhook`]: deliveries to
//!   partners; [`error`]: what the watcher refuses.
//!
//! Words: a *clock* is an SLA clock; the platform's source of the current
//! instant (`baladiya_platform::clock::Clock`) is the *time* source.
//!
//! Nothing fires on partial knowledge: a timer of a case fires once routing's
//! watermark (see `baladiya_platform::events::watermark`) has passed its
//! instant and no event of the case is parked; one of an application waits
//! for licensing's. Past `sla.max_hold_secs` it fires anyway, marked
//! provisional. A firing that later events (or a calendar change) contradict
//! is withdrawn in the open and fires again, once, at its corrected instant.
//!
//! Events: `baladiya.sla.clock.<started|paused|resumed|warning|breached|met|cancelled>.<PARTNER>`,
//! `baladiya.sla.clock.<warning_withdrawn|breach_withdrawn>.<PARTNER>` and
//! `baladiya.sla.escalation.<raised|acknowledged|withdrawn>.<PARTNER>`.

pub mod api;
pub mod commands;
pub mod consumers;
pub mod convert;
pub mod domain;
pub mod error;
pub mod replica_format;
pub mod store;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::clock::Clock;
use baladiya_platform::config::{
    Environment, KeyError, Secret, SectionHandler, ServiceConfig, hex_bytes,
};
use baladiya_platform::events::{Emitter, Namespace, StreamSpec, streams, watermark};
use baladiya_platform::grpc::Mounted;
use baladiya_platform::metrics::Metrics;
use baladiya_platform::shutdown::Shutdown;
use baladiya_platform::wake::Wake;
use baladiya_proto::sla::v1::sla_service_server::SlaServiceServer;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Development-only webhook secret; refused in production.
const DEV_WEBHOOK_SECRET: &str =
    "6465762d6f6e6c792d776562686f6f6b2d7365637265742d6e6f742d666f722d70726f64";

/// Delivers escalation webhooks until shutdown.
async fn deliver_webhooks(
    pool: PgPool,
    client: webhook::WebhookClient,
    max_attempts: i32,
    backoff: Duration,
    mut stop: Shutdown,
) {
    loop {
        let attempted = webhook::deliver_due(&pool, &client, max_attempts, backoff)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "webhook delivery round failed");
                0
            });
        if attempted > 0 {
            continue;
        }
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The `[sla]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SlaConfig {
    /// The citizen-facing end-to-end target, in working days of the municipality's calendar.
    pub end_to_end_days: u32,
    /// The municipalities' government calendar, which measures the end-to-end
    /// target and license decisions.
    pub end_to_end_calendar: String,
    /// Municipalities on another calendar, e.g. `{ MUSCAT = "om-gov" }`.
    pub end_to_end_calendars: BTreeMap<String, String>,
    /// Longest wait between looks for due timers, in milliseconds (timers
    /// created in this process wake the loop at once).
    pub timer_poll_ms: u64,
    /// HMAC key that signs webhook bodies (secret): 64+ hex characters.
    pub webhook_secret: Secret,
    /// PEM file of extra CAs trusted for partners' webhook servers; empty for none.
    pub webhook_ca_file: String,
    /// Attempts before a webhook delivery is marked dead.
    pub webhook_max_attempts: i32,
    /// First retry delay, in milliseconds; doubles each attempt (at most an hour).
    pub webhook_backoff_ms: u64,
    /// How long a due warning, breach or escalation waits for its producer's
    /// watermark (routing for cases, licensing for applications) before it
    /// fires anyway, marked provisional, in seconds (the issue's
    /// `sla.max_hold`): a producer that is down must not hold every breach
    /// forever.
    pub max_hold_secs: u64,
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            end_to_end_days: 5,
            end_to_end_calendar: "sa-gov".into(),
            end_to_end_calendars: BTreeMap::from([("MUSCAT".to_string(), "om-gov".to_string())]),
            timer_poll_ms: 250,
            webhook_secret: Secret::new(DEV_WEBHOOK_SECRET),
            webhook_ca_file: String::new(),
            // 1 s doubling to an hour: about nine hours of retries.
            webhook_max_attempts: 20,
            webhook_backoff_ms: 1_000,
            max_hold_secs: 600,
        }
    }
}

impl SlaConfig {
    /// The end-to-end calendar of a municipality.
    pub fn end_to_end_calendar_of(&self, municipality: &str) -> String {
        self.end_to_end_calendars
            .get(municipality)
            .cloned()
            .unwrap_or_else(|| self.end_to_end_calendar.clone())
    }
}

impl ServiceConfig for SlaConfig {
    const SECTION: &'static str = "sla";

    fn validate(&self, environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
        if hex_bytes(self.webhook_secret.expose()).is_none_or(|k| k.len() < 32) {
            errors.push(KeyError {
                key: "webhook_secret".into(),
                message: "must be at least 64 hex characters".into(),
            });
        }
        if environment == Environment::Production
            && self.webhook_secret.expose() == DEV_WEBHOOK_SECRET
        {
            errors.push(KeyError {
                key: "webhook_secret".into(),
                message: "the development key is refused in production".into(),
            });
        }
        if !(1..=100).contains(&self.webhook_max_attempts) {
            errors.push(KeyError {
                key: "webhook_max_attempts".into(),
                message: "must be between 1 and 100".into(),
            });
        }
        if !self.webhook_ca_file.is_empty()
            && !std::path::Path::new(&self.webhook_ca_file).is_file()
        {
            errors.push(KeyError {
                key: "webhook_ca_file".into(),
                message: "is not a readable file".into(),
            });
        }
        if !(1..=365).contains(&self.end_to_end_days) {
            errors.push(KeyError {
                key: "end_to_end_days".into(),
                message: "must be between 1 and 365".into(),
            });
        }
        if self.end_to_end_calendar.is_empty() {
            errors.push(KeyError {
                key: "end_to_end_calendar".into(),
                message: "must name a calendar".into(),
            });
        }
        if !(1..=86_400).contains(&self.max_hold_secs) {
            errors.push(KeyError {
                key: "max_hold_secs".into(),
                message: "must be between 1 and 86400".into(),
            });
        }
        if !(10..=60_000).contains(&self.timer_poll_ms) {
            errors.push(KeyError {
                key: "timer_poll_ms".into(),
                message: "must be between 10 and 60000".into(),
            });
        }
        errors
    }
}

/// How soon the timer loop looks again while a recorded watermark waits for
/// the consumer's acknowledgements to take effect and timers wait on it.
const PENDING_WATERMARK_POLL: Duration = Duration::from_millis(20);

/// How the timer loop learns what the watcher knows (see
/// [`baladiya_platform::events::watermark`]).
struct Knowledge {
    pool: PgPool,
    js: async_nats::jetstream::Context,
    namespace: Namespace,
}

impl Knowledge {
    /// The effective watermarks of the case and application consumers, and
    /// whether a later one waits for the consumers' acknowledgements.
    async fn refresh(&self, time: &Clock, metrics: &Metrics) -> (store::Known, bool) {
        let mut known = store::Known::default();
        let mut pending = false;
        for (spec, slot) in [
            (consumers::cases_spec(), &mut known.cases),
            (consumers::applications_spec(), &mut known.applications),
        ] {
            let marks = watermark::refresh(
                &self.pool,
                &self.js,
                &self.namespace,
                spec.stream.name,
                &spec.name,
            )
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(consumer = %spec.name, error = %e, "cannot read watermarks; firing waits");
                Vec::new()
            });
            let producer = spec.stream.watermark.map(watermark::producer_of);
            let mark = marks
                .into_iter()
                .find(|m| Some(m.producer.as_str()) == producer);
            *slot = mark.as_ref().and_then(|m| m.complete_before);
            pending |= mark.as_ref().is_some_and(|m| m.pending);
            if let (Some(producer), Some(before)) = (producer, *slot) {
                let age = (time.now() - before).to_std().unwrap_or_default();
                metrics.set_watermark_age(&spec.name, producer, age);
            }
        }
        (known, pending)
    }
}

/// Fires due timers until shutdown: each once its producer's watermark has
/// passed it (or, provisional, past `sla.max_hold_secs`), at once for anything
/// overdue, then at each next deadline (by the process's time source, so a
/// manual one fires them as it moves), woken early when timers or watermarks
/// change, and every `poll` while something is held.
async fn fire_timers(
    knowledge: Knowledge,
    emitter: Emitter,
    timers: Wake,
    metrics: Arc<Metrics>,
    poll: Duration,
    max_hold: Duration,
    mut stop: Shutdown,
) {
    let pool = knowledge.pool.clone();
    let time = emitter.clock().clone();
    // Subscribed before the first look, so a change during it wakes the next.
    let mut changed = timers.subscribe();
    let mut failing = commands::Failing::default();
    metrics.init_sla_provisional(&["warning", "breach", "escalation"]);
    let watching_since = time.now();
    loop {
        let (known, pending) = knowledge.refresh(&time, &metrics).await;
        let rules = commands::FireRules {
            known,
            max_hold,
            watching_since,
        };
        if let Err(e) = commands::fire_due(&pool, &emitter, &metrics, rules, &mut failing).await {
            tracing::warn!(error = %e, "firing timers failed; will retry");
        }
        let now = time.now();
        let (next, held) = match pool.acquire().await {
            Ok(mut conn) => (
                store::next_due(&mut conn, now).await.ok().flatten(),
                store::held_counts(&mut conn, now, known)
                    .await
                    .unwrap_or_default(),
            ),
            Err(_) => (None, Vec::new()),
        };
        for (kind, producer) in [("case", "routing"), ("application", "licensing")] {
            let n = held.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
            metrics.set_sla_timers_held(producer, n);
        }
        // Timers wait for a watermark that is recorded and about to take
        // effect: look again as soon as the acknowledgements are likely in.
        let poll = if pending && held.iter().any(|(_, n)| *n > 0) {
            poll.min(PENDING_WATERMARK_POLL)
        } else {
            poll
        };
        // The oldest timer that may fire and still waits (see the warnings above).
        let held_until = rules.held_until(now);
        let oldest = match pool.acquire().await {
            Ok(mut conn) => store::oldest_fireable(&mut conn, now, known, held_until)
                .await
                .ok()
                .flatten(),
            Err(_) => None,
        };
        let waited = oldest.and_then(|due| (now - due).to_std().ok());
        metrics.set_oldest_due_timer(waited.unwrap_or_default());
        tokio::select! {
            _ = stop.wait() => return,
            _fired = async {
                match next {
                    Some(due) => time.sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = changed.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Works through calendar recomputations until shutdown: at once after a
/// commit that may have asked for one (the wake-up of the timer loop), and
/// every `poll` otherwise, backing off while one fails.
async fn recompute_calendars(
    pool: PgPool,
    emitter: Emitter,
    timers: Wake,
    config: Arc<SlaConfig>,
    poll: Duration,
    mut stop: Shutdown,
) {
    let mut changed = timers.subscribe();
    let mut failures = 0u32;
    loop {
        let wait = match commands::recompute_calendar_step(&pool, &emitter, &timers, &config).await
        {
            Ok(0) => poll,
            Ok(_) => {
                failures = 0;
                continue;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, failures, "calendar recomputation step failed; it resumes from its last step");
                Duration::from_millis((250u64 << failures.min(8)).min(60_000))
            }
        };
        tokio::select! {
            _ = stop.wait() => return,
            _ = changed.changed(), if failures == 0 => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The SLA watcher module.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlaWatcherModule;

/// The PostgreSQL schema the service owns.
pub const SCHEMA: &str = "sla_watcher";

impl ServiceModule for SlaWatcherModule {
    fn name(&self) -> &'static str {
        "sla-watcher"
    }
    fn description(&self) -> &'static str {
        "SLA clocks in working time, warnings, breaches and escalations, exactly once"
    }
    fn schema(&self) -> &'static str {
        SCHEMA
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        std::slice::from_ref(&streams::SLA)
    }
    fn config_section(&self) -> Option<SectionHandler> {
        Some(SectionHandler::of::<SlaConfig>())
    }
    fn start<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        mounted: &'a mut Mounted,
    ) -> BoxFuture<'a, Result<Vec<BackgroundTask>, StartError>> {
        Box::pin(async move {
            let config: SlaConfig = ctx.section()?;
            let poll = Duration::from_millis(config.timer_poll_ms);
            let client = webhook::WebhookClient::new(
                &hex_bytes(config.webhook_secret.expose()).unwrap_or_default(),
                &config.webhook_ca_file,
            )
            .map_err(|e| StartError::Service {
                service: "sla-watcher",
                reason: e.to_string(),
            })?;
            let deliveries = deliver_webhooks(
                ctx.pool.clone(),
                client,
                config.webhook_max_attempts,
                Duration::from_millis(config.webhook_backoff_ms),
                ctx.background_shutdown(),
            );
            let config = Arc::new(config);
            // Wakes the timer loop (and the calendar recomputations) after a
            // commit that may have changed timers.
            let timers = Wake::new();
            mounted.add(
                ctx.protect(
                    SlaServiceServer::new(api::SlaApi {
                        pool: ctx.pool.clone(),
                        time: ctx.clock.clone(),
                        emitter: ctx.emitter.clone(),
                        timers: timers.clone(),
                        tokens: ctx.config.server.page_tokens(),
                        max_hold: Duration::from_secs(config.max_hold_secs),
                    })
                    .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            let max_hold = Duration::from_secs(config.max_hold_secs);
            let knowledge = Knowledge {
                pool: ctx.pool.clone(),
                js: ctx.js.clone(),
                namespace: ctx.namespace.clone(),
            };
            Ok(vec![
                ctx.consumer(
                    consumers::partners_spec(),
                    consumers::PartnerReplica {
                        config: config.clone(),
                        timers: timers.clone(),
                    },
                ),
                ctx.consumer(
                    consumers::cases_spec(),
                    consumers::CaseClocks {
                        config: config.clone(),
                        timers: timers.clone(),
                    },
                ),
                ctx.consumer(
                    consumers::applications_spec(),
                    consumers::ApplicationClocks {
                        config: config.clone(),
                        timers: timers.clone(),
                    },
                ),
                Box::pin(recompute_calendars(
                    ctx.pool.clone(),
                    ctx.emitter.clone(),
                    timers.clone(),
                    config,
                    Duration::from_secs(1),
                    ctx.background_shutdown(),
                )),
                Box::pin(deliveries),
                Box::pin(fire_timers(
                    knowledge,
                    ctx.emitter.clone(),
                    timers,
                    ctx.metrics.clone(),
                    poll,
                    max_hold,
                    ctx.background_shutdown(),
                )),
            ])
        })
    }
}
