//! The intake service over gRPC, with real PostgreSQL and NATS, seeded from
//! `deploy/seed/intake`.

use std::sync::Arc;
use std::time::Duration;

use baladiya_intake::IntakeModule;
use baladiya_platform::auth::Role;
use baladiya_platform::events::{EventType, OutboundEvent};
use baladiya_proto::common::v1::{Location, Priority};
use baladiya_proto::convert::timestamp;
use baladiya_proto::intake::v1 as pb;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use baladiya_proto::routing::events::v1 as routing;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::streams::stream_messages;
use crate::{RunningPlatform, TestEnv, authorized, eventually, fields};

const OLAYA: (f64, f64) = (24.6900, 46.6850);

fn request(category: &str, (lat, lon): (f64, f64), description: &str) -> pb::SubmitReportRequest {
    pb::SubmitReportRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        channel: pb::Channel::CallCenter940 as i32,
        category_code: category.into(),
        description: description.into(),
        location: Some(Location {
            latitude: lat,
            longitude: lon,
            national_address_short: String::new(),
            municipality_code: String::new(),
        }),
        reporter: None,
        attachments: vec![],
        observed_at: None,
        priority_hint: 0,
    }
}

/// `meters` north of `p`.
fn north((lat, lon): (f64, f64), meters: f64) -> (f64, f64) {
    (lat + meters / 111_195.0, lon)
}

struct Intake {
    platform: RunningPlatform,
    client: IntakeServiceClient<Channel>,
    channel_token: String,
    env: TestEnv,
}

impl Intake {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new();
        let platform = RunningPlatform::start(env.config(), vec![Arc::new(IntakeModule)]).await?;
        let client = IntakeServiceClient::new(platform.channel().await?);
        let channel_token = platform.token(Role::Channel);
        Ok(Self {
            platform,
            client,
            channel_token,
            env,
        })
    }

    async fn submit(
        &mut self,
        req: pb::SubmitReportRequest,
    ) -> Result<pb::SubmitReportResponse, tonic::Status> {
        Ok(self
            .client
            .submit_report(authorized(req, &self.channel_token))
            .await?
            .into_inner())
    }

    async fn get(&self, id: &str) -> anyhow::Result<pb::Report> {
        Ok(self
            .client
            .clone()
            .get_report(authorized(
                pb::GetReportRequest {
                    key: Some(pb::get_report_request::Key::Id(id.into())),
                },
                &self.channel_token,
            ))
            .await?
            .into_inner())
    }

    async fn count(&self, sql: &'static str) -> anyhow::Result<i64> {
        let pool = baladiya_platform::db::schema_pool(&self.platform.config.database, "intake")?;
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await?;
        pool.close().await;
        Ok(n)
    }

    /// Every payload and header published on the intake stream so far.
    /// Everything intake published, once its outbox is drained (the relay
    /// publishes after the commit, on its own time).
    async fn published(&self) -> anyhow::Result<Vec<(String, Vec<u8>, String)>> {
        let pool = sqlx::PgPool::connect(&self.env.database_url()).await?;
        crate::eventually(30, "intake's outbox drained", || async {
            let unsent: i64 =
                sqlx::query_scalar("SELECT count(*) FROM intake.outbox WHERE sent_at IS NULL")
                    .fetch_one(&pool)
                    .await?;
            Ok((unsent == 0).then_some(()))
        })
        .await?;
        pool.close().await;
        let js = async_nats::jetstream::new(self.env.nats().await?);
        let stream = format!("{}_INTAKE", self.env.namespace);
        let mut out = Vec::new();
        for m in stream_messages(&js, &stream, 1000, Duration::from_millis(500)).await? {
            let headers = m
                .headers
                .as_ref()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| format!("{k}: {v:?}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            out.push((m.subject.to_string(), m.payload.to_vec(), headers));
        }
        Ok(out)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.platform.stop().await?;
        self.env.cleanup().await;
        Ok(())
    }
}

fn with(f: impl FnOnce(&mut pb::SubmitReportRequest)) -> pb::SubmitReportRequest {
    let mut r = request("POTHOLE", OLAYA, "حفرة كبيرة أمام المسجد");
    r.location.as_mut().expect("location").municipality_code = "RIYADH".into();
    f(&mut r);
    r
}

