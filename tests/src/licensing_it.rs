//! The licensing service over gRPC, with partners and the SLA watcher in the
//! same process for decision and clearance clocks.

use std::sync::Arc;
use std::time::Duration;

use baladiya_licensing::LicensingModule;
use baladiya_partners::PartnersModule;
use baladiya_platform::auth::Role;
use baladiya_proto::convert::timestamp;
use baladiya_proto::licensing::v1 as pb;
use baladiya_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use baladiya_proto::sla::v1 as sla;
use baladiya_sla_watcher::SlaWatcherModule;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::{RunningPlatform, TestEnv, authorized, eventually, fields};

struct Licensing {
    platform: RunningPlatform,
    client: LicensingServiceClient<Channel>,
    officer: String,
    applicant: String,
    env: TestEnv,
}

impl Licensing {
    async fn start() -> anyhow::Result<Self> {
        let env = TestEnv::new();
        let mut config = env.config();
        config.sections.insert(
            "licensing".into(),
            toml::Value::Table(toml::toml! { expiry_check_secs = 1 }),
        );
        let platform = RunningPlatform::start(
            config,
            vec![
                Arc::new(PartnersModule),
                Arc::new(LicensingModule),
                Arc::new(SlaWatcherModule),
            ],
        )
        .await?;
        // Applications arriving before the watcher holds the seeded
        // calendars and agreements would use up their quick test retries.
        crate::sla_watcher_has_the_seed(&env).await?;
        let client = LicensingServiceClient::new(platform.channel().await?);
        let officer = platform.token(Role::Operator);
        let applicant = platform.token(Role::Channel);
        Ok(Self {
            platform,
            client,
            officer,
            applicant,
            env,
        })
    }

    fn partner(&self, code: &str) -> String {
        crate::partner_token(&self.platform.config, code)
    }

    async fn submit(
        &mut self,
        license_type: &str,
        documents: &[&str],
    ) -> Result<pb::Application, tonic::Status> {
        Ok(self
            .client
            .submit_application(authorized(
                pb::SubmitApplicationRequest {
                    request_id: uuid::Uuid::now_v7().to_string(),
                    license_type_code: license_type.into(),
                    applicant_id: "balady-account-1029384756".into(),
                    municipality_code: "RIYADH".into(),
                    facility_name: "مطعم الواحة".into(),
                    activity: "restaurant".into(),
                    documents: documents.iter().map(|d| d.to_string()).collect(),
                },
                &self.applicant,
            ))
            .await?
            .into_inner())
    }

