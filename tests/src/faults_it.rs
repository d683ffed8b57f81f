//! Fault injection: the platform split into one process per service (two SLA
//! watchers) under a steady load of `SubmitReport` calls, while NATS is
//! killed, PostgreSQL goes away, each service is killed with SIGKILL, and an
//! SLA watcher dies in the middle of a burst of escalations. After each fault:
//! every report that got an OK is stored, routed, clocked and projected once;
//! no report, case, clock or KPI fact exists twice; every escalation fired
//! exactly once; callers were refused (UNAVAILABLE, or the connection dropped
//! under a killed process) and never hung past their deadline or got a wrong
//! answer. The table of results is printed (`make faults` shows it; `make
//! test` runs the short form).
//!
//! `BALADIYA_FAULT_OUTAGE_SECS` sets how long NATS and PostgreSQL stay down
//! (3 seconds by default, 30 in `make faults`), `BALADIYA_FAULT_CALLERS` how
//! many callers submit reports at once (2; 8 in `make faults`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baladiya_platform::auth::Role;
use baladiya_proto::common::v1::Location;
use baladiya_proto::intake::v1 as intake;
use baladiya_proto::intake::v1::intake_service_client::IntakeServiceClient;
use chrono::{DateTime, Utc};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tonic::Code;
use tonic::transport::Channel;

use crate::{
    ChildPlatform, NatsProcess, TestEnv, authorized, eventually, free_port, riyadh, workspace_root,
};

/// Concurrent callers of `SubmitReport` (`BALADIYA_FAULT_CALLERS`, 2 by default).
fn callers() -> usize {
    std::env::var("BALADIYA_FAULT_CALLERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("BALADIYA_FAULT_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    )
}

/// The network path to PostgreSQL: [`Link::cut`] drops every connection and
/// refuses new ones, which is what clients see while the server restarts.
struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn start(target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (up, connections) = (up.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: connection refused, in effect
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections
                        .lock()
                        .expect("connections")
                        .push(task.abort_handle());
                }
            }
        });
        Ok(Self {
            port,
            up,
            connections,
            accept,
        })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().expect("connections").drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `url` with its host and port replaced by `127.0.0.1:port`, and the
/// host:port it named.
fn through(url: &str, port: u16) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, rest) = match rest.split_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (
        format!("{scheme}://{user}127.0.0.1:{port}{path}"),
        host.to_string(),
    )
}

/// One process of the split platform.
struct Process {
    services: &'static str,
    addrs: (SocketAddr, SocketAddr),
    running: Option<ChildPlatform>,
}

/// The platform split into processes, on a private NATS and a cuttable path
/// to PostgreSQL, on a manual clock.
struct Cluster {
    env: TestEnv,
    nats: NatsProcess,
    link: Link,
    database_url: String,
    now: DateTime<Utc>,
    processes: Vec<Process>,
}

const PROCESSES: [&str; 6] = [
    "partners",
    "intake",
    "routing",
    "sla-watcher",
    "sla-watcher",
    "kpi",
];

impl Cluster {
    async fn start(now: DateTime<Utc>) -> anyhow::Result<Self> {
        let mut env = TestEnv::new();
        // JetStream as in production (deploy/nats): every write fsynced
        // before it is acknowledged, so SIGKILL loses nothing acknowledged.
        let conf = std::env::temp_dir().join(format!("baladiya-faults-{}.conf", env.namespace));
        std::fs::write(
            &conf,
            "jetstream {\n  store_dir: \"/tmp/unused\"\n  sync_interval: always\n}\n",
        )?;
        let nats = NatsProcess::start_with_config(&conf, &[], ("", "")).await?;
        env.nats_url = nats.url();
        let direct = env.database_url();
        let (_, target) = through(&direct, 0);
        let link = Link::start(target).await?;
        let (database_url, _) = through(&direct, link.port);
        let mut cluster = Self {
            env,
            nats,
            link,
            database_url,
            now,
            processes: Vec::new(),
        };
        for services in PROCESSES {
            let addrs = (
                format!("127.0.0.1:{}", free_port()).parse()?,
                format!("127.0.0.1:{}", free_port()).parse()?,
            );
            cluster.processes.push(Process {
                services,
                addrs,
                running: None,
            });
            let last = cluster.processes.len() - 1;
            cluster.spawn(last).await?;
        }
        crate::sla_watcher_has_the_seed(&cluster.env).await?;
        Ok(cluster)
    }

