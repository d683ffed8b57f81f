//! The KPI service over gRPC: the indicator catalogue as analysts see it.

use std::sync::Arc;

use baladiya_kpi::KpiModule;
use baladiya_kpi::catalogue::Catalogue;
use baladiya_platform::auth::Role;
use baladiya_proto::kpi::v1 as pb;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{RunningPlatform, TestEnv, authorized};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_read_the_catalogue_with_targets_and_filter_it_by_domain() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(KpiModule)]).await?;
    let mut client = KpiServiceClient::new(platform.channel().await?);
    let analyst = platform.token(Role::Analyst);
    let list = |domain: &str| {
        authorized(
            pb::ListIndicatorsRequest {
                domain: domain.into(),
            },
            &analyst,
        )
    };

    let all = client
        .list_indicators(list(""))
        .await?
        .into_inner()
        .indicators;
    assert_eq!(all.len(), Catalogue::builtin()?.indicators().len());
    assert!(
        all.windows(2).all(|w| w[0].code < w[1].code),
        "ordered by code"
    );

    let compliance = all
        .iter()
        .find(|i| i.code == "inspections.facility_compliance_rate")
        .expect("compliance rate");
    assert_eq!(compliance.domain, "inspections");
    assert_eq!(compliance.unit(), pb::Unit::Share);
    assert_eq!(compliance.direction(), pb::Direction::HigherIsBetter);
    let target = compliance.target.as_ref().expect("target");
    assert_eq!(target.kind, Some(pb::target::Kind::Value(0.9)));
    assert!((target.amber_tolerance - 0.05).abs() < 1e-12);
    assert!(
        compliance
            .dimensions()
            .any(|d| d == pb::Dimension::Operator)
    );
    assert!(!compliance.name_ar.is_empty() && !compliance.definition.is_empty());

    let median = all
        .iter()
        .find(|i| i.code == "licensing.median_days_to_license")
        .expect("median days to license");
    assert_eq!(median.unit(), pb::Unit::WorkingDays);
    assert_eq!(median.direction(), pb::Direction::LowerIsBetter);
    assert_eq!(
        median.target.as_ref().and_then(|t| t.kind),
        Some(pb::target::Kind::Source(
            pb::TargetSource::LicenseTypeTargetDays.into()
        ))
    );
    let volume = all
        .iter()
        .find(|i| i.code == "complaints.volume")
        .expect("volume");
    assert_eq!(volume.direction(), pb::Direction::Neutral);
    assert_eq!(volume.target, None);

    let complaints = client
        .list_indicators(list("complaints"))
        .await?
        .into_inner()
        .indicators;
    assert_eq!(
        complaints.len(),
        all.iter().filter(|i| i.domain == "complaints").count()
    );
    assert!(complaints.len() >= 10);
    assert!(complaints.iter().all(|i| i.domain == "complaints"));

    let refused = client
        .list_indicators(list("roads"))
        .await
        .expect_err("unknown domain");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields: Vec<String> = refused
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["domain"]);

    let anonymous = client
        .list_indicators(pb::ListIndicatorsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}
