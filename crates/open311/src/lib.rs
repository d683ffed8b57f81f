//! Open311 GeoReport v2 on the HTTP port (`/open311/v2/...`), for the citizen
//! apps and city tools that speak it.
//!
//! It is a thin adapter: every answer comes from the intake gRPC API (the
//! same `SubmitReport`, `GetReport`, `ListReports` and `ListCategories` every
//! channel calls, through the same authentication and policy), so there is
//! one implementation of intake and routing, not two. The report carries the
//! routing outcome (`assignee_code`) and the SLA deadline
//! (`expected_resolution_at`) that Open311 calls `agency_responsible` and
//! `expected_datetime`. The module keeps no data of its own. It runs beside
//! intake (`--services intake,open311`, or `all`) and calls it in-process,
//! through the same auth interceptor as a network call (so it works behind
//! mTLS too); or elsewhere, with `open311.grpc_endpoint` naming intake.
//!
//! - [`wire`]: one document tree rendered as XML or JSON (pure);
//! - [`georeport`]: forms, queries and records in the platform's terms
//!   (pure): [`georeport::request`] reads what clients send,
//!   [`georeport::record`] writes what they get back;
//! - [`routes`]: the HTTP handlers; [`facade`]: identities, transport and
//!   the intake gRPC calls;
//! - [`error`]: [`Open311Error`], the one error path (the specification's
//!   error document with its HTTP status).
//!
//! Identities (`[open311]`): each client's `api_key` stands for a channel
//! identity, whose bearer token the facade presents when it submits; reads
//! use `read_token`. With `auth.mode = "dev"` empty tokens are minted from the
//! dev secret (a channel token for `CHANNEL_OPEN311`), so `make dev` works
//! without an identity provider. The reach of the public feed is the reach of
//! the read identity: a channel token shows the requests made through Open311,
//! an operator token a municipality's.

pub mod error;
pub mod facade;
pub mod georeport;
pub mod routes;
pub mod wire;

pub use error::Open311Error;

use std::collections::BTreeMap;

use baladiya_platform::app::{BackgroundTask, ServiceContext, ServiceModule, StartError};
use baladiya_platform::config::{Environment, KeyError, Secret, SectionHandler, ServiceConfig};
use baladiya_platform::events::StreamSpec;
use baladiya_platform::grpc::Mounted;
use baladiya_proto::intake::v1::Channel;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

/// Shortest API key accepted.
const MIN_API_KEY_LEN: usize = 16;

/// One Open311 client (a citizen app, a city tool).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The key it sends as `api_key`: at least 16 characters.
    pub api_key: Secret,
    /// The channel its reports come in on, e.g. `CHANNEL_OPEN311`.
    pub channel: String,
    /// The bearer token of its channel identity; empty in dev auth mode
    /// mints one.
    pub token: Secret,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_key: Secret::new(""),
            channel: "CHANNEL_OPEN311".into(),
            token: Secret::new(""),
        }
    }
}

/// The `[open311]` configuration section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Open311Config {
    /// Where intake runs: empty when it runs in the same process (called
    /// in-process), else a plaintext gRPC endpoint (`http://host:port`).
    pub grpc_endpoint: String,
    /// Bearer token for reads; empty in dev auth mode mints a
    /// `CHANNEL_OPEN311` channel token.
    pub read_token: Secret,
    /// Clients by name; `POST /requests` answers 403 to any other key.
    pub clients: BTreeMap<String, ClientConfig>,
    /// The public base URL discovery advertises, e.g.
    /// `https://open311.balady.gov.sa/open311/v2`; empty: from the request.
    pub public_url: String,
    /// Discovery's `contact`.
    pub contact: String,
    /// Discovery's `key_service`: how a developer gets an `api_key`.
    pub key_service: String,
    /// How long one gRPC call may take, in milliseconds.
    pub call_timeout_ms: u64,
}

impl Default for Open311Config {
    fn default() -> Self {
        Self {
            grpc_endpoint: String::new(),
            read_token: Secret::new(""),
            clients: BTreeMap::new(),
            public_url: String::new(),
            contact: "Baladiya platform operations".into(),
            key_service: "Ask the municipality's digital services office for an api_key.".into(),
            call_timeout_ms: 10_000,
        }
    }
}

impl ServiceConfig for Open311Config {
    const SECTION: &'static str = "open311";

    fn validate(&self, environment: Environment) -> Vec<KeyError> {
        let mut errors = Vec::new();
        let mut add = |key: String, message: &str| {
            errors.push(KeyError {
                key,
                message: message.into(),
            });
        };
        if !(self.grpc_endpoint.is_empty() || self.grpc_endpoint.starts_with("http://")) {
            add(
                "grpc_endpoint".into(),
                "must be a plaintext http:// URL, or empty when intake runs in this process",
            );
        }
        if self.call_timeout_ms == 0 {
            add("call_timeout_ms".into(), "must be at least 1");
        }
        let production = environment == Environment::Production;
        if production && self.read_token.expose().is_empty() {
            add(
                "read_token".into(),
                "is required in production (a token of the identity the public feed reads as)",
            );
        }
        let mut keys = std::collections::HashSet::new();
        for (name, client) in &self.clients {
            if client.api_key.expose().len() < MIN_API_KEY_LEN {
                add(
                    format!("clients.{name}.api_key"),
                    "must be at least 16 characters",
                );
            } else if !keys.insert(client.api_key.expose()) {
                add(
                    format!("clients.{name}.api_key"),
                    "is the key of another client",
                );
            }
            if Channel::from_str_name(&client.channel).is_none_or(|c| c == Channel::Unspecified) {
                add(
                    format!("clients.{name}.channel"),
                    "must be a channel name, e.g. CHANNEL_OPEN311",
                );
            }
            if production && client.token.expose().is_empty() {
                add(
                    format!("clients.{name}.token"),
                    "is required in production (the client's channel identity)",
                );
            }
        }
        errors
    }
}

/// The Open311 module.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open311Module;

impl ServiceModule for Open311Module {
    fn name(&self) -> &'static str {
        "open311"
    }
    fn description(&self) -> &'static str {
        "Open311 GeoReport v2 on the HTTP port, over the intake gRPC API"
    }
    fn migrator(&self) -> Migrator {
        Migrator::DEFAULT
    }
    fn stores_data(&self) -> bool {
        false
    }
    fn streams(&self) -> &'static [StreamSpec] {
        &[]
    }
    fn config_section(&self) -> Option<SectionHandler> {
        Some(SectionHandler::of::<Open311Config>())
    }
    fn start<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        mounted: &'a mut Mounted,
    ) -> BoxFuture<'a, Result<Vec<BackgroundTask>, StartError>> {
        Box::pin(async move {
            let config: Open311Config = ctx.section()?;
            let facade = facade::Facade::new(ctx, &config, mounted).map_err(|reason| {
                StartError::Service {
                    service: "open311",
                    reason,
                }
            })?;
            if config.clients.is_empty() {
                tracing::info!(
                    "open311: no clients configured (open311.clients); POST /requests answers 403"
                );
            }
            mounted.add_routes(routes::router(facade));
            Ok(Vec::new())
        })
    }
}
