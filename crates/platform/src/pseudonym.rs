//! Keyed pseudonyms: a person appears in events as `HMAC-SHA256(key, label,
//! value)`, so analysts can count repeat reporters or applicants without
//! learning who they are, and nobody without the key can test a guess (a plain
//! hash of a 10-digit ID is brute-forced in seconds).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `<prefix>_<32 hex digits>` of `HMAC-SHA256(key, label || 0 || value)`.
pub fn keyed(prefix: &str, key: &[u8], label: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(label.as_bytes());
    mac.update(&[0]);
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn pseudonyms_depend_on_key_label_and_value() {
        let a = super::keyed("rk1", b"key one", "phone", "+966501234567");
        assert_eq!(a, super::keyed("rk1", b"key one", "phone", "+966501234567"));
        assert_ne!(a, super::keyed("rk1", b"key two", "phone", "+966501234567"));
        assert_ne!(
            a,
            super::keyed("rk1", b"key one", "national_id", "+966501234567")
        );
        assert!(a.starts_with("rk1_") && a.len() == 36 && !a.contains("501234567"));
    }
}
