//! The `baladiya` binary's library half: the catalogue of services it can run
//! and the parsing of `--services`, shared with the integration tests; and
//! the CLI's client commands ([`client`]) with their output ([`render`]).

pub mod client;
pub mod render;

use std::sync::Arc;

use baladiya_platform::app::ServiceModule;

/// Every service this build can run, in start order.
///
/// Each service crate contributes one [`ServiceModule`].
pub fn catalogue() -> Vec<Arc<dyn ServiceModule>> {
    vec![
        Arc::new(baladiya_partners::PartnersModule),
        Arc::new(baladiya_intake::IntakeModule),
        Arc::new(baladiya_routing::RoutingModule),
        Arc::new(baladiya_licensing::LicensingModule),
        Arc::new(baladiya_sla_watcher::SlaWatcherModule),
        Arc::new(baladiya_kpi::KpiModule),
        Arc::new(baladiya_open311::Open311Module),
    ]
}

/// Why a `--services` list was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown service '{name}' in --services; available: {available}")]
pub struct UnknownService {
    pub name: String,
    pub available: String,
}

/// Picks the modules named in a comma-separated list; `all` (or an empty
/// list) picks every one. Order follows the catalogue, duplicates collapse.
pub fn select(
    catalogue: Vec<Arc<dyn ServiceModule>>,
    list: &str,
) -> Result<Vec<Arc<dyn ServiceModule>>, UnknownService> {
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() || names == ["all"] {
        return Ok(catalogue);
    }
    let available = || {
        let mut v: Vec<&str> = catalogue.iter().map(|m| m.name()).collect();
        v.insert(0, "all");
        v.join(", ")
    };
    for name in &names {
        if !catalogue.iter().any(|m| m.name() == *name) {
            return Err(UnknownService {
                name: (*name).to_string(),
                available: available(),
            });
        }
    }
    Ok(catalogue
        .into_iter()
        .filter(|m| names.contains(&m.name()))
        .collect())
}
