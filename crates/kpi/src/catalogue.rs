//! The indicator catalogue: `catalogue.toml`, embedded in the binary, parsed
//! and checked once. Keeping it as data means a target or a definition changes
//! with an edit an analyst can review, and every consumer (the API, the
//! projections, the scorecard) reads the same list.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::Deserialize;

/// The catalogue the binary ships with.
pub const BUILTIN_TOML: &str = include_str!("../catalogue.toml");

/// What an indicator's value counts or measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Count,
    Share,
    WorkingDays,
    WorkingHours,
    Score,
    Growth,
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Higher,
    Lower,
    /// A volume to watch: no better side, no target.
    Neutral,
}

/// A way an indicator can be filtered and broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Municipality,
    Partner,
    Channel,
    Category,
    LicenseType,
    Activity,
    Operator,
    EscalationLevel,
}

/// Where a target comes from when it is not one fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetSource {
    /// Each license type's own target in working days.
    LicenseTypeTargetDays,
}

/// A kind of fact the projections record, one row per event (and kind) with
/// the instant it happened, its dimensions and a value. Indicators are
/// computed from facts, so this is the vocabulary between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// A report was received; value 1 if it was linked as a duplicate, else 0.
    ReportReceived,
    /// A citizen rated a resolved report; value the score (1 to 5).
    Rating,
    /// A case changed status; value 1 if it is open after the change, 0 if
    /// resolved or closed. The latest one at an instant says if it is open.
    CaseStatus,
    /// A case was resolved; value 1.
    CaseResolved,
    /// A case was reopened; value 1.
    CaseReopened,
    /// An acknowledge clock ended; value 1 if met within its SLA, 0 if late.
    AckClock,
    /// An acknowledge clock ended; value its working hours.
    AckHours,
    /// A resolve clock ended; value 1 if met within its SLA, 0 if late.
    ResolveClock,
    /// A resolve clock ended; value its working hours.
    ResolveHours,
    /// A case's resolve clock changed; value 1 when it breached, 0 when it
    /// started, stopped or was cancelled. The latest one says if it is overdue.
    ResolveOverdue,
    /// An application's decision clock ended; value 1 within target, else 0.
    DecisionClock,
    /// An application's decision clock ended; value its working days.
    DecisionDays,
    /// An SLA clock breached; value 1.
    ClockBreached,
    /// An escalation was raised; value 1; its level is a dimension.
    Escalation,
    /// A license application was submitted; value 1.
    ApplicationReceived,
    /// A license application was rejected; value 1.
    ApplicationRejected,
    /// A license was issued (renewals are not); value 1.
    LicenseIssued,
    /// A facility inspection was recorded; value 1 if compliant, else 0.
    FacilityInspection,
    /// A facility inspection was recorded; value 1 if a private operator did it.
    InspectionByPrivateOperator,
}

impl Fact {
    /// Every kind, for checks and documentation.
    pub const ALL: [Fact; 19] = [
        Self::ReportReceived,
        Self::Rating,
        Self::CaseStatus,
        Self::CaseResolved,
        Self::CaseReopened,
        Self::AckClock,
        Self::AckHours,
        Self::ResolveClock,
        Self::ResolveHours,
        Self::ResolveOverdue,
        Self::DecisionClock,
        Self::DecisionDays,
        Self::ClockBreached,
        Self::Escalation,
        Self::ApplicationReceived,
        Self::ApplicationRejected,
        Self::LicenseIssued,
        Self::FacilityInspection,
        Self::InspectionByPrivateOperator,
    ];

    /// The kinds that record a state rather than an occurrence: each holds
    /// from its instant until the subject's next fact of the same kind (its
    /// `until`), which is what lets a backlog read only the states in force
    /// at an instant.
    pub const STATES: [Fact; 2] = [Self::CaseStatus, Self::ResolveOverdue];

