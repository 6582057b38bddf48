//! The routes of the cloud watch (`plura-eni watch`): the silent agents it asks EC2 about, the
//! report of each round, and the watched groups' coverage.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use plura_proto::{
    CloudReport, CloudReportOutcome, Coverage, ErrorBody, MAX_VERDICTS_PER_REPORT, SilentAgentList,
};

use super::error::{Json, Query};
use super::{ApiError, ApiResult, AppState, Monitor, Operator};

/// A report carries up to ten thousand verdicts and twenty thousand instances: far more than an
/// agent's call, so its route alone takes this much.
pub const REPORT_BODY_LIMIT: usize = 4 * 1024 * 1024;
pub const REPORT_PATH: &str = "/api/v1/cloud/report";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SilentParams {
    /// Only agents with a larger id (the last id of the previous page).
    after: Option<i64>,
    /// 1 to 10000, default 1000.
    limit: Option<u32>,
}

/// Agents that stopped without a goodbye on an EC2 instance and whose verdict may still change
/// (not `terminated`), in id order: what a watch asks EC2 about (monitor).
#[utoipa::path(
    get, path = "/api/v1/cloud/silent", tag = "cloud", params(SilentParams),
    responses((status = 200, body = SilentAgentList), (status = 403, body = ErrorBody)),
    security(("api_token" = ["monitor"]))
)]
pub async fn silent(
    _: Monitor,
    State(state): State<AppState>,
    Query(params): Query<SilentParams>,
) -> ApiResult<Json<SilentAgentList>> {
    let limit = listed(params.limit)?;
    let items = state
        .fleet
        .silent_agents(params.after.unwrap_or(0), limit as u32)
        .await?;
    Ok(Json(SilentAgentList { items }))
}

/// One round of a watch: the verdict on each silent agent's instance, and each watched group's
/// live instances (operator). Every round reports, even an empty one: while reports come, the
/// stop alerts of agents on EC2 wait for their verdict.
#[utoipa::path(
    post, path = "/api/v1/cloud/report", tag = "cloud", request_body = CloudReport,
    responses(
        (status = 200, body = CloudReportOutcome),
        (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_token" = ["operator"]))
)]
pub async fn report(
    Operator(caller): Operator,
    State(state): State<AppState>,
    Json(report): Json<CloudReport>,
) -> ApiResult<Json<CloudReportOutcome>> {
    report.validate()?;
    let outcome = state.fleet.keep_cloud_report(&report).await?;
    tracing::debug!(
        verdicts = report.verdicts.len(),
        kept = outcome.verdicts_kept,
        groups = outcome.groups,
        "{} reported what the cloud says",
        caller.name
    );
    Ok(Json(outcome))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CoverageParams {
    /// Uncovered instances listed per group, oldest first: 1 to 10000, default 1000.
    limit: Option<u32>,
}

/// Per watched Auto Scaling group: its live instances, how many have a running agent, and the
/// others, with the agent known for each if any (monitor).
#[utoipa::path(
    get, path = "/api/v1/coverage", tag = "cloud", params(CoverageParams),
    responses((status = 200, body = Coverage), (status = 403, body = ErrorBody)),
    security(("api_token" = ["monitor"]))
)]
pub async fn coverage(
    _: Monitor,
    State(state): State<AppState>,
    Query(params): Query<CoverageParams>,
) -> ApiResult<Json<Coverage>> {
    Ok(Json(state.fleet.coverage(listed(params.limit)?).await?))
}

/// How many items a list answers: 1 to as many as a report takes, 1,000 unless asked.
fn listed(limit: Option<u32>) -> ApiResult<usize> {
    let limit = limit.map_or(1000, |n| n as usize);
    if !(1..=MAX_VERDICTS_PER_REPORT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be from 1 to {MAX_VERDICTS_PER_REPORT}"
        )));
    }
    Ok(limit)
}
