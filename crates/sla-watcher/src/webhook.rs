//! Webhook delivery of escalations to partners whose ladder asks for it.
//!
//! A delivery is written with the escalation (same transaction), then POSTed
//! over HTTPS as JSON with `X-Baladiya-Signature: sha256=<HMAC of the body>`
//! under `sla.webhook_secret`, retried with doubling backoff, and marked `dead`
//! after `sla.webhook_max_attempts` (visible in `ListEscalations`). Deliveries
//! are claimed with `FOR UPDATE SKIP LOCKED`, so replicas share them. Retry
//! timing is wall-clock time: it is about the partner's server, not SLA time;
//! the defaults retry for about nine hours, and `baladiya webhooks
//! redrive` makes dead deliveries due again.
//!
//! An escalation withdrawn (it turned out wrong) cancels its delivery if no
//! attempt was made, and otherwise gets a signed withdrawal of its own
//! (`"type": "escalation.withdrawn"`), delivered the same way. Receivers
//! deduplicate on `X-Baladiya-Delivery` and key on `escalation_id`.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Why a webhook client could not be built or a POST failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("sla.webhook_ca_file: {0}")]
    CaFile(String),
    #[error("{0}")]
    Post(String),
}

/// Posts signed JSON over HTTPS.
#[derive(Clone)]
pub struct WebhookClient {
    tls: tokio_rustls::TlsConnector,
    secret: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

impl WebhookClient {
    /// Trusts the public web roots plus, if given, the CAs in a PEM file (a
    /// government PKI or a partner's private CA).
    pub fn new(secret: &[u8], ca_file: &str) -> Result<Self, WebhookError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !ca_file.is_empty() {
            for cert in CertificateDer::pem_file_iter(ca_file)
                .map_err(|e| WebhookError::CaFile(e.to_string()))?
            {
                let cert = cert.map_err(|e| WebhookError::CaFile(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| WebhookError::CaFile(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::CaFile(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            secret: secret.to_vec(),
            timeout: Duration::from_secs(10),
        })
    }

    /// POSTs `body` to an `https://` URL; returns the HTTP status.
    pub async fn post(&self, url: &str, delivery: Uuid, body: &[u8]) -> Result<u16, WebhookError> {
        let fail = |e: &dyn std::fmt::Display| WebhookError::Post(e.to_string());
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| fail(&"only https:// webhooks are delivered"))?;
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|e| fail(&e))?)
            }
            _ => (authority, 443),
        };
        let host_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host_name.clone()).map_err(|e| fail(&e))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host_name.as_str(), port))
                .await
                .map_err(|e| fail(&e))?;
            let mut tls = self
                .tls
                .connect(server_name, tcp)
                .await
                .map_err(|e| fail(&e))?;
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 X-Baladiya-Event: escalation.raised\r\nX-Baladiya-Delivery: {delivery}\r\nX-Baladiya-Signature: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len(),
                signature(&self.secret, body)
            );
            tls.write_all(head.as_bytes()).await.map_err(|e| fail(&e))?;
            tls.write_all(body).await.map_err(|e| fail(&e))?;
            tls.flush().await.map_err(|e| fail(&e))?;
            let mut response = Vec::new();
            let mut chunk = [0u8; 1024];
            while !response.windows(2).any(|w| w == b"\r\n") {
                let n = tls.read(&mut chunk).await.map_err(|e| fail(&e))?;
                if n == 0 {
                    break;
                }
                response.extend_from_slice(&chunk[..n]);
            }
            let line = String::from_utf8_lossy(&response);
            line.split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| fail(&"no HTTP status in the response"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| fail(&"timed out"))?
    }
}

/// What a delivery tells the partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// An escalation was raised.
    Raised,
    /// An escalation raised before turned out wrong.
    Withdrawn,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// Queues a delivery (in the escalation's transaction); one of each kind