    async fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let seed = workspace_root().join("deploy/seed").display().to_string();
        let start = self.now.to_rfc3339();
        let extra = [
            ("BALADIYA__DATABASE__URL", self.database_url.as_str()),
            ("BALADIYA__DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
            ("BALADIYA__CLOCK__MODE", "manual"),
            ("BALADIYA__CLOCK__START", start.as_str()),
            ("BALADIYA__SEED__DIR", seed.as_str()),
            ("BALADIYA__AUTH__RATE_LIMIT_PER_SECOND", "0"),
            ("BALADIYA__NATS__ACK_TIMEOUT_MS", "1000"),
            ("BALADIYA__EVENTS__OUTBOX_POLL_MS", "100"),
            ("BALADIYA__EVENTS__CONSUMER_BACKOFF_MS", "50"),
            ("BALADIYA__EVENTS__CONSUMER_BACKOFF_MAX_MS", "500"),
            ("BALADIYA__EVENTS__CONSUMER_MAX_ATTEMPTS", "100"),
        ];
        let process = &mut self.processes[i];
        let log = std::env::temp_dir().join(format!(
            "baladiya-faults-{}-{}-{i}.log",
            self.env.namespace, process.services
        ));
        process.running = Some(
            ChildPlatform::spawn_on(
                &self.env,
                process.services,
                &extra,
                process.addrs,
                Some(&log),
            )
            .await?,
        );
        Ok(())
    }

    fn index(&self, services: &str) -> usize {
        self.processes
            .iter()
            .position(|p| p.services == services)
            .expect("a process")
    }

    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(process) = self.processes[i].running.take() {
            process.kill().await?;
        }
        Ok(())
    }

    fn grpc(&self, services: &str) -> SocketAddr {
        self.processes[self.index(services)].addrs.0
    }

    fn token(&self, role: Role, channel: Option<&str>) -> String {
        crate::DevToken::new(role)
            .subject("faults")
            .channel(channel)
            .ttl(chrono::Duration::hours(2))
            .mint(&self.env.config().auth)
    }

    /// Moves every running process's clock to `at` (a process started later
    /// starts there).
    async fn set_time(&mut self, at: DateTime<Utc>) -> anyhow::Result<()> {
        self.now = at;
        let token = self.token(Role::Admin, None);
        let grpc = self
            .processes
            .iter()
            .filter(|p| p.running.is_some())
            .map(|p| p.addrs.0);
        crate::set_clocks(grpc, at, &token).await
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            if let Some(running) = process.running.take() {
                running.terminate().await?;
            }
        }
        self.env.cleanup().await;
        self.nats.stop();
        Ok(())
    }
}

/// What callers saw during one phase.
#[derive(Debug, Default)]
struct Calls {
    /// Report ids answered OK, by request id.
    accepted: BTreeMap<String, String>,
    /// Requests with no answer we can trust (refused or cut), to retry.
    in_doubt: Vec<(String, u64)>,
    /// Answers by status code (for the table).
    refused: BTreeMap<String, u64>,
    /// Calls that outlived their deadline by more than a second.
    hung: u64,
    /// Answers that are neither an OK nor a refusal.
    wrong: Vec<String>,
}

/// Numbers each report: report `n` is at its own place, far enough from every
/// other that none is taken for a duplicate of another.
static NEXT_REPORT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn submit_request(request_id: &str, n: u64) -> intake::SubmitReportRequest {
    intake::SubmitReportRequest {
        request_id: request_id.into(),
        channel: intake::Channel::CallCenter940 as i32,
        category_code: "ROAD_WORKS_DAMAGE".into(),
        description: "حفرة بعد أعمال الطريق".into(),
        location: Some(Location {
            latitude: 24.40 + (n % 150) as f64 * 0.004,
            longitude: 46.40 + (n / 150 % 180) as f64 * 0.004,
            national_address_short: String::new(),
            municipality_code: "RIYADH".into(),
        }),
        reporter: None,
        attachments: vec![],
        observed_at: None,
        priority_hint: 0,
    }
}

