//! `baladiya`: one binary for every service of the platform.
//!
//! `baladiya run --services intake,routing` runs a subset in one process;
//! `--services all` (the default) runs the whole platform. Kubernetes runs one
//! Deployment per service from the same image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use baladiya_kpi::rebuild::{self, Mode};
use baladiya_platform::app::{self, Listeners};
use baladiya_platform::auth::{DevTokenRequest, Role, mint_dev_token};
use baladiya_platform::config::Config;
use baladiya_platform::events::{Namespace, consumer, outbox};
use baladiya_platform::{db, shutdown, telemetry};
use baladiya_server::client;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "baladiya",
    version,
    about = "Municipal services platform: intake, routing, partners, licensing, SLA watcher and KPIs"
)]
struct Cli {
    /// TOML configuration file; BALADIYA__SECTION__KEY environment variables override it.
    #[arg(long, global = true, env = "BALADIYA_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of secret files named BALADIYA__SECTION__KEY (a mounted
    /// Kubernetes Secret); environment variables of the same name win.
    #[arg(long, global = true, env = "BALADIYA_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run services: all of them, or a comma-separated list.
    Run {
        #[arg(long, default_value = "all")]
        services: String,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, default_value = "all")]
        services: String,
    },
    /// Apply migrations, then add missing seed data (the shipped seed, with
    /// seed.dir's files in place of the shipped ones where it has them).
    Seed {
        #[arg(long, default_value = "all")]
        services: String,
    },
    /// Show or check the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
        /// Check only these services' sections, as `run --services` would.
        #[arg(long, global = true, default_value = "all")]
        services: String,
    },
    /// List the services this binary can run.
    ListServices,
    /// Mint a token accepted in dev auth mode.
    DevToken {
        /// channel, partner, operator, analyst or admin.
        #[arg(long)]
        role: Role,
        /// Partner code, for --role partner (e.g. MOTLS).
        #[arg(long)]
        partner: Option<String>,
        /// Municipality code, for --role operator (omit for all).
        #[arg(long)]
        municipality: Option<String>,
        /// Channel, for --role channel (e.g. CHANNEL_CALL_CENTER_940).
        #[arg(long)]
        channel: Option<String>,
        /// Token subject.
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 12)]
        ttl_hours: i64,
    },
    /// Inspect and replay parked events.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Escalation webhook deliveries (the SLA watcher's schema).
    Webhooks {
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// KPI projections and scorecards.
    Kpi {
        #[command(subcommand)]
        action: KpiAction,
    },
    /// Citizen reports on a running platform.
    Report {
        #[command(subcommand)]
        action: client::ReportCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Cases on a running platform.
    Case {
        #[command(subcommand)]
        action: client::CaseCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// SLA clocks on a running platform.
    Sla {
        #[command(subcommand)]
        action: client::SlaCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Escalations to partner bodies on a running platform.
    Escalations {
        #[command(subcommand)]
        action: client::EscalationsCommand,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Debug, Subcommand)]
enum KpiAction {
    /// Replay the domain streams from the start into fresh tables and swap
    /// them in (the live projections keep running); with --check, compare
    /// them with the live tables instead and exit 1 if any row differs.
    Rebuild {
        #[arg(long)]
        check: bool,
    },
    /// A scorecard from a running platform: one row per indicator.
    Scorecard {
        /// Municipality code, e.g. RIYADH.
        #[arg(long)]
        municipality: Option<String>,
        /// Partner code, e.g. MOTLS.
        #[arg(long)]
        partner: Option<String>,
        /// 2026, 2026-Q4, 2026-11 or 2026-11-30.
        #[arg(long)]
        period: String,
        /// day, week, fortnight, month, quarter or year (else implied by --period).
        #[arg(long)]
        granularity: Option<String>,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the effective configuration, secrets redacted.
    Print,
    /// Validate the configuration and exit 0, or list every bad key and exit 1.
    Check,
}

#[derive(Debug, Subcommand)]
enum WebhooksAction {
    /// Make dead deliveries (every attempt failed) due again, with their
    /// attempts reset: after a partner's server is fixed.
    Redrive {
        /// One delivery id; omit for every dead delivery.
        #[arg(long)]
        id: Option<uuid::Uuid>,
    },
}

#[derive(Debug, Subcommand)]
enum EventsAction {
    /// List events consumers parked after their bounded attempts.
    Parked {
        #[arg(long, default_value = "all")]
        services: String,
    },
    /// Ask a running consumer to apply parked events again.
    Replay {
        /// The service whose schema holds the parked event.
        #[arg(long)]
        service: String,
        /// The consumer name.
        #[arg(long)]
        consumer: String,
        /// One parked event id; omit to replay all of the consumer's.
        #[arg(long)]
        id: Option<i64>,
    },
    /// Refill lost or recreated streams from the outbox: make sure each
    /// service's stream exists, then have the running relays publish again
    /// every event that occurred since the given instant (consumers and
    /// JetStream drop what they already have).
    Republish {
        #[arg(long, default_value = "all")]
        services: String,
        /// RFC 3339 instant, e.g. 2026-11-30T00:00:00Z.
        #[arg(long)]
        since: chrono::DateTime<chrono::FixedOffset>,
    },
    /// Follow events on a subject ('baladiya.routing.>', with NATS
    /// wildcards), decoded: CloudEvents attributes and the payload as JSON.
    Tail {
        subject: String,
        /// Replay from 90s, 30m, 1h, 2d ago or an RFC 3339 instant, then follow.
        #[arg(long)]
        since: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// `table` (one line per event) or `json` (JSON lines).
        #[arg(long, value_enum, default_value = "table")]
        output: client::Output,
        #[command(flatten)]
        streams: client::Streams,
    },
}

/// Runs a command that talks to a running platform (no configuration needed).
fn run_client(command: Command) -> Result<ExitCode, Box<Command>> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a single-threaded runtime starts")
    };
    let result = match command {
        Command::Report { action, remote } => runtime().block_on(client::report(&remote, action)),
        Command::Case { action, remote } => runtime().block_on(client::case(&remote, action)),
        Command::Sla { action, remote } => runtime().block_on(client::sla(&remote, action)),
        Command::Escalations { action, remote } => {
            runtime().block_on(client::escalations(&remote, action))
        }
        Command::Kpi {
            action:
                KpiAction::Scorecard {
                    municipality,
                    partner,
                    period,
                    granularity,
                    remote,
                },
        } => runtime().block_on(client::scorecard(
            &remote,
            municipality,
            partner,
            &period,
            granularity.as_deref(),
        )),
        Command::Events {
            action:
                EventsAction::Tail {
                    subject,
                    since,
                    count,
                    output,
                    streams,
                },
        } => runtime().block_on(client::tail(
            &streams,
            &subject,
            since.as_deref(),
            count,
            output,
        )),
        other => return Err(Box::new(other)),
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("baladiya: {}", failure.message);
            ExitCode::from(failure.exit as u8)
        }
    })
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.command = match run_client(cli.command) {
        Ok(code) => return code,
        Err(command) => *command,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let env = match &cli.secrets_dir {
        Some(dir) => baladiya_platform::config::with_secret_files(env, dir),
        None => Ok(env),
    };
    let config = match env.and_then(|env| Config::load(cli.config.as_deref(), &env)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baladiya: {e}");
            return ExitCode::from(if matches!(cli.command, Command::Config { .. }) {
                1
            } else {
                2
            });
        }
    };
    // Only the sections of the services this command works with: a pod
    // running one service holds that service's secrets and no other's.
    let modules =
        match baladiya_server::select(baladiya_server::catalogue(), &services_of(&cli.command)) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("baladiya: {e}");
                return ExitCode::from(2);
            }
        };
    let handlers: Vec<_> = modules.iter().filter_map(|m| m.config_section()).collect();
    let sections = match config.check_sections(&handlers) {
        Ok(rendered) => rendered,
        Err(e) => {
            eprintln!("baladiya: {e}");
            return ExitCode::from(if matches!(cli.command, Command::Config { .. }) {
                1
            } else {
                2
            });
        }
    };
    match cli.command {
        Command::Config {
            action: ConfigAction::Print,
            ..
        } => {
            print!("{}", config.to_redacted_toml());
            if !sections.is_empty() {
                print!(
                    "\n{}",
                    toml::to_string_pretty(&sections).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Command::Config {
            action: ConfigAction::Check,
            ..
        } => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::ListServices => {
            let catalogue = baladiya_server::catalogue();
            for m in catalogue.iter().filter(|m| m.stores_data()) {
                println!("{:<14} {}", m.name(), m.description());
            }
            println!("adapters (no data of their own; run beside what they call):");
            for m in catalogue.iter().filter(|m| !m.stores_data()) {
                println!("{:<14} {}", m.name(), m.description());
            }
            println!("always mounted: grpc.health.v1.Health, grpc.reflection.v1 and v1alpha");
            println!("with clock.mode = \"manual\": baladiya.admin.v1.ClockService");
            ExitCode::SUCCESS
        }
        Command::DevToken {
            role,
            partner,
            municipality,
            channel,
            subject,
            ttl_hours,
        } => {
            let request = DevTokenRequest {
                subject,
                role,
                partner,
                municipality,
                channel,
                ttl: chrono::Duration::hours(ttl_hours),
            };
            match mint_dev_token(&config.auth, &request) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("baladiya: {e}");
                    ExitCode::from(2)
                }
            }
        }
        command => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("baladiya: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve_command(config, command, modules)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("baladiya: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The `--services` list a command works with.
fn services_of(command: &Command) -> String {
    match command {
        Command::Run { services }
        | Command::Migrate { services }
        | Command::Seed { services }
        | Command::Config { services, .. }
        | Command::Events {
            action: EventsAction::Parked { services },
        } => services.clone(),
        Command::Events {
            action: EventsAction::Republish { services, .. },
        } => services.clone(),
        Command::Events {
            action: EventsAction::Replay { service, .. },
        } => service.clone(),
        Command::Kpi { .. } => "kpi".into(),
        Command::Webhooks { .. } => "sla-watcher".into(),
        Command::ListServices
        | Command::DevToken { .. }
        | Command::Report { .. }
        | Command::Case { .. }
        | Command::Sla { .. }
        | Command::Escalations { .. }
        | Command::Events {
            action: EventsAction::Tail { .. },
        } => "all".into(),
    }
}

async fn serve_command(
    config: Config,
    command: Command,
    modules: Vec<std::sync::Arc<dyn app::ServiceModule>>,
) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(&config.telemetry)?;
    match command {
        Command::Run { .. } => {
            let clock = app::clock_from_config(&config.clock)?;
            let listeners = Listeners::bind(&config.server).await?;
            let (trigger, signal) = shutdown::channel();
            tokio::spawn(async move {
                shutdown::os_signal().await;
                trigger.trigger();
            });
            app::run(config, modules, clock, listeners, signal).await?;
        }
        Command::Migrate { .. } => app::migrate_all(&config, &modules).await?,
        Command::Seed { .. } => {
            app::migrate_all(&config, &modules).await?;
            let clock = app::clock_from_config(&config.clock)?;
            app::seed_all(&config, &modules, &clock).await?;
        }
        Command::Events {
            action: EventsAction::Parked { .. },
        } => {
            for m in modules.iter().filter(|m| m.stores_data()) {
                let pool = db::schema_pool(&config.database, m.schema())?;
                for p in consumer::list_parked(&pool)
                    .await
                    .context("listing parked events")?
                {
                    println!(
                        "{}\t{}\t#{}\t{}\t{}\tattempts={}\t{}{}",
                        m.name(),
                        p.consumer,
                        p.id,
                        p.event_id
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "-".into()),
                        p.subject,
                        p.attempts,
                        p.error,
                        if p.replay_requested {
                            "\t(replay requested)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Command::Events {
            action: EventsAction::Replay {
                consumer: name, id, ..
            },
        } => {
            let module = modules.first().context("no service selected")?;
            anyhow::ensure!(
                module.stores_data(),
                "{} keeps no data and parks no events; name the service whose consumer parked them (see `baladiya events parked`)",
                module.name()
            );
            let pool = db::schema_pool(&config.database, module.schema())?;
            let marked = consumer::request_replay(&pool, &name, id).await?;
            println!("{marked} parked event(s) marked for replay by consumer {name}");
        }
        Command::Webhooks {
            action: WebhooksAction::Redrive { id },
        } => {
            let module = modules.first().context("no service selected")?;
            let pool = db::schema_pool(&config.database, module.schema())?;
            let due = baladiya_sla_watcher::webhook::redrive(&pool, id)
                .await
                .context("making dead deliveries due")?;
            println!("{due} dead webhook deliver(ies) due again");
        }
        Command::Events {
            action: EventsAction::Republish { since, .. },
        } => {
            let nats = app::connect_nats(&config.nats)
                .await
                .context("connecting to NATS (nats.url)")?;
            let js = async_nats::jetstream::new(nats);
            let namespace = Namespace::new(&config.events.namespace);
            for m in modules.iter().filter(|m| m.stores_data()) {
                for stream in m.streams() {
                    stream
                        .ensure(&js, &namespace, &config.events)
                        .await
                        .with_context(|| format!("making sure stream {} exists", stream.name))?;
                }
                let pool = db::schema_pool(&config.database, m.schema())?;
                let marked = outbox::republish_since(&pool, since.to_utc())
                    .await
                    .with_context(|| format!("marking {}'s outbox for republishing", m.name()))?;
                println!(
                    "{}	{marked} event(s) since {since} queued for the relay",
                    m.name()
                );
            }
        }
        Command::Kpi {
            action: KpiAction::Rebuild { check },
        } => {
            let mode = if check { Mode::Check } else { Mode::Swap };
            let report = rebuild::rebuild(&config, mode, |line| eprintln!("kpi rebuild: {line}"))
                .await
                .context("rebuilding the KPI projections")?;
            let events: u64 = report.events.values().sum();
            let rows = report
                .rows
                .iter()
                .map(|(t, n)| format!("{t}={n}"))
                .collect::<Vec<_>>()
                .join(" ");
            println!(
                "replayed {events} event(s), skipped {}; rebuilt rows: {rows}",
                report.skipped
            );
            let differing: i64 = report.differences.values().sum();
            if differing > 0 {
                anyhow::bail!(
                    "{differing} row(s) differ from the live projections: {:?} (a live consumer may be behind or parked; see `baladiya events parked --services kpi`)",
                    report.differences
                );
            }
        }
        _ => {}
    }
    Ok(())
}
