//! The HTTP API: its routes (built with their OpenAPI description, so the two cannot disagree),
//! the state they share, who may call them, and the limits every request is held to.

mod agent;
mod alerts;
mod cloud;
mod console;
mod credentials;
mod doc;
mod error;
mod manage;
mod oidc;
mod ops;
mod roles;
mod session;
mod stream;

pub use manage::{MAX_EXPORTS, MAX_EXPORTS_PER_CREDENTIAL};
pub use stream::{MAX_STREAMS, MAX_STREAMS_PER_CREDENTIAL};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::alerts::Alerter;
use crate::auth::Auth;
use crate::fleet::Fleet;
use crate::metrics::{CodeLabel, Metrics};
use crate::rate::SourceRate;
use crate::throttle::SignInThrottle;

pub use error::{ApiError, ApiResult};
pub use roles::{Admin, AgentKey, Enrolled, Monitor, Operator};

/// Agents send a few hundred bytes; anything near this is not an agent.
const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach, behind one `Arc`: axum clones the state for each request and
/// each extractor, and a clone of the parts themselves (six `Arc`s and a cancellation token)
/// showed in the heartbeat path's profile.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`]. Agents are reached only through the fleet, which publishes every
/// change; there is no store here to write past it.
pub struct Shared {
    pub fleet: Arc<Fleet>,
    pub alerter: Arc<Alerter>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub sign_ins: Arc<SignInThrottle>,
    /// Logins per source address.
    pub logins: Arc<SourceRate>,
    /// Logins with a wrong enrollment token per source address: a budget apart from `logins`.
    pub wrong_enrollment_tokens: Arc<SourceRate>,
    /// Sign-in through the identity provider, when the server is set up for it.
    pub oidc: Option<Arc<crate::oidc::RelyingParty>>,
    /// Sign-ins through the identity provider begun or finished per source address: each makes
    /// the server call the provider.
    pub sso_tries: Arc<SourceRate>,
    /// Live streams open, in all and per credential.
    pub streams: Arc<crate::slots::Slots>,
    /// CSV exports running, in all and per credential.
    pub exports: Arc<crate::slots::Slots>,
    /// Cancelled when the server shuts down; ends the live streams so shutdown need not wait
    /// for browsers to hang up.
    pub shutdown: CancellationToken,
}

/// The documented routes with their handlers, and their OpenAPI document.
fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut openapi) = OpenApiRouter::with_openapi(doc::ApiDoc::openapi())
        .routes(routes!(agent::login))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::logout))
        .routes(routes!(manage::list, manage::register))
        .routes(routes!(manage::csv))
        .routes(routes!(manage::show, manage::patch, manage::delete))
        .routes(routes!(manage::events))
        .routes(routes!(manage::summary))
        .routes(routes!(manage::audit))
        .routes(routes!(manage::history))
        .routes(routes!(manage::whoami))
        .routes(routes!(alerts::webhooks, alerts::add_webhook))
        .routes(routes!(alerts::delete_webhook))
        .routes(routes!(alerts::deliveries))
        .routes(routes!(credentials::tokens, credentials::create_token))
        .routes(routes!(credentials::revoke_token))
        .routes(routes!(credentials::users, credentials::create_user))
        .routes(routes!(credentials::patch_user, credentials::delete_user))
        .routes(routes!(session::sign_in, session::sign_out))
        .routes(routes!(oidc::offer, oidc::pick_up))
        .routes(routes!(stream::changes))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(cloud::silent))
        .routes(routes!(cloud::coverage))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(cloud::report))
                .layer(DefaultBodyLimit::max(cloud::REPORT_BODY_LIMIT)),
        )
        .split_for_parts();
    doc::with_common_errors(&mut openapi);
    (routes, openapi)
}

/// The whole HTTP API; a request not answered within `request_timeout` (a body sent too slowly)
/// gets 408.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (api, doc) = documented();
    let doc = Arc::new(doc);
    api.route(
        "/api/openapi.json",
        get(move || async move { axum::Json(doc.as_ref().clone()) }),
    )
    .route("/", get(console::index))
    .route(oidc::LOGIN_PATH, get(oidc::login))
    .route(crate::oidc::CALLBACK_PATH, get(oidc::callback))
    .route("/console/{file}", get(console::asset))
    .fallback(|| async { ApiError::not_found("no such route") })
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    })
    .layer(DefaultBodyLimit::max(BODY_LIMIT))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        request_timeout,
    ))
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
    let limit = if request.uri().path() == cloud::REPORT_PATH {
        cloud::REPORT_BODY_LIMIT
    } else {
        BODY_LIMIT
    };
    match declared {
        Some(length) if length > limit as u64 => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is {length} bytes; at most {limit} are accepted"),
        )),
        _ => Ok(next.run(request).await),
    }
}

async fn count_responses(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response
        .extensions()
        .get::<error::StorageFailure>()
        .is_some()
    {
        state.metrics.database_failures.inc();
    }
    state
        .metrics
        .http_responses
        .get_or_create(&CodeLabel {
            code: response.status().as_u16(),
        })
        .inc();
    response
}

/// The token of `Authorization: Bearer <token>`.
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