fn location(r: &mut pb::SubmitReportRequest) -> &mut Location {
    r.location.as_mut().expect("location")
}

fn attachment(uri: &str, content_type: &str, size: u64) -> pb::Attachment {
    pb::Attachment {
        uri: uri.into(),
        content_type: content_type.into(),
        size_bytes: size,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_every_field_and_store_nothing() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    // A retired category, for one of the cases.
    let operator = intake.platform.token(Role::Operator);
    intake
        .client
        .upsert_category(authorized(
            pb::UpsertCategoryRequest {
                category: Some(pb::Category {
                    code: "OLD_KIOSK_FAULT".into(),
                    name: Some(baladiya_proto::common::v1::LocalizedText {
                        ar: "عطل".into(),
                        en: "Kiosk fault".into(),
                    }),
                    group: "other".into(),
                    default_priority: Priority::Low as i32,
                    duplicate_radius_meters: 100,
                    duplicate_window_hours: 24,
                    active: false,
                    ..Default::default()
                }),
            },
            &operator,
        ))
        .await?;
    let reporter = |name: &str, phone: &str, id: &str| {
        Some(pb::Reporter {
            name: name.into(),
            phone: phone.into(),
            national_id: id.into(),
        })
    };
    let future = intake.platform.clock.now() + chrono::Duration::days(1);
    let cases: Vec<(&str, pb::SubmitReportRequest, Vec<&str>)> = vec![
        (
            "no request id",
            with(|r| r.request_id.clear()),
            vec!["request_id"],
        ),
        (
            "long request id",
            with(|r| r.request_id = "x".repeat(65)),
            vec!["request_id"],
        ),
        (
            "request id with spaces",
            with(|r| r.request_id = "a b".into()),
            vec!["request_id"],
        ),
        ("no channel", with(|r| r.channel = 0), vec!["channel"]),
        ("unknown channel", with(|r| r.channel = 99), vec!["channel"]),
        (
            "no category",
            with(|r| r.category_code.clear()),
            vec!["category_code"],
        ),
        (
            "unknown category",
            with(|r| r.category_code = "UFO".into()),
            vec!["category_code"],
        ),
        (
            "retired category",
            with(|r| r.category_code = "OLD_KIOSK_FAULT".into()),
            vec!["category_code"],
        ),
        (
            "empty description",
            with(|r| r.description.clear()),
            vec!["description"],
        ),
        (
            "blank description",
            with(|r| r.description = " \n\t ".into()),
            vec!["description"],
        ),
        (
            "long description",
            with(|r| r.description = "ب".repeat(4_001)),
            vec!["description"],
        ),
        (
            "control character",
            with(|r| r.description = "bell\u{7}".into()),
            vec!["description"],
        ),
        ("no location", with(|r| r.location = None), vec!["location"]),
        (
            "empty location",
            with(|r| *location(r) = Location::default()),
            vec!["location"],
        ),
        (
            "latitude out of range",
            with(|r| location(r).latitude = 91.0),
            vec!["location.latitude"],
        ),
        (
            "longitude out of range",
            with(|r| location(r).longitude = 181.0),
            vec!["location.longitude"],
        ),
        (
            "latitude not a number",
            with(|r| location(r).latitude = f64::NAN),
            vec!["location.latitude"],
        ),
        (
            "point outside the named municipality",
            with(|r| {
                location(r).latitude = 21.54;
                location(r).longitude = 39.17;
            }),
            vec!["location"],
        ),
        (
            "point outside every area",
            with(|r| {
                location(r).latitude = 20.0;
                location(r).longitude = 60.0;
                location(r).municipality_code.clear();
            }),
            vec!["location"],
        ),
        (
            "unknown municipality",
            with(|r| location(r).municipality_code = "ATLANTIS".into()),
            vec!["location.municipality_code"],
        ),
        (
            "bad short address",
            with(|r| location(r).national_address_short = "RRR2929".into()),
            vec!["location.national_address_short"],
        ),
        (
            "address only, no municipality",
            with(|r| {
                *location(r) = Location {
                    national_address_short: "RRRD2929".into(),
                    ..Default::default()
                };
            }),
            vec!["location.municipality_code"],
        ),
        (
            "local phone",
            with(|r| r.reporter = reporter("", "0501234567", "")),
            vec!["reporter.phone"],
        ),
        (
            "short Saudi phone",
            with(|r| r.reporter = reporter("", "+96650123456", "")),
            vec!["reporter.phone"],
        ),
        (
            "bad national id check digit",
            with(|r| r.reporter = reporter("", "", "1000000001")),
            vec!["reporter.national_id"],
        ),
        (
            "national id starting 3",
            with(|r| r.reporter = reporter("", "", "3000000004")),
            vec!["reporter.national_id"],
        ),
        (
            "long name",
            with(|r| r.reporter = reporter(&"ن".repeat(201), "", "")),
            vec!["reporter.name"],
        ),
        (
            "too many attachments",
            with(|r| {
                r.attachments = vec![attachment("https://files.example/a.jpg", "image/jpeg", 10); 6]
            }),
            vec!["attachments"],
        ),
        (
            "plain http attachment",
            with(|r| {
                r.attachments = vec![attachment("http://files.example/a.jpg", "image/jpeg", 10)]
            }),
            vec!["attachments[0].uri"],
        ),
        (
            "unsupported attachment type",
            with(|r| {
                r.attachments = vec![attachment("https://files.example/a.txt", "text/plain", 10)]
            }),
            vec!["attachments[0].content_type"],
        ),
        (
            "empty attachment",
            with(|r| {
                r.attachments = vec![attachment("https://files.example/a.jpg", "image/jpeg", 0)]
            }),
            vec!["attachments[0].size_bytes"],
        ),
        (
            "huge attachment",
            with(|r| {
                r.attachments = vec![attachment(
                    "https://files.example/a.mp4",
                    "video/mp4",
                    11 * 1024 * 1024,
                )]
            }),
            vec!["attachments[0].size_bytes"],
        ),
        (
            "observed in the future",
            with(|r| r.observed_at = Some(timestamp(future))),
            vec!["observed_at"],
        ),
        (
            "observed at an invalid instant",
            with(|r| {
                r.observed_at = Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                })
            }),
            vec!["observed_at"],
        ),
        (
            "everything at once",
            with(|r| {
                r.request_id.clear();
                r.channel = 0;
                r.description.clear();
                r.reporter = reporter("", "12345", "");
            }),
            vec!["request_id", "channel", "description", "reporter.phone"],
        ),
    ];
    assert!(cases.len() >= 30);
    for (name, req, expected) in cases {
        let status = intake.submit(req).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert_eq!(fields(&status), expected, "{name}");
    }
    assert_eq!(
        intake.count("SELECT count(*) FROM reports").await?,
        0,
        "nothing stored"
    );
    assert_eq!(
        intake.count("SELECT count(*) FROM outbox").await?,
        0,
        "no event"
    );
    assert_eq!(
        intake
            .count("SELECT count(*) FROM idempotency_keys")
            .await?,
        0
    );
    assert_eq!(
        intake
            .count("SELECT count(*) FROM audit_events WHERE rpc LIKE '%/SubmitReport'")
            .await?,
        0,
        "a refused call leaves no audit row"
    );
    assert_eq!(
        intake
            .count("SELECT count(*) FROM audit_events WHERE rpc LIKE '%/UpsertCategory'")
            .await?,
        1,
        "the category edit above is audited"
    );
    intake.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_retries_store_one_report() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    let req = request("STREET_LIGHTING", OLAYA, "عمود إنارة مطفأ");
    let channel = intake.platform.channel().await?;
    let calls = (0..50).map(|_| {
        let mut client = IntakeServiceClient::new(channel.clone());
        let req = authorized(req.clone(), &intake.channel_token);
        tokio::spawn(async move { client.submit_report(req).await.map(|r| r.into_inner()) })
    });
    let mut ids = std::collections::HashSet::new();
    for call in futures::future::join_all(calls).await {
        let report = call??.report.expect("report");
        ids.insert((report.id, report.tracking_number));
    }
    assert_eq!(ids.len(), 1, "every retry got the same report");
    assert_eq!(intake.count("SELECT count(*) FROM reports").await?, 1);
    assert_eq!(
        intake.count("SELECT count(*) FROM outbox").await?,
        1,
        "one received event"
    );
    assert_eq!(
        intake
            .count("SELECT count(*) FROM audit_events WHERE rpc = '/baladiya.intake.v1.IntakeService/SubmitReport'")
            .await?,
        1,
        "one audit row, written with the report"
    );

    // The same key with another payload is refused.
    let mut changed = req.clone();
    changed.description = "شيء آخر".into();
    assert_eq!(
        intake.submit(changed).await.expect_err("reused key").code(),
        Code::AlreadyExists
    );
    intake.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_link_within_the_radius_and_window_only() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    let first = intake
        .submit(request("WATER_LEAK", OLAYA, "تسرب مياه من الأنبوب"))
        .await?;
    let master = first.report.expect("report");
    assert!(!first.linked_as_duplicate);
    assert_eq!(master.municipality_code, "RIYADH", "derived from the point");
    assert!(
        master.tracking_number.starts_with("RUH-2026-"),
        "{}",
        master.tracking_number
    );

    let near = intake
        .submit(request("WATER_LEAK", north(OLAYA, 100.0), "نفس التسرب"))
        .await?;
    assert!(near.linked_as_duplicate);
    let near = near.report.expect("report");
    assert_eq!(near.duplicate_of, master.id);
    assert_ne!(near.tracking_number, master.tracking_number);

    let far = intake
        .submit(request("WATER_LEAK", north(OLAYA, 400.0), "تسرب آخر"))
        .await?;
    assert!(!far.linked_as_duplicate, "outside the 250 m radius");
    let other_category = intake
        .submit(request("POTHOLE", north(OLAYA, 50.0), "حفرة"))
        .await?;
    assert!(!other_category.linked_as_duplicate, "another category");

    assert_eq!(intake.get(&master.id).await?.supporters, 1);

    intake
        .platform
        .clock
        .advance(Duration::from_secs(73 * 3600))
        .await?;
    let later = intake
        .submit(request("WATER_LEAK", OLAYA, "تسرب مرة أخرى"))
        .await?;
    assert!(!later.linked_as_duplicate, "outside the 72 h window");

    let linked: Vec<_> = intake
        .published()
        .await?
        .into_iter()
        .filter(|(subject, _, _)| subject.contains("report.duplicate_linked"))
        .collect();
    assert_eq!(linked.len(), 1, "one linked event");
    intake.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arabic_round_trips_and_no_personal_data_is_published() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    let text = "حفرة عميقة أمام مسجد الراجحي — حي العليا\nالشارع: ٢٣، قرب الإشارة. Deep pothole!";
    let mut req = request("POTHOLE", OLAYA, text);
    req.reporter = Some(pb::Reporter {
        name: "محمد بن عبدالله العتيبي".into(),
        phone: "+966501234567".into(),
        national_id: "1000000008".into(),
    });
    location(&mut req).national_address_short = "RRRD2929".into();
    let submitted = intake.submit(req).await?.report.expect("report");
    let fetched = intake.get(&submitted.id).await?;
    assert_eq!(
        fetched.description.as_bytes(),
        text.as_bytes(),
        "byte for byte"
    );
    assert_eq!(
        fetched.location.expect("location").national_address_short,
        "RRRD2929"
    );
    let by_tracking = intake
        .client
        .get_report(authorized(
            pb::GetReportRequest {
                key: Some(pb::get_report_request::Key::TrackingNumber(
                    submitted.tracking_number.clone(),
                )),
            },
            &intake.channel_token,
        ))
        .await?
        .into_inner();
    assert_eq!(by_tracking.id, submitted.id);

    // Stored encrypted, apart from the report.
    let pool = baladiya_platform::db::schema_pool(&intake.platform.config.database, "intake")?;
    let (phone,): (Vec<u8>,) = sqlx::query_as("SELECT phone FROM reporters")
        .fetch_one(&pool)
        .await?;
    assert!(
        !phone.windows(9).any(|w| w == b"501234567"),
        "the phone is not stored in clear"
    );
    pool.close().await;

    let published = eventually(10, "the received event", || async {
        let p = intake.published().await?;
        Ok((!p.is_empty()).then_some(p))
    })
    .await?;
    let secrets: [&[u8]; 4] = [
        b"501234567",
        b"1000000008",
        "العتيبي".as_bytes(),
        "الراجحي".as_bytes(),
    ];
    for (subject, payload, headers) in &published {
        for secret in secrets {
            assert!(
                !payload.windows(secret.len()).any(|w| w == secret),
                "{subject} payload leaks personal data"
            );
            assert!(
                !headers
                    .as_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret),
                "{subject} headers leak"
            );
        }
    }
    let received: baladiya_proto::intake::events::v1::ReportReceived =
        prost::Message::decode(published[0].1.as_slice())?;
    assert!(
        received.reporter_key.starts_with("rk1_"),
        "a pseudonymous reporter key"
    );
    assert_eq!(received.tracking_number, submitted.tracking_number);
    intake.stop().await
}

