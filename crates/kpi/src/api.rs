//! The gRPC face of `baladiya.kpi.v1.KpiService`: requests checked field by
//! field, then measured through [`Kpis`].

use baladiya_platform::auth::{CallerIdentity, Role, caller};
use baladiya_platform::error::{ApiError, Violations};
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::v1::Channel;
use baladiya_proto::kpi::v1 as pb;
use chrono::NaiveDate;
use chrono_tz::Tz;
use tonic::{Request, Response, Status};

use crate::catalogue::{DOMAINS, Dimension, Direction, Indicator, Target, TargetSource, Unit};
use crate::period::{Granularity, Period};
use crate::query::{Filters, Kpis, Measured, Rag, Reading, Subject};

/// The most periods one series may have.
pub const MAX_SERIES_POINTS: usize = 400;

/// Serves indicators out of the projections.
#[derive(Debug, Clone)]
pub struct KpiApi {
    pub kpis: Kpis,
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
            .kpis
            .catalogue
            .indicators()
            .iter()
            .filter(|i| domain.is_empty() || i.domain() == domain)
            .map(indicator_to_proto)
            .collect();
        Ok(Response::new(pb::ListIndicatorsResponse { indicators }))
    }

    async fn get_indicator(
        &self,
        request: Request<pb::GetIndicatorRequest>,
    ) -> Result<Response<pb::IndicatorValue>, Status> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let indicator = v.absorb(self.kpis.indicator(&req.code, "code"));
        let mut filters = filters_from(req.filters.as_ref());
        if let Some(indicator) = indicator {
            scope(&who, indicator, &mut filters)?;
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
        Ok(Response::new(indicator_value(
            indicator, &filters, &measured, breakdown,
        )))
    }

    async fn get_scorecard(
        &self,
        request: Request<pb::GetScorecardRequest>,
    ) -> Result<Response<pb::Scorecard>, Status> {
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
            return Err(ApiError::permission_denied("not a scorecard you may read").into());
        }
        let rows = self.kpis.scorecard(&subject, period).await?;
        let (municipality_code, partner_code) = match &subject {
            Subject::Municipality(m) => (m.clone(), String::new()),
            Subject::Partner(p) => (String::new(), p.clone()),
        };
        Ok(Response::new(pb::Scorecard {
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
        }))
    }

    async fn get_time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Result<Response<pb::TimeSeries>, Status> {
        let who = caller(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let indicator = v.absorb(self.kpis.indicator(&req.code, "code"));
        let mut filters = filters_from(req.filters.as_ref());
        if let Some(indicator) = indicator {
            scope(&who, indicator, &mut filters)?;
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
        Ok(Response::new(pb::TimeSeries {
            code: indicator.code.clone(),
            filters: Some(filters_to(&filters)),
            points: series
                .iter()
                .map(|m| pb::TimeSeriesPoint {
                    period: Some(resolved_period(&m.period)),
                    measurement: Some(measurement(&m.overall)),
                })
                .collect(),
        }))
    }
}

/// Whether `who` may read the scorecard of `subject` (the policy's scopes:
/// a partner its own, an operator of a municipality that one's; a channel
/// none).
pub fn may_read_scorecard(who: &CallerIdentity, subject: &Subject) -> bool {
    match (subject, who.role) {
        (Subject::Partner(p), Role::Partner) => who.partner.as_deref() == Some(p.as_str()),
        (Subject::Municipality(_), Role::Partner) | (_, Role::Channel) => false,
        (Subject::Municipality(m), Role::Operator) => who.covers_municipality(m),
        (Subject::Partner(_), Role::Operator) => who.municipality.is_none(),
        (_, Role::Analyst | Role::Admin) => true,
    }
}

/// Narrows `filters` to the caller's scope (the policy's): a partner to its
/// own partner indicators, an operator of a municipality to that one.
fn scope(
    who: &CallerIdentity,
    indicator: &Indicator,
    filters: &mut Filters,
) -> Result<(), ApiError> {
    let (own, set, what) = match who.role {
        Role::Partner => {
            if !indicator.dimensions.contains(&Dimension::Partner) {
                return Err(ApiError::permission_denied(format!(
                    "{} is not measured per partner",
                    indicator.code
                )));
            }
            (
                who.partner.clone().unwrap_or_default(),
                &mut filters.partner,
                "partner",
            )
        }
        Role::Operator if who.municipality.is_some() => (
            who.municipality.clone().unwrap_or_default(),
            &mut filters.municipality,
            "municipality",
        ),
        _ => return Ok(()),
    };
    if set.as_ref().is_some_and(|s| *s != own) {
        return Err(ApiError::permission_denied(format!(
            "you may read your own {what}'s indicators only"
        )));
    }
    *set = Some(own);
    Ok(())
}

fn check_filters(v: &mut Violations, indicator: &Indicator, filters: &Filters) {
    for (field, problem) in filters.unsupported(indicator) {
        v.add(format!("filters.{field}"), problem);
    }
}

fn text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

/// The filters of a request; unset fields filter nothing.
pub fn filters_from(f: Option<&pb::Filters>) -> Filters {
    let Some(f) = f else {
        return Filters::default();
    };
    Filters {
        municipality: text(&f.municipality_code),
        partner: text(&f.partner_code),
        channel: (f.channel() != Channel::Unspecified)
            .then(|| f.channel().as_str_name().to_string()),
        category: text(&f.category_code),
        license_type: text(&f.license_type_code),
        activity: text(&f.activity),
        operator: text(&f.operator_code),
        level: (f.escalation_level > 0)
            .then(|| i32::try_from(f.escalation_level).unwrap_or(i32::MAX)),
    }
}

fn filters_to(f: &Filters) -> pb::Filters {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    pb::Filters {
        municipality_code: s(&f.municipality),
        partner_code: s(&f.partner),
        channel: f
            .channel
            .as_deref()
            .and_then(Channel::from_str_name)
            .unwrap_or(Channel::Unspecified)
            .into(),
        category_code: s(&f.category),
        license_type_code: s(&f.license_type),
        activity: s(&f.activity),
        operator_code: s(&f.operator),
        escalation_level: f.level.and_then(|l| u32::try_from(l).ok()).unwrap_or(0),
    }
}

/// A `YYYY-MM-DD` day, or an invalid `field`.
pub fn date_from(text: &str, field: &str) -> Result<NaiveDate, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid_field(field, "is required (YYYY-MM-DD)"));
    }
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid_field(field, format!("'{text}' is not a YYYY-MM-DD date")))
}

