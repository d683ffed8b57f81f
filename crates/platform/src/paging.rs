//! Opaque, tamper-checked page tokens (AIP-158). A token carries the keyset
//! cursor and a fingerprint of the listing's filters, signed with HMAC-SHA256
//! under `server.page_token_key`: a forged token, or one replayed with other
//! filters, is refused with `INVALID_ARGUMENT` on `page_token`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::ApiError;

/// Page size when a request names none.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page; larger requests are coerced down (AIP-158).
pub const MAX_PAGE_SIZE: i64 = 500;

/// The page size to use for a request's `page_size`.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match i64::from(requested) {
        n if n < 0 => Err(ApiError::invalid_field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

fn refused() -> ApiError {
    ApiError::invalid_field(
        "page_token",
        "is not a token from this listing with these filters",
    )
}

/// Signs and checks page tokens.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PageTokens {
    /// Tokens signed with `key`.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn tag(&self, payload: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload.as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// A token for the page after `cursor` of the listing with `filters`.
    pub fn issue(&self, filters: &str, cursor: &str) -> String {
        let payload = format!("{filters}\u{1f}{cursor}");
        format!("{}.{}", hex(payload.as_bytes()), self.tag(&payload))
    }

    /// The cursor in `token`, if it is genuine and was issued for `filters`;
    /// `None` for an empty token (the first page).
    pub fn cursor(&self, token: &str, filters: &str) -> Result<Option<String>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let (payload, tag) = token.split_once('.').ok_or_else(refused)?;
        let payload = String::from_utf8(crate::config::hex_bytes(payload).ok_or_else(refused)?)
            .map_err(|_| refused())?;
        let expected = self.tag(&payload);
        let same = expected.len() == tag.len()
            && expected
                .bytes()
                .zip(tag.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(refused());
        }
        match payload.split_once('\u{1f}') {
            Some((f, cursor)) if f == filters => Ok(Some(cursor.to_string())),
            _ => Err(refused()),
        }
    }
}

impl PageTokens {
    /// A token for the page after the row at (`at`, `id`) of a listing ordered
    /// newest first.
    pub fn next_keyset(&self, filters: &str, at: DateTime<Utc>, id: Uuid) -> String {
        self.issue(filters, &format!("{}|{id}", at.to_rfc3339()))
    }

    /// One page of a keyset listing fetched with `limit + 1` rows: the first
    /// `limit` rows, and the token for the next page (empty on the last page).
    pub fn keyset_page<R>(
        &self,
        mut rows: Vec<R>,
        limit: i64,
        filters: &str,
        keyset: impl Fn(&R) -> (DateTime<Utc>, Uuid),
    ) -> (Vec<R>, String) {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = match (more, rows.last()) {
            (true, Some(last)) => {
                let (at, id) = keyset(last);
                self.next_keyset(filters, at, id)
            }
            _ => String::new(),
        };
        (rows, next)
    }

    /// The (`at`, `id`) keyset in a token made by [`PageTokens::next_keyset`].
    pub fn keyset(
        &self,
        token: &str,
        filters: &str,
    ) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
        let Some(cursor) = self.cursor(token, filters)? else {
            return Ok(None);
        };
        let (at, id) = cursor.split_once('|').ok_or_else(refused)?;
        Ok(Some((
            DateTime::parse_from_rfc3339(at)
                .map_err(|_| refused())?
                .with_timezone(&Utc),
            id.parse().map_err(|_| refused())?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_key_and_filters() {
        let tokens = PageTokens::new(b"0123456789abcdef0123456789abcdef");
        let t = tokens.issue("status=open", "2026-03-01T07:30:00Z|42");
        assert_eq!(
            tokens.cursor(&t, "status=open").expect("valid").as_deref(),
            Some("2026-03-01T07:30:00Z|42")
        );
        assert_eq!(tokens.cursor("", "status=open").expect("first page"), None);
        assert!(tokens.cursor(&t, "status=closed").is_err(), "other filters");
        let mut forged = t.clone();
        forged.replace_range(0..2, "41");
        assert!(tokens.cursor(&forged, "status=open").is_err(), "tampered");
        assert!(
            PageTokens::new(b"another key, another signature!!")
                .cursor(&t, "status=open")
                .is_err()
        );
        assert!(tokens.cursor("nonsense", "status=open").is_err());
        let at = DateTime::parse_from_rfc3339("2026-03-01T07:30:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let id = Uuid::now_v7();
        let t = tokens.next_keyset("f", at, id);
        assert_eq!(tokens.keyset(&t, "f").expect("valid"), Some((at, id)));
        assert!(tokens.keyset(&tokens.issue("f", "garbage"), "f").is_err());
    }

    #[test]
    fn a_page_holds_limit_rows_and_a_token_only_when_more_follow() {
        let tokens = PageTokens::new(b"0123456789abcdef0123456789abcdef");
        let at = Utc::now();
        let rows: Vec<(DateTime<Utc>, Uuid)> = (0..3).map(|_| (at, Uuid::now_v7())).collect();
        let (page, next) = tokens.keyset_page(rows.clone(), 2, "f", |r| *r);
        assert_eq!(page, rows[..2]);
        assert_eq!(tokens.keyset(&next, "f").expect("valid"), Some(rows[1]));
        let (page, next) = tokens.keyset_page(rows[..2].to_vec(), 2, "f", |r| *r);
        assert_eq!((page.len(), next.as_str()), (2, ""));
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(10_000).expect("capped"), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }
}