    /// Whether it is one of [`Self::STATES`].
    pub fn is_state(self) -> bool {
        Self::STATES.contains(&self)
    }

    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReportReceived => "report_received",
            Self::Rating => "rating",
            Self::CaseStatus => "case_status",
            Self::CaseResolved => "case_resolved",
            Self::CaseReopened => "case_reopened",
            Self::AckClock => "ack_clock",
            Self::AckHours => "ack_hours",
            Self::ResolveClock => "resolve_clock",
            Self::ResolveHours => "resolve_hours",
            Self::ResolveOverdue => "resolve_overdue",
            Self::DecisionClock => "decision_clock",
            Self::DecisionDays => "decision_days",
            Self::ClockBreached => "clock_breached",
            Self::Escalation => "escalation",
            Self::ApplicationReceived => "application_received",
            Self::ApplicationRejected => "application_rejected",
            Self::LicenseIssued => "license_issued",
            Self::FacilityInspection => "facility_inspection",
            Self::InspectionByPrivateOperator => "inspection_by_private_operator",
        }
    }

    /// The dimensions its rows carry (a case's channel is looked up through
    /// its report).
    pub fn dimensions(self) -> &'static [Dimension] {
        use Dimension::*;
        match self {
            Self::ReportReceived => &[Municipality, Channel, Category],
            Self::Rating
            | Self::CaseStatus
            | Self::CaseResolved
            | Self::CaseReopened
            | Self::AckClock
            | Self::AckHours
            | Self::ResolveClock
            | Self::ResolveHours
            | Self::ResolveOverdue
            | Self::ClockBreached => &[Municipality, Partner, Channel, Category],
            Self::Escalation => &[Municipality, Partner, Channel, Category, EscalationLevel],
            Self::DecisionClock
            | Self::DecisionDays
            | Self::ApplicationReceived
            | Self::ApplicationRejected
            | Self::LicenseIssued => &[Municipality, LicenseType],
            Self::FacilityInspection | Self::InspectionByPrivateOperator => {
                &[Municipality, Activity, Operator]
            }
        }
    }
}

/// How an indicator's value is computed from facts in a period.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Measure {
    /// How many facts.
    Count { fact: Fact },
    /// The mean of 0/1 values: the share of facts with value 1.
    Share { fact: Fact },
    /// The mean of the values.
    Mean { fact: Fact },
    /// The exact median (the mean of the two middle values for an even count).
    Median { fact: Fact },
    /// The exact percentile by nearest rank: the smallest value with at least
    /// `q` of the values at or below it.
    Percentile { fact: Fact, q: f64 },
    /// Numerator facts over denominator facts, both counted in the period.
    Ratio { numerator: Fact, denominator: Fact },
    /// Subjects whose latest `status` fact at the end of the period is 1 (and,
    /// with `overdue`, whose latest `overdue` fact is 1 too).
    Backlog { status: Fact, overdue: Option<Fact> },
    /// (count in the period - count a year earlier) / count a year earlier.
    Growth { fact: Fact },
}

impl Measure {
    /// The facts it reads.
    pub fn facts(&self) -> Vec<Fact> {
        match *self {
            Self::Count { fact }
            | Self::Share { fact }
            | Self::Mean { fact }
            | Self::Median { fact }
            | Self::Percentile { fact, .. }
            | Self::Growth { fact } => vec![fact],
            Self::Ratio {
                numerator,
                denominator,
            } => vec![numerator, denominator],
            Self::Backlog { status, overdue } => std::iter::once(status).chain(overdue).collect(),
        }
    }
}

/// The target an indicator is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    Value(f64),
    From(TargetSource),
}

/// One indicator as written in the catalogue file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    code: String,
    name_en: String,
    name_ar: String,
    definition: String,
    unit: Unit,
    direction: Direction,
    target: Option<f64>,
    target_from: Option<TargetSource>,
    amber_tolerance: Option<f64>,
    dimensions: Vec<Dimension>,
    #[serde(default)]
    target_note: String,
    measure: Measure,
    #[serde(default)]
    only_subjects_with: Option<Fact>,
    #[serde(default)]
    license_types: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    indicator: Vec<Entry>,
}

