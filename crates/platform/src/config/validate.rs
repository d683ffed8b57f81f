//! [`Config::validate`]: the rules every platform key must meet, checked
//! together so that one run names every bad key at once. One function rather
//! than one per section, because some rules span sections (production refuses
//! dev auth, the manual clock and the development page token key). Apart from
//! the section structs so that those read as the list of keys.

use std::net::SocketAddr;

use super::sections::DEV_PAGE_TOKEN_KEY;
use super::{AuthMode, ClockMode, Config, ConfigError, Environment, KeyError, hex_bytes};

impl Config {
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
            self.seed.dir.is_empty() || std::path::Path::new(&self.seed.dir).is_dir(),
            "seed.dir",
            "is not a directory (leave it empty for the seed the binary ships)",
        );
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
}
