//! The gRPC face of `baladiya.kpi.v1.KpiService`: requests checked field by
//! field, then measured through [`Kpis`].
//!
//! Each RPC is `reply(self.<inner>(request).await)`: the inner method
//! authorizes, measures and converts (see [`crate::convert`]), returning
//! [`KpiError`]; `reply` turns that into a gRPC status once.

use baladiya_platform::auth::caller;
use baladiya_platform::error::{ApiError, Reply, Violations, reply};
use baladiya_proto::kpi::v1 as pb;
use tonic::Request;

use crate::catalogue::{DOMAINS, Dimension, Indicator, Target};
use crate::convert::{
    date_from, dimension_from, filters_from, filters_to, granularity_from, indicator_from,
    indicator_to_proto, indicator_value, measurement, period_from, resolved_period,
};
use crate::domain::{Filters, Subject, may_read_scorecard, narrow_to_scope};
use crate::error::KpiError;
use crate::period::Period;
use crate::store::Kpis;

/// The most periods one series may have.
pub const MAX_SERIES_POINTS: usize = 400;

/// Serves indicators out of the projections.
#[derive(Debug, Clone)]
pub struct KpiApi {
    pub kpis: Kpis,
}

impl KpiApi {
    async fn indicators(
        &self,
        request: Request<pb::ListIndicatorsRequest>,
    ) -> Result<pb::ListIndicatorsResponse, KpiError> {
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
            .kpis
            .catalogue
            .indicators()
            .iter()
            .filter(|i| domain.is_empty() || i.domain() == domain)
            .map(indicator_to_proto)
            .collect();
        Ok(pb::ListIndicatorsResponse { indicators })
    }

    async fn indicator(
        &self,
        request: Request<pb::GetIndicatorRequest>,
    ) -> Result<pb::IndicatorValue, KpiError> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let indicator = v.absorb(indicator_from(self.kpis.catalogue, &req.code, "code"));
        let mut filters = filters_from(req.filters.as_ref());
        if let Some(indicator) = indicator {
            narrow_to_scope(&who, indicator, &mut filters)?;
        }
        let breakdown = dimension_from(req.breakdown());
        if let Some(indicator) = indicator {
            check_filters(&mut v, indicator, &filters);
            if let Some(d) = breakdown
                && !indicator.dimensions.contains(&d)
            {
                v.add(
                    "breakdown",
                    format!("is not a dimension of {}", indicator.code),
                );
            }
        }
        let tz = self.kpis.time_zone(filters.municipality.as_deref());
        let period = v.absorb(period_from(req.period.as_ref(), tz, "period"));
        v.finish()?;
        let (Some(indicator), Some(period)) = (indicator, period) else {
            return Err(ApiError::internal(&"checked request lost a field").into());
        };
        let measured = self
            .kpis
            .measure(indicator, &filters, period, breakdown)
            .await?;
        Ok(indicator_value(indicator, &filters, &measured, breakdown))
    }

    async fn scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Result<pb::Scorecard, KpiError> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let subject = match req.subject {
            Some(pb::get_scorecard_request::Subject::MunicipalityCode(m))
                if !m.trim().is_empty() =>
            {
                Some(Subject::Municipality(m.trim().to_string()))
            }
            Some(pb::get_scorecard_request::Subject::PartnerCode(p)) if !p.trim().is_empty() => {
                Some(Subject::Partner(p.trim().to_string()))
            }
            _ => {
                v.add("municipality_code", "or partner_code is required");
                None
            }
        };
        let tz = match &subject {
            Some(Subject::Municipality(m)) => self.kpis.time_zone(Some(m)),
            _ => self.kpis.time_zone(None),
        };
        let period = v.absorb(period_from(req.period.as_ref(), tz, "period"));
        v.finish()?;
        let (Some(subject), Some(period)) = (subject, period) else {
            return Err(ApiError::internal(&"checked request lost a field").into());
        };
        if !may_read_scorecard(&who, &subject) {
            return Err(KpiError::ScorecardHidden);
        }
        let rows = self.kpis.scorecard(&subject, period).await?;
        let (municipality_code, partner_code) = match &subject {
            Subject::Municipality(m) => (m.clone(), String::new()),
            Subject::Partner(p) => (String::new(), p.clone()),
        };
        Ok(pb::Scorecard {
            period: Some(resolved_period(&period)),
            municipality_code,
            partner_code,
            indicators: rows
                .iter()
                .map(|(indicator, filters, measured)| {
                    let by = matches!(indicator.target, Some(Target::From(_)))
                        .then_some(Dimension::LicenseType);
                    indicator_value(indicator, filters, measured, by)
                })
                .collect(),
        })
    }

    async fn time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Result<pb::TimeSeries, KpiError> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let indicator = v.absorb(indicator_from(self.kpis.catalogue, &req.code, "code"));
        let mut filters = filters_from(req.filters.as_ref());
        if let Some(indicator) = indicator {
            narrow_to_scope(&who, indicator, &mut filters)?;
            check_filters(&mut v, indicator, &filters);
        }
        let granularity = granularity_from(req.granularity());
        if granularity.is_none() {
            v.add("granularity", "is required");
        }
        let from = v.absorb(date_from(&req.from_date, "from_date"));
        let to = v.absorb(date_from(&req.to_date, "to_date"));
        if let (Some(from), Some(to)) = (from, to)
            && to < from
        {
            v.add("to_date", "is before from_date");
        }
        v.finish()?;
        let (Some(indicator), Some(granularity), Some(from), Some(to)) =
            (indicator, granularity, from, to)
        else {
            return Err(ApiError::internal(&"checked request lost a field").into());
        };
        let tz = self.kpis.time_zone(filters.municipality.as_deref());
        let periods = Period::series(granularity, from, to, tz, MAX_SERIES_POINTS).ok_or_else(|| {
            ApiError::invalid_field(
                "to_date",
                format!("makes more than {MAX_SERIES_POINTS} periods; ask for a coarser granularity or a shorter range"),
            )
        })?;
        let series = self.kpis.series(indicator, &filters, &periods).await?;
        Ok(pb::TimeSeries {
            code: indicator.code.clone(),
            filters: Some(filters_to(&filters)),
            points: series
                .iter()
                .map(|m| pb::TimeSeriesPoint {
                    period: Some(resolved_period(&m.period)),
                    measurement: Some(measurement(&m.overall)),
                })
                .collect(),
        })
    }
}

/// Records each set filter `indicator` cannot apply.
fn check_filters(v: &mut Violations, indicator: &Indicator, filters: &Filters) {
    for (field, problem) in filters.unsupported(indicator) {
        v.add(format!("filters.{field}"), problem);
    }
}

#[tonic::async_trait]
impl pb::kpi_service_server::KpiService for KpiApi {
    async fn list_indicators(
        &self,
        request: Request<pb::ListIndicatorsRequest>,
    ) -> Reply<pb::ListIndicatorsResponse> {
        reply(self.indicators(request).await)
    }

    async fn get_indicator(
        &self,
        request: Request<pb::GetIndicatorRequest>,
    ) -> Reply<pb::IndicatorValue> {
        reply(self.indicator(request).await)
    }

    async fn get_scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Reply<pb::Scorecard> {
        reply(self.scorecard(request).await)
    }

    async fn get_time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Reply<pb::TimeSeries> {
        reply(self.time_series(request).await)
    }
}
