//! PostgreSQL: one pool per service, each pinned to the service's own schema.
//!
//! Every connection of a service's pool starts with `search_path` set to that
//! service's schema, so service SQL names its tables unqualified and cannot
//! reach another service's tables by accident. Migrations are embedded: the
//! platform's own (outbox, inbox, parked events; versions below 100) followed
//! by the service's (versions 100 and up), recorded in the schema's own
//! `_sqlx_migrations` table, run under sqlx's advisory lock so replicas that
//! start together migrate once.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;

use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::DatabaseConfig;

/// The platform's migrations, applied in every service schema first.
static PLATFORM_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Lowest version a service migration may use.
pub const FIRST_SERVICE_MIGRATION: i64 = 100;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url is not a valid PostgreSQL URL: {0}")]
    Url(sqlx::Error),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(sqlx::Error),
    #[error("schema name '{0}' must be lowercase letters, digits and '_'")]
    SchemaName(String),
    #[error(
        "migration {version} of schema '{schema}' collides with the platform's (service migrations start at {FIRST_SERVICE_MIGRATION})"
    )]
    Version { schema: String, version: i64 },
    #[error("migrating schema '{schema}' failed: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

fn valid_schema(schema: &str) -> Result<(), DbError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DbError::SchemaName(schema.into()))
    }
}

/// Connection options for `database.url`.
pub fn connect_options(config: &DatabaseConfig) -> Result<PgConnectOptions, DbError> {
    PgConnectOptions::from_str(config.url.expose()).map_err(DbError::Url)
}

/// A pool whose connections use `schema` as their search path. Connects lazily,
/// so a server can start (and report not ready) while PostgreSQL is down.
pub fn schema_pool(config: &DatabaseConfig, schema: &str) -> Result<PgPool, DbError> {
    valid_schema(schema)?;
    let statement_timeout = config.statement_timeout_ms.to_string();
    let options = connect_options(config)?
        .options([
            ("search_path", schema),
            ("statement_timeout", statement_timeout.as_str()),
            // Every query here is short (a request, a batch, one indicator
            // over an index): compiling it with LLVM costs more than it
            // saves, and the platform runs its queries side by side already
            // (a scorecard's indicators, concurrent requests), so parallel
            // workers would only take cores from the queries beside them.
            ("jit", "off"),
            ("max_parallel_workers_per_gather", "0"),
        ])
        .application_name(&format!("baladiya-{schema}"));
    Ok(lazy_pool(
        options,
        config.max_connections,
        Duration::from_millis(config.acquire_timeout_ms),
    ))
}

/// A pool of `connections` more to `pool`'s database and schema whose
/// sessions also carry `settings`: for a writer whose one statement is
/// planned differently from the service's other queries.
pub fn sibling_pool(pool: &PgPool, connections: u32, settings: &[(&str, &str)]) -> PgPool {
    let options = (*pool.connect_options())
        .clone()
        .options(settings.iter().copied());
    lazy_pool(options, connections, pool.options().get_acquire_timeout())
}

