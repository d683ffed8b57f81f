//! `baladiya.kpi.v1` messages to the KPI domain and back: filters, days and
//! periods, dimensions, readings and indicators.

use baladiya_platform::error::{ApiError, Violations};
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::v1::Channel;
use baladiya_proto::kpi::v1 as pb;
use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::catalogue::{Catalogue, Dimension, Direction, Indicator, Target, TargetSource, Unit};
use crate::domain::{Filters, Measured, Rag, Reading};
use crate::period::{Granularity, Period};

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

pub fn filters_to(f: &Filters) -> pb::Filters {
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

/// The indicator `code` of `catalogue`, or an invalid `field` naming the
/// problem.
pub fn indicator_from(
    catalogue: &'static Catalogue,
    code: &str,
    field: &str,
) -> Result<&'static Indicator, ApiError> {
    if code.trim().is_empty() {
        return Err(ApiError::invalid_field(field, "is required"));
    }
    catalogue.get(code.trim()).ok_or_else(|| {
        ApiError::invalid_field(
            field,
            format!("'{code}' is not an indicator of the catalogue"),
        )
    })
}

/// A `YYYY-MM-DD` day, or an invalid `field`.
pub fn date_from(text: &str, field: &str) -> Result<NaiveDate, ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid_field(field, "is required (YYYY-MM-DD)"));
    }
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid_field(field, format!("'{text}' is not a YYYY-MM-DD date")))
}

pub fn period_from(p: Option<&pb::Period>, tz: Tz, field: &str) -> Result<Period, ApiError> {
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

pub fn granularity_from(g: pb::Granularity) -> Option<Granularity> {
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

pub fn dimension_from(d: pb::Dimension) -> Option<Dimension> {
    DIMENSIONS.iter().find(|(_, p)| *p == d).map(|(d, _)| *d)
}

fn dimension_to(d: Dimension) -> pb::Dimension {
    DIMENSIONS
        .iter()
        .find(|(c, _)| *c == d)
        .map_or(pb::Dimension::Unspecified, |(_, p)| *p)
}

pub fn resolved_period(p: &Period) -> pb::ResolvedPeriod {
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

pub fn measurement(r: &Reading) -> pb::Measurement {
    pb::Measurement {
        value: r.value,
        target: r.target,
        status: status_to(r.status).into(),
        sample_size: r.sample,
    }
}

pub fn indicator_value(
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

pub fn indicator_to_proto(i: &Indicator) -> pb::Indicator {
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
