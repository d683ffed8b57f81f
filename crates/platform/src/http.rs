//! The HTTP port: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (PostgreSQL and NATS reachable, migrations applied).
//! Later the Open311 facade and the KPI dashboard mount here too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use sqlx::PgPool;

use crate::metrics::Metrics;

/// What readiness depends on.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// One pool per mounted service schema, with the migrations it needs.
    pub schemas: Vec<(String, PgPool, Arc<sqlx::migrate::Migrator>)>,
    pub nats: async_nats::Client,
}

impl Readiness {
    /// Every problem that keeps the process from being ready; empty when ready.
    pub async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            problems.push("nats: not connected".to_string());
        }
        for (schema, pool, migrator) in &self.schemas {
            let check = tokio::time::timeout(
                Duration::from_secs(2),
                crate::db::is_migrated(pool, schema, migrator),
            )
            .await;
            match check {
                Ok(true) => {}
                Ok(false) => problems.push(format!(
                    "postgres: schema {schema} unreachable or not migrated"
                )),
                Err(_) => problems.push(format!("postgres: schema {schema} check timed out")),
            }
        }
        problems
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let problems = state.readiness.problems().await;
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
    }
}

/// The platform's HTTP routes, to which services may add their own.
pub fn router(metrics_registry: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics: metrics_registry,
            readiness,
        })
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Nagle off: a reply of more than one segment (`/metrics`, an Open311
    // list) would otherwise wait for the caller's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        tcp.set_nodelay(true).ok();
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
