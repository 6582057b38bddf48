//! The routes agents call: login (with the enrollment token), which answers the agent's own key,
//! and heartbeat and logout (with that key, for that agent only).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;

use plura_proto::{ErrorBody, LoginRequest, LoginResponse};

use super::error::{Json, Path};
use super::{AgentKey, ApiError, ApiResult, AppState, Enrolled};
use crate::store::KeyedCall;

/// Registers an unknown (ip, hostname), or brings the known one back to running.
#[utoipa::path(
    post, path = "/api/v1/agents/login", tag = "agent",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 401, description = "Not the enrollment token", body = ErrorBody),
        (status = 403, description = "A new identity, and the fleet holds the agents --max-agents allows (agent_limit): known agents still log in", body = ErrorBody),
        (status = 422, description = "A field breaks its rule", body = ErrorBody),
        (status = 429, description = "Too many logins (or tries with a wrong token) from this address; see Retry-After", body = ErrorBody),
        (status = 503, description = "The database cannot serve now (unreachable, read-only or full); see Retry-After", body = ErrorBody),
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
    let outcome = state.fleet.login(&login, Some(&source)).await??;
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
        agent_key: outcome.key,
        created: outcome.created,
        heartbeat_interval_s: state.fleet.policy().heartbeat_interval.as_secs().max(1),
    }))
}

/// Keeps the agent running. 401 means the key is not the agent's current one (a newer login,
/// a logout, a delete): the agent logs in again.
#[utoipa::path(
    post, path = "/api/v1/agents/{id}/heartbeat", tag = "agent",
    params(("id" = i64, Path, description = "The agent id login answered")),
    responses(
        (status = 204, description = "Noted"),
        (status = 401, description = "Not this agent's current key, or no such agent: log in again", body = ErrorBody),
        (status = 503, description = "The database cannot serve now and this server does not hold the agent's key: try again after Retry-After, do not log in", body = ErrorBody),
    ),
    security(("agent_key" = []))
)]
pub async fn heartbeat(
    AgentKey(key): AgentKey,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    answer(id, state.fleet.heartbeat(id, &key).await?)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Graceful shutdown of the agent: it is stopped at once, and its key revoked.
#[utoipa::path(
    post, path = "/api/v1/agents/{id}/logout", tag = "agent",
    params(("id" = i64, Path, description = "The agent id login answered")),
    responses(
        (status = 204, description = "Stopped; the key is revoked"),
        (status = 401, description = "Not this agent's current key, or no such agent", body = ErrorBody),
    ),
    security(("agent_key" = []))
)]
pub async fn logout(
    AgentKey(key): AgentKey,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    let agent = answer(id, state.fleet.logout(id, &key).await?)?;
    tracing::info!(agent = id, ip = %agent.ip, hostname = %agent.hostname, "agent logout");
    Ok(StatusCode::NO_CONTENT)
}

/// The result of a call made with an agent key, or the refusal to answer: the same 401 for an
/// agent that does not exist (deleted) as for a key that is not its current one, so ids cannot be
/// counted without a key. Either way the agent logs in again, which registers a deleted one anew.
fn answer<T>(id: i64, call: KeyedCall<T>) -> ApiResult<T> {
    match call {
        KeyedCall::Done(done) => Ok(done),
        KeyedCall::NoAgent | KeyedCall::WrongKey => Err(ApiError::unauthorized(format!(
            "not the current key of agent {id}: log in again for a new one"
        ))),
    }
}
