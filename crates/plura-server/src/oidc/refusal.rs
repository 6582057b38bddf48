//! Why a sign-in through the identity provider was refused, said so the person (or the admin
//! they ask) can act on it.

use axum::http::StatusCode;
use openidconnect::ClaimsVerificationError;

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "The identity provider cannot be reached ({0}). Local users and API tokens still sign in."
    )]
    ProviderUnreachable(String),
    #[error(
        "The identity provider refused the sign-in: {error}{}",
        detail(description)
    )]
    ProviderSaid { error: String, description: String },
    #[error(
        "This sign-in was not started in this browser, or took longer than ten minutes. Start \
         again."
    )]
    NoFlow,
    #[error(
        "The identity provider's answer does not belong to the sign-in this browser started: its \
         state was altered or is another sign-in's. Start again."
    )]
    StateMismatch,
    #[error("The answer came from another identity provider ({0}), not the one this server uses.")]
    WrongIssuer(String),
    #[error("The identity provider's answer has no authorization code.")]
    NoCode,
    #[error("The identity provider did not accept the sign-in's code: {0}")]
    TokenExchange(String),
    #[error("The identity provider answered without an ID token (is the openid scope allowed?).")]
    NoIdToken,
    #[error(
        "The ID token has expired ({0}). If this keeps happening, the clocks of this server and \
         the identity provider disagree."
    )]
    Expired(String),
    #[error(
        "The ID token is not meant for this server: its audience is not the client id {client_id} \
         ({detail})."
    )]
    WrongAudience { client_id: String, detail: String },
    #[error("The ID token does not check out: {0}")]
    BadIdToken(String),
    #[error("The identity provider's UserInfo answer does not check out: {0}")]
    UserInfo(String),
    #[error(
        "{name} is not allowed to use PLURA Fleet: {} gives none of its roles. Ask an \
         administrator to map one of your groups to a role.",
        shown(claim, values)
    )]
    NoRole {
        name: String,
        claim: String,
        values: Option<Vec<String>>,
    },
    #[error("{name} was disabled by an administrator of PLURA Fleet.")]
    Disabled { name: String },
    #[error(
        "The sign-in could not be recorded: the server's database is unavailable. Try again shortly."
    )]
    Unrecorded,
}

impl Refusal {
    /// What an ID token that does not check out is refused as.
    pub fn from_claims(error: ClaimsVerificationError, client_id: &str) -> Self {
        match error {
            ClaimsVerificationError::Expired(detail) => Self::Expired(detail),
            ClaimsVerificationError::InvalidAudience(detail) => Self::WrongAudience {
                client_id: client_id.to_string(),
                detail,
            },
            other => Self::BadIdToken(super::chain(&other)),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::ProviderUnreachable(_)
            | Self::TokenExchange(_)
            | Self::NoIdToken
            | Self::UserInfo(_) => StatusCode::BAD_GATEWAY,
            Self::Unrecorded => StatusCode::SERVICE_UNAVAILABLE,
            Self::NoFlow | Self::StateMismatch | Self::WrongIssuer(_) | Self::NoCode => {
                StatusCode::BAD_REQUEST
            }
            Self::ProviderSaid { .. }
            | Self::Expired(_)
            | Self::WrongAudience { .. }
            | Self::BadIdToken(_)
            | Self::NoRole { .. }
            | Self::Disabled { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The person refused, when the provider said who they are.
    pub fn person(&self) -> Option<&str> {
        match self {
            Self::NoRole { name, .. } | Self::Disabled { name } => Some(name),
            _ => None,
        }
    }
}

fn detail(description: &str) -> String {
    match description {
        "" => String::new(),
        text => format!(" ({text})"),
    }
}

fn shown(claim: &str, values: &Option<Vec<String>>) -> String {
    match values {
        None => format!("the identity provider sent no {claim} claim, which"),
        Some(values) if values.is_empty() => format!("an empty {claim} claim"),
        Some(values) => format!("the {claim} claim ({})", values.join(", ")),
    }
}
