//! Running a set of services in one process.
//!
//! A service crate implements [`ServiceModule`]: its name and schema, its
//! migrations, the streams it produces, and `start`, which mounts its gRPC
//! service and returns its background tasks (event consumers, timers). [`run`]
//! does the rest for every module alike: a pool pinned to the schema,
//! migrations, stream provisioning, the outbox relay, the gRPC and HTTP ports,
//! health and readiness, and the shutdown order (stop accepting, drain
//! in-flight requests, stop consumers, flush the outbox, return).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::future::BoxFuture;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;

use crate::auth::{AuthError, AuthInterceptor, Authenticator};
use crate::clock::{Clock, admin::ClockAdmin};
use crate::config::{ClockMode, Config, NatsConfig};
use crate::db::{self, DbError};
use crate::events::consumer::{Consumer, ConsumerSpec, EventHandler};
use crate::events::outbox::Relay;
use crate::events::{Emitter, EventError, Namespace, StreamSpec};
use crate::grpc::{self, Mounted};
use crate::http::{self, Readiness};
use crate::metrics::Metrics;
use crate::seed::{SeedError, SeedFiles};
use crate::shutdown::{self, Shutdown};

/// A task that runs until the background shutdown signal.
pub type BackgroundTask = BoxFuture<'static, ()>;

