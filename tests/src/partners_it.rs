//! The partners service over gRPC, with real PostgreSQL and NATS, seeded from
//! `deploy/seed/partners`.

use std::sync::Arc;

use baladiya_partners::PartnersModule;
use baladiya_platform::auth::Role;
use baladiya_proto::common::v1::{Priority, WorkingDuration};
use baladiya_proto::convert::timestamp;
use baladiya_proto::partners::v1 as pb;
use baladiya_proto::partners::v1::partner_service_client::PartnerServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::{RunningPlatform, TestEnv, authorized, fields, instant};

fn minutes(m: u32) -> Option<WorkingDuration> {
    Some(WorkingDuration {
        days: 0,
        minutes: m,
    })
}

fn days(d: u32) -> Option<WorkingDuration> {
    Some(WorkingDuration {
        days: d,
        minutes: 0,
    })
}

struct Partners {
    platform: RunningPlatform,
    client: PartnerServiceClient<Channel>,
    operator: String,
    env: TestEnv,
}

impl Partners {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new();
        let platform = RunningPlatform::start(env.config(), vec![Arc::new(PartnersModule)]).await?;
        let client = PartnerServiceClient::new(platform.channel().await?);
        let operator = platform.token(Role::Operator);
        Ok(Self {
            platform,
            client,
            operator,
            env,
        })
    }

    async fn resolve(
        &mut self,
        partner: &str,
        category: &str,
        priority: Priority,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<pb::ResolvedSlaTerms, tonic::Status> {
        Ok(self
            .client
            .resolve_sla_terms(authorized(
                pb::ResolveSlaTermsRequest {
                    partner_code: partner.into(),
                    category_code: category.into(),
                    priority: priority as i32,
                    at: Some(timestamp(at)),
                },
                &self.operator,
            ))
            .await?
            .into_inner())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.platform.stop().await?;
        self.env.cleanup().await;
        Ok(())
    }
}

