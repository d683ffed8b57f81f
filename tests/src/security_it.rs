//! Who may call what, over real gRPC: the policy table refuses roles before
//! handlers run, scoped callers cannot tell a missing object from someone
//! else's, and every state-changing call leaves an append-only audit row
//! that only admins read.

use std::sync::Arc;

use baladiya_kpi::KpiModule;
use baladiya_platform::auth::Role;
use baladiya_platform::events::{Namespace, streams};
use baladiya_proto::admin::v1 as admin;
use baladiya_proto::admin::v1::audit_service_client::AuditServiceClient;
use baladiya_proto::kpi::v1 as kpi;
use baladiya_proto::kpi::v1::kpi_service_client::KpiServiceClient;
use baladiya_proto::routing::v1 as pb;
use baladiya_proto::routing::v1::routing_service_client::RoutingServiceClient;
use baladiya_routing::RoutingModule;
use tonic::Code;

use crate::harness::tokens::scoped_token as token;
use crate::{ReceivedReport, RunningPlatform, TestEnv, authorized, eventually, stream_events};

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_are_enforced_and_every_change_is_audited() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let config = env.config();
    let platform = RunningPlatform::start(
        config.clone(),
        vec![Arc::new(RoutingModule), Arc::new(KpiModule)],
    )
    .await?;
    let channel = platform.channel().await?;
    let mut routing = RoutingServiceClient::new(channel.clone());
    let admin = platform.token(Role::Admin);
    let analyst = platform.token(Role::Analyst);
    let motls = token(&config, Role::Partner, Some("MOTLS"), None);
    let mewa = token(&config, Role::Partner, Some("MEWA"), None);
    let jeddah = token(&config, Role::Operator, None, Some("JEDDAH"));
    let riyadh = token(&config, Role::Operator, None, Some("RIYADH"));
    let any_operator = token(&config, Role::Operator, None, None);
    let channel_940 = token(&config, Role::Channel, None, None);

    let report_id = uuid::Uuid::now_v7();
    crate::publish_report_received(
        &env,
        &ReceivedReport {
            report_id,
            category: "ROAD_WORKS_DAMAGE",
            group: "roads",
            municipality: "RIYADH",
            duplicate_of: None,
            at: platform.clock.now(),
        },
    )
    .await?;
    let case = eventually(20, "the case", || {
        let mut routing = routing.clone();
        let admin = admin.clone();
        async move {
            let list = routing
                .list_cases(authorized(pb::ListCasesRequest::default(), &admin))
                .await?
                .into_inner();
            Ok(list
                .cases
                .into_iter()
                .find(|c| c.report_id == report_id.to_string()))
        }
    })
    .await?;
    assert_eq!(case.assignee_code, "MOTLS");
    let get = |id: &str, token: &str| authorized(pb::GetCaseRequest { id: id.into() }, token);
    let ack = |token: &str| {
        authorized(
            pb::AcknowledgeCaseRequest {
                action: Some(pb::CaseAction {
                    case_id: case.id.clone(),
                    ..Default::default()
                }),
            },
            token,
        )
    };

    // Roles the policy table does not name are refused before the handler.
    assert_eq!(
        code(routing.acknowledge_case(ack(&analyst)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            routing
                .list_cases(authorized(pb::ListCasesRequest::default(), &channel_940))
                .await
        ),
        Code::PermissionDenied
    );
    // Scoped callers cannot tell someone else's case from a missing one.
    let missing = uuid::Uuid::now_v7().to_string();
    for token in [&mewa, &jeddah] {
        assert_eq!(
            code(routing.get_case(get(&case.id, token)).await),
            Code::PermissionDenied
        );
        assert_eq!(
            code(routing.get_case(get(&missing, token)).await),
            Code::PermissionDenied
        );
    }
    assert_eq!(
        code(routing.get_case(get(&missing, &any_operator)).await),
        Code::NotFound
    );
    assert_eq!(
        routing
            .get_case(get(&case.id, &riyadh))
            .await?
            .into_inner()
            .id,
        case.id
    );
    let mewa_list = routing
        .list_cases(authorized(pb::ListCasesRequest::default(), &mewa))
        .await?
        .into_inner();
    assert!(mewa_list.cases.is_empty());
    assert_eq!(
        code(routing.acknowledge_case(ack(&mewa)).await),
        Code::PermissionDenied
    );
    routing.acknowledge_case(ack(&motls)).await?;

    // KPIs: a partner reads its own scorecard only, and no municipal-only indicator.
    let mut kpis = KpiServiceClient::new(channel.clone());
    let card = |partner: &str, token: &str| {
        authorized(
            kpi::GetScorecardRequest {
                subject: Some(kpi::get_scorecard_request::Subject::PartnerCode(
                    partner.into(),
                )),
                period: Some(kpi::Period {
                    granularity: kpi::Granularity::Month.into(),
                    date: "2026-03-01".into(),
                }),
            },
            token,
        )
    };
    kpis.get_scorecard(card("MOTLS", &motls)).await?;
    kpis.get_scorecard(card("MOTLS", &analyst)).await?;
    assert_eq!(
        code(kpis.get_scorecard(card("MOTLS", &mewa)).await),
        Code::PermissionDenied
    );
    let licensing = authorized(
        kpi::GetIndicatorRequest {
            code: "licensing.licenses_issued".into(),
            period: Some(kpi::Period {
                granularity: kpi::Granularity::Month.into(),
                date: "2026-03-01".into(),
            }),
            ..Default::default()
        },
        &mewa,
    );
    assert_eq!(
        code(kpis.get_indicator(licensing).await),
        Code::PermissionDenied
    );

    // The audit log: the acknowledgement, by whom, on what; admins only.
    let mut audit = AuditServiceClient::new(channel.clone());
    let list = |service: &str, token: &str| {
        authorized(
            admin::ListAuditEventsRequest {
                service: service.into(),
                ..Default::default()
            },
            token,
        )
    };
    let events = audit
        .list_audit_events(list("routing", &admin))
        .await?
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (
            e.rpc.as_str(),
            e.role.as_str(),
            e.partner_code.as_str(),
            e.target.as_str()
        ),
        (
            "/baladiya.routing.v1.RoutingService/AcknowledgeCase",
            "partner",
            "MOTLS",
            case.id.as_str()
        )
    );
    assert_eq!(e.actor, "partner-MOTLS");
    assert!(e.at.is_some());
    assert_eq!(
        code(audit.list_audit_events(list("routing", &riyadh)).await),
        Code::PermissionDenied
    );
    let bad = audit
        .list_audit_events(list("roads", &admin))
        .await
        .expect_err("unknown service");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("service"), "{bad:?}");

    // Append-only, whoever asks.
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    for statement in [
        "UPDATE routing.audit_events SET actor = 'someone else'",
        "DELETE FROM routing.audit_events",
        "TRUNCATE routing.audit_events",
    ] {
        let refused = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement);
        assert!(refused.to_string().contains("append-only"), "{refused}");
    }
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_rate_is_told_when_to_retry_and_others_are_not_slowed()
-> anyhow::Result<()> {
    use tonic_types::StatusExt;
    let env = TestEnv::new();
    let mut config = env.config();
    config.auth.rate_limit_per_second = 0.5;
    config.auth.rate_limit_burst = 2;
    let platform = RunningPlatform::start(config.clone(), vec![Arc::new(KpiModule)]).await?;
    let mut kpis = KpiServiceClient::new(platform.channel().await?);
    let busy = token(&config, Role::Analyst, Some("BUSY"), None);
    let other = token(&config, Role::Analyst, Some("OTHER"), None);
    let list = |t: &str| authorized(kpi::ListIndicatorsRequest::default(), t);
    kpis.list_indicators(list(&busy)).await?;
    kpis.list_indicators(list(&busy)).await?;
    let refused = kpis
        .list_indicators(list(&busy))
        .await
        .expect_err("over the rate");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let retry = refused
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        retry > std::time::Duration::from_millis(1_000)
            && retry <= std::time::Duration::from_secs(2),
        "{retry:?}"
    );
    kpis.list_indicators(list(&other)).await?;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// A road-works damage report in central Riyadh from the 940 call centre.
