//! Who may call what: one table, one row per RPC of every Baladiya service,
//! naming the roles that may call it and the scope each is held to.
//!
//! The auth interceptor checks the role against this table before a handler
//! runs (an RPC missing from the table is refused: the table fails closed,
//! and a test enumerates every method of the descriptor set against it). The
//! scope says what the handler then narrows the caller to: a partner to its
//! own cases, clocks and escalations; an operator of a municipality to that
//! municipality; a channel to what it submitted. Handlers enforce scopes on
//! the objects they load, and refuse an object out of scope the same way as
//! one that does not exist, so a refusal says nothing about existence.
//!
//! Admins may call every RPC; they are not repeated in the rows.

use crate::auth::{CallerIdentity, Role};
use crate::error::ApiError;

/// What a role is narrowed to once it may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything the RPC offers (reference data, or a role that sees all).
    All,
    /// A partner: only cases assigned to it, its clocks, escalations,
    /// clearances and inspections, its own scorecard.
    OwnPartner,
    /// An operator with a municipality: only that municipality's objects (an
    /// operator without one sees every municipality).
    OwnMunicipality,
    /// A channel: only what came in through its channel.
    OwnChannel,
}

/// One RPC's row.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Full gRPC path, `/package.Service/Method`.
    pub method: &'static str,
    /// The roles besides admin that may call it, each with its scope.
    pub grants: &'static [(Role, Scope)],
}

const fn row(method: &'static str, grants: &'static [(Role, Scope)]) -> Rule {
    Rule { method, grants }
}

use Role::{Analyst, Channel, Operator, Partner};
use Scope::{All, OwnChannel, OwnMunicipality, OwnPartner};

const ADMIN_ONLY: &[(Role, Scope)] = &[];
const ANYONE: &[(Role, Scope)] = &[
    (Channel, All),
    (Partner, All),
    (Operator, All),
    (Analyst, All),
];
const OPERATORS: &[(Role, Scope)] = &[(Operator, OwnMunicipality)];
const REFERENCE_READERS: &[(Role, Scope)] = &[(Partner, All), (Operator, All), (Analyst, All)];
const CASE_READERS: &[(Role, Scope)] = &[
    (Partner, OwnPartner),
    (Operator, OwnMunicipality),
    (Analyst, All),
];
const CASE_WORKERS: &[(Role, Scope)] = &[(Partner, OwnPartner), (Operator, OwnMunicipality)];
const REPORT_READERS: &[(Role, Scope)] = &[(Channel, OwnChannel), (Operator, OwnMunicipality)];
const APPLICANTS: &[(Role, Scope)] = &[(Channel, OwnChannel), (Operator, OwnMunicipality)];
/// Applications and licenses: a channel looks one up by its id or number
/// for the applicant it serves; a partner reads those it was asked to clear.
const APPLICATION_READERS: &[(Role, Scope)] = &[
    (Channel, All),
    (Partner, OwnPartner),
    (Operator, OwnMunicipality),
    (Analyst, All),
];
const APPLICATION_LISTERS: &[(Role, Scope)] = &[(Operator, OwnMunicipality), (Analyst, All)];
const KPI_READERS: &[(Role, Scope)] = &[
    (Partner, OwnPartner),
    (Operator, OwnMunicipality),
    (Analyst, All),
];

