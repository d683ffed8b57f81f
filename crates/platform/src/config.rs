//! Configuration: compiled-in defaults, then a TOML file, then environment
//! variables `BALADIYA__SECTION__KEY` (the environment wins), then
//! [`Config::validate`], which names every bad key at once.
//!
//! Secrets may also arrive as files named like those variables in one
//! directory ([`with_secret_files`]): a Kubernetes Secret mounted as a volume,
//! so keys never sit in the process environment.
//!
//! The loader takes the environment as a map so tests never touch the process
//! environment. Secrets are [`Secret`]s: they deserialize normally but print as
//! `<redacted>` in `Debug` and in `baladiya config print`.
//!
//! Every key is documented in `deploy/config/baladiya.example.toml`; a test
//! checks that file parses and validates.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "BALADIYA";

/// The whole platform configuration. Service crates add their own sections
/// (see [`ServiceConfig`]); they arrive in `sections` and each service parses
/// and validates its own.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Where this deployment runs: `development` or `production`.
    pub environment: Environment,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub events: EventsConfig,
    pub telemetry: TelemetryConfig,
    pub auth: AuthConfig,
    pub clock: ClockConfig,
    pub seed: SeedConfig,
    /// Service sections (`[intake]`, ...), by name, as written.
    #[serde(flatten)]
    pub sections: std::collections::BTreeMap<String, toml::Value>,
}

/// A service's own configuration section.
pub trait ServiceConfig: serde::de::DeserializeOwned + Serialize + Default {
    /// The section name, e.g. `intake`.
    const SECTION: &'static str;
    /// Every problem, with keys relative to the section.
    fn validate(&self, environment: Environment) -> Vec<KeyError>;
}

/// How the binary checks and prints a service's section without knowing its type.
#[derive(Debug, Clone, Copy)]
pub struct SectionHandler {
    pub name: &'static str,
    /// Parses and validates; returns the section with secrets redacted.
    pub check: fn(&Config) -> Result<toml::Value, Vec<KeyError>>,
}

impl SectionHandler {
    /// The handler for `T`.
    pub fn of<T: ServiceConfig>() -> Self {
        Self {
            name: T::SECTION,
            check: |config| {
                let section: T = config.section()?;
                let errors: Vec<KeyError> = section
                    .validate(config.environment)
                    .into_iter()
                    .map(|e| KeyError {
                        key: format!("{}.{}", T::SECTION, e.key),
                        message: e.message,
                    })
                    .collect();
                if !errors.is_empty() {
                    return Err(errors);
                }
                toml::Value::try_from(&section).map_err(|e| {
                    vec![KeyError {
                        key: T::SECTION.into(),
                        message: e.to_string(),
                    }]
                })
            },
        }
    }
}

/// Editable seed data (partners, calendars, agreements, categories, ...).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    /// Directory of seed files; relative paths are from the working directory.
    pub dir: String,
    /// Load seed data at start: only what is missing is added, so operators'
    /// edits are never overwritten.
    pub on_start: bool,
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            dir: "deploy/seed".into(),
            on_start: true,
        }
    }
}

/// The deployment marker; production refuses development-only settings.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

/// Network listeners and request limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address; port 0 picks a free port.
    pub grpc_addr: String,
    /// HTTP listen address for `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: String,
    /// Largest accepted gRPC request message, in bytes.
    pub max_request_bytes: usize,
    /// Upper bound on any request's deadline, in milliseconds.
    pub request_timeout_ms: u64,
    /// Concurrent requests allowed on one HTTP/2 connection.
    pub max_concurrent_requests_per_connection: usize,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// HMAC key that signs page tokens: at least 64 hex characters.
    pub page_token_key: Secret,
    /// PEM certificate chain for TLS on the gRPC port; empty serves plaintext.
    pub tls_cert_file: String,
    /// PEM private key of that certificate.
    pub tls_key_file: String,
    /// PEM CA certificates client certificates must chain to; set, every
    /// client must present one (mTLS).
    pub tls_client_ca_file: String,
    /// Plaintext port serving only `grpc.health.v1` while TLS is on, for
    /// Kubernetes gRPC probes (which cannot speak TLS).
    pub health_addr: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8080".into(),
            max_request_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 30_000,
            max_concurrent_requests_per_connection: 256,
            shutdown_grace_ms: 25_000,
            page_token_key: Secret::new(DEV_PAGE_TOKEN_KEY),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_client_ca_file: String::new(),
            health_addr: "0.0.0.0:50052".into(),
        }
    }
}

