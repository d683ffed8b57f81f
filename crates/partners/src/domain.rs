//! Partners as pure data, with the rules that make them valid. No IO here.
//! Calendars and agreements are `baladiya_agreements::domain`'s, re-exported.

use std::collections::HashSet;

use baladiya_platform::error::Violations;
use serde::{Deserialize, Serialize};

pub use baladiya_agreements::domain::{
    Agreement, AgreementBody, CalendarRecord, Clearance, DEFAULT_WARN_AT, Level, Priority, Terms,
    changed_range, in_force, valid_calendar_id, warn_at_or_default,
};

/// What kind of body a partner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerKind {
    Ministry,
    MunicipalDepartment,
    Utility,
    PrivateOperator,
}

impl PartnerKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ministry => "ministry",
            Self::MunicipalDepartment => "municipal_department",
            Self::Utility => "utility",
            Self::PrivateOperator => "private_operator",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ministry,
            Self::MunicipalDepartment,
            Self::Utility,
            Self::PrivateOperator,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Who is told at an escalation level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub level: u32,
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
}

/// A body that acts on routed cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    pub code: String,
    pub name_ar: String,
    pub name_en: String,
    pub kind: PartnerKind,
    #[serde(default)]
    pub contacts: Vec<Contact>,
    pub calendar_id: String,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// Partner codes: `MOJ`, `MUN-ROADS`: uppercase letters, digits, `-`, `_`.
pub fn valid_partner_code(code: &str) -> bool {
    (2..=32).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_uppercase())
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Partner {
    /// Checks everything that needs no lookups; field paths start with `prefix`.
    pub fn check(&self, prefix: &str, v: &mut Violations) {
        v.check(
            valid_partner_code(&self.code),
            &format!("{prefix}code"),
            "must be 2-32 characters: uppercase letters, digits, '-' or '_', starting with a letter",
        );
        v.require(&self.name_ar, &format!("{prefix}name.ar"));
        v.require(&self.name_en, &format!("{prefix}name.en"));
        v.check(
            !self.calendar_id.is_empty(),
            &format!("{prefix}calendar_id"),
            "is required",
        );
        let mut levels = HashSet::new();
        for (i, c) in self.contacts.iter().enumerate() {
            v.check(
                c.level >= 1,
                &format!("{prefix}contacts[{i}].level"),
                "must be 1 or more",
            );
            v.check(
                !c.name.trim().is_empty(),
                &format!("{prefix}contacts[{i}].name"),
                "is required",
            );
            v.check(
                c.email.is_empty() || (c.email.contains('@') && !c.email.contains(' ')),
                &format!("{prefix}contacts[{i}].email"),
                "is not an e-mail address",
            );
            if !levels.insert(c.level) {
                v.add(format!("{prefix}contacts[{i}].level"), "duplicate level");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked() {
        assert!(valid_partner_code("MUN-ROADS"));
        assert!(!valid_partner_code("moj"));
        assert!(valid_calendar_id("24x7"));
        assert!(!valid_calendar_id("SA GOV"));
    }
}
