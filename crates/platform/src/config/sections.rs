//! The platform's configuration sections (`[server]`, `[database]`, `[nats]`,
//! `[events]`, `[telemetry]`, `[auth]`, `[clock]`, `[seed]`): what each key
//! means and its compiled-in default. They sit apart from the loader so that
//! the list of keys reads as one document, the Rust side of
//! `deploy/config/baladiya.example.toml`; their checks are in `validate`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Secret, hex_bytes};

/// Editable seed data (partners, calendars, agreements, categories, ...).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SeedConfig {
    /// A directory of seed files, each replacing the shipped file of the same
    /// path (`partners/calendars.toml`, ...); empty: the shipped seed only,
    /// which the binary carries. Relative paths are from the working
    /// directory; a directory that does not exist is refused at start.
    pub dir: String,
    /// Load seed data at start: only what is missing is added, so operators'
    /// edits are never overwritten.
    pub on_start: bool,
}

impl Default for SeedConfig {
    fn default() -> Self {
        Self {
            dir: String::new(),
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
pub(super) const DEV_PAGE_TOKEN_KEY: &str =
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
