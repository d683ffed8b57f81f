//! Who is calling: bearer JWTs verified into a [`CallerIdentity`] that the
//! gRPC interceptor puts into request extensions, so every handler is written
//! against a caller from the first day.
//!
//! `jwt` mode verifies RS256 or EdDSA tokens against public keys from config
//! (several keys may be active during a rotation) and checks issuer, audience
//! and expiry. `dev` mode accepts only HS256 tokens minted by
//! `baladiya dev-token` with the configured dev secret, and config validation
//! refuses it in production. The interceptor then checks the caller's role
//! against the one policy table ([`crate::policy`]).
//!
//! Token verification (the keys in force, the JWKS file, the tokens already
//! verified, dev tokens) is in `tokens`; this module keeps who a caller is,
//! the rate limit and the interceptor that admits calls. The token types are
//! re-exported here, so their paths are `auth::Name`.

mod tokens;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::error::ApiError;
use crate::policy;

pub use tokens::{AuthError, Authenticator, Claims, DevTokenRequest, mint_dev_token};

/// What a caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A channel front-end (940, portal, app, kiosk, ...), with its channel.
    Channel,
    /// A partner body, with its partner code.
    Partner,
    /// A municipal operator, with a municipality or all of them.
    Operator,
    /// Reads indicators and streams.
    Analyst,
    /// Runs the platform.
    Admin,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "channel" => Ok(Self::Channel),
            "partner" => Ok(Self::Partner),
            "operator" => Ok(Self::Operator),
            "analyst" => Ok(Self::Analyst),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role '{other}': expected channel, partner, operator, analyst or admin"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Channel => "channel",
            Self::Partner => "partner",
            Self::Operator => "operator",
            Self::Analyst => "analyst",
            Self::Admin => "admin",
        };
        f.write_str(s)
    }
}

/// An authenticated caller, found in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The token subject (a system or person id).
    pub subject: String,
    pub role: Role,
    /// Partner code, for `partner` callers.
    pub partner: Option<String>,
    /// Municipality code, for `operator` callers; `None` means all.
    pub municipality: Option<String>,
    /// Channel, for `channel` callers.
    pub channel: Option<String>,
}

impl CallerIdentity {
    /// Whether an object of `municipality` is within this caller's municipal
    /// scope: an operator of one municipality covers that one only; every
    /// other caller is not held to a municipality.
    pub fn covers_municipality(&self, municipality: &str) -> bool {
        self.role != Role::Operator
            || self
                .municipality
                .as_deref()
                .is_none_or(|m| m == municipality)
    }

    /// Whether this caller may be told that an object does not exist (admins,
    /// analysts, operators of every municipality). Callers held to their own
    /// objects get `PERMISSION_DENIED` for a missing object too, so a refusal
    /// tells them nothing.
    pub fn may_know_absence(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Analyst)
            || (self.role == Role::Operator && self.municipality.is_none())
    }

    /// `PERMISSION_DENIED` unless the caller has `role` (admins pass every check).
    pub fn require(&self, role: Role) -> Result<&Self, ApiError> {
        if self.role == role || self.role == Role::Admin {
            Ok(self)
        } else {
            Err(ApiError::permission_denied(format!(
                "requires the {role} role"
            )))
        }
    }
}

/// The caller of a request that went through the auth interceptor.
pub fn caller<T>(request: &Request<T>) -> Result<&CallerIdentity, ApiError> {
    request
        .extensions()
        .get::<CallerIdentity>()
        .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))
}

/// A token bucket per caller: `burst` calls at once, refilled at
/// `per_second`. Buckets that have refilled are forgotten when there are
/// many, so memory stays bounded by the callers active in the last moments.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
}

/// How many idle buckets are kept before refilled ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Takes one call from `key`'s bucket, or says how long until one is there.
    pub fn take(&self, key: &str, now: std::time::Instant) -> Result<(), std::time::Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_second)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - *tokens) / self.per_second,
            ))
        }
    }
}

impl Authenticator {
    /// A tonic interceptor that requires a valid bearer token, checks the
    /// caller's role against [`policy::POLICY`] and stores the caller in
    /// request extensions.
    pub fn interceptor(&self) -> AuthInterceptor {
        self.interceptor_with(&[])
    }

