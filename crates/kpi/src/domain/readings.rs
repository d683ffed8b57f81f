//! Readings and who may see them: a value against its target ([`Rag`]),
//! the filters an indicator is measured under, a measured period, whose
//! scorecard, and the policy's scopes applied to a caller. Pure.

use baladiya_platform::auth::{CallerIdentity, Role};

use crate::catalogue::{Dimension, Indicator};
use crate::error::KpiError;
use crate::period::Period;

/// A value against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rag {
    Green,
    Amber,
    Red,
    /// A value, but no target to hold it to.
    NoTarget,
    /// Nothing measured.
    NoData,
}

impl Rag {
    /// The status of `value` for `indicator` against `target`.
    pub fn of(indicator: &Indicator, value: Option<f64>, target: Option<f64>) -> Self {
        use crate::catalogue::Direction;
        let Some(value) = value else {
            return Self::NoData;
        };
        let Some(target) = target else {
            return Self::NoTarget;
        };
        let slack = (target * indicator.amber_tolerance).abs();
        let (met, near) = match indicator.direction {
            Direction::Higher => (value >= target, value >= target - slack),
            Direction::Lower => (value <= target, value <= target + slack),
            Direction::Neutral => return Self::NoTarget,
        };
        if met {
            Self::Green
        } else if near {
            Self::Amber
        } else {
            Self::Red
        }
    }
}

/// One measured value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: Option<f64>,
    pub target: Option<f64>,
    pub status: Rag,
    pub sample: u64,
}

/// The facts to count: each set field narrows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub municipality: Option<String>,
    pub partner: Option<String>,
    /// A channel's proto name, e.g. `CHANNEL_BALADY_PORTAL`.
    pub channel: Option<String>,
    pub category: Option<String>,
    pub license_type: Option<String>,
    pub activity: Option<String>,
    pub operator: Option<String>,
    pub level: Option<i32>,
}

impl Filters {
    /// The set filters with their dimension and request field name.
    pub fn set(&self) -> Vec<(Dimension, &'static str, String)> {
        let text = [
            (
                Dimension::Municipality,
                "municipality_code",
                &self.municipality,
            ),
            (Dimension::Partner, "partner_code", &self.partner),
            (Dimension::Channel, "channel", &self.channel),
            (Dimension::Category, "category_code", &self.category),
            (
                Dimension::LicenseType,
                "license_type_code",
                &self.license_type,
            ),
            (Dimension::Activity, "activity", &self.activity),
            (Dimension::Operator, "operator_code", &self.operator),
        ];
        let mut out: Vec<_> = text
            .into_iter()
            .filter_map(|(d, field, v)| v.clone().map(|v| (d, field, v)))
            .collect();
        if let Some(level) = self.level {
            out.push((
                Dimension::EscalationLevel,
                "escalation_level",
                level.to_string(),
            ));
        }
        out
    }

    /// Every set filter `indicator` cannot apply, as (field, problem).
    pub fn unsupported(&self, indicator: &Indicator) -> Vec<(&'static str, String)> {
        self.set()
            .into_iter()
            .filter(|(d, _, _)| !indicator.dimensions.contains(d))
            .map(|(_, field, _)| (field, format!("is not a dimension of {}", indicator.code)))
            .collect()
    }
}

/// An indicator measured for a period, overall and by a dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub period: Period,
    pub overall: Reading,
    /// (dimension value, reading), ordered by value.
    pub breakdown: Vec<(String, Reading)>,
}

/// Whose scorecard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Municipality(String),
    Partner(String),
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
pub fn narrow_to_scope(
    who: &CallerIdentity,
    indicator: &Indicator,
    filters: &mut Filters,
) -> Result<(), KpiError> {
    let (own, set, what) = match who.role {
        Role::Partner => {
            if !indicator.dimensions.contains(&Dimension::Partner) {
                return Err(KpiError::NotMeasuredPerPartner(indicator.code.clone()));
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
        return Err(KpiError::OnlyOwnIndicators(what));
    }
    *set = Some(own);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Catalogue, Fact};

    fn indicator(code: &str) -> &'static Indicator {
        Catalogue::builtin().unwrap().get(code).unwrap()
    }

    #[test]
    fn rag_follows_direction_and_tolerance() {
        let compliance = indicator("inspections.facility_compliance_rate"); // 0.9, 5%
        assert_eq!(Rag::of(compliance, Some(0.95), Some(0.9)), Rag::Green);
        assert_eq!(Rag::of(compliance, Some(0.9), Some(0.9)), Rag::Green);
        assert_eq!(Rag::of(compliance, Some(0.86), Some(0.9)), Rag::Amber);
        assert_eq!(Rag::of(compliance, Some(0.85), Some(0.9)), Rag::Red);
        assert_eq!(Rag::of(compliance, None, Some(0.9)), Rag::NoData);
        let median = indicator("licensing.median_days_to_license"); // lower, 20%
        assert_eq!(Rag::of(median, Some(15.0), Some(15.0)), Rag::Green);
        assert_eq!(Rag::of(median, Some(18.0), Some(15.0)), Rag::Amber);
        assert_eq!(Rag::of(median, Some(18.5), Some(15.0)), Rag::Red);
        assert_eq!(Rag::of(median, Some(4.0), None), Rag::NoTarget);
        let volume = indicator("complaints.volume");
        assert_eq!(Rag::of(volume, Some(10.0), None), Rag::NoTarget);
    }

    /// The fact kinds the catalogue's indicators read.
    fn facts_read(catalogue: &Catalogue) -> Vec<Fact> {
        let mut out: Vec<Fact> = catalogue
            .indicators()
            .iter()
            .flat_map(|i| i.measure.facts().into_iter().chain(i.only_subjects_with))
            .collect();
        out.sort_by_key(|f| f.as_str());
        out.dedup();
        out
    }

    #[test]
    fn every_fact_kind_feeds_some_indicator() {
        let read = facts_read(Catalogue::builtin().unwrap());
        for f in Fact::ALL {
            assert!(
                read.contains(&f),
                "{} is projected but never read",
                f.as_str()
            );
        }
    }

    #[test]
    fn filters_outside_an_indicators_dimensions_are_named() {
        let f = Filters {
            channel: Some("CHANNEL_KIOSK".into()),
            municipality: Some("RIYADH".into()),
            ..Filters::default()
        };
        let problems = f.unsupported(indicator("licensing.licenses_issued"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "channel");
        assert!(f.unsupported(indicator("complaints.volume")).is_empty());
    }
}
