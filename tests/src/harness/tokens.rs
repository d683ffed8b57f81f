//! Dev tokens for a test's platform (see `baladiya_testkit::DevToken` for
//! any other shape of token).

use baladiya_platform::auth::Role;
use baladiya_platform::config::Config;
use baladiya_testkit::DevToken;

/// A dev token for `role`: subject `test`; a partner's is MOTLS's, a
/// channel's the 940 call centre's.
pub fn token(config: &Config, role: Role) -> String {
    DevToken::new(role)
        .partner((role == Role::Partner).then_some("MOTLS"))
        .channel((role == Role::Channel).then_some("CHANNEL_CALL_CENTER_940"))
        .mint(&config.auth)
}

/// A token of partner `code`'s system (subject `<code>-system`).
pub fn partner_token(config: &Config, code: &str) -> String {
    DevToken::partner_system(code).mint(&config.auth)
}

/// A token scoped to `partner` or `municipality` (or neither), with subject
/// `<role>-<scope>` (`<role>-all` unscoped) as audit rows name it; a
/// channel's speaks for the 940 call centre.
pub fn scoped_token(
    config: &Config,
    role: Role,
    partner: Option<&str>,
    municipality: Option<&str>,
) -> String {
    DevToken::new(role)
        .subject(format!(
            "{role}-{}",
            partner.or(municipality).unwrap_or("all")
        ))
        .partner(partner)
        .municipality(municipality)
        .channel((role == Role::Channel).then_some("CHANNEL_CALL_CENTER_940"))
        .mint(&config.auth)
}
