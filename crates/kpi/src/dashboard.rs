//! The HTML scorecard on the HTTP port: `GET /dashboard?municipality=RIYADH`
//! (or `partner=MOTLS`), with `granularity` (day, week, fortnight, month,
//! quarter, year; month by default), `date` (any day in the period; today by
//! default) and `lang` (`ar`, right to left, by default; or `en`).
//!
//! It asks for the same bearer token as the gRPC API (in the `Authorization`
//! header or a `baladiya_token` cookie, as a login proxy in front provides)
//! and shows a caller only the scorecards the policy lets it read, unless
//! `kpi.dashboard_requires_token` is off.
//!
//! Every indicator shows its value, target, RAG status, sample size and a
//! trend over the last eight periods. The page is rendered on the server
//! with inline CSS and SVG: no script, font or stylesheet is fetched, so it
//! works on an offline government network. Numbers come from the same
//! [`Kpis`] queries as the gRPC API. Each value cell carries the exact
//! number in `data-value` next to the rounded text; numbers are isolated
//! left to right (`<bdi dir="ltr">`) so `+10.0%` reads the same in Arabic.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use baladiya_platform::auth::Authenticator;
use baladiya_platform::clock::Clock;
use chrono::Days;

use crate::catalogue::{Indicator, Unit};
use crate::convert::date_from;
use crate::domain::{Rag, Reading, Subject, may_read_scorecard};
use crate::period::{Granularity, Period};
use crate::store::Kpis;

/// How many periods the trend chart shows.
pub const TREND_PERIODS: usize = 8;

#[derive(Clone)]
struct Dashboard {
    kpis: Kpis,
    clock: Clock,
    /// `None` when `kpi.dashboard_requires_token` is off (a login proxy in
    /// front does the checking).
    auth: Option<Authenticator>,
}

/// The dashboard's routes.
pub fn router(kpis: Kpis, clock: Clock, auth: Option<Authenticator>) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .with_state(Dashboard { kpis, clock, auth })
}

/// The bearer token of a browser request: the `Authorization` header a login
/// proxy adds, or the `baladiya_token` cookie it sets.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("baladiya_token="))
}

fn refused(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Ar,
    En,
}

impl Lang {
    fn t(self, en: &'static str, ar: &'static str) -> &'static str {
        match self {
            Self::En => en,
            Self::Ar => ar,
        }
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

async fn page(
    State(d): State<Dashboard>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let who = match &d.auth {
        None => None,
        Some(auth) => match bearer(&headers).map(|t| auth.verify(t)) {
            Some(Ok(who)) => Some(who),
            Some(Err(e)) => return refused(StatusCode::UNAUTHORIZED, &e.to_string()),
            None => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required (Authorization header or baladiya_token cookie)",
                );
            }
        },
    };
    let param = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let lang = match param("lang") {
        None | Some("ar") => Lang::Ar,
        Some("en") => Lang::En,
        Some(other) => return bad_request(format!("lang: '{other}' is not ar or en")),
    };
    let subject = match (param("municipality"), param("partner")) {
        (Some(m), None) => Subject::Municipality(m.to_string()),
        (None, Some(p)) => Subject::Partner(p.to_string()),
        _ => {
            return bad_request(
                "municipality or partner: give exactly one, e.g. /dashboard?municipality=RIYADH"
                    .into(),
            );
        }
    };
    let granularity = match param("granularity") {
        None => Granularity::Month,
        Some(g) => match Granularity::parse(g) {
            Some(g) => g,
            None => {
                return bad_request(format!(
                    "granularity: '{g}' is not one of day, week, fortnight, month, quarter, year"
                ));
            }
        },
    };
    if let Some(who) = &who
        && !may_read_scorecard(who, &subject)
    {
        return refused(StatusCode::FORBIDDEN, "not a scorecard you may read");
    }
    let tz = match &subject {
        Subject::Municipality(m) => d.kpis.time_zone(Some(m)),
        Subject::Partner(_) => d.kpis.time_zone(None),
    };
    let date = match param("date") {
        None => d.clock.now().with_timezone(&tz).date_naive(),
        Some(text) => match date_from(text, "date") {
            Ok(date) => date,
            Err(e) => return bad_request(format!("date: {}", e.message)),
        },
    };
    let period = Period::containing(granularity, date, tz);
    match render(&d.kpis, &subject, period, lang).await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.message).into_response(),
    }
}

/// The periods of the trend: the last [`TREND_PERIODS`], ending with `period`.
fn trend_periods(period: Period) -> Vec<Period> {
    let mut out = vec![period];
    while out.len() < TREND_PERIODS {
        let first = out[0].first - Days::new(1);
        out.insert(0, Period::containing(period.granularity, first, period.tz));
    }
    out
}

