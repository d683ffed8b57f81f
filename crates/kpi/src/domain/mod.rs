//! The KPI service's pure rules, no IO: what each event contributes
//! ([`facts`]) and what a reading is and who may see it ([`readings`]). The
//! indicator catalogue ([`crate::catalogue`], data checked once) and
//! reporting periods ([`crate::period`]) are the rest of the domain; they
//! keep their own modules because the CLI and the tests name them.

pub mod facts;
pub mod readings;

pub use facts::{FactRow, Projection, facts_of};
pub use readings::{Filters, Measured, Rag, Reading, Subject, may_read_scorecard, narrow_to_scope};