const DEADLINE: Duration = Duration::from_secs(2);

/// One `SubmitReport` with a 2-second deadline, recorded in `calls`.
async fn submit(
    client: &mut IntakeServiceClient<Channel>,
    token: &str,
    (request_id, n): (String, u64),
    calls: &Mutex<Calls>,
) {
    let mut request = authorized(submit_request(&request_id, n), token);
    request.set_timeout(DEADLINE);
    let answer = tokio::time::timeout(
        DEADLINE + Duration::from_secs(1),
        client.submit_report(request),
    )
    .await;
    let mut calls = calls.lock().await;
    match answer {
        Err(_) => {
            calls.hung += 1;
            calls.in_doubt.push((request_id, n));
        }
        Ok(Ok(response)) => match response.into_inner().report {
            Some(report) => {
                calls.accepted.insert(request_id, report.id);
            }
            None => calls.wrong.push("OK without a report".into()),
        },
        Ok(Err(status)) => {
            // Refusals a caller can act on: retry later with the same
            // request id. A killed process shows as a dropped connection.
            let refused = matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ) || (status.code() == Code::Unknown
                && (status.message().contains("transport")
                    || status.message().contains("connection")));
            if refused {
                *calls
                    .refused
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                calls.in_doubt.push((request_id, n));
            } else {
                calls
                    .wrong
                    .push(format!("{:?}: {}", status.code(), status.message()));
            }
        }
    }
}

