//! Intake service (`baladiya.intake.v1.IntakeService`, schema `intake`): the
//! one front door for citizen reports from every channel.
//!
//! - [`domain`]: the rules a submission must pass, priority, tracking
//!   numbers, who may read a report (pure);
//! - [`commands`]: every state change (rate, open a reporter's contact, edit
//!   or seed the catalogue, follow case status and deadlines), and in
//!   [`commands::submit`] the submit's steps and the duplicate's path;
//! - [`batch`]: the batch writer that stores submits arriving together in
//!   one statement; [`store`]: SQL, with that statement (and the
//!   duplicate's insert) in [`store::submit`];
//! - [`api`]: gRPC handlers; [`convert`]: proto <-> domain;
//! - [`consumers`]: keep the citizen-facing status and expected resolution
//!   current from routing's case events and the SLA watcher's clocks;
//! - [`cache`]: reports read recently, for `GetReport`;
//! - [`pii`]: encryption and pseudonyms; [`error`]: [`IntakeError`];
//! - [`seed`]: the category catalogue and service areas as editable files.
//!
//! Events (`baladiya.intake.report.<event>.<MUNICIPALITY>.<CATEGORY>`): report
//! received, report linked as duplicate, report rated. None carries personal
//! data.

pub mod api;
pub mod batch;
pub mod cache;
pub mod commands;
pub mod consumers;
pub mod convert;
pub mod domain;
pub mod error;
pub mod pii;
pub mod seed;
pub mod store;

pub use error::IntakeError;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::config::{Environment, KeyError, Secret, SectionHandler, ServiceConfig};
use baladiya_platform::events::{Emitter, StreamSpec, streams};
use baladiya_platform::grpc::Mounted;
use baladiya_platform::seed::{SeedError, SeedFiles};
use baladiya_proto::intake::v1::intake_service_server::IntakeServiceServer;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::domain::Catalogue;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Development-only keys; `config check` refuses them in production.
const DEV_PII_KEY: &str = "6465762d6f6e6c792d7069692d6b65792d6e6f742d666f722d70726f64756374";
const DEV_PSEUDONYM_KEY: &str =
    "6465762d6f6e6c792d70736575646f6e796d2d6b65792d6e6f742d666f722d70726f64";

/// The `[intake]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeConfig {
    /// AES-256 key for reporters' personal data: 64 hex characters.
    pub pii_key: Secret,
    /// Name of that key, stored beside each encrypted row (for rotation).
    pub pii_key_id: String,
    /// Earlier AES-256 keys by id, still needed to read rows sealed before a
    /// rotation, e.g. `{ k1 = "<64 hex>" }`.
    pub previous_pii_keys: BTreeMap<String, Secret>,
    /// HMAC key for reporter pseudonyms: at least 64 hex characters.
    pub pseudonym_key: Secret,
    /// How often each process reloads categories and service areas, in seconds.
    pub catalogue_refresh_secs: u64,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            pii_key: Secret::new(DEV_PII_KEY),
            pii_key_id: "dev".into(),
            previous_pii_keys: BTreeMap::new(),
            pseudonym_key: Secret::new(DEV_PSEUDONYM_KEY),
            catalogue_refresh_secs: 10,
        }
    }
}

impl ServiceConfig for IntakeConfig {
    const SECTION: &'static str = "intake";

    fn validate(&self, environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(KeyError {
                    key: key.into(),
                    message: message.into(),
                });
            }
        };
        let pii = baladiya_platform::config::hex_bytes(self.pii_key.expose());
        check(
            pii.as_ref().is_some_and(|k| k.len() == 32),
            "pii_key",
            "must be 64 hex characters (32 bytes)",
        );
        let pseudonym = baladiya_platform::config::hex_bytes(self.pseudonym_key.expose());
        check(
            pseudonym.as_ref().is_some_and(|k| k.len() >= 32),
            "pseudonym_key",
            "must be at least 64 hex characters (32 bytes)",
        );
        check(
            !self.pii_key_id.trim().is_empty(),
            "pii_key_id",
            "must not be empty",
        );
        check(
            self.catalogue_refresh_secs >= 1,
            "catalogue_refresh_secs",
            "must be at least 1",
        );
        if environment == Environment::Production {
            check(
                self.pii_key.expose() != DEV_PII_KEY,
                "pii_key",
                "the development key is refused in production",
            );
            check(
                self.pseudonym_key.expose() != DEV_PSEUDONYM_KEY,
                "pseudonym_key",
                "the development key is refused in production",
            );
        }
        for (id, key) in &self.previous_pii_keys {
            let ok =
                baladiya_platform::config::hex_bytes(key.expose()).is_some_and(|k| k.len() == 32);
            if !ok || *id == self.pii_key_id {
                errors.push(KeyError {
                    key: format!("previous_pii_keys.{id}"),
                    message: if ok {
                        "is the current pii_key_id".into()
                    } else {
                        "must be 64 hex characters (32 bytes)".into()
                    },
                });
            }
        }
        errors
    }
}

