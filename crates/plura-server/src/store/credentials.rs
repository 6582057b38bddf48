//! What the credentials' storage takes and answers: role tokens, console users (local, or people
//! of the identity provider) and their sign-ins.

use async_trait::async_trait;
use plura_proto::{Role, Timestamp, TokenInfo, UserInfo};

use super::{Actor, Audit, Result};

/// Which credential a caller showed, by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    /// A role token (`token create`, or made by an admin through the API).
    Token(i64),
    /// A console sign-in.
    Session(i64),
}

/// Who holds a credential, as the database has them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub credential: Credential,
    /// The token's or the signed-in user's name.
    pub name: String,
    pub role: Role,
    /// When the credential stops working, if it ever does.
    pub expires_at: Option<Timestamp>,
}

/// A console user as a sign-in checks it.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
}

/// A person the identity provider vouched for, as a sign-in through it records them.
#[derive(Debug, Clone)]
pub struct SsoPerson {
    /// The provider (OpenID Connect issuer) and its id for the person (`sub`): who they are.
    pub issuer: String,
    pub subject: String,
    /// The name their user gets when it is made (`sso:` and their preferred name or email).
    pub name: String,
    /// The role their claims give them now.
    pub role: Role,
    /// Which claim value gave that role, for the audit log.
    pub because: String,
}

/// What became of a sign-in through the identity provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoSignIn {
    /// Signed in as the user `name`; `made` at this first sign-in.
    Started { name: String, made: bool },
    /// The person's user was disabled by an admin: no sign-in (and it stays disabled).
    Disabled { name: String },
}

/// A token named by its name or its id (names are never all digits, so the two cannot mix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRef<'a> {
    Name(&'a str),
    Id(i64),
}

impl<'a> TokenRef<'a> {
    pub fn parse(text: &'a str) -> Self {
        match text.parse() {
            Ok(id) if text.bytes().all(|b| b.is_ascii_digit()) => Self::Id(id),
            _ => Self::Name(text),
        }
    }
}

/// What an admin does to a console user. Each but `Enable` ends the user's sign-ins.
#[derive(Debug, Clone)]
pub enum UserChange {
    Disable,
    Enable,
    Delete,
    /// The new password's hash.
    SetPassword(String),
}

/// Who may call: role tokens (stored as hashes), console users (Argon2 hashes of their
/// passwords) and their sign-ins. Every change is written with its audit record, in one
/// transaction.
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// Stores a role token's hash; `expires_at` `None` never expires.
    async fn add_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        expires_at: Option<Timestamp>,
        by: Actor<'_>,
    ) -> Result<TokenInfo>;

    /// Every role token, by name.
    async fn tokens(&self) -> Result<Vec<TokenInfo>>;

    /// Deletes a role token; answers it, or `None` if there is no such token.
    async fn revoke_token(&self, token: TokenRef<'_>, by: Actor<'_>) -> Result<Option<TokenInfo>>;

    /// Who holds the token or sign-in with this hash, unless it expired before `now` or its
    /// user is disabled.
    async fn holder(&self, hash: &str, now: Timestamp) -> Result<Option<Holder>>;

    /// Writes when credentials were last used (a batch of them, kept in memory meanwhile).
    async fn record_use(&self, used: &[(Credential, Timestamp)]) -> Result<()>;

    /// Starts a sign-in for the user `name`, unless the user is gone or disabled by now.
    async fn add_session(
        &self,
        name: &str,
        hash: &str,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool>;

    /// Ends a sign-in (sign-out); answers whether there was one. Role tokens are not sign-ins
    /// and stay.
    async fn remove_session(&self, hash: &str) -> Result<bool>;

    async fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        by: Actor<'_>,
    ) -> Result<UserInfo>;

    /// Signs in a person the identity provider vouched for, with a session of this hash: makes
    /// their user at the first sign-in, and sets its role again each time, unless an admin
    /// disabled it. The sign-in, or its refusal, is in the audit log.
    async fn sso_sign_in(
        &self,
        person: &SsoPerson,
        hash: &str,
        at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<SsoSignIn>;

    /// Writes an audit record of something that changed nothing (a refused sign-in).
    async fn record_audit(&self, audit: Audit<'_>) -> Result<()>;

    /// The local user with this name, as a password sign-in checks it (a person of the identity
    /// provider has no password here, so is not one).
    async fn user(&self, name: &str) -> Result<Option<StoredUser>>;

    /// Every console user, by name.
    async fn users(&self, now: Timestamp) -> Result<Vec<UserInfo>>;

    /// Changes a user; answers it as it is after (before, when deleted), or `None` if there is
    /// no such user.
    async fn change_user(
        &self,
        name: &str,
        change: UserChange,
        by: Actor<'_>,
    ) -> Result<Option<UserInfo>>;
}