/// The policy. Keep it in proto order, one service after another.
pub const POLICY: &[Rule] = &[
    // baladiya.admin.v1.ClockService (mounted only with the manual clock)
    row("/baladiya.admin.v1.ClockService/GetTime", ANYONE),
    row("/baladiya.admin.v1.ClockService/SetTime", ADMIN_ONLY),
    row("/baladiya.admin.v1.ClockService/Advance", ADMIN_ONLY),
    // baladiya.admin.v1.AuditService
    row(
        "/baladiya.admin.v1.AuditService/ListAuditEvents",
        ADMIN_ONLY,
    ),
    // baladiya.intake.v1.IntakeService
    row(
        "/baladiya.intake.v1.IntakeService/SubmitReport",
        &[
            (Channel, OwnChannel),
            (Partner, All),
            (Operator, OwnMunicipality),
        ],
    ),
    row(
        "/baladiya.intake.v1.IntakeService/GetReport",
        REPORT_READERS,
    ),
    row(
        "/baladiya.intake.v1.IntakeService/ListReports",
        REPORT_READERS,
    ),
    // A citizen may rate through another channel than the one it reported on.
    row(
        "/baladiya.intake.v1.IntakeService/RateReport",
        &[(Channel, All)],
    ),
    row("/baladiya.intake.v1.IntakeService/ListCategories", ANYONE),
    // Personal data: read by those who must call the citizen back, audited.
    row(
        "/baladiya.intake.v1.IntakeService/GetReporterContact",
        OPERATORS,
    ),
    row(
        "/baladiya.intake.v1.IntakeService/UpsertCategory",
        &[(Operator, All)],
    ),
    // baladiya.kpi.v1.KpiService
    row("/baladiya.kpi.v1.KpiService/ListIndicators", KPI_READERS),
    row("/baladiya.kpi.v1.KpiService/GetIndicator", KPI_READERS),
    row("/baladiya.kpi.v1.KpiService/GetScorecard", KPI_READERS),
    row("/baladiya.kpi.v1.KpiService/GetTimeSeries", KPI_READERS),
    // baladiya.licensing.v1.LicensingService
    row(
        "/baladiya.licensing.v1.LicensingService/ListLicenseTypes",
        ANYONE,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/SubmitApplication",
        APPLICANTS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/GetApplication",
        APPLICATION_READERS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/ListApplications",
        APPLICATION_LISTERS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/ReturnForCorrection",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/ResubmitApplication",
        APPLICANTS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/RequestClearance",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/RecordClearance",
        &[(Partner, OwnPartner)],
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/ScheduleInspection",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/RecordInspection",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/ApproveApplication",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/RejectApplication",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/IssueLicense",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/GetLicense",
        &[(Channel, All), (Operator, OwnMunicipality), (Analyst, All)],
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/RenewLicense",
        APPLICANTS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/SuspendLicense",
        OPERATORS,
    ),
    row(
        "/baladiya.licensing.v1.LicensingService/RecordFacilityInspection",
        &[(Partner, OwnPartner), (Operator, OwnMunicipality)],
    ),
    // baladiya.partners.v1.PartnerService
    row(
        "/baladiya.partners.v1.PartnerService/ListPartners",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/GetPartner",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/UpsertPartner",
        &[(Operator, All)],
    ),
    row(
        "/baladiya.partners.v1.PartnerService/GetAgreement",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/ListAgreements",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/PublishAgreement",
        &[(Operator, All)],
    ),
    row(
        "/baladiya.partners.v1.PartnerService/GetCalendar",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/ListCalendars",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/UpsertCalendar",
        &[(Operator, All)],
    ),
    row(
        "/baladiya.partners.v1.PartnerService/AddCalendarException",
        &[(Operator, All)],
    ),
    row(
        "/baladiya.partners.v1.PartnerService/ResolveSlaTerms",
        REFERENCE_READERS,
    ),
    row(
        "/baladiya.partners.v1.PartnerService/ResolveClearanceTerms",
        REFERENCE_READERS,
    ),
    // baladiya.routing.v1.RoutingService
    row("/baladiya.routing.v1.RoutingService/GetCase", CASE_READERS),
    row(
        "/baladiya.routing.v1.RoutingService/ListCases",
        CASE_READERS,
    ),
    row(
        "/baladiya.routing.v1.RoutingService/AcknowledgeCase",
        &[(Partner, OwnPartner)],
    ),
    row(
        "/baladiya.routing.v1.RoutingService/StartWork",
        &[(Partner, OwnPartner)],
    ),
    row(
        "/baladiya.routing.v1.RoutingService/AddCaseNote",
        CASE_WORKERS,
    ),
    row(
        "/baladiya.routing.v1.RoutingService/PutCaseOnHold",
        CASE_WORKERS,
    ),
    row(
        "/baladiya.routing.v1.RoutingService/ResumeCase",
        CASE_WORKERS,
    ),
    row(
        "/baladiya.routing.v1.RoutingService/ResolveCase",
        CASE_WORKERS,
    ),
    row(
        "/baladiya.routing.v1.RoutingService/RejectCase",
        CASE_WORKERS,
    ),
    row("/baladiya.routing.v1.RoutingService/RerouteCase", OPERATORS),
    row(
        "/baladiya.routing.v1.RoutingService/ReopenCase",
        &[(Channel, All)],
    ),
    row("/baladiya.routing.v1.RoutingService/CloseCase", OPERATORS),
    row(
        "/baladiya.routing.v1.RoutingService/ListRoutingRules",
        &[(Operator, All), (Analyst, All)],
    ),
    row(
        "/baladiya.routing.v1.RoutingService/UpsertRoutingRule",
        &[(Operator, All)],
    ),
    row(
        "/baladiya.routing.v1.RoutingService/DeleteRoutingRule",
        &[(Operator, All)],
    ),
    row(
        "/baladiya.routing.v1.RoutingService/ExplainRouting",
        &[(Operator, All), (Analyst, All)],
    ),
    // baladiya.sla.v1.SlaService
    row("/baladiya.sla.v1.SlaService/GetClocks", CASE_READERS),
    row("/baladiya.sla.v1.SlaService/ListBreaches", CASE_READERS),
    row("/baladiya.sla.v1.SlaService/ListEscalations", CASE_READERS),
    row(
        "/baladiya.sla.v1.SlaService/AcknowledgeEscalation",
        CASE_WORKERS,
    ),
    row(
        "/baladiya.sla.v1.SlaService/PreviewClock",
        REFERENCE_READERS,
    ),
];

