//! Dev tokens and requests that carry them.

use baladiya_platform::auth::{AuthError, DevTokenRequest, Role, mint_dev_token};
use baladiya_platform::config::AuthConfig;

/// Adds `authorization: Bearer <token>` to a request.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// A dev token to mint (`auth.mode = "dev"`): subject `test`, valid for an
/// hour, no partner, municipality or channel unless set.
#[derive(Debug, Clone)]
pub struct DevToken {
    request: DevTokenRequest,
}

impl DevToken {
    /// A token for `role`.
    pub fn new(role: Role) -> Self {
        Self {
            request: DevTokenRequest {
                subject: "test".into(),
                role,
                partner: None,
                municipality: None,
                channel: None,
                ttl: chrono::Duration::hours(1),
            },
        }
    }

    /// A partner's system: role `partner`, subject `<code>-system`.
    pub fn partner_system(code: &str) -> Self {
        Self::new(Role::Partner)
            .subject(format!("{code}-system"))
            .partner(code)
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.request.subject = subject.into();
        self
    }

    /// The partner it is scoped to (`None`: none).
    pub fn partner<'a>(mut self, code: impl Into<Option<&'a str>>) -> Self {
        self.request.partner = code.into().map(String::from);
        self
    }

    /// The municipality it is scoped to (`None`: none).
    pub fn municipality<'a>(mut self, code: impl Into<Option<&'a str>>) -> Self {
        self.request.municipality = code.into().map(String::from);
        self
    }

    /// The intake channel it speaks for (`None`: none).
    pub fn channel<'a>(mut self, code: impl Into<Option<&'a str>>) -> Self {
        self.request.channel = code.into().map(String::from);
        self
    }

    /// How long it is valid.
    pub fn ttl(mut self, ttl: chrono::Duration) -> Self {
        self.request.ttl = ttl;
        self
    }

    /// The signed token, or why `auth` refuses it.
    pub fn try_mint(&self, auth: &AuthConfig) -> Result<String, AuthError> {
        mint_dev_token(auth, &self.request)
    }

    /// The signed token; panics where `auth` refuses it (a test's set-up).
    pub fn mint(&self, auth: &AuthConfig) -> String {
        self.try_mint(auth).expect("dev token")
    }
}
