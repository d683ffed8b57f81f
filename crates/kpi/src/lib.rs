//! KPI service (`baladiya.kpi.v1.KpiService`, schema `kpi`): the indicators
//! leadership and analysts review, folded from every domain stream and
//! measured per municipality, partner, channel, category and license type for
//! any period, against targets.
//!
//! The path from an event to a number on a scorecard:
//!
//! - [`consumers`]: durable consumers of the intake, routing, SLA and
//!   licensing streams turn each event into facts (one row per event and
//!   kind): what an event contributes is [`domain::facts`] (pure), the
//!   writing [`store::facts`];
//! - [`catalogue`]: `catalogue.toml` says, for each indicator, which facts it
//!   reads and how (count, share, exact median or percentile, ratio, backlog
//!   at the end of the period, growth on a year earlier), with its target;
//! - [`period`]: days, weeks, fortnights, months, quarters and years in the
//!   municipality's time zone;
//! - [`domain`]: with the catalogue and periods, the pure rules: facts,
//!   readings against targets, who may read which scorecard;
//! - [`store::measure`]: one SQL query per indicator and period ([`store::Kpis`]),
//!   shared by [`api`] (gRPC, with [`convert`]) and [`dashboard`] (the HTML
//!   scorecard on the HTTP port);
//! - [`rebuild`]: `baladiya kpi rebuild` replays the streams into fresh
//!   tables and swaps them in;
//! - [`error`]: what the service refuses.
//!
//! The service emits no events.

pub mod api;
pub mod catalogue;
pub mod consumers;
pub mod convert;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod period;
pub mod rebuild;
pub mod store;

use std::collections::BTreeMap;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::config::{Environment, KeyError, SectionHandler, ServiceConfig};
use baladiya_platform::events::StreamSpec;
use baladiya_platform::grpc::Mounted;
use baladiya_proto::kpi::v1::kpi_service_server::KpiServiceServer;
use chrono_tz::Tz;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

use crate::catalogue::Catalogue;
use crate::store::Kpis;

static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// The `[kpi]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KpiConfig {
    /// The IANA time zone periods are measured in, unless the municipality
    /// has its own below (partner scorecards always use this one).
    pub time_zone: String,
    /// Municipalities in another zone, e.g. `{ MUSCAT = "Asia/Muscat" }`.
    pub municipality_time_zones: BTreeMap<String, String>,
    /// Whether `/dashboard` asks for a bearer token and applies the policy's
    /// scopes; off only where a login proxy in front does both.
    pub dashboard_requires_token: bool,
}

impl Default for KpiConfig {
    fn default() -> Self {
        Self {
            time_zone: "Asia/Riyadh".into(),
            municipality_time_zones: BTreeMap::from([(
                "MUSCAT".to_string(),
                "Asia/Muscat".to_string(),
            )]),
            dashboard_requires_token: true,
        }
    }
}

impl KpiConfig {
    /// The zone of a municipality, or the default zone.
    pub fn time_zone_of(&self, municipality: Option<&str>) -> Tz {
        municipality
            .and_then(|m| self.municipality_time_zones.get(m))
            .unwrap_or(&self.time_zone)
            .parse()
            .unwrap_or(chrono_tz::Asia::Riyadh)
    }
}

impl ServiceConfig for KpiConfig {
    const SECTION: &'static str = "kpi";

    fn validate(&self, _environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
        if self.time_zone.parse::<Tz>().is_err() {
            errors.push(KeyError {
                key: "time_zone".into(),
                message: format!("'{}' is not an IANA time zone", self.time_zone),
            });
        }
        for (municipality, zone) in &self.municipality_time_zones {
            if zone.parse::<Tz>().is_err() {
                errors.push(KeyError {
                    key: format!("municipality_time_zones.{municipality}"),
                    message: format!("'{zone}' is not an IANA time zone"),
                });
            }
        }
        errors
    }
}

/// The KPI service module.
#[derive(Debug, Clone, Copy, Default)]
pub struct KpiModule;

impl ServiceModule for KpiModule {
    fn name(&self) -> &'static str {
        "kpi"
    }
    fn description(&self) -> &'static str {
        "indicators and scorecards against targets, projected from every domain stream, with an HTML dashboard"
    }
    fn migrator(&self) -> Migrator {
        baladiya_platform::db::service_migrations(&MIGRATIONS)
    }
    fn streams(&self) -> &'static [StreamSpec] {
        &[]
    }
    fn config_section(&self) -> Option<SectionHandler> {
        Some(SectionHandler::of::<KpiConfig>())
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
            let kpis = Kpis {
                pool: ctx.pool.clone(),
                catalogue,
                config: ctx.section::<KpiConfig>()?,
            };
            mounted.add(
                ctx.protect(
                    KpiServiceServer::new(api::KpiApi { kpis: kpis.clone() })
                        .max_decoding_message_size(ctx.config.server.max_request_bytes),
                ),
            );
            let auth = kpis
                .config
                .dashboard_requires_token
                .then(|| ctx.auth.clone());
            mounted.add_routes(dashboard::router(kpis, ctx.clock.clone(), auth));
            Ok(consumers::consumer_specs()
                .into_iter()
                .map(|spec| ctx.consumer(spec, consumers::ProjectFacts))
                .collect())
        })
    }
}