    async fn approve_and_issue(&mut self, id: &str) -> anyhow::Result<pb::License> {
        self.client
            .approve_application(authorized(
                pb::ApproveApplicationRequest { id: id.into() },
                &self.officer,
            ))
            .await?;
        Ok(self
            .client
            .issue_license(authorized(
                pb::IssueLicenseRequest {
                    application_id: id.into(),
                },
                &self.officer,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_license_type_follows_its_path() -> anyhow::Result<()> {
    let mut l = Licensing::start().await?;
    let types = l
        .client
        .list_license_types(authorized(pb::ListLicenseTypesRequest {}, &l.officer))
        .await?
        .into_inner()
        .license_types;
    let targets: Vec<(String, u32)> = types
        .iter()
        .map(|t| (t.code.clone(), t.target_days))
        .collect();
    for expected in [
        ("BUILDING_PERMIT", 15),
        ("LAND_SUBDIVISION", 60),
        ("PROFESSIONAL_LICENSE", 5),
    ] {
        assert!(
            targets.contains(&(expected.0.to_string(), expected.1)),
            "{targets:?}"
        );
    }

    // A professional license: documents in, approved, issued.
    let app = l
        .submit(
            "PROFESSIONAL_LICENSE",
            &["commercial_registration", "lease_contract"],
        )
        .await?;
    assert_eq!(app.status, pb::ApplicationStatus::UnderReview as i32);
    let license = l.approve_and_issue(&app.id).await?;
    assert_eq!(license.status, pb::LicenseStatus::Active as i32);
    assert!(license.number.starts_with("PROFESSIONAL_LICENSE-"));

    // A building permit: no approval while the MOJ clearance and the site inspection are missing.
    let moj = l.partner("MOJ");
    let app = l
        .submit(
            "BUILDING_PERMIT",
            &["site_plan", "architectural_drawings", "ownership_deed"],
        )
        .await?;
    let id = app.id.clone();
    l.client
        .request_clearance(authorized(
            pb::RequestClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
            },
            &l.officer,
        ))
        .await?;
    let refused = l
        .client
        .approve_application(authorized(
            pb::ApproveApplicationRequest { id: id.clone() },
            &l.officer,
        ))
        .await
        .expect_err("clearance missing");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("clearance from MOJ"),
        "{}",
        refused.message()
    );
    let issue = l
        .client
        .issue_license(authorized(
            pb::IssueLicenseRequest {
                application_id: id.clone(),
            },
            &l.officer,
        ))
        .await
        .expect_err("not approved");
    assert_eq!(issue.code(), Code::FailedPrecondition);
    let wrong = l.partner("MOTLS");
    let denied = l
        .client
        .record_clearance(authorized(
            pb::RecordClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
                granted: true,
                note: String::new(),
            },
            &wrong,
        ))
        .await
        .expect_err("not MOTLS's");
    assert_eq!(denied.code(), Code::PermissionDenied);
    l.client
        .record_clearance(authorized(
            pb::RecordClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
                granted: true,
                note: String::new(),
            },
            &moj,
        ))
        .await?;
    let when = Some(timestamp(
        l.platform.clock.now() + chrono::Duration::days(2),
    ));
    let scheduled = l
        .client
        .schedule_inspection(authorized(
            pb::ScheduleInspectionRequest {
                id: id.clone(),
                kind: "SITE".into(),
                scheduled_for: when,
            },
            &l.officer,
        ))
        .await?
        .into_inner();
    assert_eq!(
        scheduled.status,
        pb::ApplicationStatus::InspectionScheduled as i32
    );
    l.client
        .record_inspection(authorized(
            pb::RecordInspectionRequest {
                id: id.clone(),
                kind: "SITE".into(),
                passed: true,
                notes: "setbacks respected".into(),
            },
            &l.officer,
        ))
        .await?;
    assert_eq!(
        l.approve_and_issue(&id).await?.status,
        pb::LicenseStatus::Active as i32
    );

    // A land subdivision: MOJ's deed clearance, then approval and issuance.
    let app = l
        .submit("LAND_SUBDIVISION", &["survey_plan", "ownership_deed"])
        .await?;
    l.client
        .request_clearance(authorized(
            pb::RequestClearanceRequest {
                id: app.id.clone(),
                partner_code: "MOJ".into(),
            },
            &l.officer,
        ))
        .await?;
    l.client
        .record_clearance(authorized(
            pb::RecordClearanceRequest {
                id: app.id.clone(),
                partner_code: "MOJ".into(),
                granted: true,
                note: String::new(),
            },
            &moj,
        ))
        .await?;
    assert!(
        l.approve_and_issue(&app.id)
            .await?
            .number
            .starts_with("LAND_SUBDIVISION-")
    );

    // A food establishment: a failed public-health inspection blocks approval until one passes.
    let app = l
        .submit(
            "FOOD_ESTABLISHMENT",
            &[
                "commercial_registration",
                "lease_contract",
                "health_certificates",
            ],
        )
        .await?;
    let when = || Some(timestamp(chrono::Utc::now()));
    l.client
        .schedule_inspection(authorized(
            pb::ScheduleInspectionRequest {
                id: app.id.clone(),
                kind: "PUBLIC_HEALTH".into(),
                scheduled_for: when(),
            },
            &l.officer,
        ))
        .await?;
    l.client
        .record_inspection(authorized(
            pb::RecordInspectionRequest {
                id: app.id.clone(),
                kind: "PUBLIC_HEALTH".into(),
                passed: false,
                notes: "no hand-wash station".into(),
            },
            &l.officer,
        ))
        .await?;
    assert_eq!(
        l.client
            .approve_application(authorized(
                pb::ApproveApplicationRequest { id: app.id.clone() },
                &l.officer
            ))
            .await
            .expect_err("failed inspection")
            .code(),
        Code::FailedPrecondition
    );
    l.client
        .schedule_inspection(authorized(
            pb::ScheduleInspectionRequest {
                id: app.id.clone(),
                kind: "PUBLIC_HEALTH".into(),
                scheduled_for: when(),
            },
            &l.officer,
        ))
        .await?;
    l.client
        .record_inspection(authorized(
            pb::RecordInspectionRequest {
                id: app.id.clone(),
                kind: "PUBLIC_HEALTH".into(),
                passed: true,
                notes: String::new(),
            },
            &l.officer,
        ))
        .await?;
    l.approve_and_issue(&app.id).await?;

    // Bad input: every missing document and field named.
    let bad = l
        .submit("BUILDING_PERMIT", &["site_plan"])
        .await
        .expect_err("documents missing");
    assert_eq!(
        fields(&bad),
        [
            "documents.architectural_drawings",
            "documents.ownership_deed"
        ]
    );
    let bad = l
        .client
        .submit_application(authorized(
            pb::SubmitApplicationRequest {
                license_type_code: "SPACESHIP".into(),
                ..Default::default()
            },
            &l.applicant,
        ))
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(&bad),
        [
            "request_id",
            "applicant_id",
            "municipality_code",
            "facility_name",
            "license_type_code"
        ]
    );
    let empty = l
        .client
        .submit_application(authorized(
            pb::SubmitApplicationRequest::default(),
            &l.applicant,
        ))
        .await
        .expect_err("empty");
    let described: Vec<(String, String)> = empty
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        described.contains(&("license_type_code".into(), "is required".into())),
        "{described:?}"
    );
    l.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_land_subdivision_returned_and_refused_runs_its_clocks() -> anyhow::Result<()> {
    let mut l = Licensing::start().await?;
    let moj = l.partner("MOJ");
    let app = l
        .submit("LAND_SUBDIVISION", &["survey_plan", "ownership_deed"])
        .await?;
    let id = app.id.clone();
    l.platform.clock.advance(Duration::from_secs(3600)).await?;
    let returned = l
        .client
        .return_for_correction(authorized(
            pb::ReturnForCorrectionRequest {
                id: id.clone(),
                reason: "survey plan unsigned".into(),
            },
            &l.officer,
        ))
        .await?
        .into_inner();
    assert_eq!(returned.status, pb::ApplicationStatus::Returned as i32);
    let out_of_order = l
        .client
        .request_clearance(authorized(
            pb::RequestClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
            },
            &l.officer,
        ))
        .await
        .expect_err("returned");
    assert_eq!(out_of_order.code(), Code::FailedPrecondition);
    l.platform
        .clock
        .advance(Duration::from_secs(86_400))
        .await?;
    l.client
        .resubmit_application(authorized(
            pb::ResubmitApplicationRequest {
                id: id.clone(),
                documents: vec!["survey_plan".into()],
            },
            &l.applicant,
        ))
        .await?;
    l.client
        .request_clearance(authorized(
            pb::RequestClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
            },
            &l.officer,
        ))
        .await?;
    let no_note = l
        .client
        .record_clearance(authorized(
            pb::RecordClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
                granted: false,
                note: String::new(),
            },
            &moj,
        ))
        .await
        .expect_err("a refusal needs a note");
    assert_eq!(fields(&no_note), ["note"]);
    let refused = l
        .client
        .record_clearance(authorized(
            pb::RecordClearanceRequest {
                id: id.clone(),
                partner_code: "MOJ".into(),
                granted: false,
                note: "deed under dispute".into(),
            },
            &moj,
        ))
        .await?
        .into_inner();
    assert_eq!(refused.clearances[0].state, "refused");
    let rejected = l
        .client
        .reject_application(authorized(
            pb::RejectApplicationRequest {
                id: id.clone(),
                reason: "deed under dispute".into(),
            },
            &l.officer,
        ))
        .await?
        .into_inner();
    assert_eq!(rejected.status, pb::ApplicationStatus::Rejected as i32);

    // The SLA watcher ran a 60-day decision clock (paused while returned) and MOJ's clearance clock.
    let mut clocks = sla::sla_service_client::SlaServiceClient::new(l.platform.channel().await?);
    let admin = l.platform.token(Role::Admin);
    let found = eventually(30, "the application's clocks", || {
        let (mut clocks, admin, id) = (clocks.clone(), admin.clone(), id.clone());
        async move {
            let c = clocks
                .get_clocks(authorized(
                    sla::GetClocksRequest {
                        subject_kind: "application".into(),
                        subject_id: id,
                    },
                    &admin,
                ))
                .await?
                .into_inner()
                .clocks;
            let decision = c.iter().find(|c| c.metric == "decision").cloned();
            let clearance = c.iter().find(|c| c.metric == "clearance").cloned();
            Ok(match (decision, clearance) {
                (Some(d), Some(k))
                    if d.state == sla::ClockState::Met as i32
                        && k.state == sla::ClockState::Met as i32 =>
                {
                    Some((d, k))
                }
                _ => None,
            })
        }
    })
    .await?;
    let (decision, clearance) = found;
    assert_eq!(
        decision.target.map(|t| t.seconds),
        Some(60 * 7 * 3600),
        "60 working days of 7 hours"
    );
    assert_eq!(clearance.partner_code, "MOJ");
    assert_eq!(
        clearance.target.map(|t| t.seconds),
        Some(5 * 7 * 3600),
        "MOJ's deed clearance within 5 working days"
    );
    let _ = clocks
        .list_breaches(authorized(sla::ListBreachesRequest::default(), &admin))
        .await?;
    l.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licenses_renew_suspend_expire_and_inspections_judge_compliance() -> anyhow::Result<()> {
    let mut l = Licensing::start().await?;
    let app = l
        .submit(
            "PROFESSIONAL_LICENSE",
            &["commercial_registration", "lease_contract"],
        )
        .await?;
    let license = l.approve_and_issue(&app.id).await?;
    let renew = |number: &str| pb::RenewLicenseRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        number: number.into(),
    };
    let early = l
        .client
        .renew_license(authorized(renew(&license.number), &l.applicant))
        .await
        .expect_err("too early");
    assert_eq!(early.code(), Code::FailedPrecondition);
    l.platform
        .clock
        .advance(Duration::from_secs(340 * 86_400))
        .await?;
    let request = renew(&license.number);
    let renewed = l
        .client
        .renew_license(authorized(request.clone(), &l.applicant))
        .await?
        .into_inner();
    assert_eq!(renewed.renews, license.number);
    assert_eq!(
        renewed.valid_from, license.valid_to,
        "continues where the old one ends"
    );
    let again = l
        .client
        .renew_license(authorized(request, &l.applicant))
        .await?
        .into_inner();
    assert_eq!(
        again.number, renewed.number,
        "a retried renewal returns the same license"
    );
    let old = l
        .client
        .get_license(authorized(
            pb::GetLicenseRequest {
                number: license.number.clone(),
            },
            &l.officer,
        ))
        .await?
        .into_inner();
    assert_eq!(old.status, pb::LicenseStatus::Renewed as i32);

    // Compliance inspections: minor violations, then a critical one suspends.
    let item = |code: &str, passed: bool, severity: pb::Severity| pb::ChecklistItem {
        code: code.into(),
        passed,
        severity: severity as i32,
        note: String::new(),
    };
    let inspect =
        |operator: &str, items: Vec<pb::ChecklistItem>| pb::RecordFacilityInspectionRequest {
            request_id: uuid::Uuid::now_v7().to_string(),
            license_number: renewed.number.clone(),
            activity: "PUBLIC_HEALTH".into(),
            operator_code: operator.into(),
            items,
            inspected_at: None,
        };
    let operator = l.partner("OP-INSPECT");
    let minor = l
        .client
        .record_facility_inspection(authorized(
            inspect(
                "OP-INSPECT",
                vec![
                    item("SIGNAGE", false, pb::Severity::Minor),
                    item("CLEANLINESS", true, pb::Severity::Unspecified),
                ],
            ),
            &operator,
        ))
        .await?
        .into_inner();
    assert!(!minor.compliant && !minor.suspended_license && minor.private_operator);
    let compliant = l
        .client
        .record_facility_inspection(authorized(
            inspect(
                "MUNICIPAL",
                vec![item("CLEANLINESS", true, pb::Severity::Unspecified)],
            ),
            &l.officer,
        ))
        .await?
        .into_inner();
    assert!(compliant.compliant && !compliant.private_operator);
    let spoofed = l
        .client
        .record_facility_inspection(authorized(
            inspect("OTHER-OP", vec![item("X", true, pb::Severity::Unspecified)]),
            &operator,
        ))
        .await
        .expect_err("not itself");
    assert_eq!(spoofed.code(), Code::PermissionDenied);
    let critical = l
        .client
        .record_facility_inspection(authorized(
            inspect(
                "MUNICIPAL",
                vec![item(
                    "FOOD_STORAGE_TEMPERATURE",
                    false,
                    pb::Severity::Critical,
                )],
            ),
            &l.officer,
        ))
        .await?
        .into_inner();
    assert!(critical.suspended_license);
    let suspended = l
        .client
        .get_license(authorized(
            pb::GetLicenseRequest {
                number: renewed.number.clone(),
            },
            &l.officer,
        ))
        .await?
        .into_inner();
    assert_eq!(suspended.status, pb::LicenseStatus::Suspended as i32);
    let mut bad = inspect(
        "MUNICIPAL",
        vec![item("X", false, pb::Severity::Unspecified)],
    );
    bad.activity = "NIGHTCLUB".into();
    let invalid = l
        .client
        .record_facility_inspection(authorized(bad, &l.officer))
        .await
        .expect_err("invalid");
    assert_eq!(fields(&invalid), ["activity", "items[0].severity"]);

    // Suspension by an officer, and expiry after validity and grace.
    let app = l
        .submit(
            "PROFESSIONAL_LICENSE",
            &["commercial_registration", "lease_contract"],
        )
        .await?;
    let other = l.approve_and_issue(&app.id).await?;
    let suspended = l
        .client
        .suspend_license(authorized(
            pb::SuspendLicenseRequest {
                number: other.number.clone(),
                reason: "unpaid fees".into(),
            },
            &l.officer,
        ))
        .await?
        .into_inner();
    assert_eq!(suspended.status, pb::LicenseStatus::Suspended as i32);
    assert_eq!(
        l.client
            .renew_license(authorized(renew(&other.number), &l.applicant))
            .await
            .expect_err("suspended")
            .code(),
        Code::FailedPrecondition
    );
    l.platform
        .clock
        .advance(Duration::from_secs(400 * 86_400))
        .await?;
    let expired = eventually(20, "the expiry sweep", || {
        let (mut client, officer, number) =
            (l.client.clone(), l.officer.clone(), other.number.clone());
        async move {
            let got = client
                .get_license(authorized(pb::GetLicenseRequest { number }, &officer))
                .await?
                .into_inner();
            Ok((got.status == pb::LicenseStatus::Expired as i32).then_some(got))
        }
    })
    .await?;
    assert_eq!(expired.number, other.number);
    let pool = baladiya_platform::db::schema_pool(&l.platform.config.database, "licensing")?;
    let expiries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE ce_type = 'sa.baladiya.licensing.license.expired.v1'",
    )
    .fetch_one(&pool)
    .await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let later: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE ce_type = 'sa.baladiya.licensing.license.expired.v1'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(expiries, later, "each license expires once");
    pool.close().await;
    l.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_back_dated_within_the_bound_keeps_both_instants_and_older_is_refused()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(LicensingModule)]).await?;
    let mut client = LicensingServiceClient::new(platform.channel().await?);
    let officer = platform.token(Role::Operator);
    let app = client
        .submit_application(authorized(
            pb::SubmitApplicationRequest {
                request_id: uuid::Uuid::now_v7().to_string(),
                license_type_code: "PROFESSIONAL_LICENSE".into(),
                applicant_id: "balady-account-1029384756".into(),
                municipality_code: "RIYADH".into(),
                facility_name: "مطعم الواحة".into(),
                activity: "restaurant".into(),
                documents: vec!["commercial_registration".into(), "lease_contract".into()],
            },
            &platform.token(Role::Channel),
        ))
        .await?
        .into_inner();
    client
        .approve_application(authorized(
            pb::ApproveApplicationRequest { id: app.id.clone() },
            &officer,
        ))
        .await?;
    let license = client
        .issue_license(authorized(
            pb::IssueLicenseRequest {
                application_id: app.id.clone(),
            },
            &officer,
        ))
        .await?
        .into_inner();
    let inspect_at = |at: chrono::DateTime<chrono::Utc>| pb::RecordFacilityInspectionRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        license_number: license.number.clone(),
        activity: "PUBLIC_HEALTH".into(),
        operator_code: "MUNICIPAL".into(),
        items: vec![pb::ChecklistItem {
            code: "CLEANLINESS".into(),
            passed: true,
            ..Default::default()
        }],
        inspected_at: Some(timestamp(at)),
    };
    let pool = baladiya_platform::db::schema_pool(&platform.config.database, "licensing")?;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await }
    };
    let inspections = "SELECT count(*) FROM facility_inspections";
    let events =
        "SELECT count(*) FROM outbox WHERE ce_type LIKE '%.facility.inspection_recorded.v1'";
    let audits = "SELECT count(*) FROM audit_events WHERE rpc LIKE '%/RecordFacilityInspection'";

    // Recorded 20 minutes on, one said to be 16 minutes old is refused, and
    // so is one from the future.
    platform.clock.advance(Duration::from_secs(20 * 60)).await?;
    let now = platform.clock.now();
    for (at, why) in [
        (
            now - chrono::Duration::minutes(16),
            "must be within 900 seconds before now",
        ),
        (
            now + chrono::Duration::seconds(1),
            "must not be in the future",
        ),
    ] {
        let refused = client
            .record_facility_inspection(authorized(inspect_at(at), &officer))
            .await
            .expect_err(why);
        assert_eq!(refused.code(), Code::InvalidArgument, "{why}");
        let found: Vec<(String, String)> = refused
            .get_error_details()
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "inspected_at");
        assert!(found[0].1.contains(why), "{}", found[0].1);
    }
    assert_eq!(count(inspections).await?, 0, "nothing written");
    assert_eq!(count(events).await?, 0);
    assert_eq!(count(audits).await?, 0);

    // Five minutes back: accepted, with both instants.
    let happened = now - chrono::Duration::minutes(5);
    let recorded = client
        .record_facility_inspection(authorized(inspect_at(happened), &officer))
        .await?
        .into_inner();
    assert_eq!(recorded.inspected_at, Some(timestamp(happened)));
    assert_eq!(recorded.recorded_at, Some(timestamp(now)));
    let stored: (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as("SELECT inspected_at, recorded_at FROM facility_inspections")
        .fetch_one(&pool)
        .await?;
    assert_eq!(stored, (happened, Some(now)));
    let audit: (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT at, occurred_at FROM audit_events WHERE rpc LIKE '%/RecordFacilityInspection'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(audit, (now, Some(happened)));
    let event: (
        chrono::DateTime<chrono::Utc>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT occurred_at, recorded_at FROM outbox
              WHERE ce_type LIKE '%.facility.inspection_recorded.v1'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(event, (happened, Some(now)), "the event carries both");
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}
