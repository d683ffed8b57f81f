//! `baladiya sla` and `baladiya escalations`: the SLA watcher's clocks and
//! the escalations it raised. One file because both read the same service;
//! the tables are [`render::clock_table`] and [`render::escalation_table`].

use baladiya_proto::sla::v1 as sla;
use baladiya_proto::sla::v1::sla_service_client::SlaServiceClient;

use super::{Failure, Remote, enum_flag, pages};
use crate::render;

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
    remote.print(&clocks, |r| render::clock_table(&r.clocks));
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
    remote.print(&all, |r| render::escalation_table(&r.escalations));
    Ok(())
}
