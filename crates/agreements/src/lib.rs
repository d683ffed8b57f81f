//! Framework agreements and working calendars as pure data: what the partners
//! service publishes and the SLA watcher replicates.
//!
//! - [`domain`]: the types and rules (validation, which terms are in force);
//! - [`convert`]: to and from the `baladiya.partners.v1` proto messages.
//!
//! No IO, no async: no database, no events, no server. The platform is used
//! only for its field-violation collector (`baladiya_platform::error::Violations`).
//! Storage formats belong to the crates that store: the partners service's
//! tables and the SLA watcher's replica each define their own.

pub mod convert;
pub mod domain;