/// One checked indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    /// `<domain>.<name>`.
    pub code: String,
    pub name_en: String,
    pub name_ar: String,
    pub definition: String,
    pub unit: Unit,
    pub direction: Direction,
    pub target: Option<Target>,
    /// AMBER when the value misses the target by no more than this fraction
    /// of it; 0 without a target.
    pub amber_tolerance: f64,
    /// Sorted, without repeats.
    pub dimensions: Vec<Dimension>,
    pub target_note: String,
    /// How the value is computed.
    pub measure: Measure,
    /// Only facts whose subject also has a fact of this kind (for example,
    /// decision clocks of applications that ended in an issued license).
    pub only_subjects_with: Option<Fact>,
    /// Only facts of these license types (empty: all).
    pub license_types: Vec<String>,
}

impl Indicator {
    /// The part of the code before the first dot.
    pub fn domain(&self) -> &str {
        self.code.split_once('.').map_or("", |(domain, _)| domain)
    }
}

/// The domains indicators belong to.
pub const DOMAINS: [&str; 6] = [
    "licensing",
    "inspections",
    "complaints",
    "partners",
    "citizens",
    "business",
];

/// A catalogue that cannot be used, naming the indicator and the field.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CatalogueError {
    #[error("the catalogue is not valid TOML: {0}")]
    Syntax(String),
    #[error("indicator {index} ({code}): {field} {problem}")]
    Invalid {
        index: usize,
        code: String,
        field: &'static str,
        problem: String,
    },
}

/// The checked catalogue, ordered by code.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    indicators: Vec<Indicator>,
}

impl Catalogue {
    /// The catalogue embedded in the binary, parsed once.
    pub fn builtin() -> Result<&'static Self, CatalogueError> {
        static BUILTIN: LazyLock<Result<Catalogue, CatalogueError>> =
            LazyLock::new(|| Catalogue::parse(BUILTIN_TOML));
        BUILTIN.as_ref().map_err(Clone::clone)
    }

    /// Parses and checks a catalogue file.
    pub fn parse(text: &str) -> Result<Self, CatalogueError> {
        let file: File = toml::from_str(text).map_err(|e| CatalogueError::Syntax(e.to_string()))?;
        let mut seen = BTreeSet::new();
        let mut indicators = Vec::with_capacity(file.indicator.len());
        for (index, entry) in file.indicator.into_iter().enumerate() {
            let indicator = check(index, entry)?;
            if !seen.insert(indicator.code.clone()) {
                return Err(invalid(index, &indicator.code, "code", "is repeated"));
            }
            indicators.push(indicator);
        }
        indicators.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(Self { indicators })
    }

    /// Every indicator, ordered by code.
    pub fn indicators(&self) -> &[Indicator] {
        &self.indicators
    }

    /// One indicator by code.
    pub fn get(&self, code: &str) -> Option<&Indicator> {
        self.indicators
            .binary_search_by(|i| i.code.as_str().cmp(code))
            .ok()
            .map(|at| &self.indicators[at])
    }
}

fn invalid(index: usize, code: &str, field: &'static str, problem: &str) -> CatalogueError {
    CatalogueError::Invalid {
        index,
        code: code.to_string(),
        field,
        problem: problem.to_string(),
    }
}

