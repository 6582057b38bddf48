//! A sign-in under way, held by the browser alone: a random secret in a cookie, from which the
//! flow's state, nonce and PKCE verifier are derived. The server keeps nothing of it, so the
//! provider may send the browser back to any server sharing the database, and a flood of flows
//! started fills nothing. Only the browser that started a flow can finish it: the state in the
//! provider's answer must be the one its cookie gives.

use std::time::Duration;

use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge, PkceCodeVerifier};
use plura_proto::Timestamp;

use crate::secret::{constant_time_eq, hash_token, new_token};

/// How long a person has to sign in at the provider.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);

/// The cookie that holds a flow, sent only to the server's `/auth/oidc/` routes.
pub const FLOW_COOKIE: &str = "plura_oidc_flow";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    started: Timestamp,
    secret: String,
}

impl Flow {
    pub fn begin() -> Self {
        Self {
            started: Timestamp::now(),
            secret: new_token("oidc"),
        }
    }

    /// The cookie's value.
    pub fn cookie(&self) -> String {
        format!("{}.{}", self.started.as_millis(), self.secret)
    }

    pub fn from_cookie(value: &str) -> Option<Self> {
        let (started, secret) = value.split_once('.')?;
        Some(Self {
            started: Timestamp::from_millis(started.parse().ok()?),
            secret: secret.to_string(),
        })
        .filter(|flow| flow.secret.starts_with("oidc_") && flow.secret.len() == 53)
    }

    /// Whether it was started longer ago than a flow lasts (or, by a clock gone wrong, later
    /// than now).
    pub fn expired(&self, now: Timestamp) -> bool {
        let age = now.as_millis() - self.started.as_millis();
        !(0..=FLOW_LIFETIME.as_millis() as i64).contains(&age)
    }

    /// A value of this flow for `what`, which nobody without the cookie can make.
    fn derived(&self, what: &str) -> String {
        hash_token(&format!("plura-oidc {what} {}", self.cookie()))
    }

    pub fn state(&self) -> CsrfToken {
        CsrfToken::new(self.derived("state"))
    }

    /// Whether `state`, as the provider sent the browser back with it, is this flow's.
    pub fn is_state(&self, state: &str) -> bool {
        constant_time_eq(state, self.state().secret())
    }

    pub fn nonce(&self) -> Nonce {
        Nonce::new(self.derived("nonce"))
    }

    /// The PKCE verifier: 64 hex characters, within the 43 to 128 RFC 7636 allows.
    pub fn pkce_verifier(&self) -> PkceCodeVerifier {
        PkceCodeVerifier::new(self.derived("pkce"))
    }

    pub fn pkce_challenge(&self) -> PkceCodeChallenge {
        PkceCodeChallenge::from_code_verifier_sha256(&self.pkce_verifier())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_comes_back_from_its_cookie_alone() {
        let flow = Flow::begin();
        let back = Flow::from_cookie(&flow.cookie()).unwrap();
        assert_eq!(back, flow);
        assert!(back.is_state(flow.state().secret()));
        assert_eq!(back.nonce().secret(), flow.nonce().secret());
        assert_eq!(back.pkce_verifier().secret(), flow.pkce_verifier().secret());
        assert!(!back.expired(Timestamp::now()));
    }

    #[test]
    fn another_flow_or_an_altered_cookie_has_other_values() {
        let flow = Flow::begin();
        let other = Flow::begin();
        assert!(!flow.is_state(other.state().secret()));
        assert_ne!(flow.nonce().secret(), other.nonce().secret());
        // Moving the start to keep a flow alive changes every value derived from it.
        let moved = format!("{}.{}", flow.started.as_millis() + 1, flow.secret);
        let moved = Flow::from_cookie(&moved).unwrap();
        assert!(!moved.is_state(flow.state().secret()));
        let verifier = flow.pkce_verifier();
        assert!((43..=128).contains(&verifier.secret().len()));
    }

    #[test]
    fn old_and_malformed_cookies_are_not_flows() {
        let flow = Flow::begin();
        let later =
            Timestamp::from_millis(flow.started.as_millis() + FLOW_LIFETIME.as_millis() as i64 + 1);
        assert!(flow.expired(later));
        for bad in ["", "x", "12.secret", "abc.oidc_00", &flow.secret] {
            assert_eq!(Flow::from_cookie(bad), None, "{bad:?}");
        }
    }
}
