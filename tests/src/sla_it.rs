//! The SLA watcher with partners and routing in one process, a driven clock,
//! real PostgreSQL and NATS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baladiya_partners::PartnersModule;
use baladiya_platform::auth::Role;
use baladiya_proto::convert::{instant, timestamp};
use baladiya_proto::partners::v1 as partners;
use baladiya_proto::routing::v1 as routing;
use baladiya_proto::sla::v1 as pb;
use baladiya_proto::sla::v1::sla_service_client::SlaServiceClient;
use baladiya_routing::RoutingModule;
use baladiya_sla_watcher::SlaWatcherModule;
use chrono::{DateTime, Utc};
use tonic::transport::Channel;

use crate::harness::streams::stream_messages;
use crate::{
    ReceivedReport, RunningPlatform, TestEnv, authorized, eventually, publish_report_received,
    riyadh,
};

struct Sla {
    platform: RunningPlatform,
    sla: SlaServiceClient<Channel>,
    routing: routing::routing_service_client::RoutingServiceClient<Channel>,
    admin: String,
    env: TestEnv,
}

impl Sla {
    async fn start(at: &str) -> anyhow::Result<Self> {
        Self::start_with(at, toml::Table::new()).await
    }

    async fn start_with(at: &str, sla_section: toml::Table) -> anyhow::Result<Self> {
        Self::start_beside(at, sla_section, Vec::new()).await
    }

    /// Starts with `others` running beside partners, routing and the watcher.
    async fn start_beside(
        at: &str,
        sla_section: toml::Table,
        others: Vec<Arc<dyn baladiya_platform::app::ServiceModule>>,
    ) -> anyhow::Result<Self> {
        let env = TestEnv::new();
        let mut config = env.config();
        config.clock.start = riyadh(at).to_rfc3339();
        config
            .sections
            .insert("sla".into(), toml::Value::Table(sla_section));
        let platform = RunningPlatform::start(
            config,
            [
                vec![
                    Arc::new(PartnersModule) as Arc<dyn baladiya_platform::app::ServiceModule>,
                    Arc::new(RoutingModule),
                    Arc::new(SlaWatcherModule),
                ],
                others,
            ]
            .concat(),
        )
        .await?;
        crate::sla_watcher_has_the_seed(&env).await?;
        let channel = platform.channel().await?;
        let admin = platform.token(Role::Admin);
        Ok(Self {
            sla: SlaServiceClient::new(channel.clone()),
            routing: routing::routing_service_client::RoutingServiceClient::new(channel),
            platform,
            admin,
            env,
        })
    }

    fn partner(&self, code: &str) -> String {
        crate::partner_token(&self.platform.config, code)
    }

    /// A report of `category` arrives now; returns its case once routed.
    async fn report(&self, category: &str, group: &str) -> anyhow::Result<routing::Case> {
        let report_id = uuid::Uuid::now_v7();
        publish_report_received(
            &self.env,
            &ReceivedReport {
                report_id,
                category,
                group,
                municipality: "RIYADH",
                duplicate_of: None,
                at: self.platform.clock.now(),
            },
        )
        .await?;
        crate::case_of_report(&self.routing, &self.admin, report_id).await
    }

