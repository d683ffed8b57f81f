//! The watcher's pure rules, no IO: how one SLA clock runs on a calendar
//! ([`sla_clock`]), which clocks a subject has from its event log
//! ([`derive`]), which timers a computed clock needs, and what a caller is
//! limited to seeing.
//!
//! One meaning per word in this crate: a *clock* is always an SLA clock (the
//! API's `GetClocks`); the platform's source of the current instant is the
//! *time* source (`baladiya_platform::clock::Clock`, held as `time`).

pub mod derive;
pub mod sla_clock;

use baladiya_platform::auth::{CallerIdentity, Role};
use chrono::{DateTime, Utc};

use sla_clock::Computed;

/// A timer a computed clock needs: its kind (`warning:<i>`, `breach`,
/// `escalation:<level>`), its order at equal instants, and when it is due.
pub type WantedTimer = (String, i32, DateTime<Utc>);

/// The timers a computed clock needs.
pub fn wanted_timers(c: &Computed) -> Vec<WantedTimer> {
    let mut out = Vec::new();
    for (i, w) in c.warnings.iter().enumerate() {
        if let Some(due) = w {
            out.push((format!("warning:{i}"), i as i32, *due));
        }
    }
    if let Some(due) = c.breach {
        out.push(("breach".to_string(), 100, due));
    }
    for (i, e) in c.escalations.iter().enumerate() {
        if let Some(due) = e {
            out.push((format!("escalation:{}", i + 1), 200 + i as i32, *due));
        }
    }
    out
}

/// `warning`, `breach` or `escalation`: a timer kind without its number.
pub fn timer_family(kind: &str) -> &str {
    kind.split(':').next().unwrap_or(kind)
}

/// The fraction of the target a `warning:<i>` timer stands for, given the
/// clock's `warn_at` fractions; `None` for other kinds.
pub fn warning_fraction(warn_at: &[f64], kind: &str) -> Option<f64> {
    let i = kind.strip_prefix("warning:")?;
    Some(
        i.parse::<usize>()
            .ok()
            .and_then(|i| warn_at.get(i))
            .copied()
            .unwrap_or_default(),
    )
}

/// What a caller is limited to (the policy's scopes): a partner to its own
/// clocks and escalations, an operator of a municipality to that one's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerScope {
    pub partner: Option<String>,
    pub municipality: Option<String>,
}

impl CallerScope {
    /// The scope of `who`.
    pub fn of(who: &CallerIdentity) -> Self {
        match who.role {
            Role::Partner => Self {
                partner: Some(who.partner.clone().unwrap_or_default()),
                municipality: None,
            },
            Role::Operator => Self {
                partner: None,
                municipality: who.municipality.clone(),
            },
            _ => Self::default(),
        }
    }

    /// Whether something of `partner` in `municipality` is within the scope.
    pub fn covers(&self, partner: &str, municipality: &str) -> bool {
        self.partner.as_deref().is_none_or(|p| p == partner)
            && self
                .municipality
                .as_deref()
                .is_none_or(|m| m == municipality)
    }
}