fn road_works_report(
    reporter: Option<baladiya_proto::intake::v1::Reporter>,
) -> baladiya_proto::intake::v1::SubmitReportRequest {
    use baladiya_proto::intake::v1 as intake;
    intake::SubmitReportRequest {
        request_id: uuid::Uuid::now_v7().to_string(),
        category_code: "ROAD_WORKS_DAMAGE".into(),
        channel: intake::Channel::CallCenter940.into(),
        description: "حفرة بعد أعمال الحفر".into(),
        location: Some(baladiya_proto::common::v1::Location {
            latitude: 24.7136,
            longitude: 46.6753,
            ..Default::default()
        }),
        reporter,
        ..Default::default()
    }
}

/// The users of `deploy/nats/nats.conf` with a password each.
const NATS_USERS: [(&str, &str, &str); 7] = [
    ("intake", "BALADIYA_NATS_INTAKE_PASSWORD", "intake-secret"),
    (
        "routing",
        "BALADIYA_NATS_ROUTING_PASSWORD",
        "routing-secret",
    ),
    (
        "partners",
        "BALADIYA_NATS_PARTNERS_PASSWORD",
        "partners-secret",
    ),
    (
        "licensing",
        "BALADIYA_NATS_LICENSING_PASSWORD",
        "licensing-secret",
    ),
    ("sla-watcher", "BALADIYA_NATS_SLA_PASSWORD", "sla-secret"),
    ("kpi", "BALADIYA_NATS_KPI_PASSWORD", "kpi-secret"),
    (
        "platform",
        "BALADIYA_NATS_PLATFORM_PASSWORD",
        "platform-secret",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_publishes_only_its_own_domain_on_the_example_nats_config()
-> anyhow::Result<()> {
    use baladiya_intake::IntakeModule;
    use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;

    let env_vars: Vec<(&str, &str)> = NATS_USERS.iter().map(|(_, k, v)| (*k, *v)).collect();
    let file = crate::workspace_root().join("deploy/nats/nats.conf");
    let checked = std::process::Command::new(crate::NatsProcess::binary())
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .envs(env_vars.iter().copied())
        .output()?;
    assert!(
        checked.status.success(),
        "nats-server -t: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let nats =
        crate::NatsProcess::start_with_config(&file, &env_vars, ("platform", "platform-secret"))
            .await?;
    let env = TestEnv::new();
    // Each service as its own NATS user, on the production subjects and
    // stream names (a private server, so no namespace).
    let config_as = |user: &str| {
        let mut c = env.config();
        c.nats.url = nats.url();
        c.nats.user = user.into();
        c.nats.password = baladiya_platform::config::Secret::new(
            NATS_USERS.iter().find(|u| u.0 == user).map_or("", |u| u.2),
        );
        c.events.namespace = String::new();
        c
    };
    let intake_platform =
        RunningPlatform::start(config_as("intake"), vec![Arc::new(IntakeModule)]).await?;
    let routing_platform =
        RunningPlatform::start(config_as("routing"), vec![Arc::new(RoutingModule)]).await?;
    let observer = async_nats::ConnectOptions::with_user_and_password(
        "platform".into(),
        "platform-secret".into(),
    )
    .connect(nats.url())
    .await?;
    let js = async_nats::jetstream::new(observer);
    // The streams here have no namespace.
    let no_namespace = Namespace::default();

    // Intake publishes a report on its own stream; routing, consuming it as its
    // own user, publishes the routed case on its stream.
    let mut client = IntakeServiceClient::new(intake_platform.channel().await?);
    let channel = token(&intake_platform.config, Role::Channel, None, None);
    client
        .submit_report(authorized(road_works_report(None), &channel))
        .await?;
    eventually(20, "the report on INTAKE and the case on ROUTING", || {
        let (js, no_namespace) = (js.clone(), no_namespace.clone());
        async move {
            let intake = stream_events(&js, &no_namespace, &streams::INTAKE)
                .await
                .unwrap_or(0);
            let routing = stream_events(&js, &no_namespace, &streams::ROUTING)
                .await
                .unwrap_or(0);
            Ok((intake >= 1 && routing >= 1).then_some(()))
        }
    })
    .await?;
    let routed = stream_events(&js, &no_namespace, &streams::ROUTING).await?;

    // The intake user cannot publish a routing event: the server drops it, so
    // the publisher sees no acknowledgement and the stream stores nothing.
    let intruder =
        async_nats::ConnectOptions::with_user_and_password("intake".into(), "intake-secret".into())
            .connect(nats.url())
            .await?;
    let intruder_js = async_nats::jetstream::ContextBuilder::new()
        .timeout(std::time::Duration::from_millis(500))
        .build(intruder);
    let forged = intruder_js
        .publish("baladiya.routing.case.routed.RIYADH.MOTLS", "forged".into())
        .await;
    let acked = match forged {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "a forged routing event was acknowledged");
    // Nor change a stream it does not own.
    let mut routing_stream = js.get_stream("ROUTING").await?.info().await?.config.clone();
    routing_stream.max_age = std::time::Duration::from_secs(60);
    assert!(intruder_js.update_stream(routing_stream).await.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        stream_events(&js, &no_namespace, &streams::ROUTING).await?,
        routed,
        "the stream stored nothing"
    );
    assert_eq!(
        js.get_stream("ROUTING").await?.info().await?.config.max_age,
        std::time::Duration::from_secs(env.config().events.stream_max_age_hours * 3600)
    );

    routing_platform.stop().await?;
    intake_platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_goes_only_to_operators_who_need_it_audited_and_never_into_logs_or_events()
-> anyhow::Result<()> {
    use baladiya_proto::intake::v1 as intake;
    use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
    use tonic::transport::Channel as GrpcChannel;

    let env = TestEnv::new();
    let log = std::env::temp_dir().join(format!("baladiya-pii-{}.log", uuid::Uuid::now_v7()));
    let seed = crate::workspace_root()
        .join("deploy/seed")
        .display()
        .to_string();
    // Everything the services say at debug level goes to the log file.
    let platform = crate::ChildPlatform::spawn_logging(
        &env,
        "intake,routing",
        &[
            ("BALADIYA__TELEMETRY__LOG_FILTER", "debug"),
            ("BALADIYA__CLOCK__MODE", "manual"),
            ("BALADIYA__CLOCK__START", "2026-03-01T07:30:00+03:00"),
            ("BALADIYA__SEED__DIR", &seed),
        ],
        Some(&log),
    )
    .await?;
    let channel = GrpcChannel::from_shared(format!("http://{}", platform.grpc))?
        .connect()
        .await?;
    let config = env.config();
    let mut client = IntakeServiceClient::new(channel.clone());
    let (name, phone, national_id) = ("محمد بن عبدالله العتيبي", "+966501234567", "1000000008");
    let submitted = client
        .submit_report(authorized(
            road_works_report(Some(intake::Reporter {
                name: name.into(),
                phone: phone.into(),
                national_id: national_id.into(),
            })),
            &token(&config, Role::Channel, None, None),
        ))
        .await?
        .into_inner()
        .report
        .expect("report");
    let ask = |t: &str| {
        authorized(
            intake::GetReporterContactRequest {
                report_id: submitted.id.clone(),
            },
            t,
        )
    };
    // Only operators of the report's municipality (and admins) read it.
    let riyadh = token(&config, Role::Operator, None, Some("RIYADH"));
    let contact = client
        .get_reporter_contact(ask(&riyadh))
        .await?
        .into_inner();
    assert_eq!(
        (
            contact.name.as_str(),
            contact.phone.as_str(),
            contact.national_id.as_str()
        ),
        (name, phone, national_id)
    );
    for refused in [
        token(&config, Role::Operator, None, Some("JEDDAH")),
        token(&config, Role::Analyst, None, None),
        token(&config, Role::Channel, None, None),
        token(&config, Role::Partner, Some("MOTLS"), None),
    ] {
        assert_eq!(
            code(client.get_reporter_contact(ask(&refused)).await),
            Code::PermissionDenied
        );
    }
    // The read is in the audit log.
    let events = AuditServiceClient::new(channel.clone())
        .list_audit_events(authorized(
            admin::ListAuditEventsRequest {
                service: "intake".into(),
                rpc: "GetReporterContact".into(),
                ..Default::default()
            },
            &token(&config, Role::Admin, None, None),
        ))
        .await?
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].actor.as_str(), events[0].target.as_str()),
        ("operator-RIYADH", submitted.id.as_str())
    );
    // Routing takes the case, so its consumer and relay have run and logged.
    let mut routing = RoutingServiceClient::new(channel);
    let admin_token = token(&config, Role::Admin, None, None);
    eventually(20, "the case", || {
        let mut routing = routing.clone();
        let admin_token = admin_token.clone();
        let report = submitted.id.clone();
        async move {
            let cases = routing
                .list_cases(authorized(pb::ListCasesRequest::default(), &admin_token))
                .await?
                .into_inner()
                .cases;
            Ok(cases.iter().any(|c| c.report_id == report).then_some(()))
        }
    })
    .await?;
    let _ = routing
        .list_cases(authorized(pb::ListCasesRequest::default(), &admin_token))
        .await?;
    assert_eq!(platform.terminate().await?, Some(0));

    // Neither the logs nor any event carries the name, phone or national ID.
    let logged = std::fs::read_to_string(&log)?;
    std::fs::remove_file(&log).ok();
    assert!(
        logged.lines().count() > 20,
        "debug logging was on: {logged}"
    );
    let nats = env.nats().await?;
    let js = async_nats::jetstream::new(nats);
    let mut published = Vec::new();
    for stream in ["INTAKE", "ROUTING"] {
        let name = baladiya_platform::events::Namespace::new(&env.namespace).stream(stream);
        let s = js.get_stream(&name).await?;
        let last = s.cached_info().state.last_sequence;
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                published.extend_from_slice(&m.payload);
                published.extend_from_slice(format!("{:?}", m.headers).as_bytes());
            }
        }
    }
    assert!(!published.is_empty());
    let published = String::from_utf8_lossy(&published).into_owned();
    for secret in [name, phone, "501234567", national_id] {
        assert!(!logged.contains(secret), "{secret} is in the logs");
        assert!(!published.contains(secret), "{secret} is in an event");
    }
    env.cleanup().await;
    Ok(())
}

