//! SLA watcher (`baladiya.sla.v1.SlaService`, schema `sla_watcher`): runs
//! every SLA clock in the responsible body's working time, warns, breaches and
//! escalates to partner bodies level by level, exactly once.
//!
//! - [`clock`]: one clock computed from its inputs (pure; the edge rules);
//! - [`derive`]: which clocks a case has, from its event log (pure);
//! - [`engine`]: recomputation after events and calendar changes, and firing
//!   durable timers with `FOR UPDATE SKIP LOCKED`;
//! - [`consumers`]: case events, and the replica of partner agreements and
//!   calendars; [`store`]: SQL; [`api`]: gRPC.
//!
//! Events: `baladiya.sla.clock.<started|paused|resumed|warning|breached|met|cancelled>.<PARTNER>`
//! and `baladiya.sla.escalation.<raised|acknowledged>.<PARTNER>`.

pub mod api;
pub mod clock;
pub mod consumers;
pub mod derive;
pub mod engine;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::clock::Clock;
use baladiya_platform::config::{Environment, KeyError, SectionHandler, ServiceConfig};
use baladiya_platform::events::{StreamSpec, streams};
use baladiya_platform::grpc::Mounted;
use baladiya_platform::shutdown::Shutdown;
use baladiya_proto::sla::v1::sla_service_server::SlaServiceServer;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgListener;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

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
}

impl Default for SlaConfig {
    fn default() -> Self {
        Self {
            end_to_end_days: 5,
            end_to_end_calendar: "sa-gov".into(),
            end_to_end_calendars: BTreeMap::from([("MUSCAT".to_string(), "om-gov".to_string())]),
            timer_poll_ms: 250,
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

    fn validate(&self, _environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
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
        if !(10..=60_000).contains(&self.timer_poll_ms) {
            errors.push(KeyError {
                key: "timer_poll_ms".into(),
                message: "must be between 10 and 60000".into(),
            });
        }
        errors
    }
}

/// Fires due timers until shutdown: at once for anything overdue, then at each
/// next deadline (the process clock's, so a manual clock fires them as it
/// moves), woken early when timers change.
async fn fire_timers(pool: PgPool, clock: Clock, poll: Duration, mut stop: Shutdown) {
    let mut listener = None;
    loop {
        if listener.is_none() {
            listener = match PgListener::connect_with(&pool).await {
                Ok(mut l) => l.listen(engine::TIMERS_CHANNEL).await.ok().map(|_| l),
                Err(_) => None,
            };
        }
        if let Err(e) = engine::fire_due(&pool, &clock).await {
            tracing::warn!(error = %e, "firing timers failed; will retry");
        }
        let next = match pool.acquire().await {
            Ok(mut conn) => store::next_due(&mut conn).await.ok().flatten(),
            Err(_) => None,
        };
        tokio::select! {
            _ = stop.wait() => return,
            _fired = async {
                match next {
                    Some(due) => clock.sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => {}
            woke = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if woke.is_err() {
                    listener = None;
                }
            }
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// The SLA watcher module.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlaWatcher;

impl ServiceModule for SlaWatcher {
    fn name(&self) -> &'static str {
        "sla-watcher"
    }
    fn description(&self) -> &'static str {
        "SLA clocks in working time, warnings, breaches and escalations, exactly once"
    }
    fn schema(&self) -> &'static str {
        "sla_watcher"
    }
    fn migrator(&self) -> Migrator {
        Migrator::with_migrations(MIGRATIONS.iter().cloned().collect())
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
            let config: SlaConfig = ctx.config.section().map_err(|e| StartError::Service {
                service: "sla-watcher",
                reason: format!("{e:?}"),
            })?;
            let poll = Duration::from_millis(config.timer_poll_ms);
            let config = Arc::new(config);
            mounted.add(
                ctx.protect(
                    SlaServiceServer::new(api::SlaApi {
                        pool: ctx.pool.clone(),
                        clock: ctx.clock.clone(),
                        tokens: ctx.config.server.page_tokens(),
                    })
                    .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            Ok(vec![
                ctx.consumer(
                    consumers::partners_spec(),
                    consumers::PartnerReplica {
                        clock: ctx.clock.clone(),
                        config: config.clone(),
                    },
                ),
                ctx.consumer(
                    consumers::cases_spec(),
                    consumers::CaseClocks {
                        clock: ctx.clock.clone(),
                        config: config.clone(),
                    },
                ),
                ctx.consumer(
                    consumers::applications_spec(),
                    consumers::ApplicationClocks {
                        clock: ctx.clock.clone(),
                        config,
                    },
                ),
                Box::pin(fire_timers(
                    ctx.pool.clone(),
                    ctx.clock.clone(),
                    poll,
                    ctx.background_shutdown(),
                )),
            ])
        })
    }
}
