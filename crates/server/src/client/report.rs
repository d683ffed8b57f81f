//! `baladiya report`: submit, show and list citizen reports through the
//! intake service. Its own file so the report flags and calls sit together;
//! the tables are [`render::report_table`] and [`render::report_detail`].

use baladiya_proto::common::v1 as common;
use baladiya_proto::intake::v1 as intake;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;

use super::{Failure, Remote, enum_flag, pages};
use crate::render;

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
            remote.print(&response, render::submission_detail);
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
            remote.print(&report, render::report_detail);
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
            remote.print(&all, |r| render::report_table(&r.reports));
        }
    }
    Ok(())
}
