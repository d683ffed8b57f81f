//! `baladiya kpi scorecard`: a scorecard from the KPI service, and the
//! `--period` syntax it takes. Its own file because reading a period as
//! people write it is the one piece of parsing here with rules of its own;
//! the table is [`render::scorecard_table`].

use baladiya_proto::kpi::v1 as kpi;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use chrono::NaiveDate;

use super::{Failure, Remote, enum_flag};
use crate::render;

/// A period as written on the command line: `2026` (year), `2026-Q4`
/// (quarter), `2026-11` (month), `2026-11-30` (day; with --granularity
/// week or fortnight, the one holding that day).
pub fn period(text: &str, granularity: Option<&str>) -> Result<kpi::Period, Failure> {
    use kpi::Granularity as G;
    let bad = || {
        Failure::usage(format!(
            "--period {text}: expected 2026, 2026-Q4, 2026-11 or 2026-11-30"
        ))
    };
    let text = text.trim();
    let (date, implied) = if let Some((year, q)) = text.split_once("-Q") {
        let q: u32 = q
            .parse()
            .ok()
            .filter(|q| (1..=4).contains(q))
            .ok_or_else(bad)?;
        (format!("{year}-{:02}-01", (q - 1) * 3 + 1), G::Quarter)
    } else {
        match text.len() {
            4 => (format!("{text}-01-01"), G::Year),
            7 => (format!("{text}-01"), G::Month),
            10 => (text.to_string(), G::Day),
            _ => return Err(bad()),
        }
    };
    NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| bad())?;
    let granularity = match granularity {
        Some(g) => enum_flag("--granularity", g, "GRANULARITY_", G::from_str_name)?,
        None => implied,
    };
    Ok(kpi::Period {
        granularity: granularity as i32,
        date,
    })
}

pub async fn scorecard(
    remote: &Remote,
    municipality: Option<String>,
    partner: Option<String>,
    period_text: &str,
    granularity: Option<&str>,
) -> Result<(), Failure> {
    let subject = match (municipality, partner) {
        (Some(m), None) => kpi::get_scorecard_request::Subject::MunicipalityCode(m),
        (None, Some(p)) => kpi::get_scorecard_request::Subject::PartnerCode(p),
        _ => {
            return Err(Failure::usage(
                "give one of --municipality (e.g. RIYADH) or --partner (e.g. MOTLS)",
            ));
        }
    };
    let period = period(period_text, granularity)?;
    let mut client = KpiServiceClient::new(remote.channel().await?);
    let card = client
        .get_scorecard(remote.request(kpi::GetScorecardRequest {
            subject: Some(subject),
            period: Some(period),
        })?)
        .await
        .map_err(remote.failed("reading the scorecard"))?
        .into_inner();
    if card
        .indicators
        .iter()
        .all(|i| i.measurement.unwrap_or_default().sample_size == 0)
    {
        eprintln!(
            "note: no indicator has data for this period; is the code right? (municipality codes are like RIYADH, partner codes like MOTLS)"
        );
    }
    remote.print(&card, render::scorecard_table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Exit;

    #[test]
    fn periods_are_written_as_people_write_them() {
        use kpi::Granularity as G;
        let p = |t: &str, g: Option<&str>| period(t, g).map(|p| (p.granularity, p.date));
        assert_eq!(
            p("2026-11", None).ok(),
            Some((G::Month as i32, "2026-11-01".into()))
        );
        assert_eq!(
            p("2026-Q4", None).ok(),
            Some((G::Quarter as i32, "2026-10-01".into()))
        );
        assert_eq!(
            p("2026", None).ok(),
            Some((G::Year as i32, "2026-01-01".into()))
        );
        assert_eq!(
            p("2026-11-30", Some("week")).ok(),
            Some((G::Week as i32, "2026-11-30".into()))
        );
        for bad in ["2026-13", "2026-Q5", "November", "2026-11-31"] {
            assert_eq!(
                period(bad, None).map_err(|f| f.exit).err(),
                Some(Exit::Usage),
                "{bad}"
            );
        }
    }
}
