//! SQL of the `sla_watcher` schema, one file per table family: the partner
//! replica, subject event logs, calendar recomputation jobs, clocks, timers
//! and escalations. Functions take a connection (or a pool for reads) and
//! return rows or domain values and `sqlx::Error`; nothing here decides.

mod calendar_recomputes;
mod clocks;
mod escalations;
mod replica;
mod subjects;
mod timers;

pub use calendar_recomputes::*;
pub use clocks::*;
pub use escalations::*;
pub use replica::*;
pub use subjects::*;
pub use timers::*;
