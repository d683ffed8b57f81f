//! Bearer tokens: the keys that verify them (PEM keys from config, a JWKS
//! file followed through rotations), the [`Authenticator`] that turns a token
//! into a [`CallerIdentity`] and remembers the tokens it verified, and the dev
//! tokens `baladiya dev-token` mints. Apart from the interceptor because this
//! is the cryptography and its caches; the interceptor only asks who a token
//! names.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{CallerIdentity, RateLimiter, Role};
use crate::config::{AuthConfig, AuthMode};

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub municipality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid public key #{index} in auth.public_keys: {reason}")]
    BadKey { index: usize, reason: String },
    #[error("{0}")]
    Token(String),
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// One accepted verification key.
#[derive(Clone)]
struct VerifyingKey {
    /// The JWKS `kid`; PEM keys have none.
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys in force: PEM keys from config and the JWKS file's, swapped as a
/// whole when the file changes.
type KeySet = std::sync::Arc<std::sync::RwLock<std::sync::Arc<Vec<VerifyingKey>>>>;

/// The keys of a JWKS document: RSA keys verify RS256, Ed25519 keys EdDSA;
/// other key types are skipped. A document without a usable key is refused.
fn jwks_keys(text: &str) -> Result<Vec<VerifyingKey>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys: Vec<VerifyingKey> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                _ => return None,
            };
            Some(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("holds no RSA or Ed25519 key".into());
    }
    Ok(keys)
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    keys: KeySet,
    pem_keys: std::sync::Arc<Vec<VerifyingKey>>,
    jwks_file: String,
    validation_issuer: String,
    validation_audience: String,
    leeway: u64,
    pub(super) limiter: std::sync::Arc<RateLimiter>,
    pub(super) client_certificates: std::sync::Arc<Vec<crate::config::ClientCertificateIdentity>>,
    verified: std::sync::Arc<VerifiedTokens>,
}

/// Tokens already verified, with whom they name, until they expire.
///
/// A caller presents the same token on every call for its lifetime, and
/// checking its signature and decoding its claims again each time cost a
/// tenth of a submit's CPU (HS256; RS256 and EdDSA cost more). A token is
/// the same bytes it was when its signature checked, so the answer stands
/// until `exp` (plus the leeway); a key rotation empties the cache, so a
/// token signed by a key taken out of the JWKS is refused from then on.
#[derive(Debug, Default)]
struct VerifiedTokens(std::sync::Mutex<HeldTokens>);

/// The verified tokens, and how many times they were emptied: a check that
/// began before a key rotation is not kept after it.
#[derive(Debug, Default)]
struct HeldTokens {
    generation: u64,
    tokens: std::collections::HashMap<String, (CallerIdentity, i64)>,
}

impl VerifiedTokens {
    /// Tokens held at most; when full, the expired go, and if none has, all.
    const CAPACITY: usize = 4096;

    fn held(&self) -> std::sync::MutexGuard<'_, HeldTokens> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Who `token` names, if it was verified and has not expired at `now`,
    /// else the generation a check of it must be kept under.
    fn get(&self, token: &str, now: i64) -> Result<CallerIdentity, u64> {
        let held = self.held();
        held.tokens
            .get(token)
            .filter(|(_, until)| now <= *until)
            .map(|(caller, _)| caller.clone())
            .ok_or(held.generation)
    }

    fn keep(&self, generation: u64, token: &str, caller: &CallerIdentity, until: i64, now: i64) {
        let mut held = self.held();
        if held.generation != generation {
            return;
        }
        if held.tokens.len() >= Self::CAPACITY {
            held.tokens.retain(|_, (_, until)| now <= *until);
            if held.tokens.len() >= Self::CAPACITY {
                held.tokens.clear();
            }
        }
        held.tokens
            .insert(token.to_string(), (caller.clone(), until));
    }

    fn clear(&self) {
        let mut held = self.held();
        held.generation += 1;
        held.tokens.clear();
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwks_file", &self.jwks_file)
            .field("issuer", &self.validation_issuer)
            .finish()
    }
}