fn check(index: usize, entry: Entry) -> Result<Indicator, CatalogueError> {
    let code = entry.code.trim().to_string();
    let fail = |field, problem: &str| invalid(index, &code, field, problem);
    let (domain, name) = code
        .split_once('.')
        .ok_or_else(|| fail("code", "must be <domain>.<name>"))?;
    if !DOMAINS.contains(&domain) {
        return Err(fail(
            "code",
            &format!("has an unknown domain, expected one of {DOMAINS:?}"),
        ));
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(fail(
            "code",
            "must name the indicator in lower_snake_case after the domain",
        ));
    }
    for (field, value) in [
        ("name_en", &entry.name_en),
        ("name_ar", &entry.name_ar),
        ("definition", &entry.definition),
    ] {
        if value.trim().is_empty() {
            return Err(fail(field, "is required"));
        }
    }
    let target = match (entry.target, entry.target_from) {
        (Some(_), Some(_)) => return Err(fail("target", "and target_from cannot both be set")),
        (Some(value), None) if !value.is_finite() => {
            return Err(fail("target", "must be a number"));
        }
        (Some(value), None) => Some(Target::Value(value)),
        (None, Some(source)) => Some(Target::From(source)),
        (None, None) => None,
    };
    if let Some(Target::Value(value)) = target {
        let in_range = match entry.unit {
            Unit::Share => (0.0..=1.0).contains(&value),
            Unit::Score => (1.0..=5.0).contains(&value),
            Unit::Growth => value > -1.0,
            Unit::Count | Unit::WorkingDays | Unit::WorkingHours => value >= 0.0,
        };
        if !in_range {
            return Err(fail("target", "is out of range for the unit"));
        }
    }
    if entry.direction == Direction::Neutral && target.is_some() {
        return Err(fail("target", "cannot be set on a neutral indicator"));
    }
    let amber_tolerance = match (target, entry.amber_tolerance) {
        (Some(_), Some(t)) if t.is_finite() && (0.0..=1.0).contains(&t) => t,
        (Some(_), Some(_)) => return Err(fail("amber_tolerance", "must be between 0 and 1")),
        (Some(_), None) => return Err(fail("amber_tolerance", "is required with a target")),
        (None, Some(_)) => return Err(fail("amber_tolerance", "needs a target")),
        (None, None) => 0.0,
    };
    if entry.dimensions.is_empty() {
        return Err(fail("dimensions", "must name at least one dimension"));
    }
    let mut dimensions = entry.dimensions;
    dimensions.sort();
    dimensions.dedup();
    for fact in entry.measure.facts() {
        if let Some(d) = dimensions.iter().find(|d| !fact.dimensions().contains(d)) {
            return Err(fail(
                "dimensions",
                &format!("has {d:?}, which {} facts do not carry", fact.as_str()),
            ));
        }
    }
    if let Measure::Percentile { q, .. } = entry.measure
        && !(q > 0.0 && q < 1.0)
    {
        return Err(fail("measure", "q must be between 0 and 1"));
    }
    if let Measure::Backlog { .. } = entry.measure
        && let Some(f) = entry.measure.facts().into_iter().find(|f| !f.is_state())
    {
        return Err(fail(
            "measure",
            &format!("a backlog reads states, and {} is not one", f.as_str()),
        ));
    }
    let measure_facts = entry.measure.facts();
    if !entry.license_types.is_empty()
        && !measure_facts
            .iter()
            .all(|f| f.dimensions().contains(&Dimension::LicenseType))
    {
        return Err(fail("license_types", "needs facts with a license type"));
    }
    Ok(Indicator {
        code,
        name_en: entry.name_en.trim().to_string(),
        name_ar: entry.name_ar.trim().to_string(),
        definition: entry.definition.trim().to_string(),
        unit: entry.unit,
        direction: entry.direction,
        target,
        amber_tolerance,
        dimensions,
        target_note: entry.target_note.trim().to_string(),
        measure: entry.measure,
        only_subjects_with: entry.only_subjects_with,
        license_types: entry.license_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
[[indicator]]
code = "inspections.facility_compliance_rate"
name_en = "Facility compliance rate"
name_ar = "نسبة امتثال المنشآت"
definition = "Compliant inspections over all inspections."
unit = "share"
direction = "higher"
target = 0.9
amber_tolerance = 0.05
dimensions = ["operator", "municipality", "operator"]
measure = { kind = "share", fact = "facility_inspection" }
"#;

    #[test]
    fn the_builtin_catalogue_covers_every_required_indicator() {
        let catalogue = Catalogue::builtin().expect("builtin catalogue");
        for code in [
            "licensing.median_days_to_license",
            "licensing.share_within_target",
            "licensing.applications_received",
            "licensing.licenses_issued",
            "licensing.applications_rejected",
            "inspections.facility_compliance_rate",
            "inspections.private_operator_share",
            "complaints.acknowledged_within_sla",
            "complaints.resolved_within_sla",
            "complaints.median_hours_to_acknowledge",
            "complaints.p90_hours_to_acknowledge",
            "complaints.median_hours_to_resolve",
            "complaints.p90_hours_to_resolve",
            "complaints.open_backlog",
            "complaints.overdue_backlog",
            "complaints.reopen_rate",
            "complaints.duplicate_rate",
            "complaints.volume",
            "partners.breaches",
            "partners.escalations",
            "citizens.average_satisfaction",
            "citizens.rating_response_rate",
            "business.new_commercial_licenses",
            "business.new_commercial_licenses_growth",
        ] {
            assert!(catalogue.get(code).is_some(), "{code} is missing");
        }
        let codes: Vec<_> = catalogue.indicators().iter().map(|i| &i.code).collect();
        assert!(codes.is_sorted());
        let compliance = catalogue
            .get("inspections.facility_compliance_rate")
            .unwrap();
        assert_eq!(compliance.target, Some(Target::Value(0.9)));
        assert_eq!(compliance.domain(), "inspections");
        assert_eq!(
            catalogue
                .get("licensing.median_days_to_license")
                .unwrap()
                .target,
            Some(Target::From(TargetSource::LicenseTypeTargetDays))
        );
        assert_eq!(
            catalogue
                .get("business.new_commercial_licenses_growth")
                .unwrap()
                .target,
            Some(Target::Value(0.1))
        );
    }

    #[test]
    fn dimensions_are_sorted_without_repeats() {
        let catalogue = Catalogue::parse(ONE).unwrap();
        assert_eq!(
            catalogue.indicators()[0].dimensions,
            [Dimension::Municipality, Dimension::Operator]
        );
    }

    fn problem(text: &str) -> (&'static str, String) {
        match Catalogue::parse(text).expect_err("invalid") {
            CatalogueError::Invalid { field, problem, .. } => (field, problem),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_bad_entry_is_named_by_field() {
        assert_eq!(problem(&ONE.replace("inspections.", "roads.")).0, "code");
        assert_eq!(
            problem(&ONE.replace("compliance_rate", "Compliance")).0,
            "code"
        );
        assert_eq!(
            problem(&ONE.replace("target = 0.9", "target = 1.5")).0,
            "target"
        );
        assert_eq!(
            problem(&ONE.replace("direction = \"higher\"", "direction = \"neutral\"")).0,
            "target"
        );
        assert_eq!(
            problem(&ONE.replace("amber_tolerance = 0.05\n", "")).0,
            "amber_tolerance"
        );
        assert_eq!(
            problem(&ONE.replace("target = 0.9\n", "")),
            ("amber_tolerance", "needs a target".to_string())
        );
        assert_eq!(
            problem(&ONE.replace(
                "target = 0.9",
                "target = 0.9\ntarget_from = \"license_type_target_days\""
            ))
            .0,
            "target"
        );
        assert_eq!(
            problem(&ONE.replace("name_ar = \"نسبة امتثال المنشآت\"", "name_ar = \" \"")).0,
            "name_ar"
        );
        assert_eq!(
            problem(&ONE.replace("[\"operator\", \"municipality\", \"operator\"]", "[]")).0,
            "dimensions"
        );
        assert_eq!(
            problem(&format!("{ONE}{ONE}")),
            ("code", "is repeated".to_string())
        );
        assert_eq!(
            problem(&ONE.replace("\"operator\", \"municipality\"", "\"channel\"")).0,
            "dimensions"
        );
        assert_eq!(
            problem(&ONE.replace(
                "{ kind = \"share\", fact = \"facility_inspection\" }",
                "{ kind = \"backlog\", status = \"facility_inspection\" }"
            )),
            (
                "measure",
                "a backlog reads states, and facility_inspection is not one".to_string()
            )
        );
        assert!(matches!(
            Catalogue::parse(&ONE.replace("unit = \"share\"", "unit = \"percent\"")),
            Err(CatalogueError::Syntax(_))
        ));
    }
}
