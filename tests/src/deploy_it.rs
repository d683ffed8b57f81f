//! What the deployment files promise, checked against the real thing: the
//! alert rules name only metrics a running platform exports, and the
//! PostgreSQL roles of deploy/postgres/schemas.sql let each service migrate,
//! seed and run its own schema and keep it out of every other.

use std::collections::BTreeSet;

use baladiya_platform::auth::Role;
use baladiya_proto::partners::v1 as pb;
use baladiya_proto::partners::v1::partner_service_client::PartnerServiceClient;
use sqlx::Connection;

use crate::{
    RunningPlatform, TestEnv, authorized, baladiya_binary, eventually, stream_events,
    workspace_root,
};

/// Sample names in a Prometheus text exposition, and the family name of each
/// histogram (`x` beside `x_bucket`, `x_sum`, `x_count`).
fn exported_samples(exposition: &str) -> BTreeSet<String> {
    let samples: BTreeSet<String> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let histograms: Vec<String> = samples
        .iter()
        .filter_map(|s| s.strip_suffix("_bucket").map(str::to_string))
        .collect();
    samples.into_iter().chain(histograms).collect()
}

/// Every `baladiya_…` metric name written in the rules file.
fn metrics_named_in_alerts() -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(workspace_root().join("deploy/prometheus/alerts.yaml"))?;
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("baladiya_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_name_only_metrics_the_platform_exports() -> anyhow::Result<()> {
    let named = metrics_named_in_alerts()?;
    assert!(
        named.len() >= 8,
        "the rules name too few metrics: {named:?}"
    );
    let env = TestEnv::new();
    let platform = RunningPlatform::start(env.config(), baladiya_server::catalogue()).await?;
    // One call, so the per-RPC families have a sample; seeding publishes and
    // consumes events, which fills the event families.
    let mut partners = PartnerServiceClient::new(platform.channel().await?);
    partners
        .list_partners(authorized(
            pb::ListPartnersRequest::default(),
            &platform.token(Role::Operator),
        ))
        .await?;
    let missing = eventually(30, "every metric the alert rules name", || async {
        let (status, body) = platform.http_get("/metrics").await?;
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        let exported = exported_samples(&body);
        let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
        Ok(missing.is_empty().then_some(()))
    })
    .await;
    if missing.is_err() {
        let (_, body) = platform.http_get("/metrics").await?;
        let exported = exported_samples(&body);
        let absent: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
        panic!("alerts.yaml names metrics the platform does not export: {absent:?}");
    }
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}

/// The services and their schemas, as deploy/postgres/schemas.sql names them.
const SERVICES: [(&str, &str); 6] = [
    ("partners", "partners"),
    ("intake", "intake"),
    ("routing", "routing"),
    ("licensing", "licensing"),
    ("sla-watcher", "sla_watcher"),
    ("kpi", "kpi"),
];

async fn admin() -> anyhow::Result<sqlx::PgConnection> {
    Ok(sqlx::PgConnection::connect(&crate::database_url("postgres")).await?)
}

/// `url` with its user replaced by `role` (trust or peer authentication here:
/// roles need no password on the test server).
fn as_role(url: &str, role: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{role}@{host}")
}