fn period_from(p: Option<&pb::Period>, tz: Tz, field: &str) -> Result<Period, ApiError> {
    let Some(p) = p else {
        return Err(ApiError::invalid_field(field, "is required"));
    };
    let mut v = Violations::new();
    let granularity = granularity_from(p.granularity());
    if granularity.is_none() {
        v.add(format!("{field}.granularity"), "is required");
    }
    let date = v.absorb(date_from(&p.date, &format!("{field}.date")));
    v.finish()?;
    match (granularity, date) {
        (Some(g), Some(d)) => Ok(Period::containing(g, d, tz)),
        _ => Err(ApiError::internal(&"checked period lost a field")),
    }
}

fn granularity_from(g: pb::Granularity) -> Option<Granularity> {
    Some(match g {
        pb::Granularity::Unspecified => return None,
        pb::Granularity::Day => Granularity::Day,
        pb::Granularity::Week => Granularity::Week,
        pb::Granularity::Fortnight => Granularity::Fortnight,
        pb::Granularity::Month => Granularity::Month,
        pb::Granularity::Quarter => Granularity::Quarter,
        pb::Granularity::Year => Granularity::Year,
    })
}

fn granularity_to(g: Granularity) -> pb::Granularity {
    match g {
        Granularity::Day => pb::Granularity::Day,
        Granularity::Week => pb::Granularity::Week,
        Granularity::Fortnight => pb::Granularity::Fortnight,
        Granularity::Month => pb::Granularity::Month,
        Granularity::Quarter => pb::Granularity::Quarter,
        Granularity::Year => pb::Granularity::Year,
    }
}

const DIMENSIONS: [(Dimension, pb::Dimension); 8] = [
    (Dimension::Municipality, pb::Dimension::Municipality),
    (Dimension::Partner, pb::Dimension::Partner),
    (Dimension::Channel, pb::Dimension::Channel),
    (Dimension::Category, pb::Dimension::Category),
    (Dimension::LicenseType, pb::Dimension::LicenseType),
    (Dimension::Activity, pb::Dimension::Activity),
    (Dimension::Operator, pb::Dimension::Operator),
    (Dimension::EscalationLevel, pb::Dimension::EscalationLevel),
];

fn dimension_from(d: pb::Dimension) -> Option<Dimension> {
    DIMENSIONS.iter().find(|(_, p)| *p == d).map(|(d, _)| *d)
}

fn dimension_to(d: Dimension) -> pb::Dimension {
    DIMENSIONS
        .iter()
        .find(|(c, _)| *c == d)
        .map_or(pb::Dimension::Unspecified, |(_, p)| *p)
}

fn resolved_period(p: &Period) -> pb::ResolvedPeriod {
    pb::ResolvedPeriod {
        granularity: granularity_to(p.granularity).into(),
        label: p.label(),
        first_day: p.first.to_string(),
        last_day: p.last.to_string(),
        start: Some(timestamp(p.start())),
        end: Some(timestamp(p.end())),
        time_zone: p.tz.name().to_string(),
    }
}

fn status_to(r: Rag) -> pb::Status {
    match r {
        Rag::Green => pb::Status::Green,
        Rag::Amber => pb::Status::Amber,
        Rag::Red => pb::Status::Red,
        Rag::NoTarget => pb::Status::NoTarget,
        Rag::NoData => pb::Status::NoData,
    }
}

fn measurement(r: &Reading) -> pb::Measurement {
    pb::Measurement {
        value: r.value,
        target: r.target,
        status: status_to(r.status).into(),
        sample_size: r.sample,
    }
}

fn indicator_value(
    indicator: &Indicator,
    filters: &Filters,
    m: &Measured,
    breakdown: Option<Dimension>,
) -> pb::IndicatorValue {
    let meta = indicator_to_proto(indicator);
    pb::IndicatorValue {
        code: meta.code,
        name_en: meta.name_en,
        name_ar: meta.name_ar,
        unit: meta.unit,
        direction: meta.direction,
        period: Some(resolved_period(&m.period)),
        filters: Some(filters_to(filters)),
        measurement: Some(measurement(&m.overall)),
        breakdown_by: breakdown
            .map_or(pb::Dimension::Unspecified, dimension_to)
            .into(),
        breakdown: m
            .breakdown
            .iter()
            .map(|(key, r)| pb::BreakdownRow {
                key: key.clone(),
                measurement: Some(measurement(r)),
            })
            .collect(),
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
        .map(|d| i32::from(dimension_to(*d)))
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