impl IntakeConfig {
    /// The keys as a vault (the section has been validated).
    pub fn vault(&self) -> Option<pii::Vault> {
        let mut vault = pii::Vault::new(
            &self.pii_key_id,
            &baladiya_platform::config::hex_bytes(self.pii_key.expose())?,
            &baladiya_platform::config::hex_bytes(self.pseudonym_key.expose())?,
        )?;
        for (id, key) in &self.previous_pii_keys {
            vault =
                vault.with_previous(id, &baladiya_platform::config::hex_bytes(key.expose())?)?;
        }
        Some(vault)
    }
}

/// The category catalogue and service areas, reloaded periodically so
/// operators' changes reach every replica within seconds.
#[derive(Debug, Default)]
pub struct CatalogueCache(RwLock<Arc<Catalogue>>);

impl CatalogueCache {
    /// The current snapshot.
    pub fn get(&self) -> Arc<Catalogue> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads from the database.
    pub async fn reload(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let fresh = Arc::new(store::load_catalogue(&mut conn).await?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}

/// The intake service module.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntakeModule;

fn start_error(reason: impl std::fmt::Display) -> StartError {
    StartError::Service {
        service: "intake",
        reason: reason.to_string(),
    }
}

/// The PostgreSQL schema the service owns.
pub const SCHEMA: &str = "intake";

impl ServiceModule for IntakeModule {
    fn name(&self) -> &'static str {
        "intake"
    }
    fn schema(&self) -> &'static str {
        SCHEMA
    }
    fn description(&self) -> &'static str {
        "citizen reports from every channel: validation, tracking numbers, duplicates, status, ratings"
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        std::slice::from_ref(&streams::INTAKE)
    }
    fn config_section(&self) -> Option<SectionHandler> {
        Some(SectionHandler::of::<IntakeConfig>())
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
            let config: IntakeConfig = ctx.section()?;
            let vault = config
                .vault()
                .ok_or_else(|| start_error("intake keys are invalid"))?;
            let catalogue = Arc::new(CatalogueCache::default());
            catalogue.reload(&ctx.pool).await.map_err(start_error)?;
            let reports = Arc::new(cache::ReportCache::default());
            let api = api::IntakeApi::new(
                ctx.pool.clone(),
                ctx.emitter.clone(),
                vault,
                catalogue.clone(),
                ctx.config.server.page_tokens(),
                reports.clone(),
            );
            mounted.add(
                ctx.protect(
                    IntakeServiceServer::new(api)
                        .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            let refresh = Duration::from_secs(config.catalogue_refresh_secs);
            let pool = ctx.pool.clone();
            let mut stop = ctx.background_shutdown();
            let reload: BackgroundTask = Box::pin(async move {
                loop {
                    tokio::select! {
                        _ = stop.wait() => return,
                        _ = tokio::time::sleep(refresh) => {
                            if let Err(e) = catalogue.reload(&pool).await {
                                tracing::warn!(error = %e, "catalogue reload failed; keeping the last one");
                            }
                        }
                    }
                }
            });
            let pool = ctx.pool.clone();
            let mut stop = ctx.background_shutdown();
            let follow: BackgroundTask = Box::pin(async move {
                tokio::select! {
                    _ = stop.wait() => {}
                    _ = reports.follow(pool) => {}
                }
            });
            Ok(vec![
                reload,
                follow,
                ctx.consumer(consumers::consumer_spec(), consumers::StatusFromCases),
                ctx.consumer(
                    consumers::deadline_consumer_spec(),
                    consumers::DeadlineFromClocks,
                ),
            ])
        })
    }
}