async fn render(
    kpis: &Kpis,
    subject: &Subject,
    period: Period,
    lang: Lang,
) -> Result<String, baladiya_platform::error::ApiError> {
    let rows = kpis.scorecard(subject, period).await?;
    let trend = trend_periods(period);
    let (who, code) = match subject {
        Subject::Municipality(m) => (lang.t("Municipality", "الأمانة"), m),
        Subject::Partner(p) => (lang.t("Partner", "الجهة الشريكة"), p),
    };
    let (dir, lang_code) = match lang {
        Lang::Ar => ("rtl", "ar"),
        Lang::En => ("ltr", "en"),
    };
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="{lang_code}" dir="{dir}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {code}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="subject"><span>{who}:</span> <strong id="subject">{code}</strong>
 · <span>{period_word}:</span> <strong id="period" dir="ltr" data-start="{start}" data-end="{end}">{label}</strong>
 · <span>{zone_word}:</span> <span id="time-zone">{zone}</span></p>
</header>
<table id="scorecard">
<thead><tr><th>{h_indicator}</th><th>{h_value}</th><th>{h_target}</th><th>{h_status}</th><th>{h_sample}</th><th>{h_trend}</th></tr></thead>
<tbody>
"#,
        title = lang.t("Performance scorecard", "بطاقة الأداء"),
        code = esc(code),
        period_word = lang.t("Period", "الفترة"),
        label = esc(&period.label()),
        start = period.start().to_rfc3339(),
        end = period.end().to_rfc3339(),
        zone_word = lang.t("Time zone", "المنطقة الزمنية"),
        zone = period.tz.name(),
        h_indicator = lang.t("Indicator", "المؤشر"),
        h_value = lang.t("Value", "القيمة"),
        h_target = lang.t("Target", "المستهدف"),
        h_status = lang.t("Status", "الحالة"),
        h_sample = lang.t("Sample", "حجم العينة"),
        h_trend = lang.t("Trend", "الاتجاه"),
    );
    for (indicator, filters, measured) in &rows {
        let series = kpis.series(indicator, filters, &trend).await?;
        let points: Vec<Option<f64>> = series.iter().map(|m| m.overall.value).collect();
        let r = &measured.overall;
        let name = match lang {
            Lang::Ar => &indicator.name_ar,
            Lang::En => &indicator.name_en,
        };
        let _ = write!(
            html,
            r#"<tr data-code="{code}">
<td class="name" title="{definition}">{name}</td>
<td class="value" data-value="{raw}"><bdi dir="ltr">{value}</bdi></td>
<td class="target" data-target="{raw_target}"><bdi dir="ltr">{target}</bdi></td>
<td class="status"><span class="rag {rag_class}" data-status="{rag_class}">{rag}</span></td>
<td class="sample" data-sample="{sample}">{sample}</td>
<td class="trend">{chart}</td>
</tr>
"#,
            code = esc(&indicator.code),
            definition = esc(&indicator.definition),
            name = esc(name),
            raw = r.value.map(|v| v.to_string()).unwrap_or_default(),
            value = format_value(indicator.unit, r.value),
            raw_target = r.target.map(|v| v.to_string()).unwrap_or_default(),
            target = target_text(indicator, r, lang),
            rag_class = rag_class(r.status),
            rag = rag_text(r.status, lang),
            sample = r.sample,
            chart = sparkline(&points, &trend, indicator.unit),
        );
    }
    let _ = write!(
        html,
        "</tbody>\n</table>\n<footer>{}</footer>\n</body>\n</html>\n",
        lang.t(
            "Values in working time on the responsible body's calendar. Hover a name for its definition.",
            "القيم بوقت العمل حسب تقويم الجهة المسؤولة. مرّر المؤشر فوق الاسم لعرض التعريف."
        )
    );
    Ok(html)
}

/// How a value is shown: shares and growth as percentages with one decimal,
/// working time and scores with one and two decimals, counts whole; an
/// en dash when there is no value.
pub fn format_value(unit: Unit, value: Option<f64>) -> String {
    let Some(v) = value else {
        return "–".into();
    };
    match unit {
        Unit::Share => format!("{:.1}%", v * 100.0),
        Unit::Growth => format!("{:+.1}%", v * 100.0),
        Unit::WorkingDays | Unit::WorkingHours => format!("{v:.1}"),
        Unit::Score => format!("{v:.2}"),
        Unit::Count => format!("{v:.0}"),
    }
}