async fn baladiya(args: &[&str], database_url: &str, env: &TestEnv) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(baladiya_binary())
        .args(args)
        .env_clear()
        .env("BALADIYA__DATABASE__URL", database_url)
        .env("BALADIYA__NATS__URL", &env.nats_url)
        .env("BALADIYA__EVENTS__NAMESPACE", &env.namespace)
        .env("BALADIYA__TELEMETRY__LOG_FILTER", "warn")
        // Away from the checkout, as in the image: the seed is the binary's.
        .current_dir(std::env::temp_dir())
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "baladiya {} as {}: {}",
        args.join(" "),
        database_url,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_role_migrates_and_reads_its_own_schema_only() -> anyhow::Result<()> {
    let env = TestEnv::new();
    // Roles are global to the server: this run's get their own prefix.
    let prefix = format!("r{}", &env.namespace[1..]);
    let sql = std::fs::read_to_string(workspace_root().join("deploy/postgres/schemas.sql"))?
        .replace("baladiya", &prefix);
    let owner = prefix.clone();
    let role = |schema: &str| format!("{prefix}_{schema}");

    let mut admin = admin().await?;
    for statement in [
        format!("CREATE ROLE \"{owner}\" LOGIN"),
        format!("CREATE DATABASE \"{}\" OWNER \"{owner}\"", env.database),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await?;
    }
    let result = async {
        // What CloudNativePG does: the file as superuser in the new database,
        // then LOGIN for the managed roles.
        let mut db = sqlx::PgConnection::connect(&env.database_url()).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut db)
            .await?;
        for (_, schema) in SERVICES {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER ROLE \"{}\" LOGIN",
                role(schema)
            )))
            .execute(&mut db)
            .await?;
        }
        db.close().await?;

        // The migration Job of each service, with that service's role.
        for (service, schema) in SERVICES {
            let url = as_role(&env.database_url(), &role(schema));
            baladiya(&["seed", "--services", service], &url, &env).await?;
        }
        // Each role reads its own tables and no other service's.
        for (_, schema) in SERVICES {
            let url = as_role(&env.database_url(), &role(schema));
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            for (_, other) in SERVICES {
                let read = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {other}._sqlx_migrations"
                )))
                .fetch_one(&mut conn)
                .await;
                if other == schema {
                    assert!(read? > 0, "{schema} has no migrations recorded");
                } else {
                    let denied = read.expect_err("another service's schema is closed");
                    let code = denied.as_database_error().and_then(|e| e.code());
                    assert_eq!(
                        code.as_deref(),
                        Some("42501"),
                        "{schema} reading {other}: {denied}"
                    );
                }
            }
            let public = sqlx::query("CREATE TABLE public.stray (i int)")
                .execute(&mut conn)
                .await;
            assert!(public.is_err(), "{schema} may create tables in public");
            conn.close().await?;
        }
        // The all-in-one topology: the database owner runs every service.
        let url = as_role(&env.database_url(), &owner);
        baladiya(&["migrate", "--services", "all"], &url, &env).await?;
        anyhow::Ok(())
    }
    .await;

    env.cleanup().await;
    for name in SERVICES
        .iter()
        .map(|(_, schema)| role(schema))
        .chain([owner.clone()])
    {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{name}\""
        )))
        .execute(&mut admin)
        .await?;
    }
    result
}

/// The runbook's "recover streams from the outbox": a stream lost on the NATS
/// side is refilled, in order and without gaps, by `baladiya events republish`
/// while the service keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_is_refilled_from_the_outbox() -> anyhow::Result<()> {
    use baladiya_platform::events::{Namespace, streams};

    let env = TestEnv::new();
    let platform = RunningPlatform::start(
        env.config(),
        vec![std::sync::Arc::new(baladiya_partners::PartnersModule)],
    )
    .await?;
    let js = async_nats::jetstream::new(env.nats().await?);
    let ns = Namespace::new(&env.namespace);
    let stream = ns.stream(streams::PARTNERS.name);
    // PARTNERS carries no watermark: its events are all its messages.
    let stream_length = || async { stream_events(&js, &ns, &streams::PARTNERS).await.ok() };
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    // Seeding publishes the partners, calendars and agreements.
    let published = eventually(30, "the seed events published", || async {
        let (total, unsent): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL) FROM partners.outbox",
        )
        .fetch_one(&pool)
        .await?;
        Ok((total > 0 && unsent == 0).then_some(total as u64))
    })
    .await?;
    assert_eq!(stream_length().await, Some(published));

    let url = env.database_url();
    let republish = || {
        baladiya(
            &[
                "events",
                "republish",
                "--services",
                "partners",
                "--since",
                "2000-01-01T00:00:00Z",
            ],
            &url,
            &env,
        )
    };
    js.delete_stream(&stream).await?;
    republish().await?;
    eventually(30, "the stream refilled from the outbox", || async {
        Ok((stream_length().await == Some(published)).then_some(()))
    })
    .await?;
    // Republishing again adds nothing: JetStream drops the duplicates.
    republish().await?;
    eventually(30, "the outbox drained again", || async {
        let unsent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM partners.outbox WHERE sent_at IS NULL")
                .fetch_one(&pool)
                .await?;
        Ok((unsent == 0).then_some(()))
    })
    .await?;
    assert_eq!(stream_length().await, Some(published));
    pool.close().await;
    platform.stop().await?;
    env.cleanup().await;
    Ok(())
}