/// Development-only page token key; refused in production.
const DEV_PAGE_TOKEN_KEY: &str =
    "6465762d6f6e6c792d706167652d746f6b656e2d6b65792d6e6f742d666f722d70726f64";

impl ServerConfig {
    /// The page token signer.
    pub fn page_tokens(&self) -> crate::paging::PageTokens {
        crate::paging::PageTokens::new(&hex_bytes(self.page_token_key.expose()).unwrap_or_default())
    }

    /// Whether the gRPC port speaks TLS.
    pub fn tls(&self) -> bool {
        !self.tls_cert_file.is_empty()
    }

    /// Per-request time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// Drain budget on shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// PostgreSQL connection.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: Secret,
    /// Connections per service pool.
    pub max_connections: u32,
    /// How long to wait for a connection, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// Longest any one SQL statement may run (PostgreSQL `statement_timeout`),
    /// in milliseconds; 0 for none.
    pub statement_timeout_ms: u64,
    /// Run pending migrations when the server starts.
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/baladiya"),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            migrate_on_start: true,
        }
    }
}

/// NATS connection.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:port`; several may be given separated by commas.
    pub url: String,
    /// Path of a NATS `.creds` file (operator mode); empty for none.
    pub credentials_file: String,
    /// User name, if the server uses user/password authentication.
    pub user: String,
    /// Password for `user`.
    pub password: Secret,
    /// How long to wait for a JetStream publish acknowledgement, in milliseconds.
    pub ack_timeout_ms: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: String::new(),
            user: String::new(),
            password: Secret::default(),
            ack_timeout_ms: 5_000,
        }
    }
}

/// Event streams, the outbox relay and consumers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// A token put before every subject and stream name, to run several
    /// isolated deployments (or tests) on one NATS. Empty in production.
    pub namespace: String,
    /// Replicas of each stream (3 in a production cluster).
    pub stream_replicas: usize,
    /// How long streams keep events, in hours.
    pub stream_max_age_hours: u64,
    /// JetStream duplicate window, in seconds; at least 120.
    pub duplicate_window_secs: u64,
    /// Relay poll interval when no wake-up arrives, in milliseconds; also how
    /// soon a relay sees rows another process marked for republishing.
    pub outbox_poll_ms: u64,
    /// Events the relay publishes per transaction.
    pub outbox_batch: i64,
    /// Days a published outbox row is kept before it is pruned.
    pub outbox_retention_days: u32,
    /// Deliveries of one event before it is parked.
    pub consumer_max_attempts: u32,
    /// First redelivery delay, in milliseconds; doubles each attempt.
    pub consumer_backoff_ms: u64,
    /// Longest redelivery delay, in milliseconds.
    pub consumer_backoff_max_ms: u64,
    /// How often a relay of a stream with watermarks (routing, licensing)
    /// publishes one when idle, in milliseconds: the SLA watcher fires a
    /// timer only once the watermark passed it, so this bounds how late an
    /// on-time breach goes out.
    pub watermark_interval_ms: u64,
    /// How far behind its own clock a relay puts its watermark, in
    /// milliseconds: covers clock skew between replicas and the time a writer
    /// takes from reading its clock to writing its event (see
    /// `events/watermark.rs`).
    pub watermark_margin_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            stream_replicas: 1,
            stream_max_age_hours: 24 * 400,
            duplicate_window_secs: 300,
            outbox_poll_ms: 1_000,
            outbox_batch: 256,
            outbox_retention_days: 7,
            consumer_max_attempts: 5,
            consumer_backoff_ms: 500,
            consumer_backoff_max_ms: 60_000,
            watermark_interval_ms: 100,
            watermark_margin_ms: 50,
        }
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` for a terminal, `json` for log collectors.
    pub log_format: LogFormat,
    /// A tracing `EnvFilter` directive, e.g. `info,baladiya=debug`.
    pub log_filter: String,
    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`; empty disables export.
    pub otlp_endpoint: String,
    /// `service.name` resource attribute of exported traces.
    pub service_name: String,
    /// Fraction of root traces sampled, 0 to 1.
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            otlp_endpoint: String::new(),
            service_name: "baladiya".into(),
            trace_sample_ratio: 1.0,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Caller authentication.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `jwt` verifies tokens against `public_keys`; `dev` accepts tokens minted
    /// by `baladiya dev-token` with `dev_secret` (never in production).
    pub mode: AuthMode,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// PEM public keys (RSA for RS256, Ed25519 for EdDSA) accepted for `jwt` mode.
    pub public_keys: Vec<String>,
    /// A JWKS file (RFC 7517) of accepted keys, selected by a token's `kid`;
    /// re-read when it changes, so a rotation needs no restart (publish the
    /// new key beside the old one, then drop the old one).
    pub jwks_file: String,
    /// Shared secret that signs dev tokens (HS256).
    pub dev_secret: Secret,
    /// Allowed clock skew when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Calls each caller (token subject and role) may make per second on
    /// average; 0 turns the limit off. Over it: `RESOURCE_EXHAUSTED` with
    /// `google.rpc.RetryInfo`.
    pub rate_limit_per_second: f64,
    /// Calls a caller may make at once before the average applies.
    pub rate_limit_burst: u32,
    /// With mTLS: the identity a call without a bearer token gets from its
    /// verified client certificate, by a DNS name the certificate is valid for.
    pub client_certificates: Vec<ClientCertificateIdentity>,
}