async fn publish_case_event<M: prost::Message + prost::Name>(
    env: &TestEnv,
    event: &str,
    case: &routing::CaseRef,
    at: chrono::DateTime<chrono::Utc>,
    payload: impl FnOnce(Option<baladiya_proto::events::v1::EventMeta>, Option<routing::CaseRef>) -> M,
) -> anyhow::Result<()> {
    let id = uuid::Uuid::now_v7();
    let meta = Some(baladiya_proto::events::v1::EventMeta {
        event_id: id.to_string(),
        occurred_at: Some(timestamp(at)),
        aggregate_id: case.case_id.clone(),
        recorded_at: None,
    });
    let kind = EventType::new(
        "routing",
        "case",
        Box::leak(event.to_string().into_boxed_str()),
    );
    let message = payload(meta, Some(case.clone()));
    let out = OutboundEvent::new(
        "routing",
        kind,
        &[&case.municipality_code, &case.assignee_code],
        id,
        case.case_id.clone(),
        at,
        &message,
    );
    let js = async_nats::jetstream::new(env.nats().await?);
    let ns = baladiya_platform::events::Namespace::new(&env.namespace);
    baladiya_platform::events::streams::ROUTING
        .ensure(&js, &ns, &env.config().events)
        .await?;
    baladiya_platform::events::outbox::publish(&js, &ns, &out).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_case_events_and_ratings_come_once_after_resolution() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    let report = intake
        .submit(request("SEWAGE_OVERFLOW", OLAYA, "طفح مجاري في الشارع"))
        .await?
        .report
        .expect("report");
    assert_eq!(
        report.priority,
        Priority::Urgent as i32,
        "{}",
        report.priority_reason
    );
    let duplicate = intake
        .submit(request("SEWAGE_OVERFLOW", north(OLAYA, 50.0), "نفس الطفح"))
        .await?
        .report
        .expect("report");
    assert_eq!(duplicate.duplicate_of, report.id);

    let early = intake
        .client
        .rate_report(authorized(
            pb::RateReportRequest {
                report_id: report.id.clone(),
                score: 4,
                comment: String::new(),
            },
            &intake.channel_token,
        ))
        .await
        .expect_err("not resolved yet");
    assert_eq!(early.code(), Code::FailedPrecondition);

    let case = routing::CaseRef {
        case_id: uuid::Uuid::now_v7().to_string(),
        report_id: report.id.clone(),
        assignee_code: "MEWA".into(),
        municipality_code: "RIYADH".into(),
        category_code: "SEWAGE_OVERFLOW".into(),
        priority: Priority::Urgent as i32,
        tracking_number: report.tracking_number.clone(),
        version: 0,
    };
    let t0 = intake.platform.clock.now();
    let at = |m: i64| t0 + chrono::Duration::minutes(m);
    publish_case_event(&intake.env, "routed", &case, at(1), |meta, case| {
        routing::CaseRouted {
            meta,
            case,
            ..Default::default()
        }
    })
    .await?;
    publish_case_event(&intake.env, "resolved", &case, at(30), |meta, case| {
        routing::CaseResolved {
            meta,
            case,
            resolution: "cleared".into(),
            proof_uris: vec![],
        }
    })
    .await?;
    // Late and out of order: must not undo the resolution.
    publish_case_event(&intake.env, "acknowledged", &case, at(5), |meta, case| {
        routing::CaseAcknowledged { meta, case }
    })
    .await?;

    let resolved = eventually(20, "the resolved status", || async {
        let r = intake.get(&report.id).await?;
        Ok((r.status == pb::ReportStatus::Resolved as i32).then_some(r))
    })
    .await?;
    assert_eq!(resolved.assignee_code, "MEWA");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        intake.get(&report.id).await?.status,
        pb::ReportStatus::Resolved as i32,
        "the late event changed nothing"
    );
    assert_eq!(
        intake.get(&duplicate.id).await?.status,
        pb::ReportStatus::Resolved as i32,
        "duplicates follow the master"
    );

    let rated = intake
        .client
        .rate_report(authorized(
            pb::RateReportRequest {
                report_id: report.id.clone(),
                score: 5,
                comment: "شكراً على سرعة الاستجابة".into(),
            },
            &intake.channel_token,
        ))
        .await?
        .into_inner();
    assert_eq!(rated.rating.expect("rating").score, 5);
    let again = intake
        .client
        .rate_report(authorized(
            pb::RateReportRequest {
                report_id: report.id.clone(),
                score: 1,
                comment: String::new(),
            },
            &intake.channel_token,
        ))
        .await
        .expect_err("once");
    assert_eq!(again.code(), Code::FailedPrecondition);
    let bad = intake
        .client
        .rate_report(authorized(
            pb::RateReportRequest {
                report_id: "nope".into(),
                score: 9,
                comment: String::new(),
            },
            &intake.channel_token,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(fields(&bad), ["report_id", "score"]);
    intake.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_with_tamper_checked_tokens() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    for i in 0..5 {
        intake
            .submit(request(
                "GRAFFITI",
                north(OLAYA, 1_000.0 * f64::from(i)),
                "كتابات على الجدار",
            ))
            .await?;
        intake
            .platform
            .clock
            .advance(Duration::from_secs(60))
            .await?;
    }
    let list = |page_token: String, category: &str| pb::ListReportsRequest {
        page_size: 2,
        page_token,
        category_code: category.into(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = intake
            .client
            .list_reports(authorized(
                list(token.clone(), "GRAFFITI"),
                &intake.channel_token,
            ))
            .await?
            .into_inner();
        pages += 1;
        seen.extend(page.reports.iter().map(|r| r.created_at.map(|t| t.seconds)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!((pages, seen.len()), (3, 5));
    assert!(seen.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let first = intake
        .client
        .list_reports(authorized(
            list(String::new(), "GRAFFITI"),
            &intake.channel_token,
        ))
        .await?
        .into_inner()
        .next_page_token;
    let mut tampered = first.clone();
    let flip = if tampered.ends_with('0') { "1" } else { "0" };
    tampered.replace_range(tampered.len() - 1.., flip);
    for (token, category) in [(tampered, "GRAFFITI"), (first, "POTHOLE")] {
        let status = intake
            .client
            .list_reports(authorized(list(token, category), &intake.channel_token))
            .await
            .expect_err("refused");
        assert_eq!(fields(&status), ["page_token"]);
    }
    intake.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_are_written_together_and_a_failing_one_fails_alone()
-> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    let db = sqlx::PgPool::connect(&intake.env.database_url()).await?;
    // A submit the database refuses, as a broken row would be.
    sqlx::raw_sql(
        "CREATE FUNCTION intake.refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.description = 'بلاغ يرفضه الاختبار' THEN RAISE EXCEPTION 'refused by the test'; END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_marked BEFORE INSERT ON intake.reports
           FOR EACH ROW EXECUTE FUNCTION intake.refuse_marked();",
    )
    .execute(&db)
    .await?;
    let refused = request("STREET_LIGHTING", OLAYA, "بلاغ يرفضه الاختبار");
    let mut requests: Vec<pb::SubmitReportRequest> = (1..40)
        .map(|i| {
            request(
                "STREET_LIGHTING",
                north(OLAYA, 150.0 * f64::from(i)),
                "عمود إنارة مطفأ",
            )
        })
        .collect();
    requests.insert(17, refused.clone());
    let channel = intake.platform.channel().await?;
    let calls = requests.iter().map(|req| {
        let mut client = IntakeServiceClient::new(channel.clone());
        let req = authorized(req.clone(), &intake.channel_token);
        tokio::spawn(async move { client.submit_report(req).await.map(|r| r.into_inner()) })
    });
    let mut tracking = std::collections::HashSet::new();
    let mut failed = Vec::new();
    for (at, call) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        match call? {
            Ok(r) => {
                let report = r.report.expect("report");
                assert!(!r.linked_as_duplicate, "submit {at} is 150 m from the next");
                tracking.insert(report.tracking_number);
            }
            Err(status) => failed.push((at, status.code())),
        }
    }
    assert_eq!(failed.len(), 1, "only the refused submit fails: {failed:?}");
    assert_eq!(failed[0].0, 17);
    assert_eq!(tracking.len(), 39, "each stored report has its own number");
    for (sql, what) in [
        ("SELECT count(*) FROM reports", "reports"),
        ("SELECT count(*) FROM outbox", "received events"),
        (
            "SELECT count(*) FROM audit_events WHERE rpc = '/baladiya.intake.v1.IntakeService/SubmitReport'",
            "audit rows",
        ),
        (
            "SELECT count(*) FROM idempotency_keys WHERE method = 'SubmitReport'",
            "request id claims",
        ),
    ] {
        assert_eq!(
            intake.count(sql).await?,
            39,
            "{what}: one per stored submit"
        );
    }

    // Nothing of the refused submit was kept: once the database takes it,
    // its retry stores it.
    sqlx::raw_sql("DROP TRIGGER refuse_marked ON intake.reports")
        .execute(&db)
        .await?;
    db.close().await;
    let retried = intake.submit(refused).await?;
    assert!(retried.report.is_some());
    assert_eq!(intake.count("SELECT count(*) FROM reports").await?, 40);
    intake.stop().await
}

/// Reports keep their category without a foreign key (its per-row lock on
/// the category cost every submit): categories are deactivated, never
/// deleted or renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_category_is_deactivated_never_deleted_or_renamed() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    intake
        .submit(request("STREET_LIGHTING", OLAYA, "عمود إنارة مطفأ"))
        .await?;
    let db = sqlx::PgPool::connect(&intake.env.database_url()).await?;
    for sql in [
        "DELETE FROM intake.categories WHERE code = 'STREET_LIGHTING'",
        "UPDATE intake.categories SET code = 'LIGHTS' WHERE code = 'STREET_LIGHTING'",
    ] {
        let err = sqlx::query(sql).execute(&db).await.expect_err(sql);
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23001"), "{sql}: {err}");
    }
    sqlx::query("UPDATE intake.categories SET active = false WHERE code = 'STREET_LIGHTING'")
        .execute(&db)
        .await?;
    db.close().await;
    assert_eq!(
        intake
            .count("SELECT count(*) FROM reports r JOIN categories c ON c.code = r.category_code")
            .await?,
        1,
        "the report still finds its category"
    );
    intake.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_report_is_not_served_from_memory() -> anyhow::Result<()> {
    let mut intake = Intake::start().await?;
    let report = intake
        .submit(request("POTHOLE", OLAYA, "حفرة عميقة في الطريق"))
        .await?
        .report
        .expect("report");
    // Read twice: the second answer may come from memory.
    assert_eq!(
        intake.get(&report.id).await?.description,
        report.description
    );
    assert_eq!(
        intake.get(&report.id).await?.description,
        report.description
    );

    let db = sqlx::PgPool::connect(&intake.env.database_url()).await?;
    let change = |text: &'static str| {
        let (db, id) = (db.clone(), report.id.clone());
        async move {
            sqlx::query("UPDATE intake.reports SET description = $2 WHERE id = $1::uuid")
                .bind(id)
                .bind(text)
                .execute(&db)
                .await
        }
    };
    let shows = |text: &'static str| {
        let intake = &intake;
        let id = report.id.clone();
        eventually(10, text, move || {
            let id = id.clone();
            async move {
                let now = intake.get(&id).await?;
                Ok((now.description == text).then_some(()))
            }
        })
    };
    // A change made outside intake's code is heard, and the next read has it.
    change("تغير الوصف").await?;
    shows("تغير الوصف").await?;
    assert_eq!(intake.get(&report.id).await?.description, "تغير الوصف");

    // Changes made while intake cannot hear them are not missed: losing the
    // listening connection forgets everything until it listens again.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(&db)
    .await?;
    change("تغير مرة ثانية").await?;
    shows("تغير مرة ثانية").await?;
    intake.get(&report.id).await?;
    // And it listens again.
    eventually(10, "listening again", || {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            .fetch_one(&db)
            .await?;
            Ok((n > 0).then_some(()))
        }
    })
    .await?;
    intake.get(&report.id).await?;
    change("تغير مرة ثالثة").await?;
    shows("تغير مرة ثالثة").await?;
    db.close().await;
    intake.stop().await
}