/// per escalation.
pub async fn enqueue(
    conn: &mut PgConnection,
    escalation_id: Uuid,
    kind: Delivery,
    url: &str,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, escalation_id, kind, url, body, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (escalation_id, kind) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(escalation_id)
    .bind(kind.as_str())
    .bind(url)
    .bind(body)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Tells the partner an escalation is withdrawn, in the withdrawal's
/// transaction: the escalation's delivery stops if still pending (an attempt
/// in flight records nothing over it), and unless it was never attempted (the
/// partner cannot have it) a signed withdrawal is queued. Returns whether one
/// was.
pub async fn withdraw(
    conn: &mut PgConnection,
    escalation_id: Uuid,
    body: &[u8],
) -> Result<bool, sqlx::Error> {
    let raised: Option<(String, bool)> = sqlx::query_as(
        "WITH raised AS (
             SELECT id, url, state, attempts, lease FROM webhook_deliveries
             WHERE escalation_id = $1 AND kind = 'raised' FOR UPDATE),
         cancelled AS (
             UPDATE webhook_deliveries d SET state = 'cancelled', lease = NULL
             FROM raised r WHERE d.id = r.id AND r.state = 'pending' RETURNING d.id)
         SELECT url, (state = 'pending' AND attempts = 0 AND lease IS NULL) AS never_sent FROM raised",
    )
    .bind(escalation_id)
    .fetch_optional(&mut *conn)
    .await?;
    match raised {
        Some((url, false)) => {
            enqueue(conn, escalation_id, Delivery::Withdrawn, &url, body).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Makes dead deliveries due again, with their attempts reset (`baladiya
/// webhooks redrive`); all of them, or one. Returns how many.
pub async fn redrive(pool: &PgPool, id: Option<Uuid>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(), lease = NULL
         WHERE state = 'dead' AND ($1::uuid IS NULL OR id = $1)",
    )
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected())
}

/// A delivery claimed for one attempt, under a lease of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: Uuid,
    pub url: String,
    pub body: Vec<u8>,
    /// This attempt's number.
    pub attempt: i32,
    /// The claim's token: its outcome is recorded only while it holds.
    pub lease: Uuid,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Failed: retried after `retry_in`, or dead after the last attempt.
    Failed {
        error: String,
        dead: bool,
        retry_in: Duration,
    },
}

/// Claims up to `limit` due deliveries, each for `lease` (past the client's
/// timeout), in a short transaction of its own.
pub async fn claim_due(
    pool: &PgPool,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Claim>, sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET next_attempt_at = now() + make_interval(secs => $1), lease = gen_random_uuid()
         WHERE id IN (SELECT id FROM webhook_deliveries
                      WHERE state = 'pending' AND next_attempt_at <= now()
                      ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING id, url, body, attempts, lease",
    )
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok(Claim {
            id: row.try_get("id")?,
            url: row.try_get("url")?,
            body: row.try_get("body")?,
            attempt: row.try_get::<i32, _>("attempts")? + 1,
            lease: row.try_get("lease")?,
        })
    })
    .collect()
}

/// Records an attempt's outcome, only while its claim's lease holds: a
/// replica whose lease expired while it waited on a slow partner records
/// nothing over a later claim (or over a cancellation). Returns whether it
/// was recorded.
pub async fn record(pool: &PgPool, claim: &Claim, outcome: &Outcome) -> Result<bool, sqlx::Error> {
    let done = match outcome {
        Outcome::Delivered => sqlx::query(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = $2, delivered_at = now(), last_error = NULL, lease = NULL
             WHERE id = $1 AND lease = $3 AND state = 'pending'",
        )
        .bind(claim.id)
        .bind(claim.attempt)
        .bind(claim.lease),
        Outcome::Failed {
            error,
            dead,
            retry_in,
        } => sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $2, last_error = $4,
                    state = CASE WHEN $5 THEN 'dead' ELSE 'pending' END,
                    next_attempt_at = now() + make_interval(secs => $6), lease = NULL
             WHERE id = $1 AND lease = $3 AND state = 'pending'",
        )
        .bind(claim.id)
        .bind(claim.attempt)
        .bind(claim.lease)
        .bind(error)
        .bind(*dead)
        .bind(retry_in.as_secs_f64()),
    }
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Attempts up to 20 due deliveries once each; returns how many were
/// attempted.
///
/// A delivery is claimed by moving its next attempt past the client's timeout
/// (a lease, [`claim_due`]); the POST runs with no transaction open, and its
/// outcome is recorded after, under the lease ([`record`]). A replica that
/// dies mid-POST leaves the lease to expire and the delivery is tried again
/// (at least once; receivers deduplicate on `X-Baladiya-Delivery`).
pub async fn deliver_due(
    pool: &PgPool,
    client: &WebhookClient,
    max_attempts: i32,
    backoff: Duration,
) -> Result<usize, sqlx::Error> {
    let due = claim_due(pool, client.timeout.saturating_mul(3), 20).await?;
    for claim in &due {
        let outcome = match client.post(&claim.url, claim.id, &claim.body).await {
            Ok(status) if (200..300).contains(&status) => Outcome::Delivered,
            other => {
                let error = match other {
                    Ok(status) => format!("HTTP {status}"),
                    Err(e) => e.to_string(),
                };
                let dead = claim.attempt >= max_attempts;
                tracing::warn!(delivery = %claim.id, attempts = claim.attempt, dead, error = %error, "webhook delivery failed");
                Outcome::Failed {
                    error,
                    dead,
                    retry_in: backoff
                        .saturating_mul(1u32 << (claim.attempt - 1).clamp(0, 16) as u32)
                        .min(Duration::from_secs(3600)),
                }
            }
        };
        record(pool, claim, &outcome).await?;
    }
    Ok(due.len())
}