/// Submits reports from `workers` callers until `stop`.
async fn load(
    target: SocketAddr,
    token: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Calls> {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let channel = Channel::from_shared(format!("http://{target}"))?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (calls, stop, token) = (calls.clone(), stop.clone(), token.clone());
        let mut client = IntakeServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let before = calls.lock().await.in_doubt.len();
                let n = NEXT_REPORT.fetch_add(1, Ordering::SeqCst);
                submit(
                    &mut client,
                    &token,
                    (uuid::Uuid::now_v7().to_string(), n),
                    &calls,
                )
                .await;
                // A steady 10 calls a second per caller (and a pause after
                // a refusal): enough to be mid-call when a fault strikes,
                // few enough that the escalation burst stays short.
                let pause = if calls.lock().await.in_doubt.len() > before {
                    200
                } else {
                    100
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let calls = Arc::try_unwrap(calls).map_err(|_| anyhow::anyhow!("calls still shared"))?;
    Ok(calls.into_inner())
}

/// What goes wrong while the load runs.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Nothing,
    /// NATS killed with SIGKILL, restarted after the outage.
    Nats,
    /// Every connection to PostgreSQL cut, none accepted, for the outage.
    Postgres,
    /// A process killed with SIGKILL and started again.
    Kill(usize),
}

impl Cluster {
    async fn inject(&mut self, fault: Fault, outage: Duration) -> anyhow::Result<()> {
        match fault {
            Fault::Nothing => Ok(()),
            Fault::Nats => {
                self.nats.stop();
                tokio::time::sleep(outage).await;
                self.nats.resume().await
            }
            Fault::Postgres => {
                self.link.cut();
                tokio::time::sleep(outage).await;
                self.link.restore();
                Ok(())
            }
            Fault::Kill(i) => {
                self.kill(i).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.spawn(i).await
            }
        }
    }
}

/// Runs the load while `fault` happens, then retries every request in doubt
/// once, with its request id, as a careful caller does.
async fn under_load(
    cluster: &mut Cluster,
    fault: Fault,
    outage: Duration,
) -> anyhow::Result<Calls> {
    let target = cluster.grpc("intake");
    let token = cluster.token(Role::Channel, Some("CHANNEL_CALL_CENTER_940"));
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(target, token.clone(), callers(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.inject(fault, outage).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut calls = running.await??;
    let retry = Mutex::new(Calls::default());
    let mut client = IntakeServiceClient::new(
        Channel::from_shared(format!("http://{target}"))?
            .connect()
            .await?,
    );
    for request in std::mem::take(&mut calls.in_doubt) {
        submit(&mut client, &token, request, &retry).await;
    }
    let retry = retry.into_inner();
    anyhow::ensure!(
        retry.in_doubt.is_empty() && retry.wrong.is_empty() && retry.hung == 0,
        "retries after recovery failed: {retry:?}"
    );
    for (request_id, report_id) in retry.accepted {
        if let Some(first) = calls.accepted.get(&request_id) {
            calls
                .wrong
                .push(format!("{request_id} answered {first} then {report_id}"));
        }
        calls.accepted.insert(request_id, report_id);
    }
    Ok(calls)
}

/// Reports that got an OK but are not stored, routed, clocked and projected
/// once each, after the platform settles; and the duplicates anywhere.
async fn lost_and_duplicated(
    env: &TestEnv,
    accepted: &BTreeMap<String, String>,
) -> anyhow::Result<(usize, i64)> {
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let ids: Vec<uuid::Uuid> = accepted
        .values()
        .map(|id| id.parse())
        .collect::<Result<_, _>>()?;
    let count = |sql: &'static str| {
        let (pool, ids) = (pool.clone(), ids.clone());
        async move {
            anyhow::Ok(
                sqlx::query_scalar::<_, i64>(sql)
                    .bind(&ids)
                    .fetch_one(&pool)
                    .await?,
            )
        }
    };
    let projected = || async {
        let texts: Vec<String> = accepted.values().cloned().collect();
        anyhow::Ok(
            sqlx::query_scalar::<_, i64>(
                "SELECT count(DISTINCT subject) FROM kpi.facts
                 WHERE kind = 'report_received' AND subject = ANY($1)",
            )
            .bind(&texts)
            .fetch_one(&pool)
            .await?,
        )
    };
    // Everything downstream of an accepted report, once each.
    let complete = eventually(
        60,
        "every accepted report routed, clocked and projected",
        || async {
            let stored = count("SELECT count(*) FROM intake.reports WHERE id = ANY($1)").await?;
            let routed =
                count("SELECT count(*) FROM routing.cases WHERE report_id = ANY($1)").await?;
            let clocked = count(
                "SELECT count(DISTINCT c.report_id) FROM routing.cases c
             JOIN sla_watcher.clocks k ON k.subject_kind = 'case' AND k.subject_id = c.id
             WHERE c.report_id = ANY($1)",
            )
            .await?;
            let projected = projected().await?;
            let all = ids.len() as i64;
            Ok(
                (stored == all && routed == all && clocked == all && projected == all)
                    .then_some(()),
            )
        },
    )
    .await;
    let lost = if complete.is_ok() {
        0
    } else {
        println!(
            "incomplete after 60 s: stored {}, routed {}, projected {} of {}",
            count("SELECT count(*) FROM intake.reports WHERE id = ANY($1)").await?,
            count("SELECT count(*) FROM routing.cases WHERE report_id = ANY($1)").await?,
            projected().await?,
            ids.len()
        );
        let found = count(
            "SELECT count(*) FROM intake.reports r
             JOIN routing.cases c ON c.report_id = r.id
             WHERE r.id = ANY($1)
               AND EXISTS (SELECT 1 FROM sla_watcher.clocks k
                           WHERE k.subject_kind = 'case' AND k.subject_id = c.id)
               AND EXISTS (SELECT 1 FROM kpi.facts f
                           WHERE f.kind = 'report_received' AND f.subject = r.id::text)",
        )
        .await?;
        ids.len() - found as usize
    };
    let duplicated: i64 = sqlx::query_scalar(
        "SELECT
           (SELECT count(*) - count(DISTINCT request_id) FROM intake.reports)
         + (SELECT count(*) - count(DISTINCT (subject_id, metric, partner_code)) FROM sla_watcher.clocks
             WHERE subject_kind = 'case')
         + (SELECT count(*) - count(DISTINCT subject) FROM kpi.facts WHERE kind = 'report_received')",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok((lost, duplicated))
}

/// Waits until the SLA watchers recorded `expected` level-`level`
/// escalations and published everything, then reads the SLA stream once:
/// (escalations raised on it, distinct clocks among them).
async fn escalations(env: &TestEnv, level: u32, expected: usize) -> anyhow::Result<(usize, usize)> {
    use prost::Message;
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let _ = eventually(300, "the escalations recorded and published", || async {
        let (recorded, unsent): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM sla_watcher.escalations WHERE level = $1),
                    (SELECT count(*) FROM sla_watcher.outbox WHERE sent_at IS NULL)",
        )
        .bind(level as i32)
        .fetch_one(&pool)
        .await?;
        Ok((recorded as usize >= expected && unsent == 0).then_some(()))
    })
    .await;
    pool.close().await;
    let js = async_nats::jetstream::new(env.nats().await?);
    let stream = js.get_stream(format!("{}_SLA", env.namespace)).await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: format!("{}.baladiya.sla.escalation.raised.>", env.namespace),
            // Read, not acknowledged: no cap on unacknowledged messages.
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut raised = 0;
    let mut clocks = std::collections::BTreeSet::new();
    for message in
        crate::harness::streams::fetch_messages(&consumer, 100_000, Duration::from_secs(2)).await?
    {
        let event =
            baladiya_proto::sla::events::v1::EscalationRaised::decode(message.payload.as_ref())?;
        if event.level == level {
            raised += 1;
            clocks.insert(event.clock.map(|c| c.clock_id).unwrap_or_default());
        }
    }
    let name = consumer.cached_info().name.clone();
    js.delete_consumer_from_stream(name, format!("{}_SLA", env.namespace))
        .await?;
    Ok((raised, clocks.len()))
}

/// How many acknowledge clocks are open for MOTLS: each must escalate once.
async fn open_acknowledge_clocks(env: &TestEnv) -> anyhow::Result<usize> {
    let pool = sqlx::PgPool::connect(&env.database_url()).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sla_watcher.clocks
         WHERE subject_kind = 'case' AND metric = 'acknowledge' AND partner_code = 'MOTLS'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(n as usize)
}

struct Row {
    fault: String,
    /// From the fault's start to every promise checked.
    seconds: f64,
    accepted: usize,
    lost: usize,
    duplicated: i64,
    refused: String,
    hung: u64,
    wrong: usize,
    /// A few of the wrong answers.
    examples: Vec<String>,
    escalations: Option<(usize, usize)>,
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<52} {:>6} {:>8} {:>5} {:>5} {:>5} {:>5} {:>13}  refused (by code)",
        "fault", "secs", "accepted", "lost", "dup", "hung", "wrong", "esc exp/fired"
    );
    for r in rows {
        let escalations = r
            .escalations
            .map_or("-".to_string(), |(e, f)| format!("{e}/{f}"));
        println!(
            "{:<52} {:>6.1} {:>8} {:>5} {:>5} {:>5} {:>5} {:>13}  {}",
            r.fault,
            r.seconds,
            r.accepted,
            r.lost,
            r.duplicated,
            r.hung,
            r.wrong,
            escalations,
            r.refused
        );
    }
}

