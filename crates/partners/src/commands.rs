//! The partners service's state changes: validate (with lookups), write, and
//! emit the event, all in the caller's transaction. The gRPC handlers and the
//! seed loader both go through here, so seeded data obeys the same rules.

use baladiya_platform::error::{ApiError, Violations};
use baladiya_platform::events::{Event, EventType, Tx};
use baladiya_proto::partners::events::v1 as events;
use chrono::{DateTime, NaiveDate, Utc};

use crate::convert::{agreement_to_proto, calendar_to_proto, partner_to_proto};
use crate::domain::{self, Agreement, AgreementBody, CalendarRecord, Partner};
use crate::error::PartnersError;
use crate::store::{self, StoredCalendar};

pub const PARTNER_UPSERTED: EventType = EventType::new("partners", "partner", "upserted");
pub const AGREEMENT_PUBLISHED: EventType = EventType::new("partners", "agreement", "published");
pub const CALENDAR_CHANGED: EventType = EventType::new("partners", "calendar", "changed");

/// Creates or replaces a calendar and says which dates changed.
pub async fn upsert_calendar(
    tx: &mut Tx,
    record: &CalendarRecord,
    reason: &str,
    mut v: Violations,
) -> Result<StoredCalendar, PartnersError> {
    record.check("calendar.", &mut v);
    // Report worktime paths in the API's terms.
    let v = rename_paths(v);
    v.finish()?;
    let old = store::calendar_for_update(tx, &record.id).await?;
    let range = match &old {
        Some(old) => domain::changed_range(&old.record.spec, &record.spec),
        None => (None, None),
    };
    write_calendar(tx, record, range, reason).await
}

fn rename_paths(v: Violations) -> Violations {
    let mut out = Violations::new();
    if let Err(e) = v.finish() {
        for f in e.violations {
            let path = match f.field.strip_prefix("calendar.") {
                Some(rest) => crate::convert::api_path("calendar.", rest),
                None => f.field,
            };
            out.add(path, f.description);
        }
    }
    out
}

async fn write_calendar(
    tx: &mut Tx,
    record: &CalendarRecord,
    (from, to): (Option<NaiveDate>, Option<NaiveDate>),
    reason: &str,
) -> Result<StoredCalendar, PartnersError> {
    let now = tx.now();
    let revision = store::put_calendar(tx, record, now).await?;
    let calendar = calendar_to_proto(record, revision, now);
    tx.emit(
        Event::new(CALENDAR_CHANGED, &record.id, now).scoped(&[&record.id]),
        |meta| events::CalendarChanged {
            meta,
            calendar: Some(calendar),
            affected_start_date: from.map(|d| d.to_string()).unwrap_or_default(),
            affected_end_date: to.map(|d| d.to_string()).unwrap_or_default(),
            reason: reason.to_string(),
        },
    )
    .await?;
    Ok(StoredCalendar {
        record: record.clone(),
        revision,
        updated_at: now,
    })
}

/// Adds a holiday or an hours override to a calendar.
pub async fn add_calendar_exception(
    tx: &mut Tx,
    calendar_id: &str,
    change: Exception,
) -> Result<StoredCalendar, PartnersError> {
    let stored = store::calendar_for_update(tx, calendar_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format_args!("calendar {calendar_id}")))?;
    let mut record = stored.record;
    let (from, to, reason, path) = match change {
        Exception::Holiday(h) => {
            let r = (
                h.from,
                h.to,
                format!("holiday added: {}", h.name),
                "holiday",
            );
            record.spec.holidays.push(h);
            r
        }
        Exception::Hours(o) => {
            let r = (
                o.from,
                o.to,
                format!("hours changed: {}", o.name),
                "hours_override",
            );
            record.spec.overrides.push(o);
            r
        }
    };
    if let Err(problems) = record.spec.build() {
        let mut v = Violations::new();
        let holidays = record.spec.holidays.len() - 1;
        let overrides = record.spec.overrides.len().saturating_sub(1);
        for p in problems {
            // Problems with the new entry are reported against the request.
            let field = if let Some(rest) = p.field.strip_prefix(&format!("holidays[{holidays}]")) {
                crate::convert::api_path(path, rest)
            } else if let Some(rest) = p.field.strip_prefix(&format!("overrides[{overrides}]")) {
                crate::convert::api_path(path, rest)
            } else {
                crate::convert::api_path("calendar.", &p.field)
            };
            v.add(field, p.message);
        }
        v.finish()?;
    }
    let range = if matches!(path, "holiday") {
        // A substituted single day may move the observed day by up to 3 days.
        (
            from.checked_sub_days(chrono::Days::new(3)),
            to.checked_add_days(chrono::Days::new(3)),
        )
    } else {
        (Some(from), Some(to))
    };
    write_calendar(tx, &record, range, &reason).await
}

