//! A scripted month of domain events (November 2026 in Riyadh) published to
//! real JetStream, projected by the KPI service into real PostgreSQL, and
//! measured over gRPC against values computed by hand in the comments; then
//! the rebuild compared with the live tables, and the dashboard rendered in
//! headless Chromium compared with the gRPC answers. The month and what reads
//! it are set up in `crate::fixtures::kpi_month`.

use std::sync::Arc;

use baladiya_kpi::KpiModule;
use baladiya_kpi::catalogue::{Catalogue, Unit};
use baladiya_kpi::dashboard::format_value;
use baladiya_kpi::rebuild::{self, Mode};
use baladiya_platform::auth::Role;
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::events::v1 as intake;
use baladiya_proto::intake::v1::Channel;
use baladiya_proto::kpi::v1 as pb;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_proto::routing::events::v1 as routing;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::fixtures::kpi_month::{
    between, chromium_dom, close, month, month_projected, month_projected_with, riyadh, table_dump,
    values_by_key, withdrawal_history,
};
use crate::{RunningPlatform, TestEnv, authorized, instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_month_gives_the_hand_computed_indicators() -> anyhow::Result<()> {
    use pb::Status::{Amber, Green, NoTarget, Red};
    let env = TestEnv::new();
    let (platform, mut kpi, _) = month_projected(&env).await?;
    let motls = pb::Filters {
        partner_code: "MOTLS".into(),
        ..Default::default()
    };

    // Complaints in Riyadh. Volume: R1-R7 (R7 at 23:30 on 30 November).
    assert_eq!(
        kpi.november("complaints.volume", riyadh()).await?,
        (Some(7.0), None, NoTarget, 7)
    );
    // Duplicates: R6 of 7.
    let (dup, ..) = kpi.november("complaints.duplicate_rate", riyadh()).await?;
    assert!(close(dup, 1.0 / 7.0));
    // Acknowledged within SLA: C1, C4, C5 of C1, C2, C4, C5 = 0.75 against
    // 0.95 (AMBER from 0.9025): RED. MOTLS alone: C1, C4 of C1, C2, C4.
    assert_eq!(
        kpi.november("complaints.acknowledged_within_sla", riyadh())
            .await?,
        (Some(0.75), Some(0.95), Red, 4)
    );
    let (ack_motls, _, _, n) = kpi
        .november("complaints.acknowledged_within_sla", motls.clone())
        .await?;
    assert!(close(ack_motls, 2.0 / 3.0) && n == 3);
    // Through the 940 channel (a case's channel is its report's): C1 met, C2 late.
    let c940 = pb::Filters {
        channel: Channel::CallCenter940.into(),
        ..riyadh()
    };
    assert_eq!(
        kpi.november("complaints.acknowledged_within_sla", c940)
            .await?
            .0,
        Some(0.5)
    );
    // Exact median and nearest-rank p90 of 1, 2, 3, 10 hours: 2.5 and 10;
    // resolve 5, 20, 30, 40: 25 and 40. MOTLS acknowledge 1, 2, 10: 2 and 10.
    assert_eq!(
        kpi.november("complaints.median_hours_to_acknowledge", riyadh())
            .await?
            .0,
        Some(2.5)
    );
    assert_eq!(
        kpi.november("complaints.p90_hours_to_acknowledge", riyadh())
            .await?
            .0,
        Some(10.0)
    );
    assert_eq!(
        kpi.november("complaints.median_hours_to_resolve", riyadh())
            .await?
            .0,
        Some(25.0)
    );
    assert_eq!(
        kpi.november("complaints.p90_hours_to_resolve", riyadh())
            .await?
            .0,
        Some(40.0)
    );
    assert_eq!(
        kpi.november("complaints.median_hours_to_acknowledge", motls.clone())
            .await?
            .0,
        Some(2.0)
    );
    assert_eq!(
        kpi.november("complaints.resolved_within_sla", riyadh())
            .await?
            .0,
        Some(0.75)
    );
    // Backlog at the end of November: C2 (reopened) and C3; overdue: C3 only.
    assert_eq!(
        kpi.november("complaints.open_backlog", riyadh()).await?.0,
        Some(2.0)
    );
    assert_eq!(
        kpi.november("complaints.overdue_backlog", riyadh())
            .await?
            .0,
        Some(1.0)
    );
    assert_eq!(
        kpi.november("complaints.open_backlog", motls.clone())
            .await?
            .0,
        Some(2.0)
    );
    // Reopen rate: C2 of 4 resolved = 0.25 against 0.05 (AMBER to 0.075): RED.
    assert_eq!(
        kpi.november("complaints.reopen_rate", riyadh()).await?,
        (Some(0.25), Some(0.05), Red, 4)
    );

    // Partners: 4 breaches and 3 escalations (level 1 twice, level 2 once).
    assert_eq!(
        kpi.november("partners.breaches", motls.clone()).await?.0,
        Some(4.0)
    );
    let escalations = kpi
        .indicator(
            "partners.escalations",
            motls.clone(),
            month("2026-11-01"),
            pb::Dimension::EscalationLevel,
        )
        .await?;
    assert_eq!(
        escalations.measurement.as_ref().and_then(|m| m.value),
        Some(3.0)
    );
    let levels = values_by_key(&escalations);
    assert_eq!(
        levels,
        [("1".to_string(), Some(2.0)), ("2".to_string(), Some(1.0))]
    );

    // Citizens: ratings 3, 5, 4: mean 4.0 against 4: GREEN; MOTLS 4.5.
    assert_eq!(
        kpi.november("citizens.average_satisfaction", riyadh())
            .await?,
        (Some(4.0), Some(4.0), Green, 3)
    );
    assert_eq!(
        kpi.november("citizens.average_satisfaction", motls.clone())
            .await?
            .0,
        Some(4.5)
    );
    // Response rate 3 ratings / 4 resolved; by channel: 940 1/2 (C1, C2),
    // portal 2/2 (C4, C5).
    let response = kpi
        .indicator(
            "citizens.rating_response_rate",
            riyadh(),
            month("2026-11-30"),
            pb::Dimension::Channel,
        )
        .await?;
    assert_eq!(
        response.measurement.as_ref().and_then(|m| m.value),
        Some(0.75)
    );
    let by_channel = values_by_key(&response);
    assert_eq!(
        by_channel,
        [
            ("CHANNEL_BALADY_PORTAL".to_string(), Some(1.0)),
            ("CHANNEL_CALL_CENTER_940".to_string(), Some(0.5)),
        ]
    );

    // Licensing: received A1, A2, A4, A5; rejected A5; issued A1-A4, A8, A9.
    assert_eq!(
        kpi.november("licensing.applications_received", riyadh())
            .await?
            .0,
        Some(4.0)
    );
    assert_eq!(
        kpi.november("licensing.applications_rejected", riyadh())
            .await?
            .0,
        Some(1.0)
    );
    assert_eq!(
        kpi.november("licensing.licenses_issued", riyadh()).await?.0,
        Some(6.0)
    );
    // Median days to license over issued licenses 3, 12, 17.5, 63 (A5's 4
    // days ended in a rejection): 14.75, no single target. Per license type:
    // building permits 12 and 17.5 -> 14.75 within 15 (GREEN); the land
    // subdivision 63 against 60, within 20% (AMBER); professional 3 of 5.
    let median = kpi
        .indicator(
            "licensing.median_days_to_license",
            riyadh(),
            month("2026-11-15"),
            pb::Dimension::LicenseType,
        )
        .await?;
    let overall = median.measurement.unwrap_or_default();
    assert_eq!(
        (overall.value, overall.target, overall.status()),
        (Some(14.75), None, NoTarget)
    );
    let rows: Vec<(String, Option<f64>, Option<f64>, pb::Status)> = median
        .breakdown
        .iter()
        .map(|r| {
            let m = r.measurement.unwrap_or_default();
            (r.key.clone(), m.value, m.target, m.status())
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "BUILDING_PERMIT".to_string(),
                Some(14.75),
                Some(15.0),
                Green
            ),
            (
                "LAND_SUBDIVISION".to_string(),
                Some(63.0),
                Some(60.0),
                Amber
            ),
            (
                "PROFESSIONAL_LICENSE".to_string(),
                Some(3.0),
                Some(5.0),
                Green
            ),
        ]
    );
    let building = pb::Filters {
        license_type_code: "BUILDING_PERMIT".into(),
        ..riyadh()
    };
    assert_eq!(
        kpi.november("licensing.median_days_to_license", building)
            .await?
            .1,
        Some(15.0)
    );
    // Within target: A1 and A4 of A1-A4 = 0.5: RED.
    assert_eq!(
        kpi.november("licensing.share_within_target", riyadh())
            .await?,
        (Some(0.5), Some(0.9), Red, 4)
    );

    // Inspections: 8 of 10 compliant (RED against 0.9); 6 of 10 private
    // (AMBER against 0.7, to 0.525); by operator 5/6 and 3/4.
    assert_eq!(
        kpi.november("inspections.facility_compliance_rate", riyadh())
            .await?,
        (Some(0.8), Some(0.9), Red, 10)
    );
    assert_eq!(
        kpi.november("inspections.private_operator_share", riyadh())
            .await?,
        (Some(0.6), Some(0.7), Amber, 10)
    );
    let by_operator = kpi
        .indicator(
            "inspections.facility_compliance_rate",
            riyadh(),
            month("2026-11-15"),
            pb::Dimension::Operator,
        )
        .await?;
    let ops = values_by_key(&by_operator);
    assert_eq!(ops.len(), 2);
    assert_eq!(ops[0].0, "MUNI");
    assert!(close(ops[0].1, 0.75) && ops[1].0 == "PRIV1" && close(ops[1].1, 5.0 / 6.0));

    // Business: commercial licenses A4, A8 and the late A9 = 3, against A6
    // and A7 a year earlier: +50% (GREEN against +10%).
    assert_eq!(
        kpi.november("business.new_commercial_licenses", riyadh())
            .await?
            .0,
        Some(3.0)
    );
    assert_eq!(
        kpi.november("business.new_commercial_licenses_growth", riyadh())
            .await?,
        (Some(0.5), Some(0.1), Green, 3)
    );

    // Period boundaries in Asia/Riyadh: R7 (23:30 on 30 November) is that
    // day's; R8 (00:10 on 1 December, still 30 November in UTC) is December's.
    let day = |date: &str| {
        Some(pb::Period {
            granularity: pb::Granularity::Day.into(),
            date: date.into(),
        })
    };
    let on = kpi
        .indicator(
            "complaints.volume",
            riyadh(),
            day("2026-11-30"),
            pb::Dimension::Unspecified,
        )
        .await?;
    assert_eq!(on.measurement.as_ref().and_then(|m| m.value), Some(1.0));
    let period = on.period.clone().unwrap_or_default();
    assert_eq!(
        (period.label.as_str(), period.time_zone.as_str()),
        ("2026-11-30", "Asia/Riyadh")
    );
    assert_eq!(
        period.start,
        Some(timestamp(instant("2026-11-29T21:00:00Z")))
    );
    let series = kpi
        .client
        .get_time_series(authorized(
            pb::GetTimeSeriesRequest {
                code: "complaints.volume".into(),
                filters: Some(riyadh()),
                granularity: pb::Granularity::Month.into(),
                from_date: "2026-10-01".into(),
                to_date: "2026-12-31".into(),
            },
            &kpi.token,
        ))
        .await?
        .into_inner();
    let points: Vec<(String, Option<f64>)> = series
        .points
        .iter()
        .map(|p| {
            (
                p.period
                    .as_ref()
                    .map(|p| p.label.clone())
                    .unwrap_or_default(),
                p.measurement.as_ref().and_then(|m| m.value),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            ("2026-10".to_string(), Some(1.0)),
            ("2026-11".to_string(), Some(7.0)),
            ("2026-12".to_string(), Some(1.0)),
        ]
    );
    // The week of Sunday 22 November has no report (R7 is on Monday 30th).
    let week = kpi
        .indicator(
            "complaints.volume",
            riyadh(),
            Some(pb::Period {
                granularity: pb::Granularity::Week.into(),
                date: "2026-11-24".into(),
            }),
            pb::Dimension::Unspecified,
        )
        .await?;
    assert_eq!(
        week.period.as_ref().map(|p| p.label.as_str()),
        Some("2026-11-22..2026-11-28")
    );
    assert_eq!(
        week.measurement.as_ref().map(|m| (m.value, m.sample_size)),
        Some((Some(0.0), 0))
    );

    // A partner's scorecard has the partner indicators only.
    let card = kpi
        .scorecard(pb::get_scorecard_request::Subject::PartnerCode(
            "MOTLS".into(),
        ))
        .await?;
    let catalogue = Catalogue::builtin()?;
    assert!(card.indicators.iter().all(|i| {
        catalogue.get(&i.code).is_some_and(|c| {
            c.dimensions
                .contains(&baladiya_kpi::catalogue::Dimension::Partner)
        })
    }));
    let breaches = card
        .indicators
        .iter()
        .find(|i| i.code == "partners.breaches")
        .expect("breaches");
    assert_eq!(
        breaches.measurement.as_ref().and_then(|m| m.value),
        Some(4.0)
    );
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kpi_requests_name_the_field() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(KpiModule)]).await?;
    let mut client = KpiServiceClient::new(platform.channel().await?);
    let token = platform.token(Role::Analyst);
    let fields = |status: tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        crate::fields(&status)
    };
    let bad = client
        .get_indicator(authorized(
            pb::GetIndicatorRequest {
                code: "licensing.licenses_issued".into(),
                filters: Some(pb::Filters {
                    channel: Channel::Kiosk.into(),
                    ..Default::default()
                }),
                period: Some(pb::Period {
                    granularity: pb::Granularity::Unspecified.into(),
                    date: "2026-13-01".into(),
                }),
                breakdown: pb::Dimension::Partner.into(),
            },
            &token,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(bad),
        [
            "filters.channel",
            "breakdown",
            "period.granularity",
            "period.date"
        ]
    );
    let unknown = client
        .get_indicator(authorized(
            pb::GetIndicatorRequest {
                code: "roads.smoothness".into(),
                period: month("2026-11-01"),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(fields(unknown), ["code"]);
    let no_subject = client
        .get_scorecard(authorized(
            pb::GetScorecardRequest {
                subject: None,
                period: None,
            },
            &token,
        ))
        .await
        .expect_err("no subject");
    assert_eq!(fields(no_subject), ["municipality_code", "period"]);
    let too_long = client
        .get_time_series(authorized(
            pb::GetTimeSeriesRequest {
                code: "complaints.volume".into(),
                granularity: pb::Granularity::Day.into(),
                from_date: "2020-01-01".into(),
                to_date: "2026-01-01".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect_err("too many points");
    assert_eq!(fields(too_long), ["to_date"]);
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_the_streams_equals_the_live_projections_and_repeats_change_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let (platform, mut kpi, published) = month_projected(&env).await?;
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let live = table_dump(&pool).await?;
    let card = kpi
        .scorecard(pb::get_scorecard_request::Subject::MunicipalityCode(
            "RIYADH".into(),
        ))
        .await?;

    // Rebuilt into fresh tables and compared: no row differs.
    let mut lines = Vec::new();
    let report = rebuild::rebuild(&env.config(), Mode::Check, |l| lines.push(l)).await?;
    assert_eq!(report.differences.values().sum::<i64>(), 0, "{report:?}");
    assert_eq!(
        report.events.values().sum::<u64>(),
        published as u64,
        "{report:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("events done")),
        "progress: {lines:?}"
    );
    assert_eq!(
        table_dump(&pool).await?,
        live,
        "a check leaves the live tables alone"
    );

    // Swapped in, twice: the same rows and the same scorecard.
    for _ in 0..2 {
        let report = rebuild::rebuild(&env.config(), Mode::Swap, |_| {}).await?;
        assert_eq!(
            report.rows.get("facts").copied(),
            Some(live.iter().filter(|r| r.starts_with("facts ")).count() as i64)
        );
        assert_eq!(table_dump(&pool).await?, live);
    }
    assert_eq!(
        kpi.scorecard(pb::get_scorecard_request::Subject::MunicipalityCode(
            "RIYADH".into()
        ))
        .await?,
        card
    );

    // A duplicated event (the same id again) changes nothing either.
    let (subject, headers_event): (String, Uuid) =
        sqlx::query_as("SELECT subject, event_id FROM kpi.facts WHERE kind = 'rating' LIMIT 1")
            .fetch_one(&pool)
            .await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("SET search_path TO kpi")
        .execute(&mut *conn)
        .await?;
    let rating = baladiya_platform::events::InboundEvent {
        id: headers_event,
        subject: "baladiya.intake.report.rated.RIYADH.POTHOLE".into(),
        ce_type: "sa.baladiya.intake.report.rated.v1".into(),
        source: "/baladiya/intake".into(),
        aggregate_id: subject.clone(),
        occurred_at: instant("2026-11-26T10:00:00+03:00"),
        dataschema: <intake::ReportRated as prost::Name>::type_url(),
        payload: prost::Message::encode_to_vec(&intake::ReportRated {
            report_id: subject,
            score: 1,
            municipality_code: "RIYADH".into(),
            ..Default::default()
        })
        .into(),
        traceparent: None,
        recorded_at: None,
        stream_sequence: 0,
    };
    baladiya_kpi::consumers::apply(&mut conn, &rating)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(table_dump(&pool).await?, live);

    drop(conn);

    // The command line does the same and says so.
    let output = tokio::process::Command::new(crate::baladiya_binary())
        .args(["kpi", "rebuild", "--check"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BALADIYA__DATABASE__URL", env.database_url())
        .env("BALADIYA__NATS__URL", &env.nats_url)
        .env("BALADIYA__EVENTS__NAMESPACE", &env.namespace)
        .env("BALADIYA__TELEMETRY__LOG_FILTER", "warn")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("replayed") && stderr.contains("kpi rebuild:"),
        "{stdout}\n{stderr}"
    );
    // A case's states arriving out of order, and again, are linked in the
    // order they happened: each holds until the next one.
    // (After the check above: these events are not in the streams.)
    let mut conn = pool.acquire().await?;
    sqlx::query("SET search_path TO kpi")
        .execute(&mut *conn)
        .await?;
    let case_ref = routing::CaseRef {
        case_id: "C-ORDER".into(),
        report_id: "R-ORDER".into(),
        municipality_code: "RIYADH".into(),
        assignee_code: "MUN-ROADS".into(),
        category_code: "POTHOLE".into(),
        ..Default::default()
    };
    let event = |name: &str, at: &str, dataschema: String, payload: Vec<u8>| {
        baladiya_platform::events::InboundEvent {
            id: Uuid::now_v7(),
            subject: format!("baladiya.routing.case.{name}.RIYADH.MUN-ROADS"),
            ce_type: format!("sa.baladiya.routing.case.{name}.v1"),
            source: "/baladiya/routing".into(),
            aggregate_id: "C-ORDER".into(),
            occurred_at: instant(at),
            dataschema,
            payload: payload.into(),
            traceparent: None,
            recorded_at: None,
            stream_sequence: 0,
        }
    };
    let routed = event(
        "routed",
        "2026-11-27T10:00:00+03:00",
        <routing::CaseRouted as prost::Name>::type_url(),
        prost::Message::encode_to_vec(&routing::CaseRouted {
            case: Some(case_ref.clone()),
            ..Default::default()
        }),
    );
    let resolved = event(
        "resolved",
        "2026-11-27T11:00:00+03:00",
        <routing::CaseResolved as prost::Name>::type_url(),
        prost::Message::encode_to_vec(&routing::CaseResolved {
            case: Some(case_ref.clone()),
            ..Default::default()
        }),
    );
    let reopened = event(
        "reopened",
        "2026-11-27T12:00:00+03:00",
        <routing::CaseReopened as prost::Name>::type_url(),
        prost::Message::encode_to_vec(&routing::CaseReopened {
            case: Some(case_ref.clone()),
            ..Default::default()
        }),
    );
    for e in [&reopened, &routed, &resolved, &routed] {
        baladiya_kpi::consumers::apply(&mut conn, e)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let spans: Vec<(f64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT value, until FROM kpi.states WHERE subject = 'C-ORDER' AND kind = 'case_status'
          ORDER BY occurred_at",
    )
    .fetch_all(&mut *conn)
    .await?;
    assert_eq!(
        spans,
        vec![
            (1.0, Some(instant("2026-11-27T11:00:00+03:00"))),
            (0.0, Some(instant("2026-11-27T12:00:00+03:00"))),
            (1.0, None),
        ]
    );
    drop(conn);
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_in_chromium_the_numbers_grpc_gives() -> anyhow::Result<()> {
    let env = TestEnv::new();
    // Chromium cannot send a bearer token from the command line; here a login
    // proxy would. The token checks are tested below over plain HTTP.
    let mut config = env.config();
    config.sections.insert(
        "kpi".into(),
        toml::Value::Table(toml::toml! { dashboard_requires_token = false }),
    );
    let (platform, mut kpi, _) = month_projected_with(&env, config).await?;
    let catalogue = Catalogue::builtin()?;
    for (subject, query) in [
        (
            pb::get_scorecard_request::Subject::MunicipalityCode("RIYADH".into()),
            "municipality=RIYADH",
        ),
        (
            pb::get_scorecard_request::Subject::PartnerCode("MOTLS".into()),
            "partner=MOTLS",
        ),
    ] {
        let card = kpi.scorecard(subject).await?;
        let url = format!(
            "http://{}/dashboard?{query}&granularity=month&date=2026-11-15&lang=en",
            platform.http
        );
        let dom = chromium_dom(&url).await?;
        assert!(dom.contains(r#"dir="ltr""#) && dom.contains("Performance scorecard"));
        assert!(
            !dom.contains("http://") && !dom.contains("https://"),
            "no external assets"
        );
        let mut shown = 0;
        for indicator in &card.indicators {
            let row_start = dom
                .find(&format!(r#"data-code="{}""#, indicator.code))
                .ok_or_else(|| anyhow::anyhow!("{} is not on the page", indicator.code))?;
            let (raw, at) =
                between(&dom, row_start, r#"class="value" data-value=""#, "\"").expect("value");
            let (text, _) = between(&dom, at, r#"<bdi dir="ltr">"#, "<").expect("value text");
            let (status, _) = between(&dom, row_start, r#"data-status=""#, "\"").expect("status");
            let (sample, _) = between(&dom, row_start, r#"data-sample=""#, "\"").expect("sample");
            let m = indicator.measurement.unwrap_or_default();
            let unit = catalogue
                .get(&indicator.code)
                .map_or(Unit::Count, |c| c.unit);
            assert_eq!(text, format_value(unit, m.value), "{}", indicator.code);
            assert_eq!(raw.parse::<f64>().ok(), m.value, "{}", indicator.code);
            assert_eq!(sample.parse::<u64>()?, m.sample_size, "{}", indicator.code);
            let expected_status = match m.status() {
                pb::Status::Green => "green",
                pb::Status::Amber => "amber",
                pb::Status::Red => "red",
                pb::Status::NoTarget => "no-target",
                _ => "no-data",
            };
            assert_eq!(status, expected_status, "{}", indicator.code);
            shown += 1;
        }
        assert_eq!(shown, card.indicators.len());
        assert!(
            dom.contains("<svg class=\"spark\""),
            "a trend chart per indicator"
        );
    }
    // In Arabic, right to left, with Arabic names.
    let dom = chromium_dom(&format!(
        "http://{}/dashboard?municipality=RIYADH&granularity=month&date=2026-11-15",
        platform.http
    ))
    .await?;
    assert!(
        dom.contains(r#"dir="rtl""#)
            && dom.contains("بطاقة الأداء")
            && dom.contains("نسبة امتثال المنشآت")
    );
    let (status, body) = platform.http_get("/dashboard?granularity=month").await?;
    assert_eq!(status, 400);
    assert!(body.contains("municipality or partner"), "{body}");
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_a_token_and_shows_each_caller_its_own_scorecards()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(KpiModule)]).await?;
    let config = &platform.config;
    let token = |role, partner: Option<&str>, municipality: Option<&str>| {
        crate::DevToken::new(role)
            .subject("viewer")
            .partner(partner)
            .municipality(municipality)
            .try_mint(&config.auth)
    };
    let get = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let addr = platform.http;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::http_get_with(addr, path, &headers).await
        }
    };
    let riyadh = "/dashboard?municipality=RIYADH&date=2026-11-15";
    assert_eq!(get(riyadh, vec![]).await?.0, 401);
    assert_eq!(
        get(riyadh, vec![("Authorization", "Bearer not-a-token".into())])
            .await?
            .0,
        401
    );
    let operator = token(Role::Operator, None, Some("RIYADH"))?;
    let (status, body) = get(
        riyadh,
        vec![("Authorization", format!("Bearer {operator}"))],
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data-code=\"complaints.volume\""));
    let jeddah = token(Role::Operator, None, Some("JEDDAH"))?;
    assert_eq!(
        get(
            riyadh,
            vec![("Cookie", format!("theme=dark; baladiya_token={jeddah}"))]
        )
        .await?
        .0,
        403
    );
    let motls = token(Role::Partner, Some("MOTLS"), None)?;
    assert_eq!(
        get(
            "/dashboard?partner=MOTLS",
            vec![("Cookie", format!("baladiya_token={motls}"))]
        )
        .await?
        .0,
        200
    );
    assert_eq!(
        get(
            "/dashboard?partner=MEWA",
            vec![("Cookie", format!("baladiya_token={motls}"))]
        )
        .await?
        .0,
        403
    );
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_breaches_and_escalations_are_netted_out_in_any_order() -> anyhow::Result<()> {
    let history = withdrawal_history();
    let mut dumps = Vec::new();
    // In stream order and reversed (withdrawals before what they withdraw),
    // each event in a transaction of its own.
    for order in [history.clone(), history.iter().rev().cloned().collect()] {
        let env = TestEnv::new();
        let config = env.config();
        baladiya_platform::db::ensure_database(&config.database).await?;
        let pool = baladiya_platform::db::schema_pool(&config.database, "kpi")?;
        baladiya_platform::db::migrate(
            &pool,
            "kpi",
            &baladiya_platform::app::ServiceModule::migrator(&KpiModule),
        )
        .await?;
        for event in &order {
            let mut tx = pool.begin().await?;
            baladiya_kpi::consumers::apply(&mut tx, event)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tx.commit().await?;
        }
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT kind, count(*) FROM facts WHERE kind IN ('clock_breached', 'escalation') GROUP BY kind ORDER BY kind",
        )
        .fetch_all(&pool)
        .await?;
        assert_eq!(
            counts,
            [("clock_breached".to_string(), 1)],
            "only the breach that stands counts; the withdrawn escalation is gone"
        );
        let overdue: Vec<(String, f64)> = sqlx::query_as(
            "SELECT subject, value FROM states WHERE kind = 'resolve_overdue' AND until IS NULL ORDER BY subject",
        )
        .fetch_all(&pool)
        .await?;
        assert_eq!(
            overdue,
            [("case-c1".to_string(), 0.0), ("case-c2".to_string(), 1.0)],
            "the withdrawn breach's case is not overdue"
        );
        dumps.push(table_dump(&pool).await?);
        pool.close().await;
        env.cleanup().await;
    }
    assert_eq!(dumps[0], dumps[1], "any order, the same tables");
    Ok(())
}
