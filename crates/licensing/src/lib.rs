//! Licensing service (`baladiya.licensing.v1.LicensingService`, schema
//! `licensing`): applications against the 5, 15 and 60 day targets, licenses
//! (renewal, suspension, expiry), and facility compliance inspections.
//!
//! - [`domain`]: license types, the application state machine, renewal
//!   rules, compliance findings (pure);
//! - [`access`]: the scope rule, who may see and act on which application or
//!   license (pure, from the caller identity);
//! - [`store`]: the SQL of the `licensing` schema;
//! - [`commands`]: every state change (submission, each application step,
//!   issuing, renewing, suspending and expiring licenses, compliance
//!   inspections, license types), each in the caller's transaction with its
//!   audit row and event;
//! - [`api`]: the gRPC handlers, with [`convert`] (protobuf ↔ domain) and
//!   [`error`] (`LicensingError`, the one mapping to status codes);
//! - [`seed`]: license types as editable data;
//! - here: the `[licensing]` configuration section, [`LicensingModule`] and
//!   the expiry sweep.
//!
//! Events (`baladiya.licensing.<application|license|facility>.<event>.<MUNICIPALITY>.<TYPE>`,
//! named in [`commands`]) carry the instants steps happened, so the SLA
//! watcher runs decision and clearance clocks and the KPI service measures
//! time to license and compliance.

pub mod access;
pub mod api;
pub mod commands;
pub mod convert;
pub mod domain;
pub mod error;
pub mod seed;
pub mod store;

use std::time::Duration;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::backdating::{BackdatingBound, DEFAULT_MAX_BACKDATE_SECS};
use baladiya_platform::config::{
    Environment, KeyError, Secret, SectionHandler, ServiceConfig, hex_bytes,
};
use baladiya_platform::events::{Emitter, StreamSpec, streams};
use baladiya_platform::grpc::Mounted;
use baladiya_platform::seed::{SeedError, SeedFiles};
use baladiya_proto::licensing::v1::licensing_service_server::LicensingServiceServer;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::error::LicensingError;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

const DEV_PSEUDONYM_KEY: &str =
    "6465762d6f6e6c792d6c6963656e73696e672d6b65792d6e6f742d666f722d70726f64";

/// The `[licensing]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LicensingConfig {
    /// HMAC key for applicant and holder pseudonyms in events: 64+ hex characters.
    pub pseudonym_key: Secret,
    /// Whether a critical violation in a compliance inspection suspends the license.
    pub suspend_on_critical: bool,
    /// How often to look for licenses past validity and grace, in seconds.
    pub expiry_check_secs: u64,
    /// How far before licensing's clock a caller may say a facility
    /// inspection happened (`inspected_at`), in seconds: 0 to 604800 (7
    /// days). Older results are refused, so nobody moves an inspection into a
    /// period whose compliance is already reported.
    pub max_backdate_secs: u64,
}

impl Default for LicensingConfig {
    fn default() -> Self {
        Self {
            pseudonym_key: Secret::new(DEV_PSEUDONYM_KEY),
            suspend_on_critical: true,
            expiry_check_secs: 60,
            max_backdate_secs: DEFAULT_MAX_BACKDATE_SECS,
        }
    }
}

impl ServiceConfig for LicensingConfig {
    const SECTION: &'static str = "licensing";

    fn validate(&self, environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
        if hex_bytes(self.pseudonym_key.expose()).is_none_or(|k| k.len() < 32) {
            errors.push(KeyError {
                key: "pseudonym_key".into(),
                message: "must be at least 64 hex characters".into(),
            });
        }
        if environment == Environment::Production
            && self.pseudonym_key.expose() == DEV_PSEUDONYM_KEY
        {
            errors.push(KeyError {
                key: "pseudonym_key".into(),
                message: "the development key is refused in production".into(),
            });
        }
        if self.expiry_check_secs == 0 {
            errors.push(KeyError {
                key: "expiry_check_secs".into(),
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

/// The licensing service module.
#[derive(Debug, Clone, Copy, Default)]
pub struct LicensingModule;

async fn expiry_sweep(
    pool: PgPool,
    emitter: Emitter,
    every: Duration,
    mut stop: baladiya_platform::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match expire_due_licenses(&pool, &emitter).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "licenses expired"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}

/// One round of the sweep: marks a batch of licenses past validity and grace
/// as expired, in one transaction.
async fn expire_due_licenses(pool: &PgPool, emitter: &Emitter) -> Result<usize, LicensingError> {
    let mut tx = emitter.begin(pool).await?;
    let expired = commands::expire_licenses(&mut tx).await?;
    tx.commit().await?;
    Ok(expired)
}

/// The PostgreSQL schema the service owns.
pub const SCHEMA: &str = "licensing";

impl ServiceModule for LicensingModule {
    fn name(&self) -> &'static str {
        "licensing"
    }
    fn schema(&self) -> &'static str {
        SCHEMA
    }
    fn description(&self) -> &'static str {
        "license applications, licenses (renewal, suspension, expiry), facility compliance inspections"
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        std::slice::from_ref(&streams::LICENSING)
    }
    fn config_section(&self) -> Option<SectionHandler> {
        Some(SectionHandler::of::<LicensingConfig>())
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
            let config: LicensingConfig = ctx.section()?;
            mounted.add(
                ctx.protect(
                    LicensingServiceServer::new(api::LicensingApi {
                        pool: ctx.pool.clone(),
                        clock: ctx.clock.clone(),
                        emitter: ctx.emitter.clone(),
                        tokens: ctx.config.server.page_tokens(),
                        pseudonym_key: hex_bytes(config.pseudonym_key.expose()).unwrap_or_default(),
                        suspend_on_critical: config.suspend_on_critical,
                        backdating: BackdatingBound::seconds(config.max_backdate_secs),
                    })
                    .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            Ok(vec![Box::pin(expiry_sweep(
                ctx.pool.clone(),
                ctx.emitter.clone(),
                Duration::from_secs(config.expiry_check_secs),
                ctx.background_shutdown(),
            )) as BackgroundTask])
        })
    }
}