    /// The escalations `token` may see in `state`, newest first.
    async fn escalations(
        &self,
        token: &str,
        state: pb::EscalationState,
    ) -> anyhow::Result<Vec<pb::Escalation>> {
        Ok(self
            .sla
            .clone()
            .list_escalations(authorized(
                pb::ListEscalationsRequest {
                    state: state as i32,
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner()
            .escalations)
    }

    /// The case's clocks by metric, once `n` of them exist.
    async fn clocks(&self, case_id: &str, n: usize) -> anyhow::Result<BTreeMap<String, pb::Clock>> {
        crate::harness::sla::case_clocks(&self.sla, case_id, n, &self.admin).await
    }

    /// Every SLA event so far: (event, partner token, ce-time).
    async fn sla_events(&self) -> anyhow::Result<Vec<(String, String, DateTime<Utc>, Vec<u8>)>> {
        let js = async_nats::jetstream::new(self.env.nats().await?);
        let stream = format!("{}_SLA", self.env.namespace);
        let mut out = Vec::new();
        for m in stream_messages(&js, &stream, 10_000, Duration::from_millis(500)).await? {
            let parts: Vec<String> = m.subject.split('.').map(String::from).collect();
            let time = m
                .headers
                .as_ref()
                .and_then(|h| h.get("ce-time"))
                .and_then(|v| DateTime::parse_from_rfc3339(v.as_str()).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default();
            out.push((
                format!("{}.{}", parts[3], parts[4]),
                parts[5].clone(),
                time,
                m.payload.to_vec(),
            ));
        }
        Ok(out)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.platform.stop().await?;
        self.env.cleanup().await;
        Ok(())
    }
}

fn deadline(c: &pb::Clock) -> Option<DateTime<Utc>> {
    c.deadline.as_ref().and_then(instant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thursday_13_00_warns_breaches_and_escalates_level_by_level() -> anyhow::Result<()> {
    let s = Sla::start("2026-04-02 13:00").await?;
    // A water leak goes to MEWA: acknowledge within 4 working hours on sa-gov.
    let case = s.report("WATER_LEAK", "water").await?;
    assert_eq!(case.assignee_code, "MEWA");
    let clocks = s.clocks(&case.id, 3).await?;
    let ack = &clocks["acknowledge:MEWA"];
    assert_eq!(
        deadline(ack),
        Some(riyadh("2026-04-05 10:00")),
        "90 minutes Thursday, 150 from Sunday 07:30"
    );
    assert_eq!(ack.agreement_version, 1);
    assert!(clocks.contains_key("end_to_end:RIYADH"));

    s.platform.clock.set(riyadh("2026-04-05 12:00")).await?;
    let events = eventually(20, "the breach and level 1", || async {
        let e = s.sla_events().await?;
        Ok(e.iter()
            .any(|(k, _, _, _)| k == "escalation.raised")
            .then_some(e))
    })
    .await?;
    let ack_id = ack.id.clone();
    let of_ack =
        |events: &[(String, String, DateTime<Utc>, Vec<u8>)]| -> Vec<(String, DateTime<Utc>)> {
            events
                .iter()
                .filter(|(_, _, _, payload)| {
                    payload
                        .windows(ack_id.len())
                        .any(|w| w == ack_id.as_bytes())
                })
                .filter(|(k, _, _, _)| k != "clock.started")
                .map(|(k, _, t, _)| (k.clone(), *t))
                .collect()
        };
    assert_eq!(
        of_ack(&events),
        [
            ("clock.warning".to_string(), riyadh("2026-04-05 08:00")),
            ("clock.warning".to_string(), riyadh("2026-04-05 09:00")),
            ("clock.breached".to_string(), riyadh("2026-04-05 10:00")),
            ("escalation.raised".to_string(), riyadh("2026-04-05 10:00")),
        ]
    );
    assert!(
        events
            .iter()
            .any(|(k, partner, _, _)| k == "escalation.raised" && partner == "MEWA"),
        "on the partner's subject"
    );

    // Level 2 one working day after the breach: Monday 10:00.
    s.platform.clock.set(riyadh("2026-04-06 10:30")).await?;
    let events = eventually(20, "level 2", || async {
        let e = s.sla_events().await?;
        Ok((of_ack(&e)
            .iter()
            .filter(|(k, _)| k == "escalation.raised")
            .count()
            == 2)
            .then_some(e))
    })
    .await?;
    assert_eq!(
        of_ack(&events).last(),
        Some(&("escalation.raised".to_string(), riyadh("2026-04-06 10:00")))
    );

    // MEWA lists and acknowledges its escalations; MOTLS sees none of them.
    let mewa = s.partner("MEWA");
    let mut sla = s.sla.clone();
    let list = s.escalations(&mewa, pb::EscalationState::Open).await?;
    let ack_levels: Vec<u32> = list
        .iter()
        .filter(|e| e.clock_id == ack.id)
        .map(|e| e.level)
        .collect();
    assert_eq!(ack_levels, [2, 1]);
    let level1 = list
        .iter()
        .find(|e| e.clock_id == ack.id && e.level == 1)
        .expect("level 1");
    assert_eq!(level1.contact, "focal point");
    assert_eq!(level1.tracking_number, case.tracking_number);
    let acked = sla
        .acknowledge_escalation(authorized(
            pb::AcknowledgeEscalationRequest {
                escalation_id: level1.id.clone(),
                note: "on it".into(),
            },
            &mewa,
        ))
        .await?
        .into_inner();
    assert!(acked.acknowledged_at.is_some());
    let motls = s.partner("MOTLS");
    let none = sla
        .list_escalations(authorized(pb::ListEscalationsRequest::default(), &motls))
        .await?
        .into_inner();
    assert!(none.escalations.is_empty());
    let breaches = sla
        .list_breaches(authorized(pb::ListBreachesRequest::default(), &mewa))
        .await?
        .into_inner();
    assert!(breaches.clocks.iter().any(|c| c.id == ack.id));

    // Acknowledging the case now stops the clock: breached, then met.
    s.routing
        .clone()
        .acknowledge_case(authorized(
            routing::AcknowledgeCaseRequest {
                action: Some(routing::CaseAction {
                    case_id: case.id.clone(),
                    ..Default::default()
                }),
            },
            &mewa,
        ))
        .await?;
    let met = eventually(20, "breached then met", || async {
        let c = s.clocks(&case.id, 3).await?;
        let a = c["acknowledge:MEWA"].clone();
        Ok((a.state == pb::ClockState::BreachedThenMet as i32).then_some(a))
    })
    .await?;
    assert_eq!(met.escalation_levels_fired, 2);
    assert_eq!(met.warnings_fired, 2);
    // The met event states the working time in days of the clock's calendar
    // too (sa-gov: 07:30-14:30, a 7-hour working day), the unit KPIs use.
    let pool = sqlx::PgPool::connect(&s.env.database_url()).await?;
    let payload: Vec<u8> = sqlx::query_scalar(
        "SELECT payload FROM sla_watcher.outbox WHERE ce_type = 'sa.baladiya.sla.clock.met.v1' AND ce_subject = $1",
    )
    .bind(&met.id)
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    let event = <baladiya_proto::sla::events::v1::ClockMet as prost::Message>::decode(&*payload)?;
    let elapsed = event.elapsed.map_or(0, |d| d.seconds);
    assert!(event.breached && elapsed > 0);
    assert!((event.elapsed_working_days - elapsed as f64 / 25_200.0).abs() < 1e-9);
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_shift_deadlines_and_an_announced_holiday_moves_them() -> anyhow::Result<()> {
    let s = Sla::start("2026-04-05 08:00").await?;
    let case = s.report("WATER_LEAK", "water").await?;
    let mewa = s.partner("MEWA");
    let mut r = s.routing.clone();
    let action = || {
        Some(routing::CaseAction {
            case_id: case.id.clone(),
            ..Default::default()
        })
    };
    r.acknowledge_case(authorized(
        routing::AcknowledgeCaseRequest { action: action() },
        &mewa,
    ))
    .await?;
    let before = s.clocks(&case.id, 3).await?["resolve:MEWA"].clone();
    // Resolve within 3 working days (21 h) from Sunday 08:00: 6.5 h Sunday,
    // 7 Monday, 7 Tuesday, 0.5 Wednesday: Wednesday 08:00.
    assert_eq!(deadline(&before), Some(riyadh("2026-04-08 08:00")));

    s.platform.clock.set(riyadh("2026-04-05 09:00")).await?;
    r.put_case_on_hold(authorized(
        routing::PutCaseOnHoldRequest { action: action() },
        &mewa,
    ))
    .await?;
    s.platform.clock.set(riyadh("2026-04-06 09:00")).await?;
    r.resume_case(authorized(
        routing::ResumeCaseRequest { action: action() },
        &mewa,
    ))
    .await?;
    let resumed = eventually(20, "the shifted deadline", || async {
        let c = s.clocks(&case.id, 3).await?["resolve:MEWA"].clone();
        Ok(
            (c.state == pb::ClockState::Running as i32 && deadline(&c) != deadline(&before))
                .then_some(c),
        )
    })
    .await?;
    assert_eq!(
        deadline(&resumed),
        Some(riyadh("2026-04-09 08:00")),
        "shifted by the 7 paused working hours"
    );
    assert_eq!(resumed.original_deadline, before.original_deadline);

    // Wednesday 2026-04-08 is declared a holiday: the deadline moves a working
    // day, from Thursday 08:00 over the weekend to Sunday 08:00.
    let operator = s.platform.token(Role::Operator);
    partners::partner_service_client::PartnerServiceClient::new(s.platform.channel().await?)
        .add_calendar_exception(authorized(
            partners::AddCalendarExceptionRequest {
                calendar_id: "sa-gov".into(),
                exception: Some(
                    partners::add_calendar_exception_request::Exception::Holiday(
                        partners::Holiday {
                            name: "Announced holiday".into(),
                            start_date: "2026-04-08".into(),
                            end_date: "2026-04-08".into(),
                        },
                    ),
                ),
            },
            &operator,
        ))
        .await?;
    let moved = eventually(20, "the moved deadline", || async {
        let c = s.clocks(&case.id, 3).await?["resolve:MEWA"].clone();
        Ok((deadline(&c) == Some(riyadh("2026-04-12 08:00"))).then_some(c))
    })
    .await?;
    assert_eq!(moved.calendar_id, "sa-gov");
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_and_duplicated_case_events_give_identical_clocks_and_escalations()
-> anyhow::Result<()> {
    use baladiya_platform::events::{EventType, Namespace, OutboundEvent, outbox, streams};
    use baladiya_proto::routing::events::v1 as ev;
    let s = Sla::start("2026-04-02 13:00").await?;
    let js = async_nats::jetstream::new(s.env.nats().await?);
    let ns = Namespace::new(&s.env.namespace);
    streams::ROUTING
        .ensure(&js, &ns, &s.env.config().events)
        .await?;
    // Two cases with the same history; the second's events arrive reversed and twice.
    let t = |m: i64| riyadh("2026-04-02 13:00") + chrono::Duration::minutes(m);
    let history = |case: &str| -> Vec<OutboundEvent> {
        let r = |assignee: &str| {
            Some(ev::CaseRef {
                case_id: case.into(),
                report_id: uuid::Uuid::now_v7().to_string(),
                assignee_code: assignee.into(),
                municipality_code: "RIYADH".into(),
                category_code: "WATER_LEAK".into(),
                priority: 2,
                tracking_number: "RUH-2026-0000001".into(),
                version: 0,
            })
        };
        let meta = |m: i64| {
            Some(baladiya_proto::events::v1::EventMeta {
                event_id: String::new(),
                occurred_at: Some(timestamp(t(m))),
                aggregate_id: case.into(),
                recorded_at: None,
            })
        };
        let out = |event: &'static str,
                   m: i64,
                   assignee: &str,
                   payload: &dyn Fn() -> Vec<u8>,
                   dataschema: &str| {
            let mut e = OutboundEvent::new(
                "routing",
                EventType::new("routing", "case", event),
                &["RIYADH", assignee],
                uuid::Uuid::now_v7(),
                case,
                t(m),
                &ev::CaseClosed::default(),
            );
            e.payload = payload();
            e.dataschema = dataschema.into();
            e
        };
        use prost::Message;
        vec![
            out(
                "routed",
                0,
                "MOTLS",
                &|| {
                    ev::CaseRouted {
                        meta: meta(0),
                        case: r("MOTLS"),
                        rule_id: String::new(),
                        report_received_at: Some(timestamp(t(0))),
                    }
                    .encode_to_vec()
                },
                "type.googleapis.com/baladiya.routing.events.v1.CaseRouted",
            ),
            out(
                "rejected",
                30,
                "MOTLS",
                &|| {
                    ev::CaseRejected {
                        meta: meta(30),
                        case: r("MOTLS"),
                        reason: "not ours".into(),
                        suggested_assignee_code: String::new(),
                    }
                    .encode_to_vec()
                },
                "type.googleapis.com/baladiya.routing.events.v1.CaseRejected",
            ),
            out(
                "rerouted",
                60,
                "MEWA",
                &|| {
                    ev::CaseRerouted {
                        meta: meta(60),
                        case: r("MEWA"),
                        previous_assignee_code: "MOTLS".into(),
                        reason: String::new(),
                    }
                    .encode_to_vec()
                },
                "type.googleapis.com/baladiya.routing.events.v1.CaseRerouted",
            ),
            out(
                "put_on_hold",
                90,
                "MEWA",
                &|| {
                    ev::CasePutOnHold {
                        meta: meta(90),
                        case: r("MEWA"),
                        reason: String::new(),
                    }
                    .encode_to_vec()
                },
                "type.googleapis.com/baladiya.routing.events.v1.CasePutOnHold",
            ),
            out(
                "resumed",
                24 * 60 * 3,
                "MEWA",
                &|| {
                    ev::CaseResumed {
                        meta: meta(24 * 60 * 3),
                        case: r("MEWA"),
                    }
                    .encode_to_vec()
                },
                "type.googleapis.com/baladiya.routing.events.v1.CaseResumed",
            ),
        ]
    };
    let (a, b) = (
        uuid::Uuid::now_v7().to_string(),
        uuid::Uuid::now_v7().to_string(),
    );
    for e in history(&a) {
        outbox::publish(&js, &ns, &e).await?;
    }
    let mut shuffled = history(&b);
    shuffled.reverse();
    for e in shuffled.iter().chain(shuffled.iter()) {
        // The same event twice (same id): the second is a duplicate.
        let mut again = e.clone();
        outbox::publish(&js, &ns, e).await?;
        again.id = e.id;
        outbox::publish(&js, &ns, &again).await?;
    }
    let summary = |clocks: BTreeMap<String, pb::Clock>| -> Vec<(
        String,
        i32,
        Option<prost_types::Timestamp>,
        Option<prost_types::Timestamp>,
    )> {
        clocks
            .into_iter()
            .map(|(k, c)| (k, c.state, c.deadline, c.ended_at))
            .collect()
    };
    s.clocks(&a, 5).await?;
    s.clocks(&b, 5).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ca, cb) = (s.clocks(&a, 5).await?, s.clocks(&b, 5).await?);
    assert_eq!(summary(ca.clone()), summary(cb.clone()), "identical clocks");
    assert_eq!(
        ca["acknowledge:MOTLS"].state,
        pb::ClockState::Cancelled as i32
    );

    // Time passes: identical escalations for both.
    s.platform.clock.set(riyadh("2026-04-20 08:00")).await?;
    let sla = s.sla.clone();
    let escalations = eventually(30, "escalations for both cases", || async {
        let all = sla
            .clone()
            .list_escalations(authorized(
                pb::ListEscalationsRequest {
                    page_size: 500,
                    ..Default::default()
                },
                &s.admin,
            ))
            .await?
            .into_inner()
            .escalations;
        let of = |case: &str| {
            let mut v: Vec<(String, u32, Option<prost_types::Timestamp>)> = all
                .iter()
                .filter(|e| e.subject_id == case)
                .map(|e| (e.metric.clone(), e.level, e.raised_at))
                .collect();
            v.sort_by_key(|x| (x.0.clone(), x.1));
            v
        };
        let (ea, eb) = (of(&a), of(&b));
        Ok((!ea.is_empty() && ea.len() >= 4).then_some((ea, eb)))
    })
    .await?;
    assert_eq!(escalations.0, escalations.1, "identical escalations");
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_ten_thousand_timers_once_and_an_aborted_firing_loses_nothing()
-> anyhow::Result<()> {
    use baladiya_platform::app::ServiceModule;
    let env = TestEnv::new();
    let config = env.config();
    baladiya_platform::db::ensure_database(&config.database).await?;
    let pool = baladiya_platform::db::schema_pool(&config.database, "sla_watcher")?;
    baladiya_platform::db::migrate(&pool, "sla_watcher", &SlaWatcherModule.migrator()).await?;
    // 10,000 breached clocks, each with a breach timer due in the past.
    sqlx::query(
        "INSERT INTO clocks (id, key, subject_kind, subject_id, metric, partner_code, agreement_version, calendar_id,
                             target_secs, warn_at, ladder, tracking_number, municipality_code, category_code, inputs,
                             state, elapsed_secs, breached_at, updated_at)
         SELECT gen_random_uuid(), 'k' || g, 'case', gen_random_uuid(), 'resolve', 'MEWA', 1, 'sa-gov', 3600,
                '[]', '[]', 'RUH-' || g, 'RIYADH', 'WATER_LEAK', '[]', 'running', 0,
                now() - interval '1 hour', now()
         FROM generate_series(1, 10000) g",
    )
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO timers (clock_id, kind, seq, due_at) SELECT id, 'breach', 100, breached_at FROM clocks")
        .execute(&pool)
        .await?;

    // A watcher that claims a batch and dies before committing loses nothing.
    {
        let mut tx = pool.begin().await?;
        let claimed: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT clock_id FROM timers WHERE fired_at IS NULL ORDER BY due_at LIMIT 50 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *tx)
        .await?;
        assert_eq!(claimed.len(), 50);
        drop(tx);
    }

    let clock = baladiya_platform::clock::Clock::system();
    // Everything up to now is known: the timers are all covered.
    let rules = baladiya_sla_watcher::commands::FireRules {
        known: baladiya_sla_watcher::store::Known {
            cases: Some(clock.now()),
            applications: Some(clock.now()),
        },
        max_hold: std::time::Duration::from_secs(600),
        watching_since: clock.now(),
    };
    let replicas = (0..2).map(|_| {
        let (pool, clock) = (pool.clone(), clock.clone());
        tokio::spawn(async move {
            baladiya_sla_watcher::commands::fire_due(
                &pool,
                &baladiya_platform::events::Emitter::new("sla-watcher", clock),
                &baladiya_platform::metrics::Metrics::new(),
                rules,
                &mut baladiya_sla_watcher::commands::Failing::default(),
            )
            .await
        })
    });
    let fired: usize = futures::future::join_all(replicas)
        .await
        .into_iter()
        .map(|r| r.expect("join").expect("fire"))
        .sum();
    assert_eq!(fired, 10_000, "every timer fired, none twice");
    let (events, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT ce_subject) FROM outbox WHERE ce_type = 'sa.baladiya.sla.clock.breached.v1'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (events, distinct),
        (10_000, 10_000),
        "one breach event per clock"
    );
    let unfired: i64 = sqlx::query_scalar("SELECT count(*) FROM timers WHERE fired_at IS NULL")
        .fetch_one(&pool)
        .await?;
    assert_eq!(unfired, 0);
    // A restart finds nothing more to fire.
    assert_eq!(
        baladiya_sla_watcher::commands::fire_due(
            &pool,
            &baladiya_platform::events::Emitter::new("sla-watcher", clock.clone()),
            &baladiya_platform::metrics::Metrics::new(),
            rules,
            &mut baladiya_sla_watcher::commands::Failing::default(),
        )
        .await?,
        0
    );
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_clock_runs_the_live_arithmetic() -> anyhow::Result<()> {
    let s = Sla::start("2026-04-02 13:00").await?;
    let mut sla = s.sla.clone();
    let wd = |days, minutes| Some(baladiya_proto::common::v1::WorkingDuration { days, minutes });
    let request = pb::PreviewClockRequest {
        calendar: Some(pb::preview_clock_request::Calendar::CalendarId(
            "sa-gov".into(),
        )),
        target: wd(0, 240),
        warn_at: vec![0.5, 0.75],
        escalation_delays: vec![wd(0, 0).expect("d"), wd(1, 0).expect("d")],
        start: Some(timestamp(riyadh("2026-04-02 13:00"))),
        as_of: Some(timestamp(riyadh("2026-04-10 00:00"))),
        ..Default::default()
    };
    let admin = s.admin.clone();
    let preview = eventually(20, "the calendar replica", || {
        let (mut sla, request, admin) = (sla.clone(), request.clone(), admin.clone());
        async move {
            Ok(sla
                .preview_clock(authorized(request, &admin))
                .await
                .ok()
                .map(|r| r.into_inner()))
        }
    })
    .await?;
    assert_eq!(
        preview.deadline.as_ref().and_then(instant),
        Some(riyadh("2026-04-05 10:00"))
    );
    assert_eq!(
        preview.breach.as_ref().and_then(instant),
        Some(riyadh("2026-04-05 10:00"))
    );
    assert_eq!(
        preview.escalations.iter().map(instant).collect::<Vec<_>>(),
        [
            Some(riyadh("2026-04-05 10:00")),
            Some(riyadh("2026-04-06 10:00"))
        ]
    );
    assert_eq!(preview.state, pb::ClockState::Breached as i32);

    let bad = sla
        .preview_clock(authorized(
            pb::PreviewClockRequest {
                warn_at: vec![1.5],
                ..Default::default()
            },
            &s.admin,
        ))
        .await
        .expect_err("invalid");
    use tonic_types::StatusExt;
    let fields: Vec<String> = bad
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["calendar", "target", "warn_at[0]", "start"]);
    let _ = sla
        .list_breaches(authorized(pb::ListBreachesRequest::default(), &s.admin))
        .await?;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_clock_refuses_hostile_input_and_keeps_ramadan_weekends() -> anyhow::Result<()> {
    use baladiya_proto::partners::v1 as partners;
    use tonic_types::StatusExt;
    let s = Sla::start("2026-02-19 14:00").await?;
    let mut sla = s.sla.clone();
    let wd = |days, minutes| Some(baladiya_proto::common::v1::WorkingDuration { days, minutes });
    let window = |start: &str, end: &str| partners::TimeWindow {
        start: start.into(),
        end: end.into(),
    };
    // Sunday to Thursday 07:30-14:30, Ramadan 10:00-15:00 (no days named:
    // the working weekdays), Founding Day.
    let saudi = |override_days: Vec<i32>| partners::Calendar {
        id: "inline".into(),
        name: "inline".into(),
        time_zone: "Asia/Riyadh".into(),
        weekly: vec![partners::WeeklyHours {
            days: (1..=5).collect(),
            windows: vec![window("07:30", "14:30")],
        }],
        overrides: vec![partners::HoursOverride {
            name: "Ramadan 1447 hours".into(),
            start_date: "2026-02-18".into(),
            end_date: "2026-03-18".into(),
            windows: vec![window("10:00", "15:00")],
            days: override_days,
        }],
        holidays: vec![partners::Holiday {
            name: "Founding Day".into(),
            start_date: "2026-02-22".into(),
            end_date: "2026-02-22".into(),
        }],
        ..Default::default()
    };
    let request = |calendar: partners::Calendar| pb::PreviewClockRequest {
        calendar: Some(pb::preview_clock_request::Calendar::InlineCalendar(
            calendar,
        )),
        target: wd(0, 240),
        start: Some(timestamp(riyadh("2026-02-19 14:00"))),
        as_of: Some(timestamp(riyadh("2026-02-19 14:00"))),
        ..Default::default()
    };
    // Friday and Saturday stay weekend in Ramadan; Sunday is Founding Day.
    let preview = sla
        .preview_clock(authorized(request(saudi(vec![])), &s.admin))
        .await?
        .into_inner();
    assert_eq!(
        preview.deadline.as_ref().and_then(instant),
        Some(riyadh("2026-02-23 13:00"))
    );

    let refused = |request: pb::PreviewClockRequest| {
        let (mut sla, admin) = (sla.clone(), s.admin.clone());
        async move {
            let status = sla
                .preview_clock(authorized(request, &admin))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status
                .get_error_details()
                .bad_request()
                .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
                .unwrap_or_default()
        }
    };
    let base = request(saudi(vec![]));
    let fields: Vec<String> = refused(pb::PreviewClockRequest {
        target: wd(u32::MAX, u32::MAX),
        escalation_delays: vec![wd(366, 0).expect("d")],
        ..base.clone()
    })
    .await;
    assert_eq!(
        fields,
        ["target.days", "target.minutes", "escalation_delays[0].days"]
    );
    let year = |y: i32| {
        Some(timestamp(
            chrono::NaiveDate::from_ymd_opt(y, 6, 1)
                .expect("date")
                .and_hms_opt(0, 0, 0)
                .expect("time")
                .and_utc(),
        ))
    };
    let fields: Vec<String> = refused(pb::PreviewClockRequest {
        start: year(9999),
        stop: year(1),
        pauses: vec![year(2300).expect("t")],
        as_of: year(1999),
        ..base.clone()
    })
    .await;
    assert_eq!(fields, ["start", "stop", "as_of", "pauses[0]"]);
    // Within every bound, a calendar open one minute a week cannot reach
    // the deadline before 2200: refused, not answered with no deadline.
    let mut sparse = saudi(vec![]);
    sparse.weekly = vec![partners::WeeklyHours {
        days: vec![partners::DayOfWeek::Sunday as i32],
        windows: vec![window("07:30", "07:31")],
    }];
    sparse.overrides.clear();
    let fields: Vec<String> = refused(pb::PreviewClockRequest {
        target: wd(0, 3_650 * 24 * 60),
        ..request(sparse)
    })
    .await;
    assert_eq!(fields, ["target"]);
    // An override naming a weekend day or a day twice is refused by path.
    let fields: Vec<String> = refused(request(saudi(vec![
        partners::DayOfWeek::Friday as i32,
        partners::DayOfWeek::Sunday as i32,
        partners::DayOfWeek::Sunday as i32,
    ])))
    .await;
    assert_eq!(
        fields,
        [
            "inline_calendar.overrides[0].days[0]",
            "inline_calendar.overrides[0].days[2]"
        ]
    );
    s.stop().await
}

/// Requests a webhook server saw: (path, signature header, body).
type SeenRequests = Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Publishes MEWA's agreement version 2, effective 2026-04-01, asking for
/// level 1 (at breach) and level 2 (a working day later) by webhook on these
/// paths of `hooks`, and waits until the SLA watcher's replica has it.
async fn publish_mewa_webhooks(
    s: &Sla,
    hooks: &HookServer,
    level1: &str,
    level2: &str,
) -> anyhow::Result<()> {
    let operator = s.platform.token(Role::Operator);
    let url = |path: &str| format!("https://localhost:{}{path}", hooks.port);
    let wd = |days, minutes| Some(baladiya_proto::common::v1::WorkingDuration { days, minutes });
    let client =
        partners::partner_service_client::PartnerServiceClient::new(s.platform.channel().await?);
    let agreement = partners::Agreement {
        partner_code: "MEWA".into(),
        effective_from: Some(timestamp(riyadh("2026-04-01 00:00"))),
        terms: vec![partners::SlaTerms {
            acknowledge_within: wd(0, 240),
            resolve_within: wd(3, 0),
            calendar_id: "sa-gov".into(),
            ..Default::default()
        }],
        escalation_ladder: vec![
            partners::EscalationLevel {
                level: 1,
                delay_after_breach: wd(0, 0),
                contact: "focal point".into(),
                webhook_url: url(level1),
                ..Default::default()
            },
            partners::EscalationLevel {
                level: 2,
                delay_after_breach: wd(1, 0),
                contact: "deputy minister".into(),
                webhook_url: url(level2),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let published = eventually(20, "the seeded MEWA agreement", || {
        let (mut client, operator, agreement) =
            (client.clone(), operator.clone(), agreement.clone());
        async move {
            Ok(client
                .publish_agreement(authorized(
                    partners::PublishAgreementRequest {
                        request_id: uuid::Uuid::now_v7().to_string(),
                        agreement: Some(agreement),
                    },
                    &operator,
                ))
                .await
                .ok()
                .map(|r| r.into_inner()))
        }
    })
    .await?;
    assert_eq!(published.version, 2);
    let pool = sqlx::PgPool::connect(&s.env.database_url()).await?;
    eventually(20, "version 2 in the watcher's replica", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sla_watcher.agreements WHERE partner_code = 'MEWA' AND version = 2",
        )
        .fetch_one(&pool)
        .await?;
        Ok((n == 1).then_some(()))
    })
    .await?;
    pool.close().await;
    Ok(())
}

/// A partner's HTTPS webhook server: answers 500 on `/flaky` once then 200,
/// always 500 on `/dead` and always 200 on `/ok`; records every request.
struct HookServer {
    port: u16,
    ca_file: std::path::PathBuf,
    seen: SeenRequests,
}

impl HookServer {
    async fn start() -> anyhow::Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let ca_file = std::env::temp_dir().join(format!(
            "baladiya-hook-{}.pem",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::write(&ca_file, cert.cert.pem())?;
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let seen: SeenRequests = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body) = loop {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..at]).to_string();
                            let length: usize = head
                                .lines()
                                .find_map(|l| {
                                    l.to_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            while buf.len() < at + 4 + length {
                                let Ok(n) = tls.read(&mut chunk).await else {
                                    return;
                                };
                                if n == 0 {
                                    break;
                                }
                                buf.extend_from_slice(&chunk[..n]);
                            }
                            break (head, buf[at + 4..].to_vec());
                        }
                    };
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let signature = head
                        .lines()
                        .find_map(|l| l.strip_prefix("X-Baladiya-Signature: ").map(String::from))
                        .unwrap_or_default();
                    let earlier = {
                        let mut seen = record.lock().expect("lock");
                        let earlier = seen.iter().filter(|(p, _, _)| *p == path).count();
                        seen.push((path.clone(), signature, body));
                        earlier
                    };
                    let ok = path == "/ok" || (path == "/flaky" && earlier >= 1);
                    let status = if ok {
                        "200 OK"
                    } else {
                        "500 Internal Server Error"
                    };
                    let _ = tls.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Ok(Self {
            port,
            ca_file,
            seen,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_reach_partner_webhooks_signed_retried_and_dead_lettered() -> anyhow::Result<()>
{
    let hooks = HookServer::start().await?;
    let mut section = toml::Table::new();
    section.insert(
        "webhook_ca_file".into(),
        hooks.ca_file.display().to_string().into(),
    );
    section.insert("webhook_max_attempts".into(), 3.into());
    section.insert("webhook_backoff_ms".into(), 50.into());
    let s = Sla::start_with("2026-04-02 13:00", section).await?;
    // MEWA asks for level 1 and level 2 escalations by webhook.
    publish_mewa_webhooks(&s, &hooks, "/flaky", "/dead").await?;

    let case = s.report("WATER_LEAK", "water").await?;
    let clocks = s.clocks(&case.id, 3).await?;
    assert_eq!(clocks["acknowledge:MEWA"].agreement_version, 2);
    s.platform.clock.set(riyadh("2026-04-06 10:30")).await?;

    let mut sla = s.sla.clone();
    let admin = s.admin.clone();
    let escalations = eventually(30, "one delivered and one dead webhook", || {
        let (mut sla, admin) = (sla.clone(), admin.clone());
        let ack_id = clocks["acknowledge:MEWA"].id.clone();
        async move {
            let list = sla
                .list_escalations(authorized(
                    pb::ListEscalationsRequest {
                        partner_code: "MEWA".into(),
                        ..Default::default()
                    },
                    &admin,
                ))
                .await?
                .into_inner()
                .escalations;
            let ours: Vec<pb::Escalation> =
                list.into_iter().filter(|e| e.clock_id == ack_id).collect();
            let done = ours
                .iter()
                .any(|e| e.level == 1 && e.webhook_state == "delivered")
                && ours
                    .iter()
                    .any(|e| e.level == 2 && e.webhook_state == "dead");
            Ok(done.then_some(ours))
        }
    })
    .await?;
    let level1 = escalations.iter().find(|e| e.level == 1).expect("level 1");
    let level2 = escalations.iter().find(|e| e.level == 2).expect("level 2");
    assert_eq!(
        (level1.webhook_attempts, level2.webhook_attempts),
        (2, 3),
        "retried once, then dead after three"
    );

    let seen = hooks.seen.lock().expect("lock").clone();
    let flaky: Vec<_> = seen.iter().filter(|(p, _, _)| p == "/flaky").collect();
    assert_eq!(flaky.len(), 2);
    assert_eq!(flaky[0].2, flaky[1].2, "a retry sends the same body");
    let secret = baladiya_platform::config::hex_bytes(
        baladiya_sla_watcher::SlaConfig::default()
            .webhook_secret
            .expose(),
    )
    .expect("hex");
    assert_eq!(
        flaky[1].1,
        baladiya_sla_watcher::webhook::signature(&secret, &flaky[1].2),
        "signed with the shared secret"
    );
    let body: serde_json::Value = serde_json::from_slice(&flaky[1].2)?;
    assert_eq!(body["level"], 1);
    assert_eq!(body["tracking_number"], case.tracking_number.as_str());
    let _ = sla
        .get_clocks(authorized(
            pb::GetClocksRequest {
                subject_kind: "case".into(),
                subject_id: case.id.clone(),
            },
            &s.admin,
        ))
        .await?;
    let _ = std::fs::remove_file(&hooks.ca_file);
    s.stop().await
}

/// Holds routing's outbox relay, as a stalled relay or an outage between
/// routing and NATS would: routing's events and its watermark stay unsent
/// until the returned transaction ends.
async fn hold_routing_relay(
    env: &TestEnv,
) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('baladiya_outbox_relay.routing'))")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The SLA events of one clock, in stream order: (event, ce-time, payload).
fn events_of(
    events: &[(String, String, DateTime<Utc>, Vec<u8>)],
    clock_id: &str,
) -> Vec<(String, DateTime<Utc>, Vec<u8>)> {
    events
        .iter()
        .filter(|(_, _, _, payload)| {
            payload
                .windows(clock_id.len())
                .any(|w| w == clock_id.as_bytes())
        })
        .map(|(k, _, t, p)| (k.clone(), *t, p.clone()))
        .collect()
}

/// MEWA acknowledges a water leak at Sunday 09:50, ten minutes before its
/// 10:00 deadline, with MEWA's acknowledge clock as `ack` once it ran to 09:50.
async fn acknowledged_before_the_deadline(
    s: &Sla,
    hold: bool,
) -> anyhow::Result<(
    routing::Case,
    pb::Clock,
    Option<sqlx::Transaction<'static, sqlx::Postgres>>,
)> {
    let case = s.report("WATER_LEAK", "water").await?;
    let ack = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
    assert_eq!(deadline(&ack), Some(riyadh("2026-04-05 10:00")));
    s.platform.clock.set(riyadh("2026-04-05 09:50")).await?;
    let held = if hold {
        Some(hold_routing_relay(&s.env).await?)
    } else {
        None
    };
    s.routing
        .clone()
        .acknowledge_case(authorized(
            routing::AcknowledgeCaseRequest {
                action: Some(routing::CaseAction {
                    case_id: case.id.clone(),
                    ..Default::default()
                }),
            },
            &s.partner("MEWA"),
        ))
        .await?;
    Ok((case, ack, held))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_held_past_the_deadline_fires_nothing_and_the_clock_is_met()
-> anyhow::Result<()> {
    let s = Sla::start("2026-04-02 13:00").await?;
    let (case, ack, held) = acknowledged_before_the_deadline(&s, true).await?;
    // The deadline passes while routing's acknowledgement sits in its
    // outbox (within the ten minutes a firing waits for knowledge).
    s.platform.clock.set(riyadh("2026-04-05 10:05")).await?;
    let waiting = eventually(20, "the breach held on routing", || async {
        let c = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
        Ok(c.held
            .clone()
            .filter(|h| h.kind == "breach")
            .map(|h| (c, h)))
    })
    .await?;
    assert_eq!(waiting.1.waiting_on, "routing");
    assert_eq!(
        waiting.1.due_at,
        Some(timestamp(riyadh("2026-04-05 10:00")))
    );
    assert_eq!(
        waiting.1.fires_by,
        Some(timestamp(riyadh("2026-04-05 10:10"))),
        "due plus the default ten-minute hold"
    );
    assert!(!waiting.1.input_parked);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fired: Vec<String> = events_of(&s.sla_events().await?, &ack.id)
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    assert!(
        !fired
            .iter()
            .any(|k| k == "clock.breached" || k == "escalation.raised"),
        "nothing fires on what the watcher does not know: {fired:?}"
    );
    // Routing's relay comes back: the acknowledgement arrives, met in time.
    held.expect("held").rollback().await?;
    let met = eventually(20, "met", || async {
        let c = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
        Ok((c.state == pb::ClockState::Met as i32).then_some(c))
    })
    .await?;
    assert!(met.held.is_none() && met.withdrawals == 0);
    let kinds: Vec<String> = events_of(&s.sla_events().await?, &ack.id)
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            "clock.started",
            "clock.warning",
            "clock.warning",
            "clock.met"
        ],
        "no breach, no escalation, nothing withdrawn"
    );
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_max_hold_fires_provisionally_and_the_late_acknowledgement_withdraws_it()
-> anyhow::Result<()> {
    let section: toml::Table = toml::from_str("max_hold_secs = 60")?;
    let s = Sla::start_with("2026-04-02 13:00", section).await?;
    let (case, ack, held) = acknowledged_before_the_deadline(&s, true).await?;
    // Past 10:00 plus the one-minute hold, the watcher fires anyway.
    s.platform.clock.set(riyadh("2026-04-05 10:30")).await?;
    let events = eventually(20, "the provisional breach and level 1", || async {
        let e = events_of(&s.sla_events().await?, &ack.id);
        Ok(e.iter()
            .any(|(k, _, _)| k == "escalation.raised")
            .then_some(e))
    })
    .await?;
    let (_, at, payload) = events
        .iter()
        .find(|(k, _, _)| k == "clock.breached")
        .expect("breached");
    assert_eq!(
        *at,
        riyadh("2026-04-05 10:00"),
        "at its deadline, fired late"
    );
    let breach = <baladiya_proto::sla::events::v1::ClockBreached as prost::Message>::decode(
        payload.as_slice(),
    )?;
    assert!(breach.provisional);
    let mewa = s.partner("MEWA");
    let open = s.escalations(&mewa, pb::EscalationState::Open).await?;
    let raised = open
        .iter()
        .find(|e| e.clock_id == ack.id && e.level == 1)
        .expect("level 1 raised")
        .clone();
    assert!(raised.provisional);
    let overdue = |s: &Sla, case_id: String| {
        let mut r = s.routing.clone();
        let admin = s.admin.clone();
        async move {
            anyhow::Ok(
                r.get_case(authorized(routing::GetCaseRequest { id: case_id }, &admin))
                    .await?
                    .into_inner()
                    .overdue,
            )
        }
    };
    eventually(20, "the case overdue", || async {
        Ok(overdue(&s, case.id.clone()).await?.then_some(()))
    })
    .await?;

    // The acknowledgement arrives: it happened before the deadline, so the
    // breach and the escalation are withdrawn and the clock is met.
    held.expect("held").rollback().await?;
    let met = eventually(20, "met, with its firings withdrawn", || async {
        let c = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
        Ok((c.state == pb::ClockState::Met as i32 && c.withdrawals == 2).then_some(c))
    })
    .await?;
    assert_eq!(met.escalation_levels_fired, 0);
    assert!(!met.breach_provisional);
    let events = eventually(20, "the withdrawals published", || async {
        let e = events_of(&s.sla_events().await?, &ack.id);
        Ok(e.iter()
            .any(|(k, _, _)| k == "escalation.withdrawn")
            .then_some(e))
    })
    .await?;
    let kinds: Vec<&str> = events.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "clock.breach_withdrawn")
            .count(),
        1
    );
    assert_eq!(kinds.iter().filter(|k| **k == "clock.breached").count(), 1);
    assert_eq!(kinds.last(), Some(&"clock.met"));
    let (_, _, payload) = events
        .iter()
        .find(|(k, _, _)| k == "clock.breach_withdrawn")
        .expect("withdrawn");
    let withdrawn =
        <baladiya_proto::sla::events::v1::ClockBreachWithdrawn as prost::Message>::decode(
            payload.as_slice(),
        )?;
    assert_eq!(
        withdrawn.reason,
        baladiya_proto::sla::events::v1::WithdrawalReason::LateEvent as i32
    );
    assert_eq!(
        withdrawn.withdrawn_deadline,
        Some(timestamp(riyadh("2026-04-05 10:00")))
    );
    let withdrawn_list = s.escalations(&mewa, pb::EscalationState::Withdrawn).await?;
    let gone = withdrawn_list
        .iter()
        .find(|e| e.id == raised.id)
        .expect("listed as withdrawn");
    assert!(gone.withdrawn_at.is_some());
    assert_eq!(gone.withdrawal_reason, "late_event");
    let still_open = s.escalations(&mewa, pb::EscalationState::Open).await?;
    assert!(!still_open.iter().any(|e| e.clock_id == ack.id));
    eventually(20, "the overdue mark cleared", || async {
        Ok((!overdue(&s, case.id.clone()).await?).then_some(()))
    })
    .await?;
    // Later deadlines fire once, as before: nothing more for this clock.
    s.platform.clock.set(riyadh("2026-04-09 12:00")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = events_of(&s.sla_events().await?, &ack.id);
    assert_eq!(again.len(), events.len(), "nothing fires again: {again:?}");
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_escalation_sends_the_partner_a_signed_withdrawal_and_a_pending_one_is_cancelled()
-> anyhow::Result<()> {
    let hooks = HookServer::start().await?;
    let mut section = toml::Table::new();
    section.insert(
        "webhook_ca_file".into(),
        hooks.ca_file.display().to_string().into(),
    );
    section.insert("max_hold_secs".into(), 60.into());
    let s = Sla::start_with("2026-04-02 13:00", section).await?;
    // Level 1 is delivered at once; level 2's server is down.
    publish_mewa_webhooks(&s, &hooks, "/ok", "/dead").await?;
    let (case, ack, held) = acknowledged_before_the_deadline(&s, true).await?;
    assert_eq!(ack.agreement_version, 2);
    // Past the hold, Monday 10:30: the breach, level 1 (delivered) and level
    // 2 (failing, pending a retry) go out provisional.
    s.platform.clock.set(riyadh("2026-04-06 10:30")).await?;
    let mewa = s.partner("MEWA");
    let listed = |state: pb::EscalationState| {
        let (s, mewa, ack_id) = (&s, mewa.clone(), ack.id.clone());
        async move {
            let list = s.escalations(&mewa, state).await?;
            anyhow::Ok(
                list.into_iter()
                    .filter(|e| e.clock_id == ack_id)
                    .collect::<Vec<_>>(),
            )
        }
    };
    let raised = eventually(30, "level 1 delivered, level 2 failing", || async {
        let open = listed(pb::EscalationState::Open).await?;
        let done = open
            .iter()
            .any(|e| e.level == 1 && e.webhook_state == "delivered")
            && open
                .iter()
                .any(|e| e.level == 2 && e.webhook_attempts >= 1 && e.webhook_state == "pending");
        Ok(done.then_some(open))
    })
    .await?;
    assert!(raised.iter().all(|e| e.provisional));

    // The acknowledgement arrives: both escalations are withdrawn.
    held.expect("held").rollback().await?;
    let withdrawn = eventually(30, "both escalations withdrawn", || async {
        let gone = listed(pb::EscalationState::Withdrawn).await?;
        Ok((gone.len() == 2).then_some(gone))
    })
    .await?;
    assert!(
        withdrawn
            .iter()
            .all(|e| e.withdrawal_reason == "late_event")
    );
    // MEWA's server gets a signed withdrawal of level 1 (it had the
    // escalation), and of level 2 (an attempt was made: it may have it).
    let seen = eventually(30, "the withdrawal POSTs", || async {
        let seen = hooks.seen.lock().expect("lock").clone();
        let withdrawals: Vec<_> = seen
            .into_iter()
            .filter(|(_, _, body)| {
                serde_json::from_slice::<serde_json::Value>(body)
                    .is_ok_and(|b| b["type"] == "escalation.withdrawn")
            })
            .collect();
        Ok(withdrawals
            .iter()
            .any(|(path, _, _)| path == "/ok")
            .then_some(withdrawals))
    })
    .await?;
    let (_, signature, body) = seen
        .iter()
        .find(|(path, _, _)| path == "/ok")
        .expect("withdrawal of level 1");
    let secret = baladiya_platform::config::hex_bytes(
        baladiya_sla_watcher::SlaConfig::default()
            .webhook_secret
            .expose(),
    )
    .expect("hex");
    assert_eq!(
        *signature,
        baladiya_sla_watcher::webhook::signature(&secret, body),
        "signed like the escalation"
    );
    let body: serde_json::Value = serde_json::from_slice(body)?;
    let level1 = withdrawn.iter().find(|e| e.level == 1).expect("level 1");
    assert_eq!(body["escalation_id"], level1.id.as_str());
    assert_eq!(body["reason"], "late_event");
    assert_eq!(body["tracking_number"], case.tracking_number.as_str());

    // Level 2's server had failed once, so it may have the escalation: it is
    // told too, and the escalation's own delivery stops retrying.
    let pool = sqlx::PgPool::connect(&s.env.database_url()).await?;
    let raised_states: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, state FROM sla_watcher.webhook_deliveries d
         JOIN sla_watcher.escalations e ON e.id = d.escalation_id
         WHERE e.clock_id = $1::uuid AND e.level = 2 ORDER BY kind",
    )
    .bind(&ack.id)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    assert_eq!(
        raised_states,
        [
            ("raised".to_string(), "cancelled".to_string()),
            ("withdrawn".to_string(), "pending".to_string())
        ],
        "level 2's delivery stopped and its withdrawal queued"
    );
    let _ = std::fs::remove_file(&hooks.ca_file);
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawing_an_escalation_never_sent_cancels_its_delivery_and_tells_nobody()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let (pool, clock_id, first) = watcher_schema(&env).await?;
    // Two escalations with a delivery each: one never attempted, one delivered.
    let second = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO escalations (id, clock_id, level, partner_code, subject_kind, subject_id, tracking_number,
                                  metric, contact, agreement_version, raised_at, overdue_working_secs, overdue_wall_secs)
         SELECT $1, clock_id, 2, partner_code, subject_kind, subject_id, tracking_number, metric, 'deputy minister',
                agreement_version, raised_at, 0, 0 FROM escalations WHERE clock_id = $2",
    )
    .bind(second)
    .bind(clock_id)
    .execute(&pool)
    .await?;
    let ids = [first, second];
    for id in ids {
        let mut conn = pool.acquire().await?;
        baladiya_sla_watcher::webhook::enqueue(
            &mut conn,
            id,
            baladiya_sla_watcher::webhook::Delivery::Raised,
            "https://mewa.example/hook",
            b"{}",
        )
        .await?;
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'delivered', attempts = 1 WHERE escalation_id = $1",
    )
    .bind(ids[1])
    .execute(&pool)
    .await?;
    let mut tx = pool.begin().await?;
    let told_never_sent = baladiya_sla_watcher::webhook::withdraw(&mut tx, ids[0], b"{}").await?;
    let told_delivered = baladiya_sla_watcher::webhook::withdraw(&mut tx, ids[1], b"{}").await?;
    tx.commit().await?;
    assert_eq!((told_never_sent, told_delivered), (false, true));
    let rows: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "SELECT escalation_id, kind, state FROM webhook_deliveries ORDER BY escalation_id, kind",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        rows,
        [
            (ids[0], "raised".into(), "cancelled".into()),
            (ids[1], "raised".into(), "delivered".into()),
            (ids[1], "withdrawn".into(), "pending".into()),
        ]
    );
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_change_recomputes_clocks_in_steps_and_a_failure_midway_loses_nothing()
-> anyhow::Result<()> {
    // 150 water leaks from Thursday 13:00: MEWA resolves within 3 working
    // days, by Tuesday 13:00.
    let s = Sla::start("2026-04-02 13:00").await?;
    let at = s.platform.clock.now();
    for _ in 0..150 {
        publish_report_received(
            &s.env,
            &ReceivedReport {
                report_id: uuid::Uuid::now_v7(),
                category: "WATER_LEAK",
                group: "water",
                municipality: "RIYADH",
                duplicate_of: None,
                at,
            },
        )
        .await?;
    }
    let pool = sqlx::PgPool::connect(&s.env.database_url()).await?;
    let resolve_deadlines = || async {
        let rows: Vec<(Option<DateTime<Utc>>,)> = sqlx::query_as(
            "SELECT deadline FROM sla_watcher.clocks WHERE metric = 'resolve' AND partner_code = 'MEWA'",
        )
        .fetch_all(&pool)
        .await?;
        anyhow::Ok(rows.into_iter().map(|r| r.0).collect::<Vec<_>>())
    };
    eventually(60, "150 resolve clocks", || async {
        let d = resolve_deadlines().await?;
        Ok((d.len() == 150).then_some(()))
    })
    .await?;
    assert!(
        resolve_deadlines()
            .await?
            .iter()
            .all(|d| *d == Some(riyadh("2026-04-07 13:00")))
    );
    // The watcher stops; its replica of sa-gov learns of a holiday on Monday
    // 6 April, and the recomputation is asked for, as the partners event
    // would have it.
    s.platform.trigger_shutdown();
    let Sla { platform, env, .. } = s;
    platform.join().await?;
    let watcher = baladiya_platform::db::schema_pool(&env.config().database, "sla_watcher")?;
    let holiday = r#"[{"name": "Announced", "from": "2026-04-06", "to": "2026-04-06"}]"#;
    sqlx::query(
        "UPDATE calendars SET spec = jsonb_set(spec, '{holidays}', (spec -> 'holidays') || $1::jsonb),
                              revision = revision + 1 WHERE id = 'sa-gov'",
    )
    .bind(holiday)
    .execute(&watcher)
    .await?;
    let revision: i64 = sqlx::query_scalar("SELECT revision FROM calendars WHERE id = 'sa-gov'")
        .fetch_one(&watcher)
        .await?;
    let mut conn = watcher.acquire().await?;
    baladiya_sla_watcher::store::request_calendar_recompute(&mut conn, "sa-gov", revision, None)
        .await?;
    drop(conn);
    let clock = baladiya_platform::clock::Clock::manual(riyadh("2026-04-02 14:00"));
    let config = baladiya_sla_watcher::SlaConfig::default();
    let emitter = baladiya_platform::events::Emitter::new("sla-watcher", clock.clone());
    let timers = baladiya_platform::wake::Wake::new();
    let step = || {
        baladiya_sla_watcher::commands::recompute_calendar_step(
            &watcher, &emitter, &timers, &config,
        )
    };
    let moved = || async {
        Ok::<_, anyhow::Error>(
            resolve_deadlines()
                .await?
                .iter()
                .filter(|d| **d == Some(riyadh("2026-04-08 13:00")))
                .count(),
        )
    };
    // A first step recomputes one batch and commits it with the cursor.
    assert_eq!(step().await.map_err(|e| anyhow::anyhow!("{e}"))?, 100);
    assert_eq!(moved().await?, 100);
    // The second fails midway (the calendar is gone from the replica): it
    // writes nothing, and the job stays where it was.
    let spec: serde_json::Value =
        sqlx::query_scalar("DELETE FROM calendars WHERE id = 'sa-gov' RETURNING spec")
            .fetch_one(&watcher)
            .await?;
    assert!(step().await.is_err());
    assert_eq!(moved().await?, 100);
    sqlx::query("INSERT INTO calendars (id, spec, revision) VALUES ('sa-gov', $1, $2)")
        .bind(&spec)
        .bind(revision)
        .execute(&watcher)
        .await?;
    // Resumed, it does the other 50 and ends the job.
    assert_eq!(step().await.map_err(|e| anyhow::anyhow!("{e}"))?, 50);
    assert_eq!(moved().await?, 150);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM calendar_recomputes")
        .fetch_one(&watcher)
        .await?;
    assert_eq!(jobs, 0);
    assert_eq!(step().await.map_err(|e| anyhow::anyhow!("{e}"))?, 0);
    watcher.close().await;
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_acknowledging_late_within_the_bound_withdraws_the_breach_everywhere()
-> anyhow::Result<()> {
    let hooks = HookServer::start().await?;
    let mut section = toml::Table::new();
    section.insert(
        "webhook_ca_file".into(),
        hooks.ca_file.display().to_string().into(),
    );
    let s = Sla::start_beside(
        "2026-04-02 13:00",
        section,
        vec![Arc::new(baladiya_kpi::KpiModule)],
    )
    .await?;
    publish_mewa_webhooks(&s, &hooks, "/ok", "/ok").await?;
    let case = s.report("WATER_LEAK", "water").await?;
    let ack = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
    // 10:05 on Sunday: routing has said nothing by then, so the breach of
    // 10:00 and level 1 fire on complete knowledge, and MEWA is told.
    s.platform.clock.set(riyadh("2026-04-05 10:05")).await?;
    let delivered = |kind: &'static str| {
        let hooks = hooks.seen.clone();
        move || {
            let hooks = hooks.clone();
            async move {
                let seen = hooks.lock().expect("lock").clone();
                Ok(seen
                    .into_iter()
                    .filter_map(|(_, signature, body)| {
                        let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
                        (json["type"] == kind).then_some((signature, body, json))
                    })
                    .next())
            }
        }
    };
    let (_, _, raised) = eventually(
        30,
        "the escalation at MEWA's webhook",
        delivered("escalation.raised"),
    )
    .await?;
    assert_eq!(raised["provisional"], false);
    // MEWA's system syncs: it acknowledged at 09:55, ten minutes back.
    s.routing
        .clone()
        .acknowledge_case(authorized(
            routing::AcknowledgeCaseRequest {
                action: Some(routing::CaseAction {
                    case_id: case.id.clone(),
                    occurred_at: Some(timestamp(riyadh("2026-04-05 09:55"))),
                    ..Default::default()
                }),
            },
            &s.partner("MEWA"),
        ))
        .await?;
    // Met in time: the breach and the escalation are withdrawn, MEWA gets a
    // signed withdrawal, the case is not overdue, and the KPIs drop both.
    let met = eventually(30, "met, its breach withdrawn", || async {
        let c = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
        Ok((c.state == pb::ClockState::Met as i32 && c.withdrawals >= 2).then_some(c))
    })
    .await?;
    assert_eq!(met.escalation_levels_fired, 0);
    let (signature, body, withdrawal) = eventually(
        30,
        "the withdrawal at MEWA's webhook",
        delivered("escalation.withdrawn"),
    )
    .await?;
    assert_eq!(withdrawal["escalation_id"], raised["escalation_id"]);
    assert_eq!(withdrawal["reason"], "late_event");
    let secret = baladiya_platform::config::hex_bytes(
        baladiya_sla_watcher::SlaConfig::default()
            .webhook_secret
            .expose(),
    )
    .expect("hex");
    assert_eq!(
        signature,
        baladiya_sla_watcher::webhook::signature(&secret, &body)
    );
    let mut r = s.routing.clone();
    let case_now = r
        .get_case(authorized(
            routing::GetCaseRequest {
                id: case.id.clone(),
            },
            &s.admin,
        ))
        .await?
        .into_inner();
    assert!(!case_now.overdue);
    let pool = sqlx::PgPool::connect(&s.env.database_url()).await?;
    eventually(30, "the KPIs net the breach and the escalation out", || async {
        let withdrawn: i64 = sqlx::query_scalar("SELECT count(*) FROM kpi.withdrawn_events")
            .fetch_one(&pool)
            .await?;
        let standing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kpi.facts WHERE subject = $1 AND kind IN ('clock_breached', 'escalation')",
        )
        .bind(&case.id)
        .fetch_one(&pool)
        .await?;
        Ok((withdrawn >= 2 && standing == 0).then_some(()))
    })
    .await?;
    pool.close().await;
    let kinds: Vec<String> = events_of(&s.sla_events().await?, &ack.id)
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            "clock.started",
            "clock.warning",
            "clock.warning",
            "clock.breached",
            "escalation.raised",
            "clock.breach_withdrawn",
            "escalation.withdrawn",
            "clock.met"
        ]
    );
    let _ = std::fs::remove_file(&hooks.ca_file);
    s.stop().await
}

/// The SLA watcher's schema on a fresh database, with one breached case
/// clock (MEWA, acknowledge) and an escalation of it; returns (pool, clock id,
/// escalation id).
async fn watcher_schema(env: &TestEnv) -> anyhow::Result<(sqlx::PgPool, uuid::Uuid, uuid::Uuid)> {
    use baladiya_platform::app::ServiceModule;
    let config = env.config();
    baladiya_platform::db::ensure_database(&config.database).await?;
    let pool = baladiya_platform::db::schema_pool(&config.database, "sla_watcher")?;
    baladiya_platform::db::migrate(&pool, "sla_watcher", &SlaWatcherModule.migrator()).await?;
    let clock_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO clocks (id, key, subject_kind, subject_id, metric, partner_code, agreement_version, calendar_id,
                             target_secs, warn_at, ladder, tracking_number, municipality_code, category_code, inputs,
                             state, elapsed_secs, breached_at, updated_at)
         VALUES ($1, 'k', 'case', gen_random_uuid(), 'acknowledge', 'MEWA', 1, 'sa-gov', 3600,
                 '[]', '[]', 'RUH-1', 'RIYADH', 'WATER_LEAK', '[]', 'breached', 0, now() - interval '1 hour', now())",
    )
    .bind(clock_id)
    .execute(&pool)
    .await?;
    let escalation_id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO escalations (id, clock_id, level, partner_code, subject_kind, subject_id, tracking_number,
                                  metric, contact, agreement_version, raised_at, overdue_working_secs, overdue_wall_secs)
         VALUES ($1, $2, 1, 'MEWA', 'case', gen_random_uuid(), 'RUH-1', 'acknowledge', 'focal point', 1, now(), 0, 0)",
    )
    .bind(escalation_id)
    .bind(clock_id)
    .execute(&pool)
    .await?;
    Ok((pool, clock_id, escalation_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replicas_webhook_outcome_never_overwrites_a_later_one_and_dead_ones_redrive()
-> anyhow::Result<()> {
    use baladiya_sla_watcher::webhook::{self, Delivery, Outcome};
    let env = TestEnv::new();
    let (pool, _, escalation) = watcher_schema(&env).await?;
    let mut conn = pool.acquire().await?;
    webhook::enqueue(
        &mut conn,
        escalation,
        Delivery::Raised,
        "https://mewa.example/hook",
        b"{}",
    )
    .await?;
    drop(conn);
    // Replica A claims the delivery and hangs on a slow partner; its lease
    // runs out and replica B claims it again and delivers.
    let a = webhook::claim_due(&pool, Duration::from_secs(30), 20).await?;
    assert_eq!(a.len(), 1);
    assert!(
        webhook::claim_due(&pool, Duration::from_secs(30), 20)
            .await?
            .is_empty(),
        "leased"
    );
    sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = now()")
        .execute(&pool)
        .await?;
    let b = webhook::claim_due(&pool, Duration::from_secs(30), 20).await?;
    assert_eq!((b.len(), b[0].attempt), (1, 1));
    assert!(webhook::record(&pool, &b[0], &Outcome::Delivered).await?);
    // A's timeout comes back late: it records nothing over B's outcome.
    let late = Outcome::Failed {
        error: "timed out".into(),
        dead: false,
        retry_in: Duration::from_secs(1),
    };
    assert!(!webhook::record(&pool, &a[0], &late).await?);
    let (state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM webhook_deliveries")
            .fetch_one(&pool)
            .await?;
    assert_eq!((state.as_str(), attempts), ("delivered", 1));

    // A delivery whose every attempt failed is dead until redriven.
    sqlx::query("UPDATE webhook_deliveries SET state = 'dead', attempts = 20, delivered_at = NULL")
        .execute(&pool)
        .await?;
    assert!(
        webhook::claim_due(&pool, Duration::from_secs(30), 20)
            .await?
            .is_empty()
    );
    assert_eq!(webhook::redrive(&pool, None).await?, 1);
    let again = webhook::claim_due(&pool, Duration::from_secs(30), 20).await?;
    assert_eq!(
        (again.len(), again[0].attempt),
        (1, 1),
        "due again, attempts reset"
    );
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_that_keeps_failing_does_not_hold_back_the_others() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let (pool, clock_id, _) = watcher_schema(&env).await?;
    // Two timers due an hour ago: one that cannot fire (a kind this watcher
    // does not know, as a corrupt row would be), due first, and the breach.
    sqlx::query(
        "INSERT INTO timers (clock_id, kind, seq, due_at) VALUES
           ($1, 'bogus', 0, now() - interval '2 hours'), ($1, 'breach', 100, now() - interval '1 hour')",
    )
    .bind(clock_id)
    .execute(&pool)
    .await?;
    let clock = baladiya_platform::clock::Clock::system();
    let rules = baladiya_sla_watcher::commands::FireRules {
        known: baladiya_sla_watcher::store::Known {
            cases: Some(clock.now()),
            applications: Some(clock.now()),
        },
        max_hold: Duration::from_secs(600),
        watching_since: clock.now(),
    };
    let metrics = baladiya_platform::metrics::Metrics::new();
    let mut failing = baladiya_sla_watcher::commands::Failing::default();
    let emitter = baladiya_platform::events::Emitter::new("sla-watcher", clock.clone());
    let fired =
        baladiya_sla_watcher::commands::fire_due(&pool, &emitter, &metrics, rules, &mut failing)
            .await?;
    assert_eq!(fired, 1, "the breach fired beside the failing timer");
    let unfired: Vec<String> = sqlx::query_scalar("SELECT kind FROM timers WHERE fired_at IS NULL")
        .fetch_all(&pool)
        .await?;
    assert_eq!(unfired, ["bogus"]);
    // The failing one waits out a backoff instead of being tried every round.
    assert_eq!(
        baladiya_sla_watcher::commands::fire_due(&pool, &emitter, &metrics, rules, &mut failing)
            .await?,
        0
    );
    let breaches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE ce_type = 'sa.baladiya.sla.clock.breached.v1'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(breaches, 1);
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_takes_the_agreement_in_force_at_its_start_even_when_it_arrives_later()
-> anyhow::Result<()> {
    // A water leak at Thursday 13:00 starts MEWA's clocks under the seeded
    // version 1: acknowledge within 4 working hours, by Sunday 10:00.
    let s = Sla::start("2026-04-02 13:00").await?;
    let case = s.report("WATER_LEAK", "water").await?;
    let before = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
    assert_eq!(
        (before.agreement_version, deadline(&before)),
        (1, Some(riyadh("2026-04-05 10:00")))
    );
    // Version 2, signed on 1 April with 2 working hours to acknowledge,
    // reaches the watcher only now: the clock started under it.
    let hooks = HookServer::start().await?;
    publish_mewa_webhooks(&s, &hooks, "/ok", "/ok").await?;
    let _ = std::fs::remove_file(&hooks.ca_file);
    let after = eventually(30, "the clock on version 2", || async {
        let c = s.clocks(&case.id, 3).await?["acknowledge:MEWA"].clone();
        Ok((c.agreement_version == 2).then_some(c))
    })
    .await?;
    assert_eq!(after.id, before.id, "the same clock, its terms corrected");
    // publish_mewa_webhooks signs 240 minutes too; the ladder is what changed.
    assert_eq!(deadline(&after), Some(riyadh("2026-04-05 10:00")));
    let pool = sqlx::PgPool::connect(&s.env.database_url()).await?;
    let contacts: Vec<String> = sqlx::query_scalar(
        "SELECT l ->> 'contact' FROM sla_watcher.clocks, jsonb_array_elements(ladder) l
         WHERE id = $1::uuid ORDER BY (l ->> 'level')::int",
    )
    .bind(&after.id)
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    assert_eq!(contacts, ["focal point", "deputy minister"]);
    s.stop().await
}
