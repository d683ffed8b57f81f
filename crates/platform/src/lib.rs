//! What every Baladiya service stands on, so that a service crate is mostly
//! domain code.
//!
//! | module | what it gives a service |
//! |---|---|
//! | [`config`] | the layered configuration and its validation |
//! | [`telemetry`] | logs, traces and W3C trace context across gRPC and NATS |
//! | [`error`] | the one mapping from errors to gRPC status codes |
//! | [`db`] | a pool pinned to the service's schema and embedded migrations |
//! | [`events`] | CloudEvents over JetStream, the outbox relay, idempotent consumers |
//! | [`backdating`] | how far in the past a caller may say its action happened |
//! | [`idempotency`] | `request_id` handling for creates |
//! | [`paging`] | opaque, tamper-checked page tokens |
//! | [`geo`] | points, polygons, distances |
//! | [`auth`] | the caller identity from a bearer token |
//! | [`clock`] | the process clock, movable in tests |
//! | [`grpc`], [`http`] | the two ports, health, reflection, metrics |
//! | [`seed`] | the seed loaders' shared error and TOML reading |
//! | [`wake`] | process-local wake-ups from a commit to the loop that reads it |
//! | [`app`] | [`app::ServiceModule`] and [`app::run`], which wire all of it |

pub mod app;
pub mod audit;
pub mod auth;
pub mod backdating;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod geo;
pub mod grpc;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod paging;
pub mod policy;
pub mod pseudonym;
pub mod seed;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod wake;