fn mewa_v2(effective_from: chrono::DateTime<chrono::Utc>) -> pb::Agreement {
    pb::Agreement {
        partner_code: "MEWA".into(),
        effective_from: Some(timestamp(effective_from)),
        terms: vec![
            pb::SlaTerms {
                priority: Priority::Unspecified as i32,
                acknowledge_within: minutes(180),
                resolve_within: days(2),
                calendar_id: "sa-gov".into(),
                ..Default::default()
            },
            pb::SlaTerms {
                category_code: "SEWAGE_OVERFLOW".into(),
                priority: Priority::Urgent as i32,
                acknowledge_within: minutes(30),
                resolve_within: minutes(360),
                calendar_id: "24x7".into(),
                warn_at: vec![0.6, 0.9],
            },
        ],
        escalation_ladder: vec![
            pb::EscalationLevel {
                level: 1,
                delay_after_breach: minutes(0),
                contact: "focal point".into(),
                ..Default::default()
            },
            pb::EscalationLevel {
                level: 2,
                delay_after_breach: days(1),
                contact: "deputy minister".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agreement_version_takes_effect_at_its_instant() -> anyhow::Result<()> {
    let mut p = Partners::start().await?;
    let now = p.platform.clock.now();

    let v1 = p
        .resolve("MEWA", "WATER_LEAK", Priority::Normal, now)
        .await?;
    assert_eq!(v1.agreement_version, 1);
    let terms = v1.terms.clone().expect("terms");
    assert_eq!(terms.acknowledge_within, minutes(240), "4 working hours");
    assert_eq!(terms.resolve_within, days(3));
    assert_eq!(terms.warn_at, [0.5, 0.75], "default thresholds");
    assert_eq!(v1.matched_by, "default");
    assert_eq!(v1.calendar.as_ref().map(|c| c.id.as_str()), Some("sa-gov"));
    assert_eq!(v1.escalation_ladder.len(), 3);
    assert_eq!(
        v1.escalation_ladder[0].nats_subject,
        "baladiya.sla.escalation.raised.MEWA"
    );

    let urgent = p
        .resolve("MEWA", "SEWAGE_OVERFLOW", Priority::Urgent, now)
        .await?;
    assert_eq!(
        urgent.calendar.as_ref().map(|c| c.always_open),
        Some(true),
        "urgent runs 24x7"
    );
    assert_eq!(urgent.terms.expect("terms").acknowledge_within, minutes(60));

    let next_week = now + chrono::Duration::days(7);
    let request = pb::PublishAgreementRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        agreement: Some(mewa_v2(next_week)),
    };
    let v2 = p
        .client
        .publish_agreement(authorized(request.clone(), &p.operator))
        .await?
        .into_inner();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.published_by, "test");

    // A retry of the same request returns the same version; a changed request
    // under the same key is refused.
    let again = p
        .client
        .publish_agreement(authorized(request.clone(), &p.operator))
        .await?
        .into_inner();
    assert_eq!(again, v2);
    let mut changed = request.clone();
    changed.agreement.as_mut().expect("agreement").terms[0].acknowledge_within = minutes(120);
    let refused = p
        .client
        .publish_agreement(authorized(changed, &p.operator))
        .await
        .expect_err("reused key");
    assert_eq!(refused.code(), Code::AlreadyExists);

    assert_eq!(
        p.resolve("MEWA", "WATER_LEAK", Priority::Normal, now)
            .await?
            .agreement_version,
        1,
        "before"
    );
    let before_switch = next_week - chrono::Duration::seconds(1);
    assert_eq!(
        p.resolve("MEWA", "WATER_LEAK", Priority::Normal, before_switch)
            .await?
            .agreement_version,
        1
    );
    let after = p
        .resolve("MEWA", "WATER_LEAK", Priority::Normal, next_week)
        .await?;
    assert_eq!(after.agreement_version, 2, "after");
    assert_eq!(after.terms.expect("terms").acknowledge_within, minutes(180));
    let sewage = p
        .resolve("MEWA", "SEWAGE_OVERFLOW", Priority::Urgent, next_week)
        .await?;
    assert_eq!(sewage.matched_by, "category+priority");
    assert_eq!(sewage.terms.expect("terms").warn_at, [0.6, 0.9]);

    let list = p
        .client
        .list_agreements(authorized(
            pb::ListAgreementsRequest {
                partner_code: "MEWA".into(),
            },
            &p.operator,
        ))
        .await?
        .into_inner();
    assert_eq!(
        list.agreements
            .iter()
            .map(|a| a.version)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    let current = p
        .client
        .get_agreement(authorized(
            pb::GetAgreementRequest {
                partner_code: "MEWA".into(),
                version: 0,
            },
            &p.operator,
        ))
        .await?
        .into_inner();
    assert_eq!(current.version, 1, "version 0 means the one in force now");

    // Before any agreement took effect there are no terms.
    let before_all = p
        .resolve(
            "MEWA",
            "WATER_LEAK",
            Priority::Normal,
            instant("2025-12-01T00:00:00Z"),
        )
        .await;
    assert_eq!(
        before_all.expect_err("none in force").code(),
        Code::NotFound
    );
    let unknown = p
        .resolve("NOBODY", "WATER_LEAK", Priority::Normal, now)
        .await;
    assert_eq!(unknown.expect_err("unknown partner").code(), Code::NotFound);
    p.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_holiday_changes_the_calendar_and_emits_an_event() -> anyhow::Result<()> {
    let mut p = Partners::start().await?;
    let js = async_nats::jetstream::new(p.env.nats().await?);
    let calendar = p
        .client
        .add_calendar_exception(authorized(
            pb::AddCalendarExceptionRequest {
                calendar_id: "sa-gov".into(),
                exception: Some(pb::add_calendar_exception_request::Exception::Holiday(
                    pb::Holiday {
                        name: "Eid al-Adha extension".into(),
                        start_date: "2026-06-02".into(),
                        end_date: "2026-06-03".into(),
                    },
                )),
            },
            &p.operator,
        ))
        .await?
        .into_inner();
    assert_eq!(calendar.revision, 2);
    assert!(
        calendar
            .holidays
            .iter()
            .any(|h| h.name == "Eid al-Adha extension")
    );

    let subject = format!(
        "{}.baladiya.partners.calendar.changed.sa-gov",
        p.env.namespace
    );
    let stream = js
        .get_stream(format!("{}_PARTNERS", p.env.namespace))
        .await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: subject.clone(),
            ..Default::default()
        })
        .await?;
    let changed = crate::eventually(20, "the calendar-changed event", || {
        let consumer = consumer.clone();
        async move {
            let batch = crate::harness::streams::fetch_messages(
                &consumer,
                10,
                std::time::Duration::from_millis(300),
            )
            .await?;
            let mut found = None;
            for message in batch {
                let event = baladiya_platform::events::InboundEvent::from_parts(
                    message.subject.to_string(),
                    &message.headers.clone().unwrap_or_default(),
                    message.payload.clone(),
                )?;
                let payload: baladiya_proto::partners::events::v1::CalendarChanged =
                    event.decode()?;
                if payload.reason.contains("Eid al-Adha extension") {
                    found = Some((event, payload));
                }
            }
            Ok(found)
        }
    })
    .await?;
    let (event, payload) = changed;
    assert_eq!(event.ce_type, "sa.baladiya.partners.calendar.changed.v1");
    assert_eq!(event.aggregate_id, "sa-gov");
    assert_eq!(
        (
            payload.affected_start_date.as_str(),
            payload.affected_end_date.as_str()
        ),
        ("2026-05-30", "2026-06-06")
    );
    assert_eq!(payload.calendar.map(|c| c.revision), Some(2));

    // The terms now carry the new holiday.
    let resolved = p
        .resolve(
            "MOJ",
            "DEED_ISSUE",
            Priority::Normal,
            p.platform.clock.now(),
        )
        .await?;
    assert!(
        resolved
            .calendar
            .expect("calendar")
            .holidays
            .iter()
            .any(|h| h.start_date == "2026-06-02")
    );

    let missing = p
        .client
        .add_calendar_exception(authorized(
            pb::AddCalendarExceptionRequest {
                calendar_id: "nowhere".into(),
                exception: Some(pb::add_calendar_exception_request::Exception::Holiday(
                    pb::Holiday {
                        name: "x".into(),
                        start_date: "2026-06-02".into(),
                        end_date: "2026-06-02".into(),
                    },
                )),
            },
            &p.operator,
        ))
        .await
        .expect_err("unknown calendar");
    assert_eq!(missing.code(), Code::NotFound);
    p.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_failure_names_its_fields() -> anyhow::Result<()> {
    let mut p = Partners::start().await?;
    let op = p.operator.clone();

    let mut bad = mewa_v2(instant("2025-06-01T00:00:00Z"));
    bad.terms[0].calendar_id = "nowhere".into();
    bad.terms[0].acknowledge_within = minutes(0);
    bad.terms[1].warn_at = vec![0.9, 0.6];
    bad.terms.push(bad.terms[1].clone());
    bad.escalation_ladder[1].delay_after_breach = minutes(0);
    let status = p
        .client
        .publish_agreement(authorized(
            pb::PublishAgreementRequest {
                request_id: String::new(),
                agreement: Some(bad),
            },
            &op,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        [
            "request_id",
            "agreement.terms[0].acknowledge_within",
            "agreement.terms[0].calendar_id",
            "agreement.terms[1].warn_at",
            "agreement.terms[2].warn_at",
            "agreement.terms[2].category_code",
            "agreement.escalation_ladder[1].delay_after_breach",
            "agreement.effective_from",
        ]
    );

    let calendar = pb::Calendar {
        id: "Bad Id".into(),
        name: "x".into(),
        time_zone: "Asia/Nowhere".into(),
        weekly: vec![pb::WeeklyHours {
            days: vec![pb::DayOfWeek::Sunday as i32],
            windows: vec![pb::TimeWindow {
                start: "14:30".into(),
                end: "07:30".into(),
            }],
        }],
        holidays: vec![pb::Holiday {
            name: "x".into(),
            start_date: "2026-13-01".into(),
            end_date: "2026-01-01".into(),
        }],
        ..Default::default()
    };
    let status = p
        .client
        .upsert_calendar(authorized(
            pb::UpsertCalendarRequest {
                calendar: Some(calendar),
            },
            &op,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&status),
        [
            "calendar.holidays[0].start_date",
            "calendar.id",
            "calendar.time_zone",
            "calendar.weekly[0].windows[0].end"
        ]
    );

    let partner = pb::Partner {
        code: "bad code".into(),
        name: None,
        kind: 0,
        contacts: vec![
            pb::Contact {
                level: 1,
                name: "a".into(),
                ..Default::default()
            },
            pb::Contact {
                level: 1,
                name: "b".into(),
                email: "not-an-address".into(),
                ..Default::default()
            },
        ],
        calendar_id: "nowhere".into(),
        active: true,
        update_time: None,
    };
    let status = p
        .client
        .upsert_partner(authorized(
            pb::UpsertPartnerRequest {
                partner: Some(partner),
            },
            &op,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(&status),
        [
            "partner.kind",
            "partner.code",
            "partner.name.ar",
            "partner.name.en",
            "partner.contacts[1].email",
            "partner.contacts[1].level",
            "partner.calendar_id",
        ]
    );

    let channel = p.platform.token(Role::Channel);
    let denied = p
        .client
        .upsert_partner(authorized(
            pb::UpsertPartnerRequest { partner: None },
            &channel,
        ))
        .await
        .expect_err("channels may not edit partners");
    assert_eq!(denied.code(), Code::PermissionDenied);
    p.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_partners_page_and_upserts_replace() -> anyhow::Result<()> {
    let mut p = Partners::start().await?;
    let op = p.operator.clone();
    let mut codes = Vec::new();
    let mut token = String::new();
    loop {
        let page = p
            .client
            .list_partners(authorized(
                pb::ListPartnersRequest {
                    page_size: 5,
                    page_token: token.clone(),
                    ..Default::default()
                },
                &op,
            ))
            .await?
            .into_inner();
        assert!(page.partners.len() <= 5);
        codes.extend(page.partners.into_iter().map(|p| p.code));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(codes.len(), 12);
    for code in ["MOJ", "MEWA", "MOTLS", "NWC", "MUN-TRIAGE", "OP-INSPECT"] {
        assert!(codes.contains(&code.to_string()), "{code} seeded");
    }
    let ministries = p
        .client
        .list_partners(authorized(
            pb::ListPartnersRequest {
                kind: pb::PartnerKind::Ministry as i32,
                ..Default::default()
            },
            &op,
        ))
        .await?
        .into_inner();
    assert_eq!(ministries.partners.len(), 3);
    let first_page_token = token_for_first_page(&mut p).await?;
    let changed_filter = p
        .client
        .list_partners(authorized(
            pb::ListPartnersRequest {
                page_size: 5,
                page_token: first_page_token,
                kind: 1,
                ..Default::default()
            },
            &op,
        ))
        .await
        .expect_err("token from another listing");
    assert_eq!(changed_filter.code(), Code::InvalidArgument);

    let calendars = p
        .client
        .list_calendars(authorized(pb::ListCalendarsRequest {}, &op))
        .await?
        .into_inner();
    let ids: Vec<_> = calendars.calendars.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["24x7", "om-gov", "sa-gov"]);

    let mut moj = p
        .client
        .get_partner(authorized(
            pb::GetPartnerRequest { code: "MOJ".into() },
            &op,
        ))
        .await?
        .into_inner();
    assert_eq!(
        moj.name.as_ref().map(|n| n.ar.as_str()),
        Some("وزارة العدل")
    );
    moj.active = false;
    let updated = p
        .client
        .upsert_partner(authorized(
            pb::UpsertPartnerRequest { partner: Some(moj) },
            &op,
        ))
        .await?
        .into_inner();
    assert!(!updated.active);
    let active = p
        .client
        .list_partners(authorized(
            pb::ListPartnersRequest {
                page_size: 100,
                ..Default::default()
            },
            &op,
        ))
        .await?
        .into_inner();
    assert_eq!(
        active.partners.len(),
        11,
        "inactive partners are hidden by default"
    );
    p.stop().await
}

async fn token_for_first_page(p: &mut Partners) -> anyhow::Result<String> {
    Ok(p.client
        .list_partners(authorized(
            pb::ListPartnersRequest {
                page_size: 5,
                ..Default::default()
            },
            &p.operator,
        ))
        .await?
        .into_inner()
        .next_page_token)
}
