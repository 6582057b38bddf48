//! The routes for the people who run the server: health, metrics, and the API's own description.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, AppState, Monitor};
use crate::server::Peer;

/// How long readiness waits for the database: a balancer's check must not hang.
const READINESS_WAIT: Duration = Duration::from_millis(1500);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// Whether the server process runs: it answers this whatever its database does (heartbeats of
/// running agents are answered from memory through a database outage), so a supervisor that
/// restarts on failure must use this, not `/readyz`.
#[utoipa::path(
    get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health))
)]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    status: &'static str,
    database: &'static str,
    /// Why the database cannot serve, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Whether the server can use its database now, within two seconds: 200, or 503 while the
/// database is unreachable or read-only (for a balancer choosing where logins and changes go).
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, body = Readiness),
        (status = 503, description = "The database cannot serve", body = Readiness),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let checked = match tokio::time::timeout(READINESS_WAIT, state.fleet.check_database()).await {
        Ok(checked) => checked,
        Err(_) => Err(format!(
            "the database did not answer within {READINESS_WAIT:?}"
        )),
    };
    state.metrics.database_up.set(i64::from(checked.is_ok()));
    match checked {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Readiness {
                status: "ready",
                database: "ok",
                reason: None,
            }),
        ),
        Err(reason) => {
            tracing::warn!("not ready: {reason}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Readiness {
                    status: "unavailable",
                    database: "unavailable",
                    reason: Some(reason),
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
    // Through a database outage the metrics still answer (saying so), with the agent counts
    // as they last were.
    let summary = match state.fleet.summary().await {
        Ok(summary) => Some(summary),
        Err(e) => {
            tracing::warn!("metrics without fresh agent counts: {e}");
            None
        }
    };
    let coverage = match state.fleet.coverage_counts().await {
        Ok(coverage) => Some(coverage),
        Err(e) => {
            tracing::warn!("metrics without fresh coverage: {e}");
            None
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(
            summary.as_ref(),
            coverage.as_ref(),
            state.fleet.search_index_agents(),
        ),
    ))
}
