//! The operator and analyst CLI: commands that talk to a running platform
//! over gRPC (with a bearer token) or read its event streams from NATS. They
//! need no configuration file: the endpoint, token and NATS address come from
//! flags or `BALADIYA_ENDPOINT`, `BALADIYA_TOKEN`, `BALADIYA__NATS__URL`.
//!
//! Output is a table for people or, with `--output json`, the canonical
//! proto3 JSON of the response (one document; JSON lines for `events tail`).
//! Exit codes scripts can trust: [`Exit`].

use std::time::Duration;

use baladiya_platform::events::{InboundEvent, Namespace, streams};
use baladiya_proto::common::v1 as common;
use baladiya_proto::intake::v1 as intake;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use baladiya_proto::kpi::v1 as kpi;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_proto::routing::v1 as routing;
use baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient;
use baladiya_proto::sla::v1 as sla;
use baladiya_proto::sla::v1::sla_service_client::SlaServiceClient;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use crate::render::{self, Table, enum_word};

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

// ------------------------------------------------------------------ reports

#[derive(Debug, clap::Subcommand)]
pub enum ReportCommand {
    /// Submit a report (idempotent on --request-id; one is made when absent
    /// and printed, so a retry can reuse it).
    Submit {
        /// Category code, e.g. POTHOLE.
        #[arg(long)]
        category: String,
        /// What the citizen said.
        #[arg(long)]
        description: String,
        #[arg(long, requires = "lon")]
        lat: Option<f64>,
        #[arg(long, requires = "lat")]
        lon: Option<f64>,
        /// National Address short code, e.g. RRRD2929.
        #[arg(long)]
        address: Option<String>,
        /// Municipality code, e.g. RIYADH (derived from --lat/--lon if absent).
        #[arg(long)]
        municipality: Option<String>,
        /// The channel it came in on.
        #[arg(long, default_value = "CHANNEL_CALL_CENTER_940")]
        channel: String,
        /// low, normal, high or urgent.
        #[arg(long)]
        priority_hint: Option<String>,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a report by id or tracking number.
    Get { key: String },
    /// List reports, newest first.
    List {
        #[arg(long)]
        municipality: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// received, routed, acknowledged, in_progress, on_hold, resolved, closed, reopened.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

fn report_table(reports: &[intake::Report]) -> String {
    let mut t = Table::new(&[
        "tracking",
        "status",
        "municipality",
        "category",
        "priority",
        "assignee",
        "received",
    ]);
    for r in reports {
        t.row(vec![
            r.tracking_number.clone(),
            enum_word(r.status().as_str_name(), "REPORT_STATUS_"),
            r.municipality_code.clone(),
            r.category_code.clone(),
            enum_word(r.priority().as_str_name(), "PRIORITY_"),
            or_dash(&r.assignee_code),
            render::time(r.created_at.as_ref()),
        ]);
    }
    t.render()
}

fn report_detail(r: &intake::Report) -> String {
    let location = r.location.clone().unwrap_or_default();
    let mut t = Table::new(&["field", "value"]);
    for (k, v) in [
        ("id", r.id.clone()),
        ("tracking", r.tracking_number.clone()),
        (
            "status",
            enum_word(r.status().as_str_name(), "REPORT_STATUS_"),
        ),
        ("municipality", r.municipality_code.clone()),
        ("category", r.category_code.clone()),
        (
            "priority",
            format!(
                "{} ({})",
                enum_word(r.priority().as_str_name(), "PRIORITY_"),
                r.priority_reason
            ),
        ),
        ("assignee", or_dash(&r.assignee_code)),
        (
            "expected resolution",
            render::time(r.expected_resolution_at.as_ref()),
        ),
        ("received", render::time(r.created_at.as_ref())),
        ("status changed", render::time(r.status_changed_at.as_ref())),
        (
            "where",
            format!(
                "{} {} {}",
                location.latitude, location.longitude, location.national_address_short
            )
            .trim()
            .to_string(),
        ),
        ("duplicate of", or_dash(&r.duplicate_of)),
        ("supporters", r.supporters.to_string()),
        (
            "rating",
            r.rating
                .as_ref()
                .map(|x| format!("{}/5 {}", x.score, x.comment))
                .unwrap_or_else(|| "-".into()),
        ),
        ("description", r.description.clone()),
    ] {
        t.row(vec![k.to_string(), v]);
    }
    t.render()
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

pub async fn report(remote: &Remote, command: ReportCommand) -> Result<(), Failure> {
    let mut client = IntakeServiceClient::new(remote.channel().await?);
    match command {
        ReportCommand::Submit {
            category,
            description,
            lat,
            lon,
            address,
            municipality,
            channel,
            priority_hint,
            request_id,
        } => {
            let channel = enum_flag(
                "--channel",
                &channel,
                "CHANNEL_",
                intake::Channel::from_str_name,
            )?;
            let priority = match priority_hint {
                Some(p) => enum_flag(
                    "--priority-hint",
                    &p,
                    "PRIORITY_",
                    common::Priority::from_str_name,
                )?,
                None => common::Priority::Unspecified,
            };
            let request_id = request_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            eprintln!("request id {request_id} (pass --request-id {request_id} to retry safely)");
            let response = client
                .submit_report(remote.request(intake::SubmitReportRequest {
                    request_id,
                    channel: channel as i32,
                    category_code: category,
                    description,
                    location: Some(common::Location {
                        latitude: lat.unwrap_or_default(),
                        longitude: lon.unwrap_or_default(),
                        national_address_short: address.unwrap_or_default(),
                        municipality_code: municipality.unwrap_or_default(),
                    }),
                    priority_hint: priority as i32,
                    ..Default::default()
                })?)
                .await
                .map_err(remote.failed("submitting the report"))?
                .into_inner();
            remote.print(&response, |r| {
                let mut out = report_detail(&r.report.clone().unwrap_or_default());
                if r.linked_as_duplicate {
                    out.push_str("linked to an open report of the same problem nearby\n");
                }
                out
            });
        }
        ReportCommand::Get { key } => {
            let key = if key.parse::<uuid::Uuid>().is_ok() {
                intake::get_report_request::Key::Id(key)
            } else {
                intake::get_report_request::Key::TrackingNumber(key)
            };
            let report = client
                .get_report(remote.request(intake::GetReportRequest { key: Some(key) })?)
                .await
                .map_err(remote.failed("reading the report"))?
                .into_inner();
            remote.print(&report, report_detail);
        }
        ReportCommand::List {
            municipality,
            category,
            status,
            limit,
        } => {
            let status = match status {
                Some(s) => enum_flag(
                    "--status",
                    &s,
                    "REPORT_STATUS_",
                    intake::ReportStatus::from_str_name,
                )? as i32,
                None => 0,
            };
            let request = intake::ListReportsRequest {
                page_size: limit.clamp(1, 500) as i32,
                municipality_code: municipality.unwrap_or_default(),
                category_code: category.unwrap_or_default(),
                status,
                ..Default::default()
            };
            let (reports, next_page_token) = pages(limit, async |page_token| {
                let page = client
                    .list_reports(remote.request(intake::ListReportsRequest {
                        page_token,
                        ..request.clone()
                    })?)
                    .await
                    .map_err(remote.failed("listing reports"))?
                    .into_inner();
                Ok((page.reports, page.next_page_token))
            })
            .await?;
            let all = intake::ListReportsResponse {
                reports,
                next_page_token,
            };
            remote.print(&all, |r| report_table(&r.reports));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ cases

#[derive(Debug, clap::Subcommand)]
pub enum CaseCommand {
    /// List cases (a partner's token sees its own).
    List {
        /// The body that must act, e.g. MOTLS.
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        municipality: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// routed, acknowledged, in_progress, on_hold, resolved.
        #[arg(long)]
        status: Option<String>,
        /// Only cases past an SLA deadline.
        #[arg(long)]
        overdue: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a case and its history.
    Show { id: String },
    /// Acknowledge a case (the responsible body has it).
    Ack {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Resolve a case.
    Resolve {
        id: String,
        /// What was done.
        #[arg(long)]
        resolution: String,
        /// https URIs of photos or documents that prove it.
        #[arg(long = "proof")]
        proof_uris: Vec<String>,
    },
}

fn case_table(cases: &[routing::Case]) -> String {
    let mut t = Table::new(&[
        "id",
        "tracking",
        "status",
        "assignee",
        "municipality",
        "category",
        "priority",
        "overdue",
    ]);
    for c in cases {
        t.row(vec![
            c.id.clone(),
            c.tracking_number.clone(),
            enum_word(c.status().as_str_name(), "CASE_STATUS_"),
            c.assignee_code.clone(),
            c.municipality_code.clone(),
            c.category_code.clone(),
            enum_word(c.priority().as_str_name(), "PRIORITY_"),
            if c.overdue { "yes" } else { "" }.into(),
        ]);
    }
    t.render()
}

fn case_detail(c: &routing::Case) -> String {
    let mut out = case_table(std::slice::from_ref(c));
    if !c.resolution.is_empty() {
        out.push_str(&format!("resolution: {}\n", c.resolution));
    }
    out.push('\n');
    let mut t = Table::new(&[
        "when", "recorded", "action", "to", "assignee", "actor", "note",
    ]);
    for h in &c.history {
        t.row(vec![
            render::time(h.occurred_at.as_ref()),
            render::recorded_if_later(h.occurred_at.as_ref(), h.recorded_at.as_ref()),
            h.action.clone(),
            enum_word(h.to_status().as_str_name(), "CASE_STATUS_"),
            or_dash(&h.assignee_code),
            h.actor.clone(),
            h.note.clone(),
        ]);
    }
    out.push_str(&t.render());
    out
}

pub async fn case(remote: &Remote, command: CaseCommand) -> Result<(), Failure> {
    let mut client = RoutingServiceClient::new(remote.channel().await?);
    let action = |id: String, note: String| routing::CaseAction {
        case_id: id,
        note,
        ..Default::default()
    };
    let case = match command {
        CaseCommand::List {
            assignee,
            municipality,
            category,
            status,
            overdue,
            limit,
        } => {
            let status = match status {
                Some(s) => enum_flag(
                    "--status",
                    &s,
                    "CASE_STATUS_",
                    routing::CaseStatus::from_str_name,
                )? as i32,
                None => 0,
            };
            let request = routing::ListCasesRequest {
                page_size: limit.clamp(1, 500) as i32,
                status,
                municipality_code: municipality.unwrap_or_default(),
                category_code: category.unwrap_or_default(),
                overdue_only: overdue,
                assignee_code: assignee.unwrap_or_default(),
                ..Default::default()
            };
            let (cases, next_page_token) = pages(limit, async |page_token| {
                let page = client
                    .list_cases(remote.request(routing::ListCasesRequest {
                        page_token,
                        ..request.clone()
                    })?)
                    .await
                    .map_err(remote.failed("listing cases"))?
                    .into_inner();
                Ok((page.cases, page.next_page_token))
            })
            .await?;
            let all = routing::ListCasesResponse {
                cases,
                next_page_token,
            };
            remote.print(&all, |r| case_table(&r.cases));
            return Ok(());
        }
        CaseCommand::Show { id } => client
            .get_case(remote.request(routing::GetCaseRequest { id })?)
            .await
            .map_err(remote.failed("reading the case"))?,
        CaseCommand::Ack { id, note } => client
            .acknowledge_case(remote.request(routing::AcknowledgeCaseRequest {
                action: Some(action(id, note.unwrap_or_default())),
            })?)
            .await
            .map_err(remote.failed("acknowledging the case"))?,
        CaseCommand::Resolve {
            id,
            resolution,
            proof_uris,
        } => client
            .resolve_case(remote.request(routing::ResolveCaseRequest {
                action: Some(action(id, String::new())),
                resolution,
                proof_uris,
            })?)
            .await
            .map_err(remote.failed("resolving the case"))?,
    };
    remote.print(&case.into_inner(), case_detail);
    Ok(())
}

// ------------------------------------------------------------------ SLA

#[derive(Debug, clap::Subcommand)]
pub enum SlaCommand {
    /// The SLA clocks of a case (or, with --kind application, an application).
    Clocks {
        /// The case or application id.
        id: String,
        #[arg(long, default_value = "case")]
        kind: String,
    },
}

pub async fn sla(remote: &Remote, command: SlaCommand) -> Result<(), Failure> {
    let mut client = SlaServiceClient::new(remote.channel().await?);
    let SlaCommand::Clocks { id, kind } = command;
    let clocks = client
        .get_clocks(remote.request(sla::GetClocksRequest {
            subject_kind: kind,
            subject_id: id,
        })?)
        .await
        .map_err(remote.failed("reading the clocks"))?
        .into_inner();
    remote.print(&clocks, |r| {
        let mut t = Table::new(&[
            "metric",
            "partner",
            "state",
            "target",
            "elapsed",
            "deadline",
            "original",
            "agreement",
            "waiting on",
        ]);
        for c in &r.clocks {
            // A firing held for knowledge: what, on whom, and when it goes out anyway.
            let waiting = c.held.as_ref().map_or_else(
                || "-".to_string(),
                |h| {
                    let on = if h.input_parked {
                        "a parked input".to_string()
                    } else {
                        format!(
                            "{} (known to {})",
                            h.waiting_on,
                            render::time(h.known_until.as_ref())
                        )
                    };
                    format!(
                        "{} due {} on {on}; fires by {}",
                        h.kind,
                        render::time(h.due_at.as_ref()),
                        render::time(h.fires_by.as_ref())
                    )
                },
            );
            let mut state = enum_word(c.state().as_str_name(), "CLOCK_STATE_");
            if c.breach_provisional {
                state.push_str(" (provisional)");
            }
            if c.withdrawals > 0 {
                state.push_str(&format!(", {} withdrawn", c.withdrawals));
            }
            t.row(vec![
                c.metric.clone(),
                c.partner_code.clone(),
                state,
                render::duration(c.target.as_ref()),
                render::duration(c.elapsed.as_ref()),
                render::time(c.deadline.as_ref()),
                render::time(c.original_deadline.as_ref()),
                format!("v{}", c.agreement_version),
                waiting,
            ]);
        }
        t.render()
    });
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum EscalationsCommand {
    /// List escalations, newest first.
    List {
        /// The partner escalated to, e.g. MOTLS.
        #[arg(long)]
        partner: Option<String>,
        #[arg(long)]
        level: Option<u32>,
        /// open, acknowledged or withdrawn.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

pub async fn escalations(remote: &Remote, command: EscalationsCommand) -> Result<(), Failure> {
    let mut client = SlaServiceClient::new(remote.channel().await?);
    let EscalationsCommand::List {
        partner,
        level,
        state,
        limit,
    } = command;
    let state = match state {
        Some(s) => enum_flag(
            "--state",
            &s,
            "ESCALATION_STATE_",
            sla::EscalationState::from_str_name,
        )? as i32,
        None => 0,
    };
    let request = sla::ListEscalationsRequest {
        partner_code: partner.unwrap_or_default(),
        level: level.unwrap_or_default(),
        state,
        page_size: limit.clamp(1, 500) as i32,
        page_token: String::new(),
    };
    let (escalations, next_page_token) = pages(limit, async |page_token| {
        let page = client
            .list_escalations(remote.request(sla::ListEscalationsRequest {
                page_token,
                ..request.clone()
            })?)
            .await
            .map_err(remote.failed("listing escalations"))?
            .into_inner();
        Ok((page.escalations, page.next_page_token))
    })
    .await?;
    let all = sla::ListEscalationsResponse {
        escalations,
        next_page_token,
    };
    remote.print(&all, |r| {
        let mut t = Table::new(&[
            "id",
            "partner",
            "level",
            "tracking",
            "raised",
            "overdue",
            "acknowledged",
            "withdrawn",
        ]);
        for e in &r.escalations {
            let withdrawn = match &e.withdrawn_at {
                Some(at) => format!("{} ({})", render::time(Some(at)), e.withdrawal_reason),
                None if e.provisional => "- (provisional)".into(),
                None => "-".into(),
            };
            t.row(vec![
                e.id.clone(),
                e.partner_code.clone(),
                e.level.to_string(),
                e.tracking_number.clone(),
                render::time(e.raised_at.as_ref()),
                render::duration(e.overdue_working.as_ref()),
                if e.acknowledged_at.is_some() {
                    format!(
                        "{} by {}",
                        render::time(e.acknowledged_at.as_ref()),
                        e.acknowledged_by
                    )
                } else {
                    "-".into()
                },
                withdrawn,
            ]);
        }
        t.render()
    });
    Ok(())
}

// ------------------------------------------------------------------ KPIs

/// A period as written on the command line: `2026` (year), `2026-Q4`
/// (quarter), `2026-11` (month), `2026-11-30` (day; with --granularity
/// week or fortnight, the one holding that day).
pub fn period(text: &str, granularity: Option<&str>) -> Result<kpi::Period, Failure> {
    use kpi::Granularity as G;
    let bad = || {
        Failure::usage(format!(
            "--period {text}: expected 2026, 2026-Q4, 2026-11 or 2026-11-30"
        ))
    };
    let text = text.trim();
    let (date, implied) = if let Some((year, q)) = text.split_once("-Q") {
        let q: u32 = q
            .parse()
            .ok()
            .filter(|q| (1..=4).contains(q))
            .ok_or_else(bad)?;
        (format!("{year}-{:02}-01", (q - 1) * 3 + 1), G::Quarter)
    } else {
        match text.len() {
            4 => (format!("{text}-01-01"), G::Year),
            7 => (format!("{text}-01"), G::Month),
            10 => (text.to_string(), G::Day),
            _ => return Err(bad()),
        }
    };
    NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| bad())?;
    let granularity = match granularity {
        Some(g) => enum_flag("--granularity", g, "GRANULARITY_", G::from_str_name)?,
        None => implied,
    };
    Ok(kpi::Period {
        granularity: granularity as i32,
        date,
    })
}

fn scorecard_table(card: &kpi::Scorecard) -> String {
    let period = card.period.clone().unwrap_or_default();
    let mut out = format!(
        "{} {} ({} to {}, {})\n\n",
        if card.partner_code.is_empty() {
            &card.municipality_code
        } else {
            &card.partner_code
        },
        period.label,
        period.first_day,
        period.last_day,
        period.time_zone
    );
    let mut t = Table::new(&["indicator", "value", "target", "status", "sample"]);
    for i in &card.indicators {
        let m = i.measurement.unwrap_or_default();
        let show = |v: Option<f64>| match (v, i.unit()) {
            (None, _) => "-".to_string(),
            (Some(v), kpi::Unit::Share) => format!("{:.1}%", v * 100.0),
            (Some(v), kpi::Unit::Count) => format!("{v:.0}"),
            (Some(v), _) => format!("{v:.2}"),
        };
        t.row(vec![
            i.name_en.clone(),
            show(m.value),
            show(m.target),
            enum_word(m.status().as_str_name(), "STATUS_"),
            m.sample_size.to_string(),
        ]);
    }
    out.push_str(&t.render());
    out
}

pub async fn scorecard(
    remote: &Remote,
    municipality: Option<String>,
    partner: Option<String>,
    period_text: &str,
    granularity: Option<&str>,
) -> Result<(), Failure> {
    let subject = match (municipality, partner) {
        (Some(m), None) => kpi::get_scorecard_request::Subject::MunicipalityCode(m),
        (None, Some(p)) => kpi::get_scorecard_request::Subject::PartnerCode(p),
        _ => {
            return Err(Failure::usage(
                "give one of --municipality (e.g. RIYADH) or --partner (e.g. MOTLS)",
            ));
        }
    };
    let period = period(period_text, granularity)?;
    let mut client = KpiServiceClient::new(remote.channel().await?);
    let card = client
        .get_scorecard(remote.request(kpi::GetScorecardRequest {
            subject: Some(subject),
            period: Some(period),
        })?)
        .await
        .map_err(remote.failed("reading the scorecard"))?
        .into_inner();
    if card
        .indicators
        .iter()
        .all(|i| i.measurement.unwrap_or_default().sample_size == 0)
    {
        eprintln!(
            "note: no indicator has data for this period; is the code right? (municipality codes are like RIYADH, partner codes like MOTLS)"
        );
    }
    remote.print(&card, scorecard_table);
    Ok(())
}

// ------------------------------------------------------------------ events

/// Where the event streams are.
#[derive(Debug, Clone, clap::Args)]
pub struct Streams {
    /// NATS server URL.
    #[arg(
        long,
        env = "BALADIYA__NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// NATS user.
    #[arg(long, env = "BALADIYA__NATS__USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "BALADIYA__NATS__PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// The deployment's subject and stream prefix (events.namespace).
    #[arg(long, env = "BALADIYA__EVENTS__NAMESPACE", default_value = "")]
    pub namespace: String,
}

/// `--since`: `90s`, `30m`, `1h`, `2d`, or an RFC 3339 instant.
pub fn since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    let bad = || {
        Failure::usage(format!(
            "--since {text}: expected 90s, 30m, 1h, 2d or an instant like 2026-11-30T00:00:00Z"
        ))
    };
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number.parse().map_err(|_| bad())?;
    let span = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => return Err(bad()),
    };
    Ok(now - span)
}

/// The stream that holds `subject` (`baladiya.routing.>` is in ROUTING).
fn stream_of(subject: &str) -> Result<&'static str, Failure> {
    let domain = subject.split('.').nth(1).unwrap_or_default();
    [
        streams::INTAKE,
        streams::ROUTING,
        streams::PARTNERS,
        streams::SLA,
        streams::LICENSING,
    ]
    .into_iter()
    .find(|s| s.name.eq_ignore_ascii_case(domain))
    .map(|s| s.name)
    .ok_or_else(|| {
        Failure::usage(format!(
            "{subject}: subjects start baladiya.<domain>. with domain intake, routing, partners, sla or licensing (e.g. 'baladiya.routing.>')"
        ))
    })
}

/// One event as a JSON line: the CloudEvents attributes and the decoded payload.
pub fn event_json(event: &InboundEvent) -> serde_json::Value {
    let type_name = event
        .dataschema
        .rsplit('/')
        .next()
        .unwrap_or(&event.dataschema);
    serde_json::json!({
        "id": event.id.to_string(),
        "type": event.ce_type,
        "source": event.source,
        "subject": event.subject,
        "time": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "dataschema": event.dataschema,
        "aggregate_id": event.aggregate_id,
        "data": render::json_of(type_name, &event.payload).unwrap_or(serde_json::Value::Null),
    })
}

/// Follows `subject` from `since` (or from now), printing each event; stops
/// after `count` events when given. Progress of a replay goes to stderr.
pub async fn tail(
    streams_at: &Streams,
    subject: &str,
    since_text: Option<&str>,
    count: Option<u64>,
    output: Output,
) -> Result<(), Failure> {
    use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, pull};
    let stream = stream_of(subject)?;
    let start = since_text.map(|s| since(s, Utc::now())).transpose()?;
    let mut options = async_nats::ConnectOptions::new().name("baladiya events tail");
    if let (Some(user), Some(password)) = (&streams_at.nats_user, &streams_at.nats_password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let unavailable = |e: String| {
        Failure::new(
            Exit::Unavailable,
            format!(
                "cannot read the streams at {}: {e}\nhint: is NATS running there? (--nats or BALADIYA__NATS__URL names it)",
                streams_at.nats
            ),
        )
    };
    let client = options
        .connect(&streams_at.nats)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let namespace = Namespace::new(&streams_at.namespace);
    let js = async_nats::jetstream::new(client);
    let stream_name = namespace.stream(stream);
    let nats_stream = js.get_stream(&stream_name).await.map_err(|e| {
        Failure::new(
            Exit::NotFound,
            format!("stream {stream_name}: {e}\nhint: is --namespace right? (events.namespace of the deployment)"),
        )
    })?;
    let consumer = nats_stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: namespace.subject(subject),
            deliver_policy: match start {
                Some(t) => DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                        t.timestamp_nanos_opt().unwrap_or_default(),
                    ))
                    .map_err(|_| Failure::usage("--since: out of range"))?,
                },
                None => DeliverPolicy::New,
            },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    if start.is_some() {
        eprintln!(
            "replaying {subject} from {}",
            start.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
    }
    let mut shown: u64 = 0;
    let mut caught_up = start.is_none();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable(e.to_string()))?;
        let pending = message.info().map(|i| i.pending).unwrap_or(0);
        let headers = message.headers.clone().unwrap_or_default();
        let subject_seen = namespace.strip(message.subject.as_str()).to_string();
        match InboundEvent::from_parts(subject_seen.clone(), &headers, message.payload.clone()) {
            Ok(event) => {
                let value = event_json(&event);
                match output {
                    Output::Json => println!("{value}"),
                    Output::Table => println!(
                        "{}  {}  {}  {}",
                        value["time"].as_str().unwrap_or_default(),
                        event.ce_type,
                        event.subject,
                        value["data"]
                    ),
                }
            }
            Err(e) => eprintln!("skipped a message on {subject_seen}: {e}"),
        }
        shown += 1;
        if !caught_up && pending == 0 {
            caught_up = true;
            eprintln!("replayed {shown} event(s); following new ones (Ctrl-C to stop)");
        } else if !caught_up && shown.is_multiple_of(1000) {
            eprintln!("replayed {shown} event(s), {pending} to go");
        }
        if count.is_some_and(|c| shown >= c) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_written_as_people_write_them() {
        use kpi::Granularity as G;
        let p = |t: &str, g: Option<&str>| period(t, g).map(|p| (p.granularity, p.date));
        assert_eq!(
            p("2026-11", None).ok(),
            Some((G::Month as i32, "2026-11-01".into()))
        );
        assert_eq!(
            p("2026-Q4", None).ok(),
            Some((G::Quarter as i32, "2026-10-01".into()))
        );
        assert_eq!(
            p("2026", None).ok(),
            Some((G::Year as i32, "2026-01-01".into()))
        );
        assert_eq!(
            p("2026-11-30", Some("week")).ok(),
            Some((G::Week as i32, "2026-11-30".into()))
        );
        for bad in ["2026-13", "2026-Q5", "November", "2026-11-31"] {
            assert_eq!(
                period(bad, None).map_err(|f| f.exit).err(),
                Some(Exit::Usage),
                "{bad}"
            );
        }
    }

    #[test]
    fn since_takes_spans_and_instants() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("instant")
            .to_utc();
        assert_eq!(
            since("1h", now).ok(),
            Some(now - chrono::Duration::hours(1))
        );
        assert_eq!(since("2d", now).ok(), Some(now - chrono::Duration::days(2)));
        assert_eq!(
            since("2026-11-30T00:00:00+03:00", now)
                .ok()
                .map(|t| t.to_rfc3339()),
            Some("2026-11-29T21:00:00+00:00".into())
        );
        assert!(since("yesterday", now).is_err());
    }

    #[test]
    fn subjects_name_their_stream() {
        assert_eq!(stream_of("baladiya.routing.>").ok(), Some("ROUTING"));
        assert_eq!(
            stream_of("baladiya.sla.escalation.raised.MOTLS").ok(),
            Some("SLA")
        );
        assert!(stream_of("routing.>").is_err());
    }

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
