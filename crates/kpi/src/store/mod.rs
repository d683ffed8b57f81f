//! SQL of the `kpi` schema: writing the facts events contribute
//! ([`facts`]) and measuring indicators over them ([`measure`], read through
//! [`Kpis`]). Nothing here decides what an event means or who may read what
//! (see [`crate::domain`]).

pub mod facts;
pub mod measure;

pub use facts::write_projections;
pub use measure::{Kpis, Scored};
