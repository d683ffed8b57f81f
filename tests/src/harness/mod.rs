//! Helpers every test file may use, beside the platform runners in the crate
//! root: what a refusal's details name ([`status`]), dev tokens ([`tokens`]),
//! the messages a stream holds ([`streams`]), and
//! a case's SLA clocks ([`sla`]). What the bench shares with
//! the tests (the platform as a child process, tokens, authorized requests,
//! database URLs, plain HTTP) is in `baladiya-testkit`.

pub mod sla;
pub mod status;
pub mod streams;
pub mod tokens;
