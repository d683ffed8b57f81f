//! Complaints routing service (`baladiya.routing.v1.RoutingService`, schema
//! `routing`): every report reaches the body that must act, and the case
//! lifecycle after that.
//!
//! - [`domain`]: the transition table, who may read and act, rule matching
//!   and precedence;
//! - [`commands`]: every change: a case's transition (checks, history,
//!   event), a case per received report, supporters, overdue marks, closing
//!   quiet cases, the rules;
//! - [`consumers`]: received reports and SLA breaches, to commands;
//! - [`api`]: gRPC, with [`convert`] (proto ↔ domain) and [`error`] (the
//!   crate's one error, [`RoutingError`], and its codes);
//! - [`store`]: SQL; [`seed`]: routing rules as editable data.
//!
//! Events (`baladiya.routing.case.<event>.<MUNICIPALITY>.<ASSIGNEE>`): routed,
//! acknowledged, work started, put on hold, resumed, resolved, rejected,
//! rerouted, reopened, closed, supporter added.

pub mod api;
pub mod commands;
pub mod consumers;
pub mod convert;
pub mod domain;
pub mod error;
pub mod seed;
pub mod store;

pub use error::RoutingError;

use std::time::Duration;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::backdating::{BackdatingBound, DEFAULT_MAX_BACKDATE_SECS};
use baladiya_platform::config::{Environment, KeyError, SectionHandler, ServiceConfig};
use baladiya_platform::events::{Emitter, StreamSpec, streams};
use baladiya_platform::grpc::Mounted;
use baladiya_platform::seed::{SeedError, SeedFiles};
use baladiya_proto::routing::v1::routing_service_server::RoutingServiceServer;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::commands::Limits;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The `[routing]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Days after resolution during which a citizen may reopen a case.
    pub reopen_within_days: u32,
    /// Days a resolved case stays quiet before it closes by itself.
    pub auto_close_after_days: u32,
    /// How often to look for quiet resolved cases, in seconds.
    pub auto_close_check_secs: u64,
    /// How far before routing's clock a caller may say a case action happened
    /// (`CaseAction.occurred_at`), in seconds: 0 to 604800 (7 days). Partner
    /// systems that sync every few minutes send the true instant; anything
    /// older is refused, so nobody rewrites a clock's record after the fact.
    pub max_backdate_secs: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            reopen_within_days: 14,
            auto_close_after_days: 7,
            auto_close_check_secs: 60,
            max_backdate_secs: DEFAULT_MAX_BACKDATE_SECS,
        }
    }
}

impl ServiceConfig for RoutingConfig {
    const SECTION: &'static str = "routing";

    fn validate(&self, _environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
        if !(1..=365).contains(&self.reopen_within_days) {
            errors.push(KeyError {
                key: "reopen_within_days".into(),
                message: "must be between 1 and 365".into(),
            });
        }
        if !(1..=365).contains(&self.auto_close_after_days) {
            errors.push(KeyError {
                key: "auto_close_after_days".into(),
                message: "must be between 1 and 365".into(),
            });
        }
        if self.auto_close_check_secs == 0 {
            errors.push(KeyError {
                key: "auto_close_check_secs".into(),
                message: "must be at least 1".into(),
            });
        }
        errors.extend(BackdatingBound::validate_config(
            "max_backdate_secs",
            self.max_backdate_secs,
        ));
        errors
    }
}

/// The routing service module.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingModule;

/// Closes resolved cases that stayed quiet for the configured period.
async fn auto_close(
    pool: PgPool,
    emitter: Emitter,
    config: RoutingConfig,
    limits: Limits,
    mut stop: baladiya_platform::shutdown::Shutdown,
) {
    let clock = emitter.clock().clone();
    let quiet = chrono::Duration::days(i64::from(config.auto_close_after_days));
    loop {
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(config.auto_close_check_secs)) => {}
        }
        let due = match pool.acquire().await {
            Ok(mut conn) => store::quiet_resolved(&mut conn, clock.now() - quiet, 100).await,
            Err(e) => Err(e),
        };
        for id in due.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot look for quiet resolved cases");
            Vec::new()
        }) {
            let closed = async {
                let mut tx = emitter.begin(&pool).await?;
                commands::close_quiet_case(&mut tx, limits, id).await?;
                tx.commit().await?;
                Ok::<_, RoutingError>(())
            }
            .await;
            if let Err(e) = closed {
                tracing::warn!(case = %id, error = %e, "automatic close skipped");
            }
        }
    }
}

/// The PostgreSQL schema the service owns.
pub const SCHEMA: &str = "routing";

impl ServiceModule for RoutingModule {
    fn name(&self) -> &'static str {
        "routing"
    }
    fn schema(&self) -> &'static str {
        SCHEMA
    }
    fn description(&self) -> &'static str {
        "routing rules, one case per report, the case lifecycle and its history"
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        std::slice::from_ref(&streams::ROUTING)
    }
    fn config_section(&self) -> Option<SectionHandler> {
        Some(SectionHandler::of::<RoutingConfig>())
    }
    fn seed<'a>(
        &'a self,
        pool: &'a PgPool,
        emitter: &'a Emitter,
        files: &'a SeedFiles,
    ) -> BoxFuture<'a, Result<Option<String>, SeedError>> {
        Box::pin(async move { seed::load(pool, emitter, files).await.map(Some) })
    }
    fn start<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        mounted: &'a mut Mounted,
    ) -> BoxFuture<'a, Result<Vec<BackgroundTask>, StartError>> {
        Box::pin(async move {
            let config: RoutingConfig = ctx.section()?;
            let limits = Limits {
                reopen_within: chrono::Duration::days(i64::from(config.reopen_within_days)),
                backdating: BackdatingBound::seconds(config.max_backdate_secs),
            };
            mounted.add(
                ctx.protect(
                    RoutingServiceServer::new(api::RoutingApi {
                        pool: ctx.pool.clone(),
                        emitter: ctx.emitter.clone(),
                        limits,
                        tokens: ctx.config.server.page_tokens(),
                    })
                    .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            Ok(vec![
                ctx.consumer(consumers::reports_spec(), consumers::RouteReports),
                ctx.consumer(consumers::breaches_spec(), consumers::MarkOverdue),
                Box::pin(auto_close(
                    ctx.pool.clone(),
                    ctx.emitter.clone(),
                    config,
                    limits,
                    ctx.background_shutdown(),
                )),
            ])
        })
    }
}
