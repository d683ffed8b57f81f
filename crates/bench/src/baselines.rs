//! The limits the platform's figures are held against, measured in the
//! same run on the same machine: pgbench running the two inserts a submitted
//! report costs at the least, and a bare tonic server answering
//! `grpc.health.v1.Health/Check` (the `echo` command, run as a process of
//! its own like the platform).

use std::net::SocketAddr;

use anyhow::Context;

/// pgbench running one transaction of two inserts, at `clients`: transactions
/// per second.
pub async fn pgbench(database_url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("baladiya-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "BEGIN;\n\
         INSERT INTO reports (id, payload) VALUES (gen_random_uuid(), repeat('x', 400));\n\
         INSERT INTO outbox (payload) VALUES (convert_to(repeat('y', 300), 'UTF8'));\n\
         COMMIT;\n",
    )?;
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-T", &seconds.to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .arg("-f")
        .arg(&script)
        .arg(database_url)
        .output()
        .await
        .context("running pgbench (Debian: postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no tps in pgbench's output")
}

/// Serves `grpc.health.v1` on `addr` and nothing else: the bare tonic baseline.
pub async fn echo(addr: SocketAddr) -> anyhow::Result<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(addr)
        .await?;
    Ok(())
}
