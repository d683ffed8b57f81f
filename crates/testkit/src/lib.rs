//! What the integration tests (`tests/`) and the bench (`crates/bench`) share
//! to run the platform from outside: the built `baladiya` binary as a child
//! process ([`process`]), dev tokens and bearer-authorized gRPC requests
//! ([`auth`]), PostgreSQL URLs naming another database and dropping a run's
//! databases ([`db`]), deleting a run's JetStream streams ([`nats`]), a
//! minimal HTTP/1.1 client for the platform's own endpoints ([`http`]), and
//! free loopback ports ([`net`]).
//!
//! A small library of its own so the bench, a release binary, does not
//! depend on the tests crate and everything it pulls in.

pub mod auth;
pub mod db;
pub mod http;
pub mod nats;
pub mod net;
pub mod process;

pub use auth::{DevToken, authorized};
pub use db::{drop_database, with_database};
pub use http::{http_get, http_get_with, http_request};
pub use nats::delete_streams;
pub use net::{free_addr, free_port};
pub use process::{Output, PlatformProcess, Ready, Spawn};
