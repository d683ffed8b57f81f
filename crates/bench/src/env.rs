//! What every measurement shares: the run's settings ([`Env`]), the
//! databases and stream namespaces a phase creates and removes, and what a
//! phase hands back ([`Phase`]). Apart from `main.rs` so the measurement
//! modules depend on this, not on the command line.

use std::path::PathBuf;

use anyhow::Context;
use baladiya_testkit::with_database;

use crate::report::Figure;

/// What every measurement needs to know about this run.
#[derive(Debug, Clone)]
pub struct Env {
    /// `BALADIYA__DATABASE__URL`: a measurement creates its own database
    /// beside it (see [`with_database`]) and drops it when done.
    pub base: String,
    /// `BALADIYA__NATS__URL`.
    pub nats: String,
    /// The `baladiya` binary.
    pub baladiya: PathBuf,
    /// Seconds a closed-loop measurement runs.
    pub seconds: u64,
    /// A run-unique stamp for database and stream namespace names.
    pub stamp: String,
    /// Leave a phase's database in place when it ends (`--keep`).
    pub keep: bool,
}

/// One measurement's figures and the numbers behind them.
#[derive(Default)]
pub struct Phase {
    pub figures: Vec<Figure>,
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Creates database `name` (dropped by [`drop_database`]) and returns its URL.
pub async fn create_database(env: &Env, name: &str) -> anyhow::Result<String> {
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&with_database(&env.base, "postgres"))
            .await
            .context("connecting to PostgreSQL")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    Ok(with_database(&env.base, name))
}

/// Drops database `name`, closing whatever is still connected.
pub async fn drop_database(env: &Env, name: &str) {
    if env.keep {
        eprintln!("keeping database {name}");
        return;
    }
    baladiya_testkit::drop_database(&env.base, name).await;
}

/// Deletes the JetStream streams of `namespace` (`<namespace>_<STREAM>`).
pub async fn delete_streams(env: &Env, namespace: &str) {
    baladiya_testkit::delete_streams(&env.nats, namespace).await;
}