fn lazy_pool(options: PgConnectOptions, connections: u32, acquire_timeout: Duration) -> PgPool {
    let port = options.get_port();
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(acquire_timeout)
        // No ping before every use: it doubles the round trips of a short
        // request. A connection PostgreSQL dropped fails its next statement
        // (UNAVAILABLE to the caller, who retries) and is closed, not reused.
        .test_before_acquire(false)
        .after_connect(move |_conn, _meta| {
            Box::pin(async move {
                nodelay::on_postgres_sockets(port);
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

/// Nagle's algorithm off on the process's TCP sockets to PostgreSQL.
///
/// sqlx 0.9.0 no longer sets `TCP_NODELAY` on the sockets it opens
/// (transact-rs/sqlx#4335). A statement whose Bind message spans more than
/// one segment (a batch of submits, a long row) then waits for the server's
/// delayed ACK before its last segment leaves: 40 ms and more, with the cores
/// idle. libpq and every other driver turn Nagle off; until sqlx does again,
/// each new pool connection turns it off here. sqlx does not hand out its
/// socket, so this looks the sockets up by descriptor: every TCP socket of
/// the process whose peer is `database.url`'s port gets `TCP_NODELAY`, which is harmless to set twice. Without `/proc` (not
/// Linux) it does nothing.
#[allow(unsafe_code)]
mod nodelay {
    use std::os::fd::{BorrowedFd, RawFd};

    /// Sets `TCP_NODELAY` on every TCP socket whose peer's port is `port`.
    pub fn on_postgres_sockets(port: u16) {
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else {
                continue;
            };
            // Only sockets: the link of a socket descriptor reads `socket:[inode]`.
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if !is_socket {
                continue;
            }
            // SAFETY: `fd` was open in this process a moment ago and is only
            // borrowed for the two calls below. Should another thread close
            // it in between, the calls fail (EBADF, ENOTSOCK) or, if the
            // number was reused for another socket, ask that socket its peer;
            // neither touches memory, and TCP_NODELAY is only set on a TCP
            // socket whose peer is PostgreSQL's port.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let to_postgres = socket
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a.port() == port);
            if to_postgres && let Err(e) = socket.set_tcp_nodelay(true) {
                tracing::debug!(error = %e, "could not turn Nagle off on a PostgreSQL socket");
            }
        }
    }
}

/// Creates the database named in `database.url` if it does not exist yet
/// (a fresh developer machine, a test). Where the role may not create
/// databases, the error says so and the operator creates it.
pub fn ensure_database(config: &DatabaseConfig) -> BoxFuture<'_, Result<(), DbError>> {
    // Boxed so callers' futures stay provably `Send` (sqlx's `Acquire` bounds
    // otherwise trip the compiler's higher-ranked lifetime check).
    Box::pin(ensure_database_inner(config))
}

async fn ensure_database_inner(config: &DatabaseConfig) -> Result<(), DbError> {
    use sqlx::Connection;
    let options = connect_options(config)?;
    match sqlx::PgConnection::connect_with(&options).await {
        Ok(conn) => {
            let _ = conn.close().await;
            Ok(())
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            let name = options.get_database().unwrap_or("postgres").to_string();
            let mut admin = sqlx::PgConnection::connect_with(&options.clone().database("postgres"))
                .await
                .map_err(DbError::Connect)?;
            let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
            match sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
            {
                Ok(_) => {
                    tracing::info!(database = %name, "created database");
                    Ok(())
                }
                // Another process created it at the same moment.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
                Err(e) => Err(DbError::Connect(e)),
            }
        }
        Err(e) => Err(DbError::Connect(e)),
    }
}

/// Creates `schema` if needed and applies the platform's migrations then the
/// service's, under an advisory lock.
pub fn migrate<'a>(
    pool: &'a PgPool,
    schema: &'a str,
    service: &'a Migrator,
) -> BoxFuture<'a, Result<(), DbError>> {
    Box::pin(migrate_inner(pool, schema, service))
}

async fn migrate_inner(pool: &PgPool, schema: &str, service: &Migrator) -> Result<(), DbError> {
    valid_schema(schema)?;
    let mut migrations: Vec<Migration> = PLATFORM_MIGRATIONS.iter().cloned().collect();
    for m in service.iter() {
        if m.version < FIRST_SERVICE_MIGRATION {
            return Err(DbError::Version {
                schema: schema.into(),
                version: m.version,
            });
        }
        migrations.push(m.clone());
    }
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(Cow::Owned(format!("{schema}._sqlx_migrations")));
    let mut conn = pool.acquire().await.map_err(|e| DbError::Migrate {
        schema: schema.into(),
        source: sqlx::migrate::MigrateError::Execute(e),
    })?;
    // Only a missing schema is created: `CREATE SCHEMA IF NOT EXISTS` needs
    // CREATE on the database even when the schema is there, and a service's
    // role in production owns its schema and nothing more
    // (deploy/postgres/schemas.sql).
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        migrator.create_schema(Cow::Owned(schema.to_string()));
    }
    // A migration may rewrite a large table: no statement timeout for it.
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(|e| DbError::Migrate {
            schema: schema.into(),
            source: sqlx::migrate::MigrateError::Execute(e),
        })?;
    // `run_direct` is sqlx's own way to run on one connection inside a boxed
    // future (`run(&mut conn)` trips the "Acquire is not general enough" error).
    let result = migrator.run_direct(None, &mut *conn, false).await;
    // The connection goes back to the pool with the configured timeout.
    sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await
        .ok();
    result.map_err(|source| DbError::Migrate {
        schema: schema.into(),
        source,
    })
}

/// A service's embedded migrations as an owned migrator, the form
/// `ServiceModule::migrator` returns (they are merged with the platform's).
pub fn service_migrations(embedded: &Migrator) -> Migrator {
    Migrator::with_migrations(embedded.iter().cloned().collect())
}

/// Whether the schema's migrations are all applied.
pub async fn is_migrated(pool: &PgPool, schema: &str, service: &Migrator) -> bool {
    let expected = PLATFORM_MIGRATIONS.iter().count() + service.iter().count();
    let query = format!("SELECT count(*) FROM {schema}._sqlx_migrations WHERE success");
    match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query))
        .fetch_one(pool)
        .await
    {
        Ok(applied) => applied as usize >= expected,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema("intake").is_ok());
        assert!(valid_schema("sla_watcher").is_ok());
        for bad in ["", "Intake", "x;drop", "1abc", "a-b"] {
            assert!(valid_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platform_migrations_stay_below_service_versions() {
        assert!(
            PLATFORM_MIGRATIONS
                .iter()
                .all(|m| m.version < FIRST_SERVICE_MIGRATION)
        );
    }
}
