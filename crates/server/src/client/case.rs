//! `baladiya case`: list, show, acknowledge and resolve cases through the
//! routing service. Its own file so the case flags and calls sit together;
//! the tables are [`render::case_table`] and [`render::case_detail`].

use baladiya_proto::routing::v1 as routing;
use baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient;

use super::{Failure, Remote, enum_flag, pages};
use crate::render;

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
            remote.print(&all, |r| render::case_table(&r.cases));
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
    remote.print(&case.into_inner(), render::case_detail);
    Ok(())
}