impl Authenticator {
    /// Builds the verifier for the configured mode.
    pub fn from_config(config: &AuthConfig) -> Result<Self, AuthError> {
        let pem_keys: Vec<VerifyingKey> = match config.mode {
            AuthMode::Dev => vec![VerifyingKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(config.dev_secret.expose().as_bytes()),
            }],
            AuthMode::Jwt => config
                .public_keys
                .iter()
                .enumerate()
                .map(|(index, pem)| {
                    DecodingKey::from_rsa_pem(pem.as_bytes())
                        .map(|k| (Algorithm::RS256, k))
                        .or_else(|_| {
                            DecodingKey::from_ed_pem(pem.as_bytes()).map(|k| (Algorithm::EdDSA, k))
                        })
                        .map(|(alg, key)| VerifyingKey {
                            kid: None,
                            alg,
                            key,
                        })
                        .map_err(|e| AuthError::BadKey {
                            index,
                            reason: e.to_string(),
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let jwks_file = if config.mode == AuthMode::Jwt {
            config.jwks_file.clone()
        } else {
            String::new()
        };
        let authenticator = Self {
            keys: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
                pem_keys.clone(),
            ))),
            pem_keys: std::sync::Arc::new(pem_keys),
            jwks_file,
            validation_issuer: config.issuer.clone(),
            validation_audience: config.audience.clone(),
            leeway: config.leeway_secs,
            limiter: std::sync::Arc::new(RateLimiter::new(
                config.rate_limit_per_second,
                config.rate_limit_burst,
            )),
            client_certificates: std::sync::Arc::new(config.client_certificates.clone()),
            verified: std::sync::Arc::default(),
        };
        authenticator.reload_jwks()?;
        Ok(authenticator)
    }

    /// The JWKS file being followed, if any.
    pub fn jwks_file(&self) -> Option<&str> {
        (!self.jwks_file.is_empty()).then_some(self.jwks_file.as_str())
    }

    /// Reads the JWKS file again and puts its keys in force beside the PEM
    /// keys; on an error the keys in force stay. Returns how many keys are in
    /// force.
    pub fn reload_jwks(&self) -> Result<usize, AuthError> {
        let mut keys: Vec<VerifyingKey> = self.pem_keys.as_ref().clone();
        if let Some(file) = self.jwks_file() {
            let text = std::fs::read_to_string(file).map_err(|e| AuthError::BadKey {
                index: 0,
                reason: format!("{file}: {e}"),
            })?;
            keys.extend(jwks_keys(&text).map_err(|reason| AuthError::BadKey {
                index: 0,
                reason: format!("{file}: {reason}"),
            })?);
        }
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(keys);
        self.verified.clear();
        Ok(count)
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<CallerIdentity, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let generation = match self.verified.get(token, now) {
            Ok(caller) => return Ok(caller),
            Err(generation) => generation,
        };
        let (caller, expires) = self.check_signature(token)?;
        self.verified.keep(
            generation,
            token,
            &caller,
            expires.saturating_add(i64::try_from(self.leeway).unwrap_or(i64::MAX)),
            now,
        );
        Ok(caller)
    }

    /// Checks a token's signature and claims: who it names and its `exp`.
    fn check_signature(&self, token: &str) -> Result<(CallerIdentity, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Token(format!("malformed token: {e}")))?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // A token naming its key is checked against that key only.
        if let Some(kid) = &header.kid
            && !keys.iter().any(|k| k.kid.as_deref() == Some(kid.as_str()))
            && keys.iter().any(|k| k.kid.is_some())
        {
            return Err(AuthError::Token(format!(
                "token refused: key id '{kid}' is not among the accepted keys"
            )));
        }
        let mut last = AuthError::Token(format!("no key accepts algorithm {:?}", header.alg));
        for VerifyingKey { alg, key, .. } in keys.iter().filter(|k| {
            k.alg == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(have)) => wanted == have,
                    _ => true,
                }
        }) {
            let mut validation = Validation::new(*alg);
            validation.set_issuer(&[&self.validation_issuer]);
            validation.set_audience(&[&self.validation_audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            validation.leeway = self.leeway;
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    let c = data.claims;
                    let caller = CallerIdentity {
                        subject: c.sub,
                        role: c.role,
                        partner: c.partner,
                        municipality: c.municipality,
                        channel: c.channel,
                    };
                    return Ok((caller, c.exp));
                }
                Err(e) => last = AuthError::Token(format!("token refused: {e}")),
            }
        }
        Err(last)
    }
}

