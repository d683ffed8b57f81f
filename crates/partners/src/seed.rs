//! Seed data from the TOML files `partners/calendars.toml`, `partners.toml` and
//! `agreements.toml` (shipped in the binary from `deploy/seed/`, each replaced
//! by `seed.dir`'s where it has one). Only what is missing
//! is added (a calendar or partner by id, an agreement for a partner with none),
//! so operators' later edits survive restarts. Everything goes through the same
//! operations and validation as the API, in one transaction.

use std::path::Path;

use baladiya_platform::error::Violations;
use baladiya_platform::events::Emitter;
use baladiya_platform::seed::{SeedError, SeedFiles};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;

use crate::domain::{AgreementBody, CalendarRecord, Partner};
use crate::error::PartnersError;
use crate::{commands, store};

#[derive(Debug, Deserialize)]
struct CalendarsFile {
    #[serde(default)]
    calendar: Vec<CalendarRecord>,
}

#[derive(Debug, Deserialize)]
struct PartnersFile {
    #[serde(default)]
    partner: Vec<Partner>,
}

#[derive(Debug, Deserialize)]
struct SeedAgreement {
    partner_code: String,
    effective_from: DateTime<Utc>,
    #[serde(flatten)]
    body: AgreementBody,
}

#[derive(Debug, Deserialize)]
struct AgreementsFile {
    #[serde(default)]
    agreement: Vec<SeedAgreement>,
}

const CALENDARS: &str = "partners/calendars.toml";
const PARTNERS: &str = "partners/partners.toml";
const AGREEMENTS: &str = "partners/agreements.toml";
const SHIPPED_CALENDARS: &str = include_str!("../../../deploy/seed/partners/calendars.toml");
const SHIPPED_PARTNERS: &str = include_str!("../../../deploy/seed/partners/partners.toml");
const SHIPPED_AGREEMENTS: &str = include_str!("../../../deploy/seed/partners/agreements.toml");

/// A command's failure on `what` in `file`: the database's as it is, a
/// refusal with its fields.
fn in_file(file: &Path, what: &str) -> impl Fn(PartnersError) -> SeedError {
    let file = file.to_path_buf();
    let what = what.to_string();
    move |e| match e {
        PartnersError::Db(e) => SeedError::Db(e),
        PartnersError::Api(e) => SeedError::refused(&file, &what, e),
        PartnersError::Events(e) => SeedError::file(&file, format!("{what}: {e}")),
    }
}

/// Adds missing seed records; returns what was added.
pub async fn load(
    pool: &PgPool,
    emitter: &Emitter,
    files: &SeedFiles,
) -> Result<String, SeedError> {
    let calendars: CalendarsFile = files.read_toml(CALENDARS, SHIPPED_CALENDARS)?;
    let partners: PartnersFile = files.read_toml(PARTNERS, SHIPPED_PARTNERS)?;
    let agreements: AgreementsFile = files.read_toml(AGREEMENTS, SHIPPED_AGREEMENTS)?;
    let mut tx = emitter.begin(pool).await?;
    let (mut c, mut p, mut a) = (0, 0, 0);
    let file = files.path(CALENDARS);
    for record in &calendars.calendar {
        if store::calendar(&mut tx, &record.id).await?.is_none() {
            commands::upsert_calendar(&mut tx, record, "seeded", Violations::new())
                .await
                .map_err(in_file(&file, &format!("calendar {}", record.id)))?;
            c += 1;
        }
    }
    let file = files.path(PARTNERS);
    for partner in &partners.partner {
        if store::partner(&mut tx, &partner.code).await?.is_none() {
            commands::upsert_partner(&mut tx, partner, Violations::new())
                .await
                .map_err(in_file(&file, &format!("partner {}", partner.code)))?;
            p += 1;
        }
    }
    let file = files.path(AGREEMENTS);
    for seed in &agreements.agreement {
        if store::agreements(&mut tx, &seed.partner_code)
            .await?
            .is_empty()
        {
            commands::publish_agreement(
                &mut tx,
                &seed.partner_code,
                Some(seed.effective_from),
                seed.body.clone(),
                "seed",
                Violations::new(),
            )
            .await
            .map_err(in_file(
                &file,
                &format!("agreement of {}", seed.partner_code),
            ))?;
            a += 1;
        }
    }
    tx.commit().await?;
    Ok(format!(
        "seeded {c} calendar(s), {p} partner(s), {a} agreement(s) from {}, {} and {}",
        files.path(CALENDARS).display(),
        files.path(PARTNERS).display(),
        files.path(AGREEMENTS).display()
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{NaiveDateTime, TimeZone};

    use super::*;

    fn shipped() -> Vec<CalendarRecord> {
        let file: CalendarsFile = SeedFiles::shipped()
            .read_toml(CALENDARS, SHIPPED_CALENDARS)
            .expect("seed calendars");
        file.calendar
    }

    fn local<Z: TimeZone>(tz: &Z, text: &str) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("instant");
        tz.from_local_datetime(&naive)
            .single()
            .expect("unambiguous")
            .with_timezone(&Utc)
    }

    #[test]
    fn shipped_ramadan_hours_keep_the_weekend() {
        let calendars = shipped();
        let build = |id: &str| {
            calendars
                .iter()
                .find(|c| c.id == id)
                .expect("shipped")
                .spec
                .build()
                .expect("valid")
        };
        let four_hours = Duration::from_secs(4 * 3600);
        // Thursday 19 February 2026 14:00 in Ramadan: an hour on Thursday
        // (10:00-15:00), Friday and Saturday weekend, Sunday 22 February
        // Founding Day, three hours from Monday 10:00.
        let sa = build("sa-gov");
        let riyadh = sa.time_zone();
        assert_eq!(
            sa.add_working(local(&riyadh, "2026-02-19 14:00"), four_hours),
            Some(local(&riyadh, "2026-02-23 13:00"))
        );
        // Muscat's Ramadan hours end at 14:00 and Oman has no Founding Day:
        // four hours from Sunday 09:00.
        let om = build("om-gov");
        let muscat = om.time_zone();
        assert_eq!(
            om.add_working(local(&muscat, "2026-02-19 14:00"), four_hours),
            Some(local(&muscat, "2026-02-22 13:00"))
        );
    }
}