/// A private CA with a server certificate for `localhost` and client
/// certificates, written as PEM files.
struct Pki {
    dir: std::path::PathBuf,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("baladiya-pki-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Baladiya test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        Ok(Self { dir, ca })
    }

    /// Issues a certificate for `name`; returns (cert file, key file, cert PEM, key PEM).
    fn issue(&self, name: &str) -> anyhow::Result<(String, String, String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &self.ca)?;
        let (cert_file, key_file) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        Ok((
            cert_file.display().to_string(),
            key_file.display().to_string(),
            cert.pem(),
            key.serialize_pem(),
        ))
    }

    fn ca_file(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A gRPC channel over TLS to `addr`, trusting `ca_pem`, presenting
/// `client` (cert PEM, key PEM) if given.
async fn tls_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> anyhow::Result<tonic::transport::Channel> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_on_the_grpc_port_maps_client_certificates_to_services_and_health_stays_plaintext()
-> anyhow::Result<()> {
    use baladiya_platform::config::ClientCertificateIdentity;
    let pki = Pki::new()?;
    let (cert_file, key_file, _, _) = pki.issue("localhost")?;
    let (_, _, kpi_cert, kpi_key) = pki.issue("kpi-reader.baladiya.internal")?;
    let (_, _, stranger_cert, stranger_key) = pki.issue("stranger.baladiya.internal")?;
    let ca_pem = std::fs::read_to_string(pki.ca_file())?;

    let env = TestEnv::new();
    let mut config = env.config();
    config.server.tls_cert_file = cert_file;
    config.server.tls_key_file = key_file;
    config.server.tls_client_ca_file = pki.ca_file();
    let health_port = crate::free_port();
    config.server.health_addr = format!("127.0.0.1:{health_port}");
    config.auth.client_certificates = vec![ClientCertificateIdentity {
        dns_name: "kpi-reader.baladiya.internal".into(),
        subject: "kpi-reader".into(),
        role: Role::Analyst,
        partner: None,
        municipality: None,
        channel: None,
    }];
    config.validate()?;
    let grpc_port = crate::free_port();
    config.server.grpc_addr = format!("127.0.0.1:{grpc_port}");
    let grpc: std::net::SocketAddr = config.server.grpc_addr.parse()?;
    let listeners = baladiya_platform::app::Listeners::bind(&config.server).await?;
    let (trigger, signal) = baladiya_platform::shutdown::channel();
    let clock = baladiya_platform::app::clock_from_config(&config.clock)?;
    let run = tokio::spawn(baladiya_platform::app::run(
        config.clone(),
        vec![Arc::new(KpiModule)],
        clock,
        listeners,
        signal,
    ));

    // Health in plaintext on its own port, for Kubernetes probes.
    let health_channel = eventually(20, "the plaintext health port", || async move {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{health_port}"))?
                .connect()
                .await
                .ok(),
        )
    })
    .await?;
    let serving = tonic_health::pb::health_client::HealthClient::new(health_channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "baladiya.kpi.v1.KpiService".into(),
        })
        .await?
        .into_inner()
        .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A client certificate named in the configuration is a service identity.
    let channel = tls_channel(grpc, &ca_pem, Some((&kpi_cert, &kpi_key))).await?;
    let list = KpiServiceClient::new(channel.clone())
        .list_indicators(kpi::ListIndicatorsRequest::default())
        .await?
        .into_inner();
    assert!(!list.indicators.is_empty());
    // A bearer token still names its own caller over mTLS.
    let motls = token(&config, Role::Partner, Some("MOTLS"), None);
    KpiServiceClient::new(channel)
        .list_indicators(authorized(kpi::ListIndicatorsRequest::default(), &motls))
        .await?;
    // A valid certificate no identity names, without a token: unauthenticated.
    let stranger = tls_channel(grpc, &ca_pem, Some((&stranger_cert, &stranger_key))).await?;
    let refused = KpiServiceClient::new(stranger)
        .list_indicators(kpi::ListIndicatorsRequest::default())
        .await
        .expect_err("no identity");
    assert_eq!(refused.code(), Code::Unauthenticated);
    // Without a client certificate, or in plaintext, no call gets through.
    let anonymous = tls_channel(grpc, &ca_pem, None).await;
    if let Ok(channel) = anonymous {
        let analyst = token(&config, Role::Analyst, None, None);
        assert!(
            KpiServiceClient::new(channel)
                .list_indicators(authorized(kpi::ListIndicatorsRequest::default(), &analyst))
                .await
                .is_err(),
            "mTLS requires a client certificate"
        );
    }
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(
            KpiServiceClient::new(channel)
                .list_indicators(kpi::ListIndicatorsRequest::default())
                .await
                .is_err()
        );
    }
    trigger.trigger();
    run.await??;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sql_statement_has_a_deadline_and_migrations_are_exempt() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let mut config = env.config();
    config.database.statement_timeout_ms = 200;
    baladiya_platform::db::ensure_database(&config.database).await?;
    let pool = baladiya_platform::db::schema_pool(&config.database, "kpi")?;
    // Migrations run on the same pool without the limit.
    baladiya_platform::db::migrate(
        &pool,
        "kpi",
        &baladiya_platform::app::ServiceModule::migrator(&KpiModule),
    )
    .await?;
    let slow = sqlx::query("SELECT pg_sleep(1)")
        .execute(&pool)
        .await
        .expect_err("past the statement timeout");
    assert!(slow.to_string().contains("statement timeout"), "{slow}");
    let quick: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
    assert_eq!(quick, 1);
    pool.close().await;
    env.cleanup().await;
    Ok(())
}