fn target_text(indicator: &Indicator, r: &Reading, lang: Lang) -> String {
    match r.target {
        Some(_) => format_value(indicator.unit, r.target),
        None if indicator.target.is_some() => {
            lang.t("per license type", "حسب نوع الرخصة").to_string()
        }
        None => "–".into(),
    }
}

fn rag_class(r: Rag) -> &'static str {
    match r {
        Rag::Green => "green",
        Rag::Amber => "amber",
        Rag::Red => "red",
        Rag::NoTarget => "no-target",
        Rag::NoData => "no-data",
    }
}

fn rag_text(r: Rag, lang: Lang) -> &'static str {
    match r {
        Rag::Green => lang.t("GREEN", "أخضر"),
        Rag::Amber => lang.t("AMBER", "كهرماني"),
        Rag::Red => lang.t("RED", "أحمر"),
        Rag::NoTarget => lang.t("no target", "بلا مستهدف"),
        Rag::NoData => lang.t("no data", "لا بيانات"),
    }
}

/// An inline SVG line of the trend, oldest first. Time runs left to right in
/// both languages, as in printed Arabic charts.
fn sparkline(points: &[Option<f64>], periods: &[Period], unit: Unit) -> String {
    const W: f64 = 160.0;
    const H: f64 = 36.0;
    let values: Vec<f64> = points.iter().flatten().copied().collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let step = W / (points.len().max(2) - 1) as f64;
    let mut svg = format!(
        r#"<svg class="spark" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" direction="ltr">"#
    );
    let mut path = String::new();
    for (i, (p, period)) in points.iter().zip(periods).enumerate() {
        let Some(v) = p else { continue };
        let x = i as f64 * step;
        let y = if hi > lo {
            H - 4.0 - (v - lo) / span * (H - 8.0)
        } else {
            H / 2.0
        };
        let _ = write!(
            path,
            "{}{x:.1},{y:.1}",
            if path.is_empty() { "M" } else { " L" }
        );
        let _ = write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="2.2" data-period="{label}" data-value="{v}"><title>{label}: {text}</title></circle>"#,
            label = esc(&period.label()),
            text = format_value(unit, Some(*v)),
        );
    }
    if !path.is_empty() {
        let _ = write!(svg, r#"<path d="{path}"/>"#);
    }
    svg.push_str("</svg>");
    svg
}

/// Escapes text for HTML content and attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,'Segoe UI','Noto Sans Arabic',Tahoma,sans-serif;margin:1.5rem;color:#1b2a33;background:#f6f8f7}
header h1{margin:0 0 .25rem;font-size:1.5rem;color:#0b5d3b}
.subject{margin:0 0 1rem;color:#44545d}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px #0002}
th,td{padding:.5rem .75rem;border-bottom:1px solid #e3e8e6;text-align:start;vertical-align:middle}
th{background:#0b5d3b;color:#fff;font-weight:600}
td.value,td.target,td.sample{font-variant-numeric:tabular-nums;white-space:nowrap}
.rag{display:inline-block;min-width:5.5em;text-align:center;border-radius:1em;padding:.1em .6em;font-size:.85em;font-weight:600}
.rag.green{background:#d8f3e3;color:#0b5d3b}.rag.amber{background:#fdebc8;color:#8a5a00}
.rag.red{background:#fbd9d6;color:#a12014}.rag.no-target,.rag.no-data{background:#eceff1;color:#5b6b73}
svg.spark path{fill:none;stroke:#0b5d3b;stroke-width:1.6}svg.spark circle{fill:#0b5d3b}
footer{margin-top:1rem;font-size:.85em;color:#5b6b73}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_formatted_by_unit() {
        assert_eq!(format_value(Unit::Share, Some(0.9333)), "93.3%");
        assert_eq!(format_value(Unit::Growth, Some(0.25)), "+25.0%");
        assert_eq!(format_value(Unit::Growth, Some(-0.5)), "-50.0%");
        assert_eq!(format_value(Unit::WorkingHours, Some(2.25)), "2.2");
        assert_eq!(format_value(Unit::Score, Some(4.0)), "4.00");
        assert_eq!(format_value(Unit::Count, Some(12.0)), "12");
        assert_eq!(format_value(Unit::Count, None), "–");
    }

    #[test]
    fn the_trend_ends_with_the_period_and_runs_back_without_gaps() {
        let p = Period::containing(
            Granularity::Month,
            "2026-11-15".parse().unwrap(),
            chrono_tz::Asia::Riyadh,
        );
        let t = trend_periods(p);
        assert_eq!(t.len(), TREND_PERIODS);
        assert_eq!(t.last(), Some(&p));
        assert_eq!(t[0].label(), "2026-04");
        assert!(t.windows(2).all(|w| w[0].end() == w[1].start()));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