    /// The same for a service whose RPCs are not in [`policy::POLICY`] (one
    /// built outside `baladiya-proto`), with its own rows.
    pub fn interceptor_with(&self, extra: &'static [policy::Rule]) -> AuthInterceptor {
        AuthInterceptor {
            auth: self.clone(),
            extra,
        }
    }
}

/// The full gRPC path of a call (`/package.Service/Method`), which the gRPC
/// server puts into every request's extensions for the policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMethod(pub String);

/// Requires a valid bearer token (or a client certificate naming a service)
/// on every call, checks the policy and puts the [`CallerIdentity`] into the
/// request's extensions; handlers apply the scope the policy names.
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    auth: Authenticator,
    extra: &'static [policy::Rule],
}

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let auth = &self.auth;
        let from_certificate = || {
            request
                .extensions()
                .get::<crate::tls::PeerIdentity>()
                .and_then(|peer| peer.service(&auth.client_certificates))
                .map(|s| CallerIdentity {
                    subject: s.subject.clone(),
                    role: s.role,
                    partner: s.partner.clone(),
                    municipality: s.municipality.clone(),
                    channel: s.channel.clone(),
                })
        };
        let identity = match request.metadata().get("authorization") {
            // A bearer token names the caller; without one, a verified client
            // certificate may name a service.
            None => from_certificate().ok_or_else(|| {
                Status::from(ApiError::unauthenticated(
                    "missing bearer token (and no client certificate that names a service)",
                ))
            })?,
            Some(header) => {
                let token = header
                    .to_str()
                    .ok()
                    .and_then(|h| {
                        h.strip_prefix("Bearer ")
                            .or_else(|| h.strip_prefix("bearer "))
                    })
                    .ok_or_else(|| {
                        Status::from(ApiError::unauthenticated(
                            "authorization must be 'Bearer <token>'",
                        ))
                    })?;
                auth.verify(token.trim())
                    .map_err(|e| Status::from(ApiError::unauthenticated(e.to_string())))?
            }
        };
        {
            let method = request
                .extensions()
                .get::<RpcMethod>()
                .map(|m| m.0.clone())
                .unwrap_or_default();
            let rules = if policy::rule(self.extra, &method).is_some() {
                self.extra
            } else {
                policy::POLICY
            };
            policy::authorize(rules, &method, &identity).map_err(Status::from)?;
            if let Err(wait) = auth.limiter.take(
                &format!("{}\u{1f}{}", identity.role, identity.subject),
                std::time::Instant::now(),
            ) {
                let mut details = tonic_types::ErrorDetails::new();
                details.set_retry_info(Some(wait));
                return Err(<Status as tonic_types::StatusExt>::with_error_details(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "too many calls from this caller; retry in {} ms",
                        wait.as_millis().max(1)
                    ),
                    details,
                ));
            }
            request.extensions_mut().insert(identity);
            Ok(request)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tokens::tests::dev_request;
    use super::*;
    use crate::config::AuthConfig;

    #[test]
    fn interceptor_puts_the_caller_in_extensions() {
        let config = AuthConfig::default();
        let auth = Authenticator::from_config(&config).expect("auth");
        use tonic::service::Interceptor;
        let mut intercept = auth.interceptor();
        let token = mint_dev_token(&config, &dev_request(Role::Admin)).expect("mint");
        let call = |method: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
            request
                .extensions_mut()
                .insert(RpcMethod(method.to_string()));
            request
        };
        let request = intercept
            .call(call("/baladiya.admin.v1.ClockService/SetTime"))
            .expect("accepted");
        assert_eq!(caller(&request).expect("caller").role, Role::Admin);
        let denied = intercept
            .call(call("/baladiya.nothing.v1.Nothing/Call"))
            .expect_err("no policy row");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);

        let status = intercept.call(Request::new(())).expect_err("no token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn the_token_bucket_allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = std::time::Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", t0).is_ok());
        }
        let wait = limiter.take("a", t0).expect_err("burst spent");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(
            limiter.take("b", t0).is_ok(),
            "callers have their own buckets"
        );
        let later = t0 + std::time::Duration::from_millis(500);
        assert!(limiter.take("a", later).is_ok(), "one call refilled");
        assert!(limiter.take("a", later).is_err());
        assert!(RateLimiter::new(0.0, 1).take("a", t0).is_ok(), "0 is off");
    }
}