/// What a dev token names.
#[derive(Debug, Clone)]
pub struct DevTokenRequest {
    pub subject: String,
    pub role: Role,
    pub partner: Option<String>,
    pub municipality: Option<String>,
    pub channel: Option<String>,
    pub ttl: chrono::Duration,
}

/// Mints an HS256 token accepted in `dev` mode. Refuses in `jwt` mode.
pub fn mint_dev_token(config: &AuthConfig, request: &DevTokenRequest) -> Result<String, AuthError> {
    if config.mode != AuthMode::Dev {
        return Err(AuthError::Sign(
            "dev tokens exist only in dev mode (auth.mode = \"dev\")".into(),
        ));
    }
    if request.role == Role::Partner && request.partner.is_none() {
        return Err(AuthError::Sign(
            "a partner token needs --partner CODE".into(),
        ));
    }
    if request.role == Role::Channel && request.channel.is_none() {
        return Err(AuthError::Sign(
            "a channel token needs --channel NAME".into(),
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: request.subject.clone(),
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
        iat: now,
        exp: now + request.ttl.num_seconds(),
        role: request.role,
        partner: request.partner.clone(),
        municipality: request.municipality.clone(),
        channel: request.channel.clone(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(config.dev_secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Sign(e.to_string()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A dev token request for `role` (the interceptor's tests use it too).
    pub(in crate::auth) fn dev_request(role: Role) -> DevTokenRequest {
        DevTokenRequest {
            subject: "tester".into(),
            role,
            partner: Some("MOTLS".into()),
            municipality: None,
            channel: None,
            ttl: chrono::Duration::hours(1),
        }
    }

    #[test]
    fn dev_tokens_round_trip_into_a_caller() {
        let config = AuthConfig::default();
        let token = mint_dev_token(&config, &dev_request(Role::Partner)).expect("mint");
        let auth = Authenticator::from_config(&config).expect("auth");
        let who = auth.verify(&token).expect("verify");
        assert_eq!(who.role, Role::Partner);
        assert_eq!(who.partner.as_deref(), Some("MOTLS"));
    }

    #[test]
    fn expired_wrong_audience_and_foreign_tokens_are_refused() {
        let config = AuthConfig::default();
        let auth = Authenticator::from_config(&config).expect("auth");
        let mut expired = dev_request(Role::Admin);
        expired.ttl = chrono::Duration::hours(-1);
        let token = mint_dev_token(&config, &expired).expect("mint");
        assert!(
            auth.verify(&token)
                .expect_err("expired")
                .to_string()
                .contains("Expired")
        );

        let other = AuthConfig {
            audience: "someone-else".into(),
            ..AuthConfig::default()
        };
        let token = mint_dev_token(&other, &dev_request(Role::Admin)).expect("mint");
        assert!(auth.verify(&token).is_err());

        let forged = AuthConfig {
            dev_secret: crate::config::Secret::new("another-secret-of-length"),
            ..AuthConfig::default()
        };
        let token = mint_dev_token(&forged, &dev_request(Role::Admin)).expect("mint");
        assert!(auth.verify(&token).is_err());
        assert!(auth.verify("not.a.token").is_err());
    }

    #[test]
    fn jwt_mode_refuses_hs256_and_dev_minting() {
        let config = AuthConfig {
            mode: AuthMode::Jwt,
            public_keys: vec![ED25519_PUBLIC.into()],
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&config).expect("ed25519 key accepted");
        let dev = mint_dev_token(&AuthConfig::default(), &dev_request(Role::Admin)).expect("mint");
        assert!(
            auth.verify(&dev).is_err(),
            "an HS256 token must not pass jwt mode"
        );
        assert!(mint_dev_token(&config, &dev_request(Role::Admin)).is_err());
    }

    /// A ten-minute token for the MOJ partner system, signed with `key`, for
    /// `config`'s issuer and audience.
    fn partner_token(
        alg: Algorithm,
        kid: Option<&str>,
        key: &EncodingKey,
        config: &AuthConfig,
    ) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut header = Header::new(alg);
        header.kid = kid.map(String::from);
        let claims = Claims {
            sub: "moj-case-system".into(),
            iss: config.issuer.clone(),
            aud: config.audience.clone(),
            iat: now,
            exp: now + 600,
            role: Role::Partner,
            partner: Some("MOJ".into()),
            municipality: None,
            channel: None,
        };
        jsonwebtoken::encode(&header, &claims, key).expect("sign")
    }

    #[test]
    fn jwt_mode_verifies_eddsa_tokens() {
        let config = AuthConfig {
            mode: AuthMode::Jwt,
            public_keys: vec!["garbage".into(), ED25519_PUBLIC.into()],
            ..AuthConfig::default()
        };
        let err = Authenticator::from_config(&config).expect_err("bad key named");
        assert!(err.to_string().contains("#0"), "{err}");

        let config = AuthConfig {
            public_keys: vec![ED25519_PUBLIC.into()],
            ..config
        };
        let auth = Authenticator::from_config(&config).expect("auth");
        let token = partner_token(
            Algorithm::EdDSA,
            None,
            &EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).expect("key"),
            &config,
        );
        assert_eq!(
            auth.verify(&token).expect("verify").partner.as_deref(),
            Some("MOJ")
        );
    }

    /// RFC 8032 test vector 2, a second Ed25519 key for rotations.
    const ED25519_PRIVATE_2: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEzNCJso/5banbbDRuwRTg9bijGfNaumJNqM9u1PuKb7\n-----END PRIVATE KEY-----\n";

    fn jwks(keys: &[(&str, &str)]) -> String {
        let keys: Vec<String> = keys
            .iter()
            .map(|(kid, x)| {
                format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","use":"sig","x":"{x}"}}"#)
            })
            .collect();
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    /// The public halves of test vectors 1 and 2, base64url.
    const X1: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const X2: &str = "PUAXw-hDiVqStwqnTRt-vJyYLM8uxJaMwM1V8Sr0Zgw";

    /// A test-only RSA key (2048 bits), as PKCS#8, SPKI and the JWK modulus.
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQC/KdNif4Mu2WLJ\n0OsqRU53CHCJwmRHjo5KVO1T5jovBvCVRq/kcP7BPkFxahMx+TOKv1YCqrDtz08m\nbs+cFOImk20bIyywU+osd6x2UUwB35U/m5vnwxcCdvkDRkMi9IKciD7fLqaAE+hW\nAs+65NAnc/UMnm//5HQ8ju+3YBOolyOjBRtX9zUvzO3BK6dIIthk7pOFG4SH5S/I\nj3nfUqUp6awi/3yJSuBdGIE4zPb+xQpySoqUP/E81Cw5aEx86bnFoc0h2RHlIjXn\n7thSTvQ8nh/93kWSfF5WQI1/QdG289PMEFPk4GUpUC44mq7rEv5rgFaFCl5ZIwQL\n4Hv44jnbAgMBAAECggEACVUCDBWW0oYA5pfxAwKYeVh2IKOBaw+F2WcaoYqPCJYE\nJKVrbMbUs5urF4hKy5kTb7s2Iwcw1UsriAAc2SJuhTI+lKE7oJgCyeJFubjvnEp3\n6hUEoA8hY8NpwJkrfzIEi55dw14ZpA2qEpjXNJPQUudm7RNxpZes0lAABSmxi/yk\nl3y2sALtE4CtCKWuSqtlMkbBqdmQCzlsXwgH8FMOX6jxS8sNYl0tYF93HNiK9nfH\n//VTAQKUa9FuG/h7GwNAv2BfEEaOvUaK16kja3vWv4mP4b4zYMtTuENU0s2+4mTx\nlDuR0+HYBg88zn6BFDpUziX5IFws9uvfnsNBUlyVMQKBgQDgc7/HJemQyYq1eEzB\n/CLOZBwhHyGIgQSZRiT2iXsLvJL0M9G50MTjJ0A582iBAP1p6m+15bqiWvAdTmoz\nfY8Ej0FbYz6Oc2s+gTFEU6y3Ivpix8aJjZYkLo0anxvIe4qKEMS1KAXcZu4LbuuY\n9drVvw4qmm9b1uBolrqOSjiQPwKBgQDaCEc8PTuytv0Yi6dy86Ip4EkkoIEB/eeb\nwRBIhXPXur4u/lqiwsYhQPrVWxPtFPp68ZWQ6FN6AZbf6oTCdcAU3KslCWw8Zxpx\nwdq5ci8MqPOJGJYtgoW9QVQx/3g2Iwvv9ymihAPG6c+HhguDM7ufpY48RDoHwWgD\nAGnvlHpvZQKBgQCjTxTGjas3kay/BNy0eAPLL8PXxZLcgyMZcpQKXVWN4JL744hB\nLslSjYiJobTzyAiaO90z+Aangosah6d193FL2/+twrQNaaUqQU3bbRZJ2cVcggbO\nppoLkWNRb1sDr//JHRJCzPAWwT2KTBZXoOqsguqHzP4hUGLPNnxec1pceQKBgFMA\ndcXr9a8KVH2kpKFxOFnCxXWJGLOeai50J/PDwh7tO3t+Xxi5F14Pc64HVyWZJ+Xn\n1C1vFGBM/JfPmqzA0NfgTdLyrF6uTXXi+5Y/bsPeCaA2WO2IU8uBdED4ZVYOr3ux\n1wrEQP/XgKayE+3lotaa2vP8cS8EpMkHvkxzdMy1AoGBAIOtxMXA5HSVgsliY2yE\nN+FB6CDEcQn2WbPAg6coboV0obvl3CzyK8xJLbUnRnnnPc5wlRdgfvYIwPXUj1DJ\nBsX8gFppIeOgGUIycs3QVU83eidEccDaPUe9pvuv5Fpqdt2GkcephV/IhfNf2161\nTq9d2Dc7mb7Gk55AK0byjhNj\n-----END PRIVATE KEY-----\n";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAvynTYn+DLtliydDrKkVO\ndwhwicJkR46OSlTtU+Y6LwbwlUav5HD+wT5BcWoTMfkzir9WAqqw7c9PJm7PnBTi\nJpNtGyMssFPqLHesdlFMAd+VP5ub58MXAnb5A0ZDIvSCnIg+3y6mgBPoVgLPuuTQ\nJ3P1DJ5v/+R0PI7vt2ATqJcjowUbV/c1L8ztwSunSCLYZO6ThRuEh+UvyI9531Kl\nKemsIv98iUrgXRiBOMz2/sUKckqKlD/xPNQsOWhMfOm5xaHNIdkR5SI15+7YUk70\nPJ4f/d5FknxeVkCNf0HRtvPTzBBT5OBlKVAuOJqu6xL+a4BWhQpeWSMEC+B7+OI5\n2wIDAQAB\n-----END PUBLIC KEY-----\n";
    const RSA_N: &str = "vynTYn-DLtliydDrKkVOdwhwicJkR46OSlTtU-Y6LwbwlUav5HD-wT5BcWoTMfkzir9WAqqw7c9PJm7PnBTiJpNtGyMssFPqLHesdlFMAd-VP5ub58MXAnb5A0ZDIvSCnIg-3y6mgBPoVgLPuuTQJ3P1DJ5v_-R0PI7vt2ATqJcjowUbV_c1L8ztwSunSCLYZO6ThRuEh-UvyI9531KlKemsIv98iUrgXRiBOMz2_sUKckqKlD_xPNQsOWhMfOm5xaHNIdkR5SI15-7YUk70PJ4f_d5FknxeVkCNf0HRtvPTzBBT5OBlKVAuOJqu6xL-a4BWhQpeWSMEC-B7-OI52w";

    #[test]
    fn rs256_tokens_verify_against_a_pem_key_and_a_jwks_rsa_key() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("key");
        let sign = |kid: Option<&str>, issuer: &str, audience: &str| {
            let config = AuthConfig {
                issuer: issuer.into(),
                audience: audience.into(),
                ..AuthConfig::default()
            };
            partner_token(Algorithm::RS256, kid, &key, &config)
        };
        let pem = AuthConfig {
            mode: AuthMode::Jwt,
            public_keys: vec![RSA_PUBLIC.into()],
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&pem).expect("auth");
        let who = auth
            .verify(&sign(None, &pem.issuer, &pem.audience))
            .expect("verify");
        assert_eq!(who.partner.as_deref(), Some("MOJ"));
        assert!(
            auth.verify(&sign(None, "someone-else", &pem.audience))
                .is_err(),
            "issuer"
        );
        assert!(
            auth.verify(&sign(None, &pem.issuer, "someone-else"))
                .is_err(),
            "audience"
        );

        let file =
            std::env::temp_dir().join(format!("baladiya-jwks-{}.json", uuid::Uuid::now_v7()));
        std::fs::write(
            &file,
            format!(r#"{{"keys":[{{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"{RSA_N}","e":"AQAB"}}]}}"#),
        )
        .expect("write");
        let jwks = AuthConfig {
            mode: AuthMode::Jwt,
            jwks_file: file.display().to_string(),
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&jwks).expect("auth");
        assert!(
            auth.verify(&sign(Some("r1"), &jwks.issuer, &jwks.audience))
                .is_ok()
        );
        assert!(
            auth.verify(&sign(Some("r2"), &jwks.issuer, &jwks.audience))
                .is_err()
        );
        std::fs::remove_file(&file).ok();
    }

    #[test]
    fn a_jwks_file_rotates_keys_by_kid_without_a_restart() {
        let file =
            std::env::temp_dir().join(format!("baladiya-jwks-{}.json", uuid::Uuid::now_v7()));
        std::fs::write(&file, jwks(&[("k1", X1), ("k2", X2)])).expect("write");
        let config = AuthConfig {
            mode: AuthMode::Jwt,
            jwks_file: file.display().to_string(),
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&config).expect("auth");
        let sign = |kid: &str, private: &str| {
            let key = EncodingKey::from_ed_pem(private.as_bytes()).expect("key");
            partner_token(Algorithm::EdDSA, Some(kid), &key, &config)
        };
        // Both keys of a rotation are in force; the second call of a token
        // is answered from the verified tokens.
        let old = sign("k1", ED25519_PRIVATE);
        assert!(auth.verify(&old).is_ok());
        assert!(auth.verify(&old).is_ok());
        assert!(auth.verify(&sign("k2", ED25519_PRIVATE_2)).is_ok());
        // A token must be signed by the key it names.
        assert!(auth.verify(&sign("k1", ED25519_PRIVATE_2)).is_err());
        let unknown = auth
            .verify(&sign("k3", ED25519_PRIVATE))
            .expect_err("unknown kid");
        assert!(unknown.to_string().contains("k3"), "{unknown}");
        // The old key is dropped from the file: its tokens stop at once.
        std::fs::write(&file, jwks(&[("k2", X2)])).expect("write");
        assert_eq!(auth.reload_jwks().expect("reload"), 1);
        assert!(auth.verify(&old).is_err());
        assert!(auth.verify(&sign("k2", ED25519_PRIVATE_2)).is_ok());
        // A broken file leaves the keys in force.
        std::fs::write(&file, "{ not json").expect("write");
        assert!(auth.reload_jwks().is_err());
        assert!(auth.verify(&sign("k2", ED25519_PRIVATE_2)).is_ok());
        std::fs::remove_file(&file).ok();
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let tokens = VerifiedTokens::default();
        let caller = CallerIdentity {
            subject: "940".into(),
            role: Role::Channel,
            partner: None,
            municipality: None,
            channel: Some("940".into()),
        };
        tokens.keep(0, "t", &caller, 100, 50);
        assert_eq!(tokens.get("t", 100), Ok(caller.clone()));
        assert_eq!(tokens.get("t", 101), Err(0), "expired");
        assert_eq!(tokens.get("u", 50), Err(0), "never verified");
        // Full: the expired make room, and the rest stay.
        for n in 1..VerifiedTokens::CAPACITY {
            tokens.keep(
                0,
                &n.to_string(),
                &caller,
                if n % 2 == 0 { 100 } else { 300 },
                50,
            );
        }
        tokens.keep(0, "fresh", &caller, 300, 200);
        assert_eq!(tokens.get("fresh", 200), Ok(caller.clone()));
        assert_eq!(tokens.get("1", 200), Ok(caller.clone()));
        assert_eq!(tokens.get("2", 200), Err(0));
        assert!(tokens.held().tokens.len() < VerifiedTokens::CAPACITY);
        // A check that began before the keys changed is not kept after.
        tokens.clear();
        tokens.keep(0, "late", &caller, 300, 200);
        assert_eq!(tokens.get("late", 200), Err(1));
    }

    /// A test-only Ed25519 key pair (RFC 8032 test vector 1 as PKCS#8/SPKI).
    const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\n-----END PUBLIC KEY-----\n";
}
