//! The operator and analyst CLI: commands that talk to a running platform
//! over gRPC (with a bearer token) or read its event streams from NATS. They
//! need no configuration file: the endpoint, token and NATS address come from
//! flags or `BALADIYA_ENDPOINT`, `BALADIYA_TOKEN`, `BALADIYA__NATS__URL`.
//!
//! Output is a table for people or, with `--output json`, the canonical
//! proto3 JSON of the response (one document; JSON lines for `events tail`).
//! Exit codes scripts can trust: [`Exit`].
//!
//! This module holds what every command shares: where the platform is and
//! who asks ([`Remote`]), how a command fails ([`Failure`], [`Exit`]), paging
//! and enum flags. Each command family has its own file (`report`, `case`,
//! `sla` with escalations, `kpi`, `events`), re-exported here so callers name
//! them `client::...`; what they print is drawn in [`crate::render`].

mod case;
mod events;
mod kpi;
mod report;
mod sla;

pub use case::{CaseCommand, case};
pub use events::{Streams, event_json, since, tail};
pub use kpi::{period, scorecard};
pub use report::{ReportCommand, report};
pub use sla::{EscalationsCommand, SlaCommand, escalations, sla};

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use crate::render;

/// How a command ended, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done.
    Ok = 0,
    /// 1: the platform refused the request (invalid, in the wrong state, ...).
    Refused = 1,
    /// 2: the command line is wrong (clap's own code for usage errors).
    Usage = 2,
    /// 3: what was asked for does not exist.
    NotFound = 3,
    /// 4: no token, or the token may not do this.
    Denied = 4,
    /// 5: the platform or NATS cannot be reached now; try again.
    Unavailable = 5,
}

/// A failed command: what to tell the user and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// A gRPC error, with every field violation and a hint on what to do.
    fn from_status(what: &str, endpoint: &str, status: &tonic::Status) -> Self {
        use tonic::Code;
        let mut message = format!("{what}: {}", status.message());
        if let Some(bad) = status.get_details_bad_request() {
            for v in bad.field_violations {
                message.push_str(&format!("\n  {}: {}", v.field, v.description));
            }
        }
        let (exit, hint) = match status.code() {
            Code::NotFound => (Exit::NotFound, ""),
            Code::Unauthenticated => (
                Exit::Denied,
                "the token was refused: set BALADIYA_TOKEN or --token (in development: export BALADIYA_TOKEN=$(baladiya dev-token --role operator))",
            ),
            Code::PermissionDenied => (
                Exit::Denied,
                "the token's role or scope does not allow this: use a token of a role that may",
            ),
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => (
                Exit::Unavailable,
                "the platform is unavailable for now: try again (is it running at the endpoint? `make dev` starts one)",
            ),
            _ => (Exit::Refused, ""),
        };
        if status.code() == Code::Unavailable {
            message = format!(
                "{what}: cannot reach the platform at {endpoint}: {}",
                status.message()
            );
        }
        if !hint.is_empty() {
            message.push_str(&format!("\nhint: {hint}"));
        }
        Self { exit, message }
    }
}

/// `table` for people, `json` for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Where the platform is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The platform's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "BALADIYA_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// Bearer token (from the identity provider; in development,
    /// `baladiya dev-token --role operator`).
    #[arg(long, global = true, env = "BALADIYA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// `table` (for people) or `json` (for scripts).
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// How long one call may take, in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout_secs: u64,
}

impl Remote {
    async fn channel(&self) -> Result<Channel, Failure> {
        let endpoint = Endpoint::from_shared(self.endpoint.clone()).map_err(|e| {
            Failure::usage(format!(
                "--endpoint {}: not a URL ({e}); e.g. http://127.0.0.1:50051",
                self.endpoint
            ))
        })?;
        endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(self.timeout_secs))
            .connect()
            .await
            .map_err(|e| {
                Failure::new(
                    Exit::Unavailable,
                    format!(
                        "cannot reach the platform at {}: {e}\nhint: is it running? (`make dev` starts one; --endpoint or BALADIYA_ENDPOINT names another)",
                        self.endpoint
                    ),
                )
            })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, Failure> {
        let token = self.token.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
            Failure::new(
                Exit::Denied,
                "no token: set BALADIYA_TOKEN or --token\nhint: in development, export BALADIYA_TOKEN=$(baladiya dev-token --role operator)",
            )
        })?;
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .map_err(|_| Failure::usage("--token: not a valid header value"))?,
        );
        Ok(request)
    }

    fn failed(&self, what: &str) -> impl Fn(tonic::Status) -> Failure + '_ {
        let what = what.to_string();
        move |status| Failure::from_status(&what, &self.endpoint, &status)
    }

    /// Prints `message` as JSON, or the table `table` makes of it.
    fn print<M: prost::Message + prost::Name>(&self, message: &M, table: impl Fn(&M) -> String) {
        match self.output {
            Output::Json => println!("{}", render::json(message)),
            Output::Table => print!("{}", table(message)),
        }
    }
}

/// Reads pages (each call gets the previous page's token) until `limit`
/// items or the last page; returns the items and the token of what is left.
async fn pages<T>(
    limit: usize,
    mut page: impl AsyncFnMut(String) -> Result<(Vec<T>, String), Failure>,
) -> Result<(Vec<T>, String), Failure> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = page(token).await?;
        all.extend(items);
        if all.len() >= limit || next.is_empty() {
            all.truncate(limit);
            return Ok((all, next));
        }
        token = next;
    }
}

/// Parses an enum flag given as its short word (`in_progress`) or full name.
fn enum_flag<E>(
    flag: &str,
    text: &str,
    prefix: &str,
    parse: fn(&str) -> Option<E>,
) -> Result<E, Failure> {
    let upper = text.trim().to_ascii_uppercase();
    parse(&upper)
        .or_else(|| parse(&format!("{prefix}{upper}")))
        .ok_or_else(|| Failure::usage(format!("{flag} {text}: not a known value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_say_what_to_do_and_exit_accordingly() {
        let f = Failure::from_status(
            "reading the report",
            "http://x",
            &tonic::Status::unauthenticated("bad token"),
        );
        assert_eq!(f.exit, Exit::Denied);
        assert!(f.message.contains("dev-token"), "{}", f.message);
        let f = Failure::from_status("x", "http://x", &tonic::Status::not_found("report"));
        assert_eq!(f.exit, Exit::NotFound);
        let f = Failure::from_status("x", "http://h:1", &tonic::Status::unavailable("down"));
        assert_eq!(f.exit, Exit::Unavailable);
        assert!(f.message.contains("http://h:1"));
    }
}