/// The row of `method` in `rules`.
pub fn rule<'a>(rules: &'a [Rule], method: &str) -> Option<&'a Rule> {
    rules.iter().find(|r| r.method == method)
}

/// The scope `who` is held to on `method`, or `PERMISSION_DENIED` if the
/// role may not call it (or nothing says who may).
pub fn authorize(rules: &[Rule], method: &str, who: &CallerIdentity) -> Result<Scope, ApiError> {
    let Some(rule) = rule(rules, method) else {
        return Err(ApiError::permission_denied(format!(
            "no policy allows {method}"
        )));
    };
    if who.role == Role::Admin {
        return Ok(Scope::All);
    }
    rule.grants
        .iter()
        .find(|(role, _)| *role == who.role)
        .map(|(_, scope)| *scope)
        .ok_or_else(|| {
            ApiError::permission_denied(format!(
                "the {} role may not call {}",
                who.role,
                method.rsplit('/').next().unwrap_or(method)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role) -> CallerIdentity {
        CallerIdentity {
            subject: "t".into(),
            role,
            partner: None,
            municipality: None,
            channel: None,
        }
    }

    #[test]
    fn roles_get_their_scope_admins_everything_and_unknown_methods_nothing() {
        let ack = "/baladiya.routing.v1.RoutingService/AcknowledgeCase";
        assert_eq!(
            authorize(POLICY, ack, &who(Role::Partner)).ok(),
            Some(Scope::OwnPartner)
        );
        assert!(authorize(POLICY, ack, &who(Role::Analyst)).is_err());
        assert_eq!(
            authorize(POLICY, ack, &who(Role::Admin)).ok(),
            Some(Scope::All)
        );
        assert!(authorize(POLICY, "/baladiya.x.v1.X/Y", &who(Role::Admin)).is_err());
    }

    /// Every RPC of every Baladiya service in the descriptor set has a row,
    /// and every row names an RPC that exists.
    #[test]
    fn the_policy_covers_exactly_the_rpcs_of_the_descriptor_set() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(baladiya_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut methods = Vec::new();
        for file in &set.file {
            let package = file.package();
            if !package.starts_with("baladiya.") {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        assert!(methods.len() > 60, "found only {methods:?}");
        let missing: Vec<&String> = methods
            .iter()
            .filter(|m| rule(POLICY, m).is_none())
            .collect();
        assert!(missing.is_empty(), "RPCs without a policy row: {missing:?}");
        let stale: Vec<&str> = POLICY
            .iter()
            .map(|r| r.method)
            .filter(|m| !methods.iter().any(|x| x == m))
            .collect();
        assert!(
            stale.is_empty(),
            "policy rows for RPCs that do not exist: {stale:?}"
        );
    }

    #[test]
    fn every_method_has_one_row() {
        let mut methods: Vec<&str> = POLICY.iter().map(|r| r.method).collect();
        methods.sort_unstable();
        let before = methods.len();
        methods.dedup();
        assert_eq!(before, methods.len(), "a method has two rows");
    }
}