/// A service identity for client certificates valid for `dns_name`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificateIdentity {
    /// A DNS name (subject alternative name) of the certificate.
    pub dns_name: String,
    /// The caller's subject, e.g. `sla-watcher`.
    pub subject: String,
    /// channel, partner, operator, analyst or admin.
    pub role: crate::auth::Role,
    #[serde(default)]
    pub partner: Option<String>,
    #[serde(default)]
    pub municipality: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Dev,
            issuer: "baladiya".into(),
            audience: "baladiya".into(),
            public_keys: Vec::new(),
            jwks_file: String::new(),
            dev_secret: Secret::new("baladiya-dev-secret-not-for-production"),
            leeway_secs: 30,
            rate_limit_per_second: 200.0,
            rate_limit_burst: 400,
            client_certificates: Vec::new(),
        }
    }
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Dev,
    Jwt,
}

/// The process clock.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// `system` (the OS clock) or `manual` (moved only by `baladiya.admin.v1.ClockService`).
    pub mode: ClockMode,
    /// RFC 3339 instant a manual clock starts at; empty means the current time.
    pub start: String,
}

impl Default for ClockConfig {
    fn default() -> Self {
        Self {
            mode: ClockMode::System,
            start: String::new(),
        }
    }
}

/// Which clock the process uses.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    #[default]
    System,
    Manual,
}

/// A secret value: readable by the code, never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact(&self.0))
    }
}

/// Decodes hex; `None` if malformed.
pub fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// Hides a secret for display. A URL keeps its scheme, user, host and path and
/// loses only its password, so an operator can still see where it points.
fn redact(value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    if let Some((scheme, rest)) = value.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or_default();
        return if userinfo.contains(':') {
            format!("{scheme}://{user}:<redacted>@{host}")
        } else {
            value.to_string()
        };
    }
    if value.contains("://") {
        return value.to_string();
    }
    "<redacted>".into()
}

