//! The routes agents call: login, heartbeat, logout. They carry the enrollment token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;

use plura_proto::{ErrorBody, LoginRequest, LoginResponse};

use super::error::{Json, Path};
use super::{ApiError, ApiResult, AppState, Enrolled};

/// Registers an unknown (ip, hostname), or brings the known one back to running.
#[utoipa::path(
    post, path = "/api/v1/agents/login", tag = "agent",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Not the enrollment token", body = ErrorBody),
        (status = 422, description = "A field breaks its rule", body = ErrorBody),
    ),
    security(("enrollment_token" = []))
)]
pub async fn login(
    _: Enrolled,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(login): Json<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    login.validate()?;
    let source = peer.ip().to_string();
    let outcome = state.fleet.login(&login, Some(&source)).await?;
    let agent = &outcome.agent;
    tracing::info!(
        agent = agent.id,
        ip = %agent.ip,
        hostname = %agent.hostname,
        created = outcome.created,
        "agent login"
    );
    Ok(Json(LoginResponse {
        agent_id: agent.id,
        created: outcome.created,
        heartbeat_interval_s: state.fleet.policy().heartbeat_interval.as_secs().max(1),
    }))
}

/// Keeps the agent running. 404 means it was deleted: the agent logs in again.
#[utoipa::path(
    post, path = "/api/v1/agents/{id}/heartbeat", tag = "agent",
    params(("id" = i64, Path, description = "The agent id login answered")),
    responses(
        (status = 204, description = "Noted"),
        (status = 404, description = "No such agent: log in again", body = ErrorBody),
    ),
    security(("enrollment_token" = []))
)]
pub async fn heartbeat(
    _: Enrolled,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if state.fleet.heartbeat(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::no_agent(id))
    }
}

/// Graceful shutdown of the agent: it is stopped at once.
#[utoipa::path(
    post, path = "/api/v1/agents/{id}/logout", tag = "agent",
    params(("id" = i64, Path, description = "The agent id login answered")),
    responses(
        (status = 204, description = "Stopped"),
        (status = 404, description = "No such agent", body = ErrorBody),
    ),
    security(("enrollment_token" = []))
)]
pub async fn logout(
    _: Enrolled,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    match state.fleet.logout(id).await? {
        Some(agent) => {
            tracing::info!(agent = id, ip = %agent.ip, hostname = %agent.hostname, "agent logout");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::no_agent(id)),
    }
}
