//! The scope rule: which applications and licenses a caller may see and act
//! on, and who may record what. Pure (it reads the caller identity and the
//! loaded row, nothing else), so the handlers and the commands apply the
//! same rule and a refusal reads the same wherever it comes from.
//!
//! - An operator of one municipality reaches that municipality's
//!   applications and licenses only; other callers are not held to a
//!   municipality.
//! - A partner reads the applications it was asked to clear.
//! - Something missing or out of scope is `NOT_FOUND` to callers who may know
//!   what does not exist and `PERMISSION_DENIED` to the others, so a refusal
//!   tells those held to their own objects nothing.

use baladiya_platform::auth::{CallerIdentity, Role};

use crate::error::LicensingError;
use crate::store::{ApplicationRow, LicenseRow};

/// The refusal for a `what` ("application", "license") that is missing or
/// outside the caller's scope.
pub fn out_of_reach(who: &CallerIdentity, what: &'static str) -> LicensingError {
    if who.may_know_absence() {
        LicensingError::NotFound(what)
    } else {
        LicensingError::OutOfScope(what)
    }
}

/// The application a caller acts on (a step, an issue): one of their
/// municipality.
pub fn application_to_act_on(
    who: &CallerIdentity,
    found: Option<ApplicationRow>,
) -> Result<ApplicationRow, LicensingError> {
    found
        .filter(|a| who.covers_municipality(&a.municipality_code))
        .ok_or_else(|| out_of_reach(who, "application"))
}

/// The application a caller reads: one of their municipality and, for a
/// partner, one it was asked to clear.
pub fn application_to_read(
    who: &CallerIdentity,
    found: Option<ApplicationRow>,
) -> Result<ApplicationRow, LicensingError> {
    found
        .filter(|a| {
            who.covers_municipality(&a.municipality_code)
                && (who.role != Role::Partner
                    || a.progress
                        .clearances
                        .iter()
                        .any(|c| Some(c.partner_code.as_str()) == who.partner.as_deref()))
        })
        .ok_or_else(|| out_of_reach(who, "application"))
}

/// The license a caller reads or acts on: one of their municipality.
pub fn license_in_scope(
    who: &CallerIdentity,
    found: Option<LicenseRow>,
) -> Result<LicenseRow, LicensingError> {
    found
        .filter(|l| who.covers_municipality(&l.municipality_code))
        .ok_or_else(|| out_of_reach(who, "license"))
}

/// The municipality a listing is held to: an operator of one municipality
/// lists that one (asking for another is refused); other callers list the
/// one they ask for (blank: all).
pub fn listed_municipality(
    who: &CallerIdentity,
    requested: &str,
) -> Result<String, LicensingError> {
    match (&who.role, &who.municipality) {
        (Role::Operator, Some(own)) if !requested.is_empty() && requested != own => Err(
            LicensingError::NotPermitted("operators see their own municipality only"),
        ),
        (Role::Operator, Some(own)) => Ok(own.clone()),
        _ => Ok(requested.to_string()),
    }
}

/// The partner body itself records its clearance (or an admin for it).
pub fn may_record_clearance(
    who: &CallerIdentity,
    partner_code: &str,
) -> Result<(), LicensingError> {
    let own = who.role == Role::Admin
        || (who.role == Role::Partner && who.partner.as_deref() == Some(partner_code));
    if own {
        Ok(())
    } else {
        Err(LicensingError::NotPermitted(
            "only the partner body records its own clearance",
        ))
    }
}

/// Municipal inspectors (operators, admins) record any compliance
/// inspection; a private operator, as a partner, records its own.
pub fn may_record_facility_inspection(
    who: &CallerIdentity,
    operator_code: &str,
    private_operator: bool,
) -> Result<(), LicensingError> {
    let allowed = match who.role {
        Role::Admin | Role::Operator => true,
        Role::Partner => private_operator && who.partner.as_deref() == Some(operator_code),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(LicensingError::NotPermitted(
            "inspections are recorded by municipal inspectors or the operator itself",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, partner: Option<&str>, municipality: Option<&str>) -> CallerIdentity {
        CallerIdentity {
            subject: "t".into(),
            role,
            partner: partner.map(Into::into),
            municipality: municipality.map(Into::into),
            channel: None,
        }
    }

    #[test]
    fn an_operator_of_one_municipality_lists_only_it() {
        let riyadh = caller(Role::Operator, None, Some("RUH"));
        assert_eq!(listed_municipality(&riyadh, "").expect("own"), "RUH");
        assert_eq!(listed_municipality(&riyadh, "RUH").expect("own"), "RUH");
        assert!(matches!(
            listed_municipality(&riyadh, "JED"),
            Err(LicensingError::NotPermitted(_))
        ));
        let admin = caller(Role::Admin, None, None);
        assert_eq!(listed_municipality(&admin, "JED").expect("any"), "JED");
    }

    #[test]
    fn only_callers_who_may_know_learn_that_something_is_missing() {
        let admin = caller(Role::Admin, None, None);
        assert!(matches!(
            out_of_reach(&admin, "license"),
            LicensingError::NotFound("license")
        ));
        let partner = caller(Role::Partner, Some("MOJ"), None);
        assert!(matches!(
            out_of_reach(&partner, "license"),
            LicensingError::OutOfScope("license")
        ));
    }

    #[test]
    fn a_private_operator_records_only_its_own_inspections() {
        let op = caller(Role::Partner, Some("ACME"), None);
        assert!(may_record_facility_inspection(&op, "ACME", true).is_ok());
        assert!(may_record_facility_inspection(&op, "OTHER", true).is_err());
        assert!(may_record_clearance(&op, "ACME").is_ok());
        assert!(may_record_clearance(&op, "MOJ").is_err());
        let channel = caller(Role::Channel, None, None);
        assert!(may_record_facility_inspection(&channel, "MUNICIPAL", false).is_err());
    }
}
