//! The gRPC face of `baladiya.kpi.v1.KpiService`.

use baladiya_platform::auth::caller;
use baladiya_platform::error::ApiError;
use baladiya_proto::kpi::v1 as pb;
use tonic::{Request, Response, Status};

use crate::catalogue::{
    Catalogue, DOMAINS, Dimension, Direction, Indicator, Target, TargetSource, Unit,
};

/// Serves the catalogue it is given.
#[derive(Debug, Clone)]
pub struct KpiApi {
    pub catalogue: &'static Catalogue,
}

#[tonic::async_trait]
impl pb::kpi_service_server::KpiService for KpiApi {
    async fn list_indicators(
        &self,
        request: Request<pb::ListIndicatorsRequest>,
    ) -> Result<Response<pb::ListIndicatorsResponse>, Status> {
        caller(&request)?;
        let domain = request.into_inner().domain;
        let domain = domain.trim();
        if !domain.is_empty() && !DOMAINS.contains(&domain) {
            return Err(ApiError::invalid_field(
                "domain",
                format!("is not one of {}", DOMAINS.join(", ")),
            )
            .into());
        }
        let indicators = self
            .catalogue
            .indicators()
            .iter()
            .filter(|i| domain.is_empty() || i.domain() == domain)
            .map(indicator_to_proto)
            .collect();
        Ok(Response::new(pb::ListIndicatorsResponse { indicators }))
    }
}

fn indicator_to_proto(i: &Indicator) -> pb::Indicator {
    let unit = match i.unit {
        Unit::Count => pb::Unit::Count,
        Unit::Share => pb::Unit::Share,
        Unit::WorkingDays => pb::Unit::WorkingDays,
        Unit::WorkingHours => pb::Unit::WorkingHours,
        Unit::Score => pb::Unit::Score,
        Unit::Growth => pb::Unit::Growth,
    };
    let direction = match i.direction {
        Direction::Higher => pb::Direction::HigherIsBetter,
        Direction::Lower => pb::Direction::LowerIsBetter,
        Direction::Neutral => pb::Direction::Neutral,
    };
    let target = i.target.map(|target| pb::Target {
        kind: Some(match target {
            Target::Value(value) => pb::target::Kind::Value(value),
            Target::From(TargetSource::LicenseTypeTargetDays) => {
                pb::target::Kind::Source(pb::TargetSource::LicenseTypeTargetDays.into())
            }
        }),
        amber_tolerance: i.amber_tolerance,
    });
    let dimensions = i
        .dimensions
        .iter()
        .map(|d| {
            i32::from(match d {
                Dimension::Municipality => pb::Dimension::Municipality,
                Dimension::Partner => pb::Dimension::Partner,
                Dimension::Channel => pb::Dimension::Channel,
                Dimension::Category => pb::Dimension::Category,
                Dimension::LicenseType => pb::Dimension::LicenseType,
                Dimension::Activity => pb::Dimension::Activity,
                Dimension::Operator => pb::Dimension::Operator,
                Dimension::EscalationLevel => pb::Dimension::EscalationLevel,
            })
        })
        .collect();
    pb::Indicator {
        code: i.code.clone(),
        domain: i.domain().to_string(),
        name_en: i.name_en.clone(),
        name_ar: i.name_ar.clone(),
        definition: i.definition.clone(),
        unit: unit.into(),
        direction: direction.into(),
        target,
        dimensions,
        target_source_note: i.target_note.clone(),
    }
}
