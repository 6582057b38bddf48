//! The routes for the people who run the server: health, metrics, and the API's own description.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, Monitor};
use crate::server::Peer;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
    database: &'static str,
}

/// Whether the server and its database answer.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.fleet.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok",
                database: "ok",
            }),
        ),
        Err(e) => {
            tracing::warn!("health check: database does not answer: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Health {
                    status: "degraded",
                    database: "unreachable",
                }),
            )
        }
    }
}

/// A scraper on this machine needs no token; one from elsewhere, or through a trusted proxy
/// (which connects from this machine on behalf of anyone), needs any role token.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let local = parts
            .extensions
            .get::<Peer>()
            .is_some_and(|peer| peer.addr.ip().is_loopback() && !peer.trusted_proxy);
        if !local {
            Monitor::from_request_parts(parts, state).await?;
        }
        Ok(MetricsReader)
    }
}

/// Prometheus text exposition.
#[utoipa::path(
    get, path = "/metrics", tag = "ops",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)),
    security((), ("api_token" = ["monitor"]))
)]
pub async fn metrics(
    _: MetricsReader,
    State(state): State<AppState>,
) -> ApiResult<impl IntoResponse> {
    let summary = state.fleet.summary().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(&summary, state.fleet.search_index_agents()),
    ))
}