/// A late change to a calendar.
#[derive(Debug, Clone)]
pub enum Exception {
    Holiday(baladiya_worktime::Holiday),
    Hours(baladiya_worktime::HoursOverride),
}

/// Creates or replaces a partner.
pub async fn upsert_partner(
    tx: &mut Tx,
    partner: &Partner,
    mut v: Violations,
) -> Result<DateTime<Utc>, PartnersError> {
    partner.check("partner.", &mut v);
    if !partner.calendar_id.is_empty() && store::calendar(tx, &partner.calendar_id).await?.is_none()
    {
        v.add("partner.calendar_id", "is not a known calendar");
    }
    v.finish()?;
    let now = tx.now();
    store::put_partner(tx, partner, now).await?;
    tx.emit(
        Event::new(PARTNER_UPSERTED, &partner.code, now).scoped(&[&partner.code]),
        |meta| events::PartnerUpserted {
            meta,
            partner: Some(partner_to_proto(partner, now)),
        },
    )
    .await?;
    Ok(now)
}

/// Publishes the next agreement version of a partner.
pub async fn publish_agreement(
    tx: &mut Tx,
    partner_code: &str,
    effective_from: Option<DateTime<Utc>>,
    body: AgreementBody,
    published_by: &str,
    mut v: Violations,
) -> Result<Agreement, PartnersError> {
    v.check(
        effective_from.is_some(),
        "agreement.effective_from",
        "is required",
    );
    if let Some(from) = effective_from
        && !baladiya_worktime::instant_in_range(from)
    {
        v.add(
            "agreement.effective_from",
            baladiya_worktime::instant_range_message(),
        );
    }
    let known = store::calendar_ids(tx).await?;
    body.check("agreement.", &|id| known.contains(id), &mut v);
    if !store::lock_partner(tx, partner_code).await? {
        v.finish()?;
        return Err(ApiError::not_found(format_args!("partner {partner_code}")).into());
    }
    let versions = store::agreements(tx, partner_code).await?;
    if let (Some(latest), Some(from)) = (versions.first(), effective_from)
        && from <= latest.effective_from
    {
        v.add(
            "agreement.effective_from",
            format!(
                "must be after version {}'s effective_from ({}); versions never overlap",
                latest.version, latest.effective_from
            ),
        );
    }
    v.finish()?;
    let now = tx.now();
    let agreement = Agreement {
        partner_code: partner_code.to_string(),
        version: versions.first().map_or(1, |a| a.version + 1),
        effective_from: effective_from.unwrap_or(now),
        body,
        published_at: now,
        published_by: published_by.to_string(),
    };
    store::insert_agreement(tx, &agreement).await?;
    tx.emit(
        Event::new(AGREEMENT_PUBLISHED, partner_code, now).scoped(&[partner_code]),
        |meta| events::AgreementPublished {
            meta,
            agreement: Some(agreement_to_proto(&agreement)),
        },
    )
    .await?;
    Ok(agreement)
}
