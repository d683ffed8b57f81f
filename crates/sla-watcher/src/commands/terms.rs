//! The terms a clock runs under, read from the partner replica: the
//! municipality's own promise on its government calendar for end-to-end and
//! decision clocks, the partner's agreement in force at the clock's start for
//! the others.

use std::collections::HashMap;
use std::time::Duration;

use baladiya_agreements::convert::priority_from_proto;
use baladiya_agreements::domain::AgreementBody;
use baladiya_worktime::Calendar;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::SlaConfig;
use crate::domain::derive::{ClockSpec, Metric};
use crate::domain::sla_clock::Terms;
use crate::error::SlaError;
use crate::store::{self, ClockRow, StoredLevel, SubjectFacts};

/// What a recomputation reads from the partner replica, read once: calendars
/// (built once; a calendar change recomputes every open subject on it) and
/// the agreements in force (a case's clocks mostly share one).
#[derive(Default)]
pub(super) struct Replica {
    calendars: HashMap<String, Calendar>,
    /// By (partner, instant): the version and body in force then, if any.
    agreements: HashMap<(String, DateTime<Utc>), Option<Agreement>>,
}

/// An agreement's version and body.
type Agreement = (i64, AgreementBody);

impl Replica {
    /// Calendar `id`, built.
    pub(super) async fn calendar(
        &mut self,
        conn: &mut PgConnection,
        id: &str,
    ) -> Result<&Calendar, SlaError> {
        if !self.calendars.contains_key(id) {
            let spec = store::calendar(conn, id)
                .await?
                .ok_or_else(|| SlaError::CalendarNotReplicated(id.to_string()))?;
            let built = spec.build().map_err(|v| SlaError::InvalidCalendar {
                id: id.to_string(),
                problems: format!("{v:?}"),
            })?;
            self.calendars.insert(id.to_string(), built);
        }
        Ok(&self.calendars[id])
    }

    /// The version and body of `partner`'s agreement in force at `at`.
    async fn agreement_at(
        &mut self,
        conn: &mut PgConnection,
        partner: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<&Agreement>, SlaError> {
        let key = (partner.to_string(), at);
        if !self.agreements.contains_key(&key) {
            let found = store::agreement_at(conn, partner, at).await?;
            self.agreements.insert(key.clone(), found);
        }
        Ok(self.agreements[&key].as_ref())
    }
}

/// The terms a stored clock runs under.
pub(super) fn terms_of(row: &ClockRow) -> Terms {
    Terms {
        target: Duration::from_secs(row.target_secs.max(0) as u64),
        warn_at: row.warn_at.clone(),
        ladder: row
            .ladder
            .iter()
            .map(|l| Duration::from_secs(l.delay_secs))
            .collect(),
    }
}

/// What a new clock runs under.
pub(super) struct ClockTerms {
    /// The partner (the municipality for a municipal clock).
    pub partner: String,
    /// 0 for a municipal clock.
    pub agreement_version: i64,
    pub calendar_id: String,
    pub terms: Terms,
    pub ladder: Vec<StoredLevel>,
}

/// The terms a new clock runs under; `None` when the partner's agreement has
/// no terms for it (no clock is kept then).
pub(super) async fn new_clock_terms(
    conn: &mut PgConnection,
    replica: &mut Replica,
    config: &SlaConfig,
    spec: &ClockSpec,
    facts: &SubjectFacts,
    start: DateTime<Utc>,
) -> Result<Option<ClockTerms>, SlaError> {
    if matches!(spec.metric, Metric::EndToEnd | Metric::Decision) {
        return municipal_terms(conn, replica, config, spec, facts)
            .await
            .map(Some);
    }
    let (version, body) = replica
        .agreement_at(conn, &spec.partner, start)
        .await?
        .cloned()
        .ok_or_else(|| SlaError::AgreementNotReplicated {
            partner: spec.partner.clone(),
            at: start,
        })?;
    let (target, calendar_id, warn_at) = if spec.metric == Metric::Clearance {
        let Some(c) = body.clearance_for(&facts.category_code) else {
            tracing::warn!(partner = %spec.partner, license_type = %facts.category_code, "no clearance terms; no clock");
            return Ok(None);
        };
        (c.within, c.calendar_id.clone(), c.warn_at.clone())
    } else {
        let (terms, _) = body
            .terms_for(&facts.category_code, priority_from_proto(facts.priority))
            .ok_or_else(|| SlaError::NoTerms {
                version,
                partner: spec.partner.clone(),
                category: facts.category_code.clone(),
            })?;
        let target = if spec.metric == Metric::Acknowledge {
            terms.acknowledge_within
        } else {
            terms.resolve_within
        };
        (target, terms.calendar_id.clone(), terms.warn_at.clone())
    };
    let cal = replica.calendar(conn, &calendar_id).await?;
    let ladder: Vec<StoredLevel> = body
        .ladder
        .iter()
        .map(|l| StoredLevel {
            level: l.level,
            delay_secs: cal.duration(l.delay_after_breach).as_secs(),
            contact: l.contact.clone(),
            webhook_url: l.webhook_url.clone(),
        })
        .collect();
    let terms = Terms {
        target: cal.duration(target),
        warn_at: baladiya_agreements::domain::warn_at_or_default(&warn_at),
        ladder: ladder
            .iter()
            .map(|l| Duration::from_secs(l.delay_secs))
            .collect(),
    };
    Ok(Some(ClockTerms {
        partner: spec.partner.clone(),
        agreement_version: version,
        calendar_id,
        terms,
        ladder,
    }))
}

/// The municipality's own promise (end-to-end and decision clocks), on its
/// government calendar.
async fn municipal_terms(
    conn: &mut PgConnection,
    replica: &mut Replica,
    config: &SlaConfig,
    spec: &ClockSpec,
    facts: &SubjectFacts,
) -> Result<ClockTerms, SlaError> {
    let calendar_id = config.end_to_end_calendar_of(&facts.municipality_code);
    let cal = replica.calendar(conn, &calendar_id).await?;
    let days = if spec.metric == Metric::Decision {
        facts.target_days.max(1) as u32
    } else {
        config.end_to_end_days
    };
    let target = cal.duration(baladiya_worktime::WorkingDuration { days, minutes: 0 });
    let terms = Terms {
        target,
        warn_at: baladiya_agreements::domain::DEFAULT_WARN_AT.to_vec(),
        ladder: Vec::new(),
    };
    Ok(ClockTerms {
        partner: facts.municipality_code.clone(),
        agreement_version: 0,
        calendar_id,
        terms,
        ladder: Vec::new(),
    })
}
