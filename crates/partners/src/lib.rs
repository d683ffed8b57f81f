//! Partner agencies service (`baladiya.partners.v1.PartnerService`, schema
//! `partners`): the bodies that act on routed cases, their versioned framework
//! agreements (SLA terms per category and priority, escalation ladders,
//! licensing clearances) and the working calendars every SLA is measured on.
//!
//! - [`domain`]: the partner's pure types and rules (agreements and calendars
//!   are `baladiya_agreements`', re-exported);
//! - [`commands`]: the state changes, shared by the API and the seed loader;
//! - [`store`]: SQL; [`api`]: the gRPC face; [`convert`]: proto and back;
//!   [`seed`]: editable seed files; [`error`]: the crate's one error type.
//!
//! Events (`baladiya.partners.>` on stream `PARTNERS`): partner upserted,
//! agreement published, calendar changed (with the affected date range).

pub mod api;
pub mod commands;
pub mod convert;
pub mod domain;
pub mod error;
pub mod seed;
pub mod store;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::events::{Emitter, StreamSpec, streams};
use baladiya_platform::grpc::Mounted;
use baladiya_platform::seed::{SeedError, SeedFiles};
use baladiya_proto::partners::v1::partner_service_server::PartnerServiceServer;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The partners service module.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartnersModule;

/// The PostgreSQL schema the service owns.
pub const SCHEMA: &str = "partners";

impl ServiceModule for PartnersModule {
    fn name(&self) -> &'static str {
        "partners"
    }
    fn schema(&self) -> &'static str {
        SCHEMA
    }
    fn description(&self) -> &'static str {
        "partner bodies, versioned agreements with SLA terms and escalation ladders, working calendars"
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        std::slice::from_ref(&streams::PARTNERS)
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
            mounted.add(
                ctx.protect(
                    PartnerServiceServer::new(api::PartnerApi {
                        pool: ctx.pool.clone(),
                        clock: ctx.clock.clone(),
                        emitter: ctx.emitter.clone(),
                        tokens: ctx.config.server.page_tokens(),
                    })
                    .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            Ok(Vec::new())
        })
    }
}
