//! The gRPC and HTTP ports, the clock service, shutdown, the binary and the
//! local bootstrap script.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baladiya_platform::auth::Role;
use baladiya_proto::admin::v1 as admin;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::probe::{Probe, pb};
use crate::{
    ChildPlatform, RunningPlatform, TestEnv, authorized, baladiya_binary, eventually, instant,
};

async fn health(channel: tonic::transport::Channel, service: &str) -> Result<i32, tonic::Status> {
    Ok(HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner()
        .status)
}

/// The services a reflection endpoint lists; v1 and v1alpha have the same
/// shape in different modules.
macro_rules! reflected_services {
    ($name:ident, $version:ident) => {
        async fn $name(channel: tonic::transport::Channel) -> anyhow::Result<BTreeSet<String>> {
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut stream = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner();
            let response = stream
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("no response"))?;
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    Ok(list.service.into_iter().map(|s| s.name).collect())
                }
                other => anyhow::bail!("unexpected reflection answer {other:?}"),
            }
        }
    };
}
reflected_services!(reflected_services_v1, v1);
reflected_services!(reflected_services_v1alpha, v1alpha);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_cover_exactly_the_mounted_services() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(Probe::default())]).await?;
    let channel = platform.channel().await?;
    let serving = ServingStatus::Serving as i32;
    for service in [
        "",
        "baladiya.probe.v1.ProbeService",
        "baladiya.admin.v1.ClockService",
        "baladiya.admin.v1.AuditService",
    ] {
        assert_eq!(
            health(channel.clone(), service).await?,
            serving,
            "{service:?}"
        );
    }
    let unknown = health(channel.clone(), "baladiya.intake.v1.IntakeService").await;
    assert_eq!(unknown.expect_err("not mounted").code(), Code::NotFound);
    eventually(10, "readiness", || async {
        Ok((health(channel.clone(), "readiness").await.ok() == Some(serving)).then_some(()))
    })
    .await?;

    let expected: BTreeSet<String> = [
        "baladiya.probe.v1.ProbeService",
        "baladiya.admin.v1.ClockService",
        "baladiya.admin.v1.AuditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(reflected_services_v1(channel.clone()).await?, expected);
    assert_eq!(reflected_services_v1alpha(channel.clone()).await?, expected);

    let (status, body) = platform.http_get("/healthz").await?;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = platform.http_get("/readyz").await?;
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = platform.http_get("/metrics").await?;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("baladiya_grpc_requests_total{service=\"grpc.health.v1.Health\",method=\"Check\",code=\"Ok\"}"),
        "{metrics}"
    );
    eventually(10, "the outbox backlog gauge", || async {
        let (_, metrics) = platform.http_get("/metrics").await?;
        Ok(metrics
            .contains("baladiya_outbox_backlog_events{schema=\"probe\"} 0")
            .then_some(()))
    })
    .await?;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_a_caller_and_bad_input_names_every_field() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![Arc::new(Probe::default())]).await?;
    let mut probe = pb::probe_service_client::ProbeServiceClient::new(platform.channel().await?);

    let status = probe
        .write_note(pb::WriteNoteRequest {
            body: "x".into(),
            hold_ms: 0,
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = probe
        .write_note(authorized(
            pb::WriteNoteRequest {
                body: "x".into(),
                hold_ms: 0,
            },
            "garbage",
        ))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let status = probe
        .write_note(authorized(
            pb::WriteNoteRequest {
                body: "  ".into(),
                hold_ms: 60_000,
            },
            &platform.token(Role::Channel),
        ))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(crate::fields(&status), ["body", "hold_ms"]);

    let oversized = "x".repeat(platform.config.server.max_request_bytes + 1);
    let status = probe
        .write_note(authorized(
            pb::WriteNoteRequest {
                body: oversized,
                hold_ms: 0,
            },
            &platform.token(Role::Channel),
        ))
        .await
        .expect_err("over the request size limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_service_moves_time_for_admins_only() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), vec![]).await?;
    let mut clock = admin::clock_service_client::ClockServiceClient::new(platform.channel().await?);
    let admin_token = platform.token(Role::Admin);

    let now = clock
        .get_time(authorized(admin::GetTimeRequest {}, &admin_token))
        .await?
        .into_inner();
    assert_eq!(now.mode, "manual");
    assert_eq!(
        now.now.map(|t| t.seconds),
        Some(instant("2026-03-01T07:30:00+03:00").timestamp())
    );

    // A timer inside the skipped span fires at its own deadline.
    let deadline = instant("2026-03-01T09:00:00+03:00");
    let sleeper = platform.clock.clone();
    let fired_at = tokio::spawn(async move {
        let _fired = sleeper.sleep_until(deadline).await;
        sleeper.now()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let moved = clock
        .advance(authorized(
            admin::AdvanceRequest {
                by: Some(prost_types::Duration {
                    seconds: 3 * 3600,
                    nanos: 0,
                }),
            },
            &admin_token,
        ))
        .await?
        .into_inner();
    assert_eq!(moved.timers_fired, 1);
    assert_eq!(fired_at.await?, deadline);
    assert_eq!(
        moved.now.map(|t| t.seconds),
        Some(instant("2026-03-01T10:30:00+03:00").timestamp())
    );

    let back = clock
        .set_time(authorized(
            admin::SetTimeRequest {
                time: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: 0,
                }),
            },
            &admin_token,
        ))
        .await
        .expect_err("backwards");
    assert_eq!(back.code(), Code::FailedPrecondition);
    let zero = clock
        .advance(authorized(admin::AdvanceRequest { by: None }, &admin_token))
        .await
        .expect_err("no duration");
    assert_eq!(zero.code(), Code::InvalidArgument);
    assert_eq!(crate::fields(&zero).first().map(String::as_str), Some("by"));
    let analyst = clock
        .advance(authorized(
            admin::AdvanceRequest {
                by: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
            },
            &platform.token(Role::Analyst),
        ))
        .await
        .expect_err("not admin");
    assert_eq!(analyst.code(), Code::PermissionDenied);
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_completes_in_flight_requests_and_half_writes_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new();
    let config = env.config();
    let platform = RunningPlatform::start(config.clone(), vec![Arc::new(Probe::default())]).await?;
    let channel = platform.channel().await?;
    let token = platform.token(Role::Channel);
    let mut calls = Vec::new();
    for i in 0..40 {
        let mut client = pb::probe_service_client::ProbeServiceClient::new(channel.clone());
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            client
                .write_note(authorized(
                    pb::WriteNoteRequest {
                        body: format!("load-{i}"),
                        hold_ms: 400,
                    },
                    &token,
                ))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    platform.trigger_shutdown();
    let mut ok = 0;
    for call in calls {
        match call.await? {
            Ok(_) => ok += 1,
            Err(status) => anyhow::bail!("an in-flight request failed during shutdown: {status}"),
        }
    }
    platform.join().await?;
    assert_eq!(ok, 40, "every in-flight request completed");

    // Nothing half-written: every note has its event, and every event was
    // flushed to JetStream before the process stopped.
    let pool = baladiya_platform::db::schema_pool(&config.database, "probe")?;
    let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&pool)
        .await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await?;
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await?;
    assert_eq!((notes, events, unsent), (40, 40, 0));
    let js = async_nats::jetstream::new(env.nats().await?);
    let stream = crate::stream_events(
        &js,
        &baladiya_platform::events::Namespace::new(&env.namespace),
        &crate::probe::STREAM,
    )
    .await?;
    assert_eq!(stream, 40);
    pool.close().await;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_exits_zero_on_sigterm() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let child = ChildPlatform::spawn(
        &env,
        "all",
        &[
            ("BALADIYA__CLOCK__MODE", "manual"),
            ("BALADIYA__CLOCK__START", "2026-03-01T07:30:00+03:00"),
        ],
    )
    .await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", child.grpc))?
        .connect()
        .await?;
    assert_eq!(
        health(channel.clone(), "baladiya.admin.v1.ClockService").await?,
        ServingStatus::Serving as i32
    );
    let token = crate::token(&env.config(), Role::Admin);
    let now = admin::clock_service_client::ClockServiceClient::new(channel)
        .get_time(authorized(admin::GetTimeRequest {}, &token))
        .await?
        .into_inner();
    assert_eq!(
        now.now.map(|t| t.seconds),
        Some(instant("2026-03-01T07:30:00+03:00").timestamp())
    );
    assert_eq!(child.terminate().await?, Some(0));
    env.cleanup().await;
    Ok(())
}

#[test]
fn the_binary_refuses_unknown_services_bad_flags_and_bad_config() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(baladiya_binary());
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().expect("run baladiya");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = run(&["run", "--services", "nonsense"], &[]);
    assert_eq!(code, Some(2));
    assert!(text.contains("unknown service 'nonsense'"), "{text}");
    let (code, _) = run(&["run", "--no-such-flag"], &[]);
    assert_eq!(code, Some(2));
    let (code, text) = run(
        &["config", "check"],
        &[("BALADIYA__SERVER__HTTP_ADDR", "nope")],
    );
    assert_eq!(code, Some(1));
    assert!(text.contains("server.http_addr"), "{text}");
    let (code, text) = run(
        &["config", "print"],
        &[("BALADIYA__DATABASE__URL", "postgres://u:topsecret@db/x")],
    );
    assert_eq!(code, Some(0));
    assert!(
        text.contains("postgres://u:<redacted>@db/x") && !text.contains("topsecret"),
        "{text}"
    );
    let example = crate::workspace_root().join("deploy/config/baladiya.example.toml");
    let example = example.to_str().expect("utf-8 path");
    let (code, text) = run(&["--config", example, "config", "check"], &[]);
    assert_eq!(code, Some(0), "the example configuration is valid: {text}");
    let (code, text) = run(&["--config", example, "config", "print"], &[]);
    assert_eq!(code, Some(0));
    let documented = std::fs::read_to_string(example).expect("example");
    let printed: toml::Table = toml::from_str(&text).expect("printed TOML");
    for (section, keys) in printed
        .iter()
        .filter_map(|(s, v)| v.as_table().map(|t| (s, t)))
    {
        assert!(
            documented.contains(&format!("[{section}]")),
            "[{section}] undocumented"
        );
        for key in keys.keys() {
            assert!(
                documented.contains(&format!("\n{key} =")),
                "{section}.{key} undocumented"
            );
        }
    }
    let (code, text) = run(&["config", "check"], &[("BALADIYA__NOSUCH__KEY", "1")]);
    assert_eq!(code, Some(1));
    assert!(text.contains("nosuch: unknown section"), "{text}");
    let (code, text) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert!(text.starts_with("baladiya "), "{text}");
    let (code, text) = run(&["dev-token", "--role", "partner"], &[]);
    assert_eq!(code, Some(2));
    assert!(text.contains("--partner"), "{text}");
}

/// `make dev` on a machine where neither PostgreSQL nor NATS is running: the
/// bootstrap script starts private instances (here on unused ports) and the
/// platform becomes ready against them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_starts_private_postgres_and_nats_when_none_answer() -> anyhow::Result<()> {
    let dir =
        std::env::temp_dir().join(format!("baladiya-devenv-{}", uuid::Uuid::now_v7().simple()));
    let (pg_port, nats_port) = (crate::free_port(), crate::free_port());
    let script = crate::workspace_root().join("scripts/devenv.py");
    let devenv = |command: &str| {
        let mut c = std::process::Command::new("python3");
        c.arg(&script)
            .arg(command)
            .arg("--dir")
            .arg(&dir)
            .args([
                "--pg-port",
                &pg_port.to_string(),
                "--nats-port",
                &nats_port.to_string(),
            ])
            .env_remove("BALADIYA__DATABASE__URL")
            .env_remove("BALADIYA__NATS__URL");
        c.output()
    };
    let up = devenv("up")?;
    let stdout = String::from_utf8_lossy(&up.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(up.status.success(), "devenv up failed:\n{stderr}");
    assert!(stderr.contains("starting private"), "{stderr}");
    let var = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}='")))
            .map(|v| v.trim_end_matches('\'').to_string())
    };
    let database_url = var("BALADIYA__DATABASE__URL").expect("database url exported");
    let nats_url = var("BALADIYA__NATS__URL").expect("nats url exported");
    assert_eq!(
        database_url,
        format!("postgres://postgres@127.0.0.1:{pg_port}/baladiya")
    );
    assert_eq!(nats_url, format!("nats://127.0.0.1:{nats_port}"));

    let result = async {
        let env = TestEnv {
            database: "baladiya".into(),
            namespace: String::new(),
            nats_url: nats_url.clone(),
        };
        let config = baladiya_platform::config::DatabaseConfig {
            url: baladiya_platform::config::Secret::new(database_url.clone()),
            ..Default::default()
        };
        baladiya_platform::db::ensure_database(&config).await?;
        let js = async_nats::jetstream::new(async_nats::connect(&nats_url).await?);
        js.query_account().await?;
        let http: std::net::SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse()?;
        let mut child = tokio::process::Command::new(baladiya_binary())
            .args(["run"])
            .env("BALADIYA__DATABASE__URL", &database_url)
            .env("BALADIYA__NATS__URL", &env.nats_url)
            .env(
                "BALADIYA__SERVER__GRPC_ADDR",
                format!("127.0.0.1:{}", crate::free_port()),
            )
            .env("BALADIYA__SERVER__HTTP_ADDR", http.to_string())
            .env("BALADIYA__TELEMETRY__LOG_FILTER", "warn")
            .kill_on_drop(true)
            .spawn()?;
        let mut ready = Err(anyhow::anyhow!("/readyz never answered 200"));
        for _ in 0..200 {
            if let Some(status) = child.try_wait()? {
                ready = Err(anyhow::anyhow!("the platform exited: {status}"));
                break;
            }
            if matches!(crate::http_get(http, "/readyz").await, Ok((200, _))) {
                ready = Ok(());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().await.ok();
        ready?;
        anyhow::Ok(())
    }
    .await;
    let down = devenv("down")?;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    assert!(down.status.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_cut_off_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let env = TestEnv::new();
    let config = env.config();
    let platform = RunningPlatform::start(config.clone(), vec![Arc::new(Probe::default())]).await?;
    let mut probe = pb::probe_service_client::ProbeServiceClient::new(platform.channel().await?);
    let mut request = authorized(
        pb::WriteNoteRequest {
            body: "too-slow".into(),
            hold_ms: 1_000,
        },
        &platform.token(Role::Channel),
    );
    request.set_timeout(Duration::from_millis(100));
    let status = probe
        .write_note(request)
        .await
        .expect_err("deadline exceeded");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let pool = baladiya_platform::db::schema_pool(&config.database, "probe")?;
    let (notes, events): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM notes), (SELECT count(*) FROM outbox)")
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (notes, events),
        (0, 0),
        "the cut-off transaction rolled back"
    );
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() -> anyhow::Result<()> {
    use baladiya_platform::app::ServiceModule;
    let env = TestEnv::new();
    let config = env.config();
    baladiya_platform::db::ensure_database(&config.database).await?;
    let runs = (0..4).map(|_| {
        let config = config.clone();
        tokio::spawn(async move {
            let pool = baladiya_platform::db::schema_pool(&config.database, "probe")?;
            baladiya_platform::db::migrate(&pool, "probe", &Probe::default().migrator()).await?;
            anyhow::Ok(pool)
        })
    });
    let mut pools = Vec::new();
    for run in futures::future::join_all(runs).await {
        pools.push(run??);
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM probe._sqlx_migrations ORDER BY version")
            .fetch_all(&pools[0])
            .await?;
    assert_eq!(
        applied,
        [1, 2, 3, 4, 5, 100],
        "the platform's then the service's, each once"
    );
    for pool in pools {
        pool.close().await;
    }
    env.cleanup().await;
    Ok(())
}