/// Adds to `env` every file in `dir` named `BALADIYA__SECTION__KEY`, its
/// content (without a trailing newline) as the value, unless `env` already has
/// that variable: the environment wins, as it does over the config file.
/// Other entries (the `..data` links of a mounted Kubernetes Secret, say) are
/// ignored.
pub fn with_secret_files(
    mut env: HashMap<String, String>,
    dir: &Path,
) -> Result<HashMap<String, String>, ConfigError> {
    let read_error = |path: &Path, source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    let prefix = format!("{ENV_PREFIX}__");
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let path = entry.map_err(|e| read_error(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with(&prefix) || !path.is_file() || env.contains_key(name) {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        let value = value.strip_suffix('\r').unwrap_or(value);
        env.insert(name.to_string(), value.to_string());
    }
    Ok(env)
}

/// One problem with one configuration key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Dotted key, e.g. `server.grpc_addr`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<KeyError>),
}

impl Config {
    /// Loads defaults, then `file` (if given), then the `BALADIYA__…` entries of
    /// `env`, and validates the result.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        // Defaults come from `#[serde(default)]` on every section, so secrets
        // never pass through their redacting serializer on the way in.
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let ours: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("auth.public_keys")
                .try_parsing(true)
                .source(Some(ours)),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let config: Config = merged
            .try_deserialize()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every key and reports all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                errors.push(KeyError {
                    key: key.into(),
                    message: message.into(),
                });
            }
        };
        let addr_ok = |a: &str| a.parse::<SocketAddr>().is_ok();
        check(
            addr_ok(&self.server.grpc_addr),
            "server.grpc_addr",
            "must be host:port, e.g. 0.0.0.0:50051",
        );
        check(
            addr_ok(&self.server.http_addr),
            "server.http_addr",
            "must be host:port, e.g. 0.0.0.0:8080",
        );
        check(
            (1024..=64 * 1024 * 1024).contains(&self.server.max_request_bytes),
            "server.max_request_bytes",
            "must be between 1024 and 67108864",
        );
        check(
            self.server.tls_cert_file.is_empty() == self.server.tls_key_file.is_empty(),
            "server.tls_key_file",
            "tls_cert_file and tls_key_file are set together",
        );
        for (key, file) in [
            ("server.tls_cert_file", &self.server.tls_cert_file),
            ("server.tls_key_file", &self.server.tls_key_file),
            ("server.tls_client_ca_file", &self.server.tls_client_ca_file),
        ] {
            check(
                file.is_empty() || std::path::Path::new(file).is_file(),
                key,
                "is not a readable file",
            );
        }
        check(
            self.server.tls_client_ca_file.is_empty() || self.server.tls(),
            "server.tls_client_ca_file",
            "needs tls_cert_file and tls_key_file (mTLS is TLS with client certificates)",
        );
        check(
            self.server.request_timeout_ms >= 100,
            "server.request_timeout_ms",
            "must be at least 100",
        );
        check(
            self.server.max_concurrent_requests_per_connection > 0,
            "server.max_concurrent_requests_per_connection",
            "must be positive",
        );
        check(
            hex_bytes(self.server.page_token_key.expose()).is_some_and(|k| k.len() >= 32),
            "server.page_token_key",
            "must be at least 64 hex characters (32 bytes)",
        );
        check(
            self.environment != Environment::Production
                || self.server.page_token_key.expose() != DEV_PAGE_TOKEN_KEY,
            "server.page_token_key",
            "the development key is refused in production",
        );
        let db = self.database.url.expose();
        check(
            db.starts_with("postgres://") || db.starts_with("postgresql://"),
            "database.url",
            "must start with postgres:// or postgresql://",
        );
        check(
            (1..=200).contains(&self.database.max_connections),
            "database.max_connections",
            "must be between 1 and 200",
        );
        check(
            !self.nats.url.is_empty()
                && self.nats.url.split(',').all(|u| {
                    let u = u.trim();
                    u.starts_with("nats://") || u.starts_with("tls://") || u.contains(':')
                }),
            "nats.url",
            "must be one or more nats://host:port, comma separated",
        );
        check(
            self.nats.password.expose().is_empty() || !self.nats.user.is_empty(),
            "nats.user",
            "must be set when nats.password is set",
        );
        check(
            self.events.namespace.is_empty()
                || self
                    .events
                    .namespace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "events.namespace",
            "may hold only letters, digits and '_'",
        );
        check(
            (1..=5).contains(&self.events.stream_replicas),
            "events.stream_replicas",
            "must be between 1 and 5",
        );
        check(
            self.events.duplicate_window_secs >= 120,
            "events.duplicate_window_secs",
            "must be at least 120 (longer than the relay's retry horizon)",
        );
        check(
            self.events.outbox_batch > 0 && self.events.outbox_batch <= 10_000,
            "events.outbox_batch",
            "must be between 1 and 10000",
        );
        check(
            self.events.consumer_max_attempts >= 1,
            "events.consumer_max_attempts",
            "must be at least 1",
        );
        check(
            self.events.consumer_backoff_ms <= self.events.consumer_backoff_max_ms,
            "events.consumer_backoff_ms",
            "must not exceed events.consumer_backoff_max_ms",
        );
        check(
            (10..=60_000).contains(&self.events.watermark_interval_ms),
            "events.watermark_interval_ms",
            "must be between 10 and 60000",
        );
        check(
            self.events.watermark_margin_ms <= 60_000,
            "events.watermark_margin_ms",
            "must be at most 60000",
        );
        check(
            tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter).is_ok(),
            "telemetry.log_filter",
            "is not a valid filter directive",
        );
        check(
            self.telemetry.otlp_endpoint.is_empty()
                || self.telemetry.otlp_endpoint.starts_with("http://")
                || self.telemetry.otlp_endpoint.starts_with("https://"),
            "telemetry.otlp_endpoint",
            "must be empty or an http(s):// URL",
        );
        check(
            (0.0..=1.0).contains(&self.telemetry.trace_sample_ratio),
            "telemetry.trace_sample_ratio",
            "must be between 0 and 1",
        );
        match self.auth.mode {
            AuthMode::Dev => {
                check(
                    self.environment != Environment::Production,
                    "auth.mode",
                    "dev mode is refused when environment = \"production\"",
                );
                check(
                    self.auth.dev_secret.expose().len() >= 16,
                    "auth.dev_secret",
                    "must be at least 16 characters",
                );
            }
            AuthMode::Jwt => check(
                !self.auth.public_keys.is_empty() || !self.auth.jwks_file.is_empty(),
                "auth.public_keys",
                "jwt mode needs at least one PEM public key or a jwks_file",
            ),
        }
        check(
            self.auth.jwks_file.is_empty() || std::path::Path::new(&self.auth.jwks_file).is_file(),
            "auth.jwks_file",
            "is not a readable file",
        );
        check(
            self.auth.rate_limit_per_second.is_finite() && self.auth.rate_limit_per_second >= 0.0,
            "auth.rate_limit_per_second",
            "must be 0 (off) or a positive number",
        );
        check(
            self.auth.rate_limit_burst >= 1,
            "auth.rate_limit_burst",
            "must be at least 1",
        );
        check(
            !self.auth.issuer.is_empty(),
            "auth.issuer",
            "must not be empty",
        );
        check(
            !self.auth.audience.is_empty(),
            "auth.audience",
            "must not be empty",
        );
        check(
            self.clock.mode != ClockMode::Manual || self.environment != Environment::Production,
            "clock.mode",
            "manual is refused when environment = \"production\"",
        );
        check(
            self.clock.start.is_empty()
                || chrono::DateTime::parse_from_rfc3339(&self.clock.start).is_ok(),
            "clock.start",
            "must be empty or an RFC 3339 instant such as 2026-03-01T07:30:00+03:00",
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// A service's section, defaults where absent.
    pub fn section<T: ServiceConfig>(&self) -> Result<T, Vec<KeyError>> {
        match self.sections.get(T::SECTION) {
            None => Ok(T::default()),
            Some(value) => value.clone().try_into().map_err(|e: toml::de::Error| {
                vec![KeyError {
                    key: T::SECTION.into(),
                    message: e.message().to_string(),
                }]
            }),
        }
    }

    /// Checks the service sections against the handlers of the services this
    /// build has: unknown sections and every bad key are reported. Returns the
    /// sections rendered with secrets redacted.
    pub fn check_sections(&self, handlers: &[SectionHandler]) -> Result<toml::Table, ConfigError> {
        let mut errors = Vec::new();
        for name in self.sections.keys() {
            if !handlers.iter().any(|h| h.name == name) {
                errors.push(KeyError {
                    key: name.clone(),
                    message: "unknown section".into(),
                });
            }
        }
        let mut rendered = toml::Table::new();
        for h in handlers {
            match (h.check)(self) {
                Ok(value) => {
                    rendered.insert(h.name.to_string(), value);
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(rendered)
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }

    /// The platform's part of the effective configuration as TOML, secrets
    /// redacted (service sections are rendered by [`Config::check_sections`]).
    pub fn to_redacted_toml(&self) -> String {
        let platform = Config {
            sections: Default::default(),
            ..self.clone()
        };
        toml::to_string_pretty(&platform).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_fill_in_what_the_environment_lacks() {
        let dir = std::env::temp_dir().join(format!("baladiya-secrets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..data")).expect("dir");
        std::fs::write(
            dir.join("BALADIYA__DATABASE__URL"),
            "postgres://intake:s3cret@db/baladiya\n",
        )
        .expect("write");
        std::fs::write(dir.join("BALADIYA__SERVER__HTTP_ADDR"), "127.0.0.1:1").expect("write");
        std::fs::write(dir.join("README"), "not a key").expect("write");
        let env = with_secret_files(
            HashMap::from([(
                "BALADIYA__SERVER__HTTP_ADDR".to_string(),
                "127.0.0.1:2".to_string(),
            )]),
            &dir,
        )
        .expect("reads the directory");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(env.len(), 2, "{env:?}");
        let c = Config::load(None, &env).expect("loads");
        assert_eq!(
            c.database.url.expose(),
            "postgres://intake:s3cret@db/baladiya"
        );
        assert_eq!(c.server.http_addr, "127.0.0.1:2", "the environment wins");
        let missing = with_secret_files(HashMap::new(), Path::new("/nonexistent/baladiya"));
        assert!(
            matches!(missing, Err(ConfigError::Read { path, .. }) if path == "/nonexistent/baladiya")
        );
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write_temp(contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("baladiya-{}.toml", uuid::Uuid::now_v7()));
        std::fs::write(&path, contents).expect("write temp config");
        path
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &HashMap::new()).expect("defaults load");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let path = write_temp(
            "[server]\ngrpc_addr = \"127.0.0.1:7000\"\nhttp_addr = \"127.0.0.1:7001\"\n[events]\noutbox_batch = 10\n",
        );
        let c = Config::load(
            Some(&path),
            &env(&[
                ("BALADIYA__SERVER__GRPC_ADDR", "127.0.0.1:9000"),
                ("BALADIYA__DATABASE__MAX_CONNECTIONS", "3"),
                ("UNRELATED", "x"),
            ]),
        )
        .expect("load");
        assert_eq!(c.server.grpc_addr, "127.0.0.1:9000", "env beats file");
        assert_eq!(c.server.http_addr, "127.0.0.1:7001", "file beats default");
        assert_eq!(c.events.outbox_batch, 10);
        assert_eq!(c.database.max_connections, 3);
        assert_eq!(
            c.server.max_request_bytes,
            ServerConfig::default().max_request_bytes
        );
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn validation_names_every_bad_key() {
        let err = Config::load(
            None,
            &env(&[
                ("BALADIYA__SERVER__GRPC_ADDR", "nowhere"),
                ("BALADIYA__DATABASE__URL", "mysql://x"),
                ("BALADIYA__EVENTS__DUPLICATE_WINDOW_SECS", "5"),
            ]),
        )
        .expect_err("must fail");
        let ConfigError::Invalid(errors) = err else {
            panic!("expected validation errors, got {err}");
        };
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "server.grpc_addr",
                "database.url",
                "events.duplicate_window_secs"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_refused_by_name() {
        let path = write_temp("[server]\ngrpc_adr = \"127.0.0.1:1\"\n");
        let err = Config::load(Some(&path), &HashMap::new()).expect_err("typo refused");
        assert!(err.to_string().contains("grpc_adr"), "{err}");
        let err = Config::load(
            None,
            &env(&[("BALADIYA__DATABASE__MAX_CONNECTIONS", "lots")]),
        )
        .expect_err("bad number refused");
        assert!(err.to_string().contains("max_connections"), "{err}");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn production_refuses_dev_auth_and_manual_clock() {
        let err = Config::load(
            None,
            &env(&[
                ("BALADIYA__ENVIRONMENT", "production"),
                ("BALADIYA__CLOCK__MODE", "manual"),
            ]),
        )
        .expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("auth.mode"), "{text}");
        assert!(text.contains("clock.mode"), "{text}");
    }

    #[test]
    fn list_values_come_from_env() {
        let c = Config::load(
            None,
            &env(&[
                ("BALADIYA__AUTH__MODE", "jwt"),
                ("BALADIYA__AUTH__PUBLIC_KEYS", "a,b"),
            ]),
        )
        .expect("load");
        assert_eq!(c.auth.public_keys, ["a", "b"]);
    }

    #[test]
    fn secrets_are_redacted_when_printed() {
        let mut c = Config::default();
        c.database.url = Secret::new("postgres://app:hunter2@db:5432/baladiya");
        c.nats.user = "svc".into();
        c.nats.password = Secret::new("s3cret");
        let printed = c.to_redacted_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(!printed.contains("baladiya-dev-secret"), "{printed}");
        assert!(printed.contains("postgres://app:<redacted>@db:5432/baladiya"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn example_file_documents_a_valid_config() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/baladiya.example.toml");
        let c = Config::load(Some(&path), &HashMap::new()).expect("example config is valid");
        // Every key of the effective config appears in the example file.
        let example = std::fs::read_to_string(&path).expect("read example");
        let rendered: toml::Table = toml::from_str(&c.to_redacted_toml()).expect("render");
        for (section, value) in rendered
            .iter()
            .filter(|(name, _)| !c.sections.contains_key(*name))
        {
            match value {
                toml::Value::Table(keys) => {
                    assert!(
                        example.contains(&format!("[{section}]")),
                        "section [{section}] undocumented"
                    );
                    for key in keys.keys() {
                        assert!(
                            example.contains(&format!("\n{key} =")),
                            "key {section}.{key} undocumented in the example config"
                        );
                    }
                }
                _ => assert!(
                    example.contains(&format!("{section} =")),
                    "key {section} undocumented"
                ),
            }
        }
    }
}
