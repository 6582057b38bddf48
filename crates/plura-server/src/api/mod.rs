//! The HTTP API: its routes, the state they share, and who may call them.

mod agent;
mod console;
mod error;
mod fleet;
mod ops;
mod session;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use plura_proto::Role;

use crate::auth::{Auth, Caller};
use crate::metrics::{CodeLabel, Metrics};
use crate::registry::Registry;
use crate::store::Store;
use crate::throttle::SignInThrottle;

pub use error::{ApiError, ApiResult};
pub use ops::openapi;

/// Agents send a few hundred bytes; anything near this is not an agent.
const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub sign_ins: Arc<SignInThrottle>,
    /// Cancelled when the server shuts down; ends the live streams so shutdown need not wait
    /// for browsers to hang up.
    pub shutdown: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/agents/login", post(agent::login))
        .route("/api/v1/agents/{id}/heartbeat", post(agent::heartbeat))
        .route("/api/v1/agents/{id}/logout", post(agent::logout))
        .route("/api/v1/agents", get(fleet::list).post(fleet::register))
        .route("/api/v1/agents.csv", get(fleet::csv))
        .route(
            "/api/v1/agents/{id}",
            get(fleet::show).patch(fleet::patch).delete(fleet::delete),
        )
        .route("/api/v1/agents/{id}/events", get(fleet::events))
        .route("/api/v1/summary", get(fleet::summary))
        .route("/api/v1/audit", get(fleet::audit))
        .route("/api/v1/me", get(fleet::whoami))
        .route(
            "/api/v1/session",
            post(session::sign_in).delete(session::sign_out),
        )
        .route("/api/v1/events/stream", get(stream::changes))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/api/openapi.json", get(ops::openapi_json))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(refuse_declared_oversize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A body declared larger than the limit is refused before it is read: the extractors' own limit
/// only trips after reading that much, and a client still sending 10 MB would wait for it.
async fn refuse_declared_oversize(request: Request, next: Next) -> Result<Response, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > BODY_LIMIT as u64 => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is {length} bytes; at most {BODY_LIMIT} are accepted"),
        )),
        _ => Ok(next.run(request).await),
    }
}

async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state
        .metrics
        .http_responses
        .get_or_create(&CodeLabel {
            code: response.status().as_u16(),
        })
        .inc();
    response
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send 'Authorization: Bearer <token>'"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not 'Bearer <token>'"))
}

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

impl Caller {
    pub fn require(&self, needed: Role) -> ApiResult<()> {
        if self.may(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(needed, self.role))
        }
    }
}

/// An agent that showed the current enrollment token.
pub struct Enrolled;

impl FromRequestParts<AppState> for Enrolled {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)?;
        if state.auth.is_enrollment(token).await? {
            Ok(Enrolled)
        } else {
            Err(ApiError::unauthorized(
                "not the enrollment token (see 'plura-server enrollment-token')",
            ))
        }
    }
}