/// One service of the platform, as the runtime sees it.
pub trait ServiceModule: Send + Sync + 'static {
    /// The name used with `--services`, e.g. `intake`.
    fn name(&self) -> &'static str;
    /// One line for `baladiya list-services`.
    fn description(&self) -> &'static str;
    /// The Postgres schema the service owns.
    fn schema(&self) -> &'static str {
        self.name()
    }
    /// The service's embedded migrations (versions 100 and up).
    fn migrator(&self) -> Migrator;
    /// Whether the service keeps data of its own (a schema, an outbox). An
    /// adapter that only calls other services' APIs says no, and gets no
    /// migrations, relay, readiness check or parked-event listing.
    fn stores_data(&self) -> bool {
        true
    }
    /// The streams the service publishes to.
    fn streams(&self) -> &'static [StreamSpec];
    /// The service's own configuration section, if it has one.
    fn config_section(&self) -> Option<crate::config::SectionHandler> {
        None
    }
    /// Adds the service's seed data from `files` where it is missing, writing
    /// through `emitter` as the API does; returns a summary line. Services
    /// without seed data keep this default.
    fn seed<'a>(
        &'a self,
        _pool: &'a PgPool,
        _emitter: &'a Emitter,
        _files: &'a SeedFiles,
    ) -> BoxFuture<'a, Result<Option<String>, SeedError>> {
        Box::pin(async { Ok(None) })
    }
    /// Mounts the gRPC service(s) (protected with [`ServiceContext::protect`],
    /// with `max_decoding_message_size(ctx.config.server.max_request_bytes)`)
    /// and returns the background tasks.
    fn start<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        mounted: &'a mut Mounted,
    ) -> BoxFuture<'a, Result<Vec<BackgroundTask>, StartError>>;
}

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Events(#[from] EventError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("clock.start: {0}")]
    ClockStart(String),
    #[error("service {service} failed to start: {reason}")]
    Service {
        service: &'static str,
        reason: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("seeding {service}: {reason}")]
    Seed {
        service: &'static str,
        reason: String,
    },
    #[error("gRPC server failed: {0}")]
    Serve(String),
    #[error("server TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// What a service gets to work with.
#[derive(Clone)]
pub struct ServiceContext {
    pub config: Arc<Config>,
    pub clock: Clock,
    /// Pinned to the service's schema.
    pub pool: PgPool,
    /// The service's schema.
    pub schema: &'static str,
    /// The service's one way to write events (see [`crate::events::Emitter`]).
    pub emitter: Emitter,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub namespace: Namespace,
    pub metrics: Arc<Metrics>,
    pub auth: Authenticator,
    background: Shutdown,
}

impl ServiceContext {
    /// The service's configuration section, defaults where absent; a bad key
    /// is named in the start error.
    pub fn section<T: crate::config::ServiceConfig>(&self) -> Result<T, StartError> {
        self.config.section().map_err(|errors| StartError::Service {
            service: T::SECTION,
            reason: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl ServiceContext {
    /// An idempotent consumer task applying `spec`'s events through `handler`.
    pub fn consumer<H: EventHandler>(&self, spec: ConsumerSpec, handler: H) -> BackgroundTask {
        let consumer = Consumer::new(
            spec,
            handler,
            self.pool.clone(),
            &self.emitter,
            self.js.clone(),
            self.namespace.clone(),
            &self.config.events,
            self.metrics.clone(),
        );
        Box::pin(consumer.run(self.background.clone()))
    }

    /// The signal background tasks stop on (after the gRPC port drained).
    pub fn background_shutdown(&self) -> Shutdown {
        self.background.clone()
    }

    /// Wraps a gRPC service so every call carries an authenticated caller.
    pub fn protect<S>(&self, service: S) -> InterceptedService<S, AuthInterceptor> {
        InterceptedService::new(service, self.auth.interceptor())
    }

    /// [`Self::protect`] for a service whose RPCs are not in the platform's
    /// policy table, with its own rows.
    pub fn protect_with<S>(
        &self,
        rules: &'static [crate::policy::Rule],
        service: S,
    ) -> InterceptedService<S, AuthInterceptor> {
        InterceptedService::new(service, self.auth.interceptor_with(rules))
    }
}

/// The bound ports.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: tokio::net::TcpListener,
    pub http: tokio::net::TcpListener,
    /// The plaintext health port, bound when the gRPC port speaks TLS.
    pub health: Option<tokio::net::TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses (port 0 picks a free port).
    pub async fn bind(config: &crate::config::ServerConfig) -> Result<Self, StartError> {
        let bind = |addr: String| async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        };
        Ok(Self {
            grpc: bind(config.grpc_addr.clone()).await?,
            http: bind(config.http_addr.clone()).await?,
            health: if config.tls() {
                Some(bind(config.health_addr.clone()).await?)
            } else {
                None
            },
        })
    }
}

/// The clock the configuration asks for.
pub fn clock_from_config(config: &crate::config::ClockConfig) -> Result<Clock, StartError> {
    Ok(match config.mode {
        ClockMode::System => Clock::system(),
        ClockMode::Manual if config.start.is_empty() => Clock::manual(chrono::Utc::now()),
        ClockMode::Manual => Clock::manual(
            chrono::DateTime::parse_from_rfc3339(&config.start)
                .map_err(|e| StartError::ClockStart(e.to_string()))?
                .with_timezone(&chrono::Utc),
        ),
    })
}

/// Connects to NATS. The client keeps reconnecting in the background, so a
/// server can start while NATS is down and become ready when it returns.
pub fn connect_nats(config: &NatsConfig) -> BoxFuture<'_, Result<async_nats::Client, EventError>> {
    Box::pin(connect_nats_inner(config))
}

async fn connect_nats_inner(config: &NatsConfig) -> Result<async_nats::Client, EventError> {
    let fail = |reason: String| EventError::Connect {
        url: config.url.clone(),
        reason,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name("baladiya")
        .retry_on_initial_connect()
        .request_timeout(Some(Duration::from_millis(config.ack_timeout_ms)));
    if !config.credentials_file.is_empty() {
        options = options
            .credentials_file(&config.credentials_file)
            .await
            .map_err(|e| fail(format!("nats.credentials_file: {e}")))?;
    }
    if !config.user.is_empty() {
        options =
            options.user_and_password(config.user.clone(), config.password.expose().to_string());
    }
    let urls: Vec<&str> = config.url.split(',').map(str::trim).collect();
    options.connect(urls).await.map_err(|e| fail(e.to_string()))
}

/// Applies every module's migrations (the `baladiya migrate` command).
pub async fn migrate_all(
    config: &Config,
    modules: &[Arc<dyn ServiceModule>],
) -> Result<(), StartError> {
    if !modules.is_empty() {
        db::ensure_database(&config.database).await?;
    }
    for module in modules.iter().filter(|m| m.stores_data()) {
        let pool = db::schema_pool(&config.database, module.schema())?;
        db::migrate(&pool, module.schema(), &module.migrator()).await?;
        tracing::info!(schema = module.schema(), "migrations applied");
        pool.close().await;
    }
    Ok(())
}

/// A module's seed failure, naming the module (the error names the file).
fn seed_failed(module: &dyn ServiceModule, e: SeedError) -> StartError {
    StartError::Seed {
        service: module.name(),
        reason: e.to_string(),
    }
}

/// Loads every module's seed data (the `baladiya seed` command, and start-up
/// when `seed.on_start`): the shipped seed, with `seed.dir`'s files in place
/// of the shipped ones where it has them.
pub async fn seed_all(
    config: &Config,
    modules: &[Arc<dyn ServiceModule>],
    clock: &Clock,
) -> Result<(), StartError> {
    let files = SeedFiles::from_config(&config.seed);
    for module in modules {
        let pool = db::schema_pool(&config.database, module.schema())?;
        // No relay runs here: what the seed emits is published by the next
        // `baladiya run`.
        let emitter = Emitter::new(module.name(), clock.clone());
        let seeded = module.seed(&pool, &emitter, &files).await;
        if let Some(summary) = seeded.map_err(|e| seed_failed(module.as_ref(), e))? {
            tracing::info!(service = module.name(), "{summary}");
        }
        pool.close().await;
    }
    Ok(())
}

/// Runs `modules` until `shutdown` fires, then drains and returns.
pub async fn run(
    config: Config,
    modules: Vec<Arc<dyn ServiceModule>>,
    clock: Clock,
    listeners: Listeners,
    mut shutdown: Shutdown,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let tls = if config.server.tls() {
        Some(crate::tls::acceptor(&config.server)?)
    } else {
        None
    };
    let metrics = Metrics::new();
    let auth = Authenticator::from_config(&config.auth)?;
    let nats = connect_nats(&config.nats).await?;
    let js = jetstream::ContextBuilder::new()
        .ack_timeout(Duration::from_millis(config.nats.ack_timeout_ms))
        .build(nats.clone());
    let namespace = Namespace::new(&config.events.namespace);
    let (background_trigger, background) = shutdown::channel();
    let grace = config.server.shutdown_grace();
    let seed_files = SeedFiles::from_config(&config.seed);

    let mut mounted = Mounted::default();
    let mut tasks: Vec<BackgroundTask> = Vec::new();
    let mut schemas = Vec::new();
    let mut audit_pools = std::collections::BTreeMap::new();
    if config.database.migrate_on_start && !modules.is_empty() {
        db::ensure_database(&config.database).await?;
    }
    for module in &modules {
        // Lazy: a module that stores nothing never opens a connection.
        let pool = db::schema_pool(&config.database, module.schema())?;
        let emitter = Emitter::new(module.name(), clock.clone());
        if module.stores_data() {
            let migrator = Arc::new(module.migrator());
            if config.database.migrate_on_start {
                db::migrate(&pool, module.schema(), &migrator).await?;
            }
            schemas.push((module.schema().to_string(), pool.clone(), migrator));
            audit_pools.insert(module.name().to_string(), pool.clone());
            tasks.push(Box::pin(provision_streams(
                js.clone(),
                namespace.clone(),
                config.clone(),
                module.streams(),
                background.clone(),
            )));
            let mut relay = Relay::new(
                pool.clone(),
                module.schema(),
                &emitter,
                js.clone(),
                namespace.clone(),
                &config.events,
                metrics.clone(),
            );
            if let Some(subject) = module.streams().iter().find_map(|s| s.watermark) {
                relay = relay.with_watermarks(subject, clock.clone(), &config.events);
            }
            tasks.push(Box::pin(relay.run(background.clone(), grace)));
        }
        let ctx = ServiceContext {
            config: config.clone(),
            clock: clock.clone(),
            pool,
            schema: module.schema(),
            emitter,
            nats: nats.clone(),
            js: js.clone(),
            namespace: namespace.clone(),
            metrics: metrics.clone(),
            auth: auth.clone(),
            background: background.clone(),
        };
        if config.seed.on_start
            && let Some(summary) = module
                .seed(&ctx.pool, &ctx.emitter, &seed_files)
                .await
                .map_err(|e| seed_failed(module.as_ref(), e))?
        {
            tracing::info!(service = module.name(), "{summary}");
        }
        tasks.extend(module.start(&ctx, &mut mounted).await?);
        tracing::info!(service = module.name(), "service started");
    }
    if !audit_pools.is_empty() {
        mounted.add(InterceptedService::new(
            baladiya_proto::admin::v1::audit_service_server::AuditServiceServer::new(
                crate::audit::AuditAdmin::new(audit_pools, config.server.page_tokens()),
            )
            .max_decoding_message_size(config.server.max_request_bytes),
            auth.interceptor(),
        ));
    }
    if config.clock.mode == ClockMode::Manual {
        mounted.add(InterceptedService::new(
            baladiya_proto::admin::v1::clock_service_server::ClockServiceServer::new(
                ClockAdmin::new(clock.clone()),
            )
            .max_decoding_message_size(config.server.max_request_bytes),
            auth.interceptor(),
        ));
    }

    let readiness = Readiness {
        schemas,
        nats: nats.clone(),
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tasks.push(Box::pin(report_readiness(
        health_reporter.clone(),
        readiness.clone(),
        background.clone(),
    )));
    let names: Vec<&'static str> = mounted.names().to_vec();
    let grpc_addr = listeners.grpc.local_addr().ok();
    let service_routes = mounted.take_routes();

    let http_addr = listeners.http.local_addr().ok();
    let mut http_stop = background.clone();
    let http_task = tokio::spawn(http::serve(
        listeners.http,
        service_routes.into_iter().fold(
            http::router(metrics.clone(), readiness),
            axum::Router::merge,
        ),
        async move { http_stop.wait().await },
    ));
    if let Some(listener) = listeners.health {
        // Kubernetes gRPC probes cannot speak TLS: health alone, in plaintext.
        let mut stop = background.clone();
        let health = health_service.clone();
        tasks.push(Box::pin(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(crate::grpc::nodelay(listener), async move {
                    stop.wait().await
                })
                .await
            {
                tracing::error!(error = %e, "the plaintext health port failed");
            }
        }));
    }
    if let Some(file) = auth.jwks_file().map(String::from) {
        tasks.push(Box::pin(follow_jwks(
            auth.clone(),
            file,
            background.clone(),
        )));
    }
    let running: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    tracing::info!(?grpc_addr, ?http_addr, services = ?names, "baladiya is serving");

    let mut signal = shutdown.clone();
    let reporter = health_reporter.clone();
    let stop_names = names.clone();
    let serve = grpc::serve(
        &config.server,
        mounted,
        (health_reporter, health_service),
        listeners.grpc,
        tls,
        metrics.clone(),
        async move {
            signal.wait().await;
            tracing::info!("shutting down: refusing new requests, draining in-flight ones");
            grpc::set_status(&reporter, &stop_names, ServingStatus::NotServing).await;
        },
    );
    tokio::pin!(serve);
    let served = tokio::select! {
        result = &mut serve => result.map_err(|e| StartError::Serve(e.to_string())),
        () = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    };

    // The port is drained: stop consumers and timers, flush the outbox.
    background_trigger.trigger();
    let all = futures::future::join_all(running);
    if tokio::time::timeout(grace + Duration::from_secs(1), all)
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop within the grace period");
    }
    let _ = http_task.await;
    nats.flush().await.ok();
    tracing::info!("baladiya stopped");
    served
}

/// Puts a changed JWKS file's keys in force (a key rotation needs no
/// restart); a file that does not parse leaves the keys in force.
async fn follow_jwks(auth: Authenticator, file: String, mut shutdown: Shutdown) {
    let modified = |file: &str| std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let mut seen = modified(&file);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let now = modified(&file);
        if now == seen {
            continue;
        }
        match auth.reload_jwks() {
            Ok(keys) => {
                tracing::info!(file = %file, keys, "JWKS changed; its keys are in force");
                seen = now;
            }
            Err(e) => {
                tracing::warn!(file = %file, error = %e, "JWKS changed but cannot be used; the keys in force stay")
            }
        }
    }
}

async fn provision_streams(
    js: jetstream::Context,
    namespace: Namespace,
    config: Arc<Config>,
    streams: &'static [StreamSpec],
    mut shutdown: Shutdown,
) {
    for spec in streams {
        loop {
            match spec.ensure(&js, &namespace, &config.events).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "stream provisioning failed; retrying");
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

async fn report_readiness(
    reporter: tonic_health::server::HealthReporter,
    readiness: Readiness,
    mut shutdown: Shutdown,
) {
    loop {
        let status = if readiness.problems().await.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(grpc::READINESS, status).await;
        tokio::select! {
            _ = shutdown.wait() => {
                reporter.set_service_status(grpc::READINESS, ServingStatus::NotServing).await;
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
