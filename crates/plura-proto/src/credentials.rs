//! Who may call the API, as admins manage it: role tokens for scripts and people, console users
//! with a password, and the rules their names and lifetimes follow.
//!
//! A token is listed with everything but its secret, which is shown once, when it is made. A
//! console sign-in is not a token: it belongs to its user and ends with them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::rules::{FieldError, field_error};
use crate::{Role, Timestamp};

/// Longest token or user name.
pub const MAX_CREDENTIAL_NAME_LEN: usize = 64;
/// The shortest password taken.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password taken (Argon2 takes any length; this only bounds the work per sign-in).
pub const MAX_PASSWORD_LEN: usize = 256;
/// The longest lifetime a token may be given (ten years).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// An API token as it is listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// When it was last used (written every few seconds, not on every call); `null`: never.
    pub last_used_at: Option<Timestamp>,
    /// `null`: it does not expire.
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
}

/// An API token to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Unique; letters, digits and `-_.@ `, not all digits (those are ids).
    pub name: String,
    pub role: Role,
    /// How long it works, e.g. `90d`, `12h`; leave out for a token that does not expire.
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// A token just made: its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    pub token: String,
    pub info: TokenInfo,
}

/// A console user as it is listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// When it was disabled; `null`: it may sign in.
    pub disabled_at: Option<Timestamp>,
    /// Its newest sign-in that still lasts, if any.
    pub last_sign_in_at: Option<Timestamp>,
    /// Its sign-ins that have not ended.
    pub sessions: u64,
    /// The identity provider (OpenID Connect issuer) this person signs in through; `null`: a
    /// local user with a password.
    #[serde(default)]
    pub sso_issuer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserList {
    pub items: Vec<UserInfo>,
}

/// A console user to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    /// At least 12 characters; leave out to have one made and answered once.
    #[serde(default)]
    pub password: Option<String>,
}

/// A user just made, with its password when the server made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedUser {
    pub user: UserInfo,
    pub password: Option<String>,
}

/// A change to a console user: disable or enable it, or set its password (which ends its
/// sign-ins).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchUser {
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub password: Option<String>,
}

/// A token's or user's name: printable, at most 64 bytes, not all digits (a token is named by its
/// id or its name, so a name must not look like an id).
pub fn validate_credential_name(name: &str) -> Result<(), FieldError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.@ ".contains(c);
    if name.trim().is_empty() || name.len() > MAX_CREDENTIAL_NAME_LEN {
        return Err(field_error(
            "name",
            format!("a name is 1 to {MAX_CREDENTIAL_NAME_LEN} bytes"),
        ));
    }
    if !name.chars().all(allowed) || name != name.trim() {
        return Err(field_error(
            "name",
            "a name is ASCII letters, digits, spaces (not at either end) and -_.@",
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(field_error(
            "name",
            "a name cannot be all digits: those are ids",
        ));
    }
    Ok(())
}

/// A password of 12 to 256 characters.
pub fn validate_password(password: &str) -> Result<(), FieldError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(field_error(
            "password",
            format!(
                "a password is at least {MIN_PASSWORD_LEN} characters and at most \
                 {MAX_PASSWORD_LEN} bytes"
            ),
        ));
    }
    Ok(())
}

/// A token's lifetime from text such as `90d` or `12h`: at least a minute, at most ten years.
pub fn parse_lifetime(text: &str) -> Result<Duration, FieldError> {
    let lifetime = humantime::parse_duration(text.trim()).map_err(|e| {
        field_error(
            "expires_in",
            format!("{text:?} is not a duration such as 90d or 12h: {e}"),
        )
    })?;
    if lifetime < Duration::from_secs(60) || lifetime > MAX_TOKEN_LIFETIME {
        return Err(field_error(
            "expires_in",
            "a token lasts at least a minute and at most ten years",
        ));
    }
    Ok(lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_printable_bounded_and_never_ids() {
        for good in ["admin", "ci deploy", "grafana-ro", "ops@example.com", "a1"] {
            assert!(validate_credential_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "12",
            " lead",
            "tab\there",
            "é",
            "a\u{200b}b",
            &"x".repeat(65),
        ] {
            assert!(validate_credential_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lifetimes_are_bounded() {
        assert_eq!(
            parse_lifetime("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        for bad in ["", "soon", "30s", "11y", "-1d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_have_a_length() {
        assert!(validate_password("correct horse").is_ok());
        assert!(validate_password("short").is_err());
        assert!(validate_password(&"p".repeat(257)).is_err());
    }
}
