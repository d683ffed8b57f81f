//! `request_id` idempotency for creates (AIP-155).
//!
//! Inside the transaction that makes the change, [`claim`] inserts the key. The
//! first request under a key gets [`Claim::New`] and must call [`complete`]
//! with its response before committing; a concurrent duplicate waits on the
//! key's row lock and then sees the committed response. A retry with the same
//! request gets [`Claim::Replay`] with the original response; the same key with
//! a different request is refused with `ALREADY_EXISTS`. Only a SHA-256 digest
//! of the request is kept: requests may carry personal data.

use sqlx::PgConnection;

use crate::error::{ApiError, ErrorKind};

/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// What to do with a request.
#[derive(Debug)]
pub enum Claim<R> {
    /// First time: do the work, then [`complete`].
    New,
    /// Seen before: answer with this.
    Replay(R),
}

/// Checks a `request_id` field: required, printable ASCII, at most 64 characters.
pub fn check_request_id(request_id: &str, violations: &mut crate::error::Violations) {
    if request_id.is_empty() {
        violations.add("request_id", "is required (a UUID is recommended)");
    } else if request_id.len() > MAX_REQUEST_ID_LEN
        || !request_id.chars().all(|c| c.is_ascii_graphic())
    {
        violations.add(
            "request_id",
            "must be at most 64 printable ASCII characters (a UUID is recommended)",
        );
    }
}

/// The digest stored for a request.
pub fn digest(request: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(request).to_vec()
}

/// Claims `request_id` for `method` with the encoded `request`.
pub async fn claim<R: prost::Message + Default>(
    conn: &mut PgConnection,
    method: &str,
    request_id: &str,
    request: &[u8],
) -> Result<Claim<R>, ApiError> {
    let request = digest(request);
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (method, request_id, request) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(method)
    .bind(request_id)
    .bind(&request)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    replay(conn, method, request_id, &request)
        .await
        .map(Claim::Replay)
}

/// The stored response for a key whose request digest is `request_digest`:
/// `ALREADY_EXISTS` if the key was used for another request.
pub async fn replay<R: prost::Message + Default>(
    conn: &mut PgConnection,
    method: &str,
    request_id: &str,
    request_digest: &[u8],
) -> Result<R, ApiError> {
    let (stored, response): (Vec<u8>, Option<Vec<u8>>) = sqlx::query_as(
        "SELECT request, response FROM idempotency_keys WHERE method = $1 AND request_id = $2",
    )
    .bind(method)
    .bind(request_id)
    .fetch_one(&mut *conn)
    .await?;
    if stored != request_digest {
        return Err(ApiError::new(
            ErrorKind::AlreadyExists,
            "request_id was already used for a different request",
        ));
    }
    let response = response.ok_or_else(|| {
        ApiError::new(
            ErrorKind::Aborted,
            "the original request is still running; retry",
        )
    })?;
    R::decode(response.as_slice()).map_err(|e| ApiError::internal(&e))
}

/// Stores the response of a [`Claim::New`] request.
pub async fn complete<R: prost::Message>(
    conn: &mut PgConnection,
    method: &str,
    request_id: &str,
    response: &R,
) -> Result<(), ApiError> {
    sqlx::query("UPDATE idempotency_keys SET response = $3 WHERE method = $1 AND request_id = $2")
        .bind(method)
        .bind(request_id)
        .bind(response.encode_to_vec())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
