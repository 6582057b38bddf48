//! Console sign-in with a name and password, and sign-out. A sign-in mints a role token that
//! expires, so every other route keeps one way of authenticating.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};

use plura_proto::{ErrorBody, Session, SignIn};

use super::error::Json;
use super::{ApiError, ApiResult, AppState, Monitor};

/// The longest user name accepted (names are made by admins; anything longer is not one).
pub const MAX_USER_NAME: usize = 64;

/// Signs in; the same 401 for an unknown user and a wrong password.
#[utoipa::path(
    post, path = "/api/v1/session", tag = "fleet", request_body = SignIn,
    responses(
        (status = 200, body = Session),
        (status = 400, description = "A user name longer than 64 bytes", body = ErrorBody),
        (status = 401, description = "Unknown user or wrong password", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins for this account, or too many password checks at once; see Retry-After", body = ErrorBody),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(form): Json<SignIn>,
) -> ApiResult<Json<Session>> {
    if form.username.len() > MAX_USER_NAME {
        let shown: String = form.username.chars().take(32).collect();
        tracing::warn!(user = %shown, from = %peer.ip(), "sign-in with an over-long user name");
        return Err(ApiError::bad_request(format!(
            "user names are at most {MAX_USER_NAME} bytes"
        )));
    }
    let attempt = state
        .sign_ins
        .begin(peer.ip(), &form.username)
        .map_err(|wait| {
            tracing::warn!(user = %form.username, from = %peer.ip(), "sign-in throttled");
            ApiError::too_many(wait, "too many failed sign-ins; try again later")
        })?;
    // Each check takes Argon2's memory and a core for a while: a few at once, the rest wait a
    // little or are told to come back.
    let _check = state
        .auth
        .password_check()
        .await
        .ok_or_else(ApiError::passwords_busy)?;
    let session = state
        .auth
        .sign_in(&form.username, &form.password)
        .await
        .map_err(|e| {
            tracing::error!("sign-in failed: {e:#}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "sign-in failed; see the server's log",
            )
        })?;
    match session {
        Some(session) => {
            attempt.succeeded();
            tracing::info!(user = %session.name, role = %session.role, "signed in");
            Ok(Json(session))
        }
        None => {
            attempt.failed();
            tracing::warn!(user = %form.username, from = %peer.ip(), "sign-in refused");
            Err(ApiError::unauthorized("unknown user or wrong password"))
        }
    }
}

/// Signs out: the session token of this request stops working. An API token made with
/// `plura-server token create` is not a session and stays valid (400).
#[utoipa::path(
    delete, path = "/api/v1/session", tag = "fleet",
    responses(
        (status = 204, description = "Signed out"),
        (status = 400, description = "Not a session token", body = ErrorBody),
        (status = 401, body = ErrorBody),
    ),
    security(("api_token" = ["monitor"]))
)]
pub async fn sign_out(
    _: Monitor,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    if state.auth.sign_out(super::bearer(&headers)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::bad_request(
            "this is an API token, not a console session: signing out does not revoke it",
        ))
    }
}
