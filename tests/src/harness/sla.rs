//! What the SLA watcher holds, read over gRPC.

use std::collections::BTreeMap;

use baladiya_proto::sla::v1::sla_service_client::SlaServiceClient;
use baladiya_proto::sla::v1::{Clock, GetClocksRequest};
use tonic::transport::Channel;

use crate::{authorized, eventually};

/// Case `case_id`'s clocks by `metric:partner`, once at least `n` exist (read
/// as `token`, for up to 30 s).
pub async fn case_clocks(
    sla: &SlaServiceClient<Channel>,
    case_id: &str,
    n: usize,
    token: &str,
) -> anyhow::Result<BTreeMap<String, Clock>> {
    eventually(30, "the clocks", || {
        let mut sla = sla.clone();
        async move {
            let clocks = sla
                .get_clocks(authorized(
                    GetClocksRequest {
                        subject_kind: "case".into(),
                        subject_id: case_id.into(),
                    },
                    token,
                ))
                .await?
                .into_inner()
                .clocks;
            Ok((clocks.len() >= n).then(|| {
                clocks
                    .into_iter()
                    .map(|c| (format!("{}:{}", c.metric, c.partner_code), c))
                    .collect()
            }))
        }
    })
    .await
}
