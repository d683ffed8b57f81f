//! Personal data protection: reporters' names, phones and national IDs are
//! encrypted field by field (AES-256-GCM, a fresh random nonce each time) with
//! a key from config, and identified in events only by a keyed pseudonym
//! (HMAC-SHA256), so analysts can count repeat reporters without knowing who
//! they are.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::domain::ReporterData;

const NONCE_LEN: usize = 12;

/// Keys for personal data: the current one seals, every known one opens
/// what was sealed under it (rows carry their key id), so keys rotate
/// without re-encrypting at once.
#[derive(Clone)]
pub struct Vault {
    key_id: String,
    cipher: Aes256Gcm,
    previous: std::collections::BTreeMap<String, Aes256Gcm>,
    pseudonym_key: Vec<u8>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Encrypted reporter fields, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealedReporter {
    pub key_id: String,
    pub name: Option<Vec<u8>>,
    pub phone: Option<Vec<u8>>,
    pub national_id: Option<Vec<u8>>,
}

impl Vault {
    /// From a 32-byte encryption key and a pseudonym key of at least 32 bytes.
    pub fn new(key_id: &str, encryption_key: &[u8], pseudonym_key: &[u8]) -> Option<Self> {
        if pseudonym_key.len() < 32 {
            return None;
        }
        Some(Self {
            key_id: key_id.to_string(),
            cipher: Aes256Gcm::new_from_slice(encryption_key).ok()?,
            previous: std::collections::BTreeMap::new(),
            pseudonym_key: pseudonym_key.to_vec(),
        })
    }

    /// Also opens data sealed under an earlier key.
    pub fn with_previous(mut self, key_id: &str, encryption_key: &[u8]) -> Option<Self> {
        self.previous.insert(
            key_id.to_string(),
            Aes256Gcm::new_from_slice(encryption_key).ok()?,
        );
        Some(self)
    }

    fn cipher_of(&self, key_id: &str) -> Option<&Aes256Gcm> {
        if key_id == self.key_id {
            Some(&self.cipher)
        } else {
            self.previous.get(key_id)
        }
    }

    fn seal(&self, plain: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and nonce cannot fail for inputs this size.
        out.extend(
            self.cipher
                .encrypt(&nonce, plain.as_bytes())
                .unwrap_or_default(),
        );
        out
    }

    fn open(cipher: &Aes256Gcm, sealed: &[u8]) -> Option<String> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let plain = cipher.decrypt(&Nonce::from(nonce), body).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Encrypts each given field.
    pub fn seal_reporter(&self, r: &ReporterData) -> SealedReporter {
        SealedReporter {
            key_id: self.key_id.clone(),
            name: r.name.as_deref().map(|x| self.seal(x)),
            phone: r.phone.as_deref().map(|x| self.seal(x)),
            national_id: r.national_id.as_deref().map(|x| self.seal(x)),
        }
    }

    /// Decrypts stored fields with the key they name; `None` if that key is
    /// unknown here, and a field that does not decrypt is `None`.
    pub fn open_reporter(&self, s: &SealedReporter) -> Option<ReporterData> {
        let cipher = self.cipher_of(&s.key_id)?;
        let open = |x: &Option<Vec<u8>>| x.as_deref().and_then(|x| Self::open(cipher, x));
        Some(ReporterData {
            name: open(&s.name),
            phone: open(&s.phone),
            national_id: open(&s.national_id),
        })
    }

    /// The reporter's pseudonym: the national ID if given, else the phone;
    /// `None` for anonymous reports.
    pub fn pseudonym(&self, r: &ReporterData) -> Option<String> {
        let (label, value) = match (&r.national_id, &r.phone) {
            (Some(id), _) => ("national_id", id),
            (None, Some(phone)) => ("phone", phone),
            (None, None) => return None,
        };
        Some(baladiya_platform::pseudonym::keyed(
            "rk1",
            &self.pseudonym_key,
            label,
            value,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> Vault {
        Vault::new("k1", &[7u8; 32], &[9u8; 32]).expect("keys")
    }

    #[test]
    fn reporter_fields_round_trip_and_ciphertexts_differ() {
        let v = vault();
        let r = ReporterData {
            name: Some("محمد العتيبي".into()),
            phone: Some("+966501234567".into()),
            national_id: Some("1000000008".into()),
        };
        let a = v.seal_reporter(&r);
        let b = v.seal_reporter(&r);
        assert_ne!(a.phone, b.phone, "fresh nonce each time");
        assert!(
            !a.phone
                .as_ref()
                .expect("phone")
                .windows(4)
                .any(|w| w == b"9665")
        );
        assert_eq!(v.open_reporter(&a), Some(r.clone()));
        let other = Vault::new("k2", &[8u8; 32], &[9u8; 32]).expect("keys");
        assert_eq!(other.open_reporter(&a), None, "k1 is not known to it");
        let forged = SealedReporter {
            key_id: "k2".into(),
            ..a.clone()
        };
        assert_eq!(
            other.open_reporter(&forged).and_then(|r| r.phone),
            None,
            "another key cannot read it"
        );
        // After a rotation to k2, k1 rows still open and new rows use k2.
        let rotated = Vault::new("k2", &[8u8; 32], &[9u8; 32])
            .and_then(|v| v.with_previous("k1", &[7u8; 32]))
            .expect("keys");
        assert_eq!(rotated.open_reporter(&a), Some(r.clone()));
        let fresh = rotated.seal_reporter(&r);
        assert_eq!(fresh.key_id, "k2");
        assert_eq!(rotated.open_reporter(&fresh), Some(r));
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_anonymous_stays_anonymous() {
        let v = vault();
        let r = ReporterData {
            phone: Some("+966501234567".into()),
            ..Default::default()
        };
        let p = v.pseudonym(&r).expect("pseudonym");
        assert_eq!(Some(p.clone()), v.pseudonym(&r));
        assert!(!p.contains("501234567"));
        let other = Vault::new("k1", &[7u8; 32], &[1u8; 32]).expect("keys");
        assert_ne!(other.pseudonym(&r), Some(p), "depends on the key");
        assert_eq!(v.pseudonym(&ReporterData::default()), None);
    }
}
