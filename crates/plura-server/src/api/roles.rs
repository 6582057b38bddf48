//! Who may call: extractors that admit a request only with the right credential, before any
//! other part of it is read. `Monitor`, `Operator` and `Admin` take a role token of at least that
//! role; `Enrolled` takes the agents' enrollment token; `AgentKey` carries an agent's own key. A
//! handler states what it needs in its signature, so no handler can forget to check.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use plura_proto::Role;

use super::{ApiError, AppState, bearer};
use crate::auth::Caller;

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        state
            .auth
            .caller(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown API token"))
    }
}

/// Declares an extractor that admits callers of at least `$role`.
macro_rules! role_extractor {
    ($($name:ident => $role:expr),+ $(,)?) => {$(
        #[doc = concat!("A caller with at least the ", stringify!($name), " role.")]
        pub struct $name(pub Caller);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, ApiError> {
                let caller = Caller::from_request_parts(parts, state).await?;
                if caller.may($role) {
                    Ok(Self(caller))
                } else {
                    Err(ApiError::forbidden($role, caller.role))
                }
            }
        }
    )+};
}

role_extractor!(
    Monitor => Role::Monitor,
    Operator => Role::Operator,
    Admin => Role::Admin,
);

/// The key an agent showed; whether it is that agent's is for the fleet to say.
pub struct AgentKey(pub String);

impl FromRequestParts<AppState> for AgentKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Self(bearer(&parts.headers)?.to_string()))
    }
}

/// An agent that showed the current enrollment token, within its source's login rate.
///
/// The rate is charged after the token is checked: tries with a wrong token spend a budget of
/// their own, so junk from an address (or from everyone behind one NAT) never uses up the logins
/// of the real agents there.
pub struct Enrolled;

impl FromRequestParts<AppState> for Enrolled {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(client)| client.ip());
        let enrolled = state.auth.is_enrollment(token).await?;
        let (budget, what) = if enrolled {
            (&state.logins, "logins")
        } else {
            (&state.wrong_enrollment_tokens, "logins with a wrong token")
        };
        if let Some(source) = source {
            budget.take(source).map_err(|wait| {
                ApiError::too_many(wait, format!("too many {what} from {source}"))
            })?;
        }
        if enrolled {
            Ok(Enrolled)
        } else {
            Err(ApiError::unauthorized(
                "not the enrollment token (see 'plura-server enrollment-token')",
            ))
        }
    }
}
