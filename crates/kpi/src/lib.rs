//! KPI service (`baladiya.kpi.v1.KpiService`, schema `kpi`): the indicators
//! leadership and analysts review, each with a definition, unit, direction,
//! target and AMBER tolerance.
//!
//! - [`catalogue`]: the indicator catalogue, data in `catalogue.toml`, checked
//!   when the binary starts;
//! - [`api`]: the gRPC face.
//!
//! The projections that fold every domain stream into indicator values, the
//! rebuild command and the scorecard page build on this catalogue.

pub mod api;
pub mod catalogue;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::db::no_service_migrations;
use baladiya_platform::events::StreamSpec;
use baladiya_platform::grpc::Mounted;
use baladiya_proto::kpi::v1::kpi_service_server::KpiServiceServer;
use futures::future::BoxFuture;
use sqlx::migrate::Migrator;

use crate::catalogue::Catalogue;

/// The KPI service module.
#[derive(Debug, Clone, Copy, Default)]
pub struct KpiService;

impl ServiceModule for KpiService {
    fn name(&self) -> &'static str {
        "kpi"
    }
    fn description(&self) -> &'static str {
        "the indicator catalogue: definitions, units, directions, targets and AMBER tolerances"
    }
    fn migrator(&self) -> Migrator {
        no_service_migrations()
    }
    fn streams(&self) -> &'static [StreamSpec] {
        &[]
    }
    fn start<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        mounted: &'a mut Mounted,
    ) -> BoxFuture<'a, Result<Vec<BackgroundTask>, StartError>> {
        Box::pin(async move {
            let catalogue = Catalogue::builtin().map_err(|e| StartError::Service {
                service: "kpi",
                reason: e.to_string(),
            })?;
            mounted.add(
                ctx.protect(
                    KpiServiceServer::new(api::KpiApi { catalogue })
                        .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            Ok(Vec::new())
        })
    }
}
