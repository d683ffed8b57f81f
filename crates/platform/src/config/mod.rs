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
//!
//! The platform's sections are in `sections` (what each holds and its
//! defaults), their checks in `validate`, and [`Secret`] with the hex keys in
//! `secret`; all are re-exported here, so every type is `config::Name`.

mod secret;
mod sections;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use secret::{Secret, hex_bytes};
pub use sections::{
    AuthConfig, AuthMode, ClientCertificateIdentity, ClockConfig, ClockMode, DatabaseConfig,
    Environment, EventsConfig, LogFormat, NatsConfig, SeedConfig, ServerConfig, TelemetryConfig,
};

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
    fn a_seed_directory_that_does_not_exist_is_refused_by_name() {
        let missing = std::env::temp_dir().join(format!("no-seed-{}", uuid::Uuid::now_v7()));
        let e = Config::load(
            None,
            &env(&[("BALADIYA__SEED__DIR", missing.to_str().expect("utf-8"))]),
        )
        .expect_err("a missing seed directory");
        assert!(e.to_string().contains("seed.dir"), "{e}");
        let here = std::env::temp_dir();
        let c = Config::load(
            None,
            &env(&[("BALADIYA__SEED__DIR", here.to_str().expect("utf-8"))]),
        )
        .expect("an existing directory");
        assert_eq!(c.seed.dir, here.display().to_string());
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