impl Row {
    async fn of(
        fault: impl Into<String>,
        started: std::time::Instant,
        calls: &Calls,
        all: &mut BTreeMap<String, String>,
        env: &TestEnv,
    ) -> anyhow::Result<Self> {
        all.extend(calls.accepted.clone());
        let (lost, duplicated) = lost_and_duplicated(env, all).await?;
        Ok(Self {
            fault: fault.into(),
            seconds: started.elapsed().as_secs_f64(),
            accepted: calls.accepted.len(),
            lost,
            duplicated,
            refused: format!("{:?}", calls.refused),
            hung: calls.hung,
            wrong: calls.wrong.len(),
            examples: calls.wrong.iter().take(3).cloned().collect(),
            escalations: None,
        })
    }

    /// A burst of `expected` escalations that put `raised` events on the
    /// stream for `clocks` distinct clocks.
    fn burst(
        fault: &str,
        started: std::time::Instant,
        expected: usize,
        (raised, clocks): (usize, usize),
    ) -> Self {
        Self {
            fault: fault.into(),
            seconds: started.elapsed().as_secs_f64(),
            accepted: 0,
            lost: expected.saturating_sub(clocks),
            duplicated: raised as i64 - clocks as i64,
            refused: String::new(),
            hung: 0,
            wrong: 0,
            examples: Vec::new(),
            escalations: Some((expected, raised)),
        }
    }

    fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.hung == 0
            && self.wrong == 0
            && self.escalations.is_none_or(|(e, f)| e == f)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_and_fire_each_escalation_once() -> anyhow::Result<()> {
    let outage = outage();
    // Sunday 1 November 2026, 09:00 in Riyadh: MOTLS must acknowledge by
    // Monday 10:00; level 2 follows on Tuesday 10:00.
    let mut cluster = Cluster::start(riyadh("2026-11-01 09:00")).await?;
    let mut accepted = BTreeMap::new();
    let mut rows = Vec::new();

    let mut faults = vec![
        ("none (baseline)".to_string(), Fault::Nothing),
        (
            format!("kill -9 NATS for {}s", outage.as_secs()),
            Fault::Nats,
        ),
        (
            format!(
                "PostgreSQL gone for {}s (connections cut)",
                outage.as_secs()
            ),
            Fault::Postgres,
        ),
    ];
    for (i, services) in PROCESSES.iter().enumerate() {
        // The second SLA watcher's turn comes in the burst.
        if i != 4 {
            faults.push((format!("kill -9 {services}"), Fault::Kill(i)));
        }
    }
    for (name, fault) in faults {
        let started = std::time::Instant::now();
        let calls = under_load(&mut cluster, fault, outage).await?;
        rows.push(Row::of(name, started, &calls, &mut accepted, &cluster.env).await?);
    }

    // Every case's acknowledge clock breaches at Monday 10:00: a burst of
    // level-1 escalations; one SLA watcher dies while they fire.
    let expected = accepted.len();
    let clocks = eventually(180, "an acknowledge clock per case", || async {
        let n = open_acknowledge_clocks(&cluster.env).await?;
        Ok((n == expected).then_some(n))
    })
    .await;
    if clocks.is_err() {
        print_table(&rows);
        for r in rows.iter().filter(|r| !r.examples.is_empty()) {
            println!("{}: {:?}", r.fault, r.examples);
        }
        let n = open_acknowledge_clocks(&cluster.env).await?;
        panic!("{n} acknowledge clocks for {expected} accepted reports");
    }
    let watcher = cluster.index("sla-watcher");
    let started = std::time::Instant::now();
    cluster.set_time(riyadh("2026-11-02 10:01")).await?;
    cluster.kill(watcher).await?;
    cluster.spawn(watcher).await?;
    let (raised, clocks) = escalations(&cluster.env, 1, expected).await?;
    rows.push(Row::burst(
        "kill -9 an SLA watcher while escalations fire",
        started,
        expected,
        (raised, clocks),
    ));

    // Level 2 on Tuesday 10:00, with both SLA watchers racing for the timers.
    let started = std::time::Instant::now();
    cluster.set_time(riyadh("2026-11-03 10:01")).await?;
    let (raised, clocks) = escalations(&cluster.env, 2, expected).await?;
    rows.push(Row::burst(
        "two SLA watchers fire the same burst",
        started,
        expected,
        (raised, clocks),
    ));

    print_table(&rows);
    for r in rows.iter().filter(|r| !r.examples.is_empty()) {
        println!("{}: {:?}", r.fault, r.examples);
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.fault.as_str())
        .collect();
    cluster.stop().await?;
    assert!(failed.is_empty(), "faults that broke a promise: {failed:?}");
    Ok(())
}
