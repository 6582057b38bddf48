//! The routes people and scripts call to see and manage the fleet. They carry a role token, and
//! each states the least role it needs.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

use plura_proto::{
    Agent, AgentList, AgentStatus, AuditList, ErrorBody, EventList, FleetHistory, PatchAgent,
    RegisterAgent, Summary, Verdict, WhoAmI,
};

use super::error::{Json, Path, Query};
use super::{Admin, ApiError, ApiResult, AppState, Monitor, Operator};
use crate::fleet::StreamBounds;
use crate::server::ConnectionAbort;
use crate::store::{ListFilter, SortColumn};

/// An export may run ten minutes, and its reader may take nothing for ten seconds.
const EXPORT_BOUNDS: StreamBounds = StreamBounds {
    deadline: Duration::from_secs(600),
    stall: Duration::from_secs(10),
};
/// When a caller refused an export may try again.
const RETRY_EXPORT: Duration = Duration::from_secs(10);
/// Exports running at once, in all and per credential.
pub const MAX_EXPORTS: usize = 4;
pub const MAX_EXPORTS_PER_CREDENTIAL: usize = 2;
const DEFAULT_PER_PAGE: u32 = 50;
const MAX_PER_PAGE: u32 = 1000;
const MAX_RECORDS: u32 = 1000;

/// Filters, search, order and page of the agent list. Empty values mean "any".
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `running`, `stopped` or `unknown`.
    status: Option<String>,
    group: Option<String>,
    kind: Option<String>,
    os: Option<String>,
    /// `true` for ON, `false` for OFF.
    enabled: Option<bool>,
    /// Availability zone, e.g. `ap-northeast-2a`.
    zone: Option<String>,
    /// Auto Scaling group.
    asg: Option<String>,
    /// What the cloud said of a silent agent's instance: `running`, `terminated`,
    /// `instance_stopped` or `unknown`.
    verdict: Option<String>,
    /// `true`: only agents whose last login came from another address than the one they claim.
    source_differs: Option<bool>,
    /// Text found anywhere in ip, hostname, group, OS, version or machine id.
    q: Option<String>,
    /// A column (`id`, `ip`, `hostname`, `status`, `enabled`, `group`, `kind`, `os`,
    /// `version`, `registered_at`, `last_login_at`, `last_seen_at`); `-` in front for
    /// descending.
    sort: Option<String>,
    /// From 1.
    page: Option<u32>,
    /// 1 to 1000, default 50.
    per_page: Option<u32>,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

impl ListParams {
    fn filter(&self) -> ApiResult<ListFilter> {
        let status = non_empty(&self.status)
            .map(|s| s.parse::<AgentStatus>())
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("status: {e}")))?;
        let sort = non_empty(&self.sort).unwrap_or_else(|| "id".into());
        let (name, descending) = match sort.strip_prefix('-') {
            Some(name) => (name, true),
            None => (sort.as_str(), false),
        };
        let sort = SortColumn::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = SortColumn::ALL.iter().map(|c| c.name()).collect();
            ApiError::bad_request(format!(
                "sort: {name:?} is not one of: {}",
                names.join(", ")
            ))
        })?;
        let checked = |field: &'static str, value: &Option<String>| {
            let value = non_empty(value);
            value
                .as_deref()
                .map_or(Ok(()), |v| plura_proto::validate_filter(field, v))
                .map(|()| value)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        };
        Ok(ListFilter {
            status,
            group: checked("group", &self.group)?,
            kind: checked("kind", &self.kind)?,
            os: checked("os", &self.os)?,
            enabled: self.enabled,
            zone: checked("zone", &self.zone)?,
            asg: checked("asg", &self.asg)?,
            verdict: non_empty(&self.verdict)
                .map(|v| v.parse::<Verdict>())
                .transpose()
                .map_err(|e| ApiError::bad_request(format!("verdict: {e}")))?,
            source_differs: self.source_differs.unwrap_or(false),
            text: checked("q", &self.q)?,
            sort,
            descending,
            limit: None,
            offset: 0,
        })
    }

    fn page(&self) -> ApiResult<(u32, u32)> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE);
        if page == 0 {
            return Err(ApiError::bad_request("page: pages count from 1"));
        }
        if !(1..=MAX_PER_PAGE).contains(&per_page) {
            return Err(ApiError::bad_request(format!(
                "per_page: must be from 1 to {MAX_PER_PAGE}"
            )));
        }
        Ok((page, per_page))
    }
}

/// One page of the agent list.
#[utoipa::path(
    get, path = "/api/v1/agents", tag = "fleet", params(ListParams),
    responses(
        (status = 200, body = AgentList),
        (status = 400, description = "A bad filter", body = ErrorBody),
    ),
    security(("api_token" = ["monitor"]))
)]
pub async fn list(
    _: Monitor,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<AgentList>> {
    let (page, per_page) = params.page()?;
    let filter = ListFilter {
        limit: Some(per_page),
        offset: u64::from(page - 1) * u64::from(per_page),
        ..params.filter()?
    };
    let listed = state.fleet.list(&filter).await?;
    Ok(Json(AgentList {
        total: listed.total,
        total_exact: listed.exact,
        page,
        per_page,
        items: listed.agents,
    }))
}

/// The filtered list (every page) as CSV, streamed as it is read.
#[utoipa::path(
    get, path = "/api/v1/agents.csv", tag = "fleet", params(ListParams),
    responses(
        (status = 200, content_type = "text/csv", body = String),
        (status = 429, description = "Too many exports running, for this credential or in all; see Retry-After", body = ErrorBody),
    ),
    security(("api_token" = ["monitor"]))
)]
pub async fn csv(
    Monitor(caller): Monitor,
    State(state): State<AppState>,
    abort: Option<Extension<ConnectionAbort>>,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let filter = params.filter()?;
    let slot = state.exports.take(&caller.name).map_err(|why| {
        ApiError::too_many(RETRY_EXPORT, format!("no more exports at once: {why}"))
    })?;
    // A reader that stops reading is dropped with its connection: hyper never polls an answer
    // nobody reads, so only the reading side can tell.
    let stalled = abort.map(|Extension(abort)| abort.0).unwrap_or_default();
    let mut agents = Box::pin(
        state
            .fleet
            .stream(filter, EXPORT_BOUNDS, stalled)
            .peekable(),
    );
    // A query that fails at once gets an error answer; only a later failure cuts the file short.
    if matches!(agents.as_mut().peek().await, Some(Err(_))) {
        if let Some(Err(e)) = agents.next().await {
            return Err(e.into());
        }
    }
    let rows = agents.map(move |agent| {
        // The export's place is taken for as long as its answer is being sent.
        let _held = &slot;
        match agent {
            Ok(agent) => Ok(crate::csv::row(&agent)),
            Err(e) => {
                tracing::error!("the CSV export stopped: {e}");
                Err(std::io::Error::other(
                    "the export stopped; see the server's log",
                ))
            }
        }
    });
    let lines = futures::stream::once(async { Ok(crate::csv::header()) }).chain(rows);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"agents.csv\"",
            ),
        ],
        axum::body::Body::from_stream(lines),
    ))
}

/// One agent with its details.
#[utoipa::path(
    get, path = "/api/v1/agents/{id}", tag = "fleet",
    params(("id" = i64, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)),
    security(("api_token" = ["monitor"]))
)]
pub async fn show(
    _: Monitor,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Agent>> {
    let agent = state.fleet.agent(id).await?.ok_or(ApiError::no_agent(id))?;
    Ok(Json(agent))
}

/// How many records of a history to answer.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LimitParams {
    /// How many, newest first: 1 to 1000, default 100.
    limit: Option<u32>,
}

impl LimitParams {
    pub(super) fn limit(&self) -> ApiResult<u32> {
        let limit = self.limit.unwrap_or(100);
        if (1..=MAX_RECORDS).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::bad_request(format!(
                "limit: must be from 1 to {MAX_RECORDS}"
            )))
        }
    }
}

/// An agent's history, newest first.
#[utoipa::path(
    get, path = "/api/v1/agents/{id}/events", tag = "fleet",
    params(("id" = i64, Path), LimitParams),
    responses((status = 200, body = EventList), (status = 404, body = ErrorBody)),
    security(("api_token" = ["monitor"]))
)]
pub async fn events(
    _: Monitor,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(params): Query<LimitParams>,
) -> ApiResult<Json<EventList>> {
    let items = state
        .fleet
        .events(id, params.limit()?)
        .await?
        .ok_or(ApiError::no_agent(id))?;
    Ok(Json(EventList { items }))
}

/// Switches an agent ON/OFF or moves it to a group (operator).
#[utoipa::path(
    patch, path = "/api/v1/agents/{id}", tag = "fleet",
    params(("id" = i64, Path)), request_body = PatchAgent,
    responses(
        (status = 200, body = Agent),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("api_token" = ["operator"]))
)]
pub async fn patch(
    Operator(caller): Operator,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(patch): Json<PatchAgent>,
) -> ApiResult<Json<Agent>> {
    patch.validate()?;
    let agent = state
        .fleet
        .patch(id, &patch, &caller.name)
        .await?
        .ok_or(ApiError::no_agent(id))?;
    Ok(Json(agent))
}

/// Deletes an agent and its history; the audit log keeps a record (admin).
#[utoipa::path(
    delete, path = "/api/v1/agents/{id}", tag = "fleet",
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn delete(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    state
        .fleet
        .delete(id, &caller.name)
        .await?
        .ok_or(ApiError::no_agent(id))?;
    tracing::info!(agent = id, by = %caller.name, "agent deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Registers a system by hand; it shows `unknown` until its agent logs in (admin).
#[utoipa::path(
    post, path = "/api/v1/agents", tag = "fleet", request_body = RegisterAgent,
    responses(
        (status = 201, body = Agent),
        (status = 403, description = "Not an admin, or the fleet holds the agents --max-agents allows (agent_limit)", body = ErrorBody),
        (status = 409, description = "That (ip, hostname) exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn register(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Json(agent): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    agent.validate()?;
    let agent = state.fleet.register(&agent, &caller.name).await??;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// The console's summary cards.
#[utoipa::path(
    get, path = "/api/v1/summary", tag = "fleet",
    responses((status = 200, body = Summary)),
    security(("api_token" = ["monitor"]))
)]
pub async fn summary(_: Monitor, State(state): State<AppState>) -> ApiResult<Json<Summary>> {
    Ok(Json(state.fleet.summary().await?))
}

/// How far back the fleet's chart goes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `1h` (a point a minute), `24h` (every 15 minutes; the default) or `7d` (every 2 hours).
    range: Option<String>,
}

/// The running, stopped and never-heard-from agents over time, for the console's chart.
#[utoipa::path(
    get, path = "/api/v1/fleet/history", tag = "fleet", params(HistoryParams),
    responses((status = 200, body = FleetHistory)),
    security(("api_token" = ["monitor"]))
)]
pub async fn history(
    _: Monitor,
    State(state): State<AppState>,
    Query(params): Query<HistoryParams>,
) -> ApiResult<Json<FleetHistory>> {
    const MINUTE: u64 = 60;
    let (span, step) = match params.range.as_deref().unwrap_or("24h") {
        "1h" => (60 * MINUTE, MINUTE),
        "24h" => (24 * 60 * MINUTE, 15 * MINUTE),
        "7d" => (7 * 24 * 60 * MINUTE, 120 * MINUTE),
        other => {
            return Err(ApiError::bad_request(format!(
                "range: {other:?} is not one of: 1h, 24h, 7d"
            )));
        }
    };
    let history = state
        .fleet
        .history(Duration::from_secs(span), Duration::from_secs(step))
        .await?;
    Ok(Json(history))
}

/// Who did what, newest first: agents registered by hand, switched, regrouped, deleted and
/// pruned; tokens, users, the enrollment token and webhooks made. Kept after the agents are gone
/// (admin).
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "fleet", params(LimitParams),
    responses((status = 200, body = AuditList), (status = 403, body = ErrorBody)),
    security(("api_token" = ["admin"]))
)]
pub async fn audit(
    _: Admin,
    State(state): State<AppState>,
    Query(params): Query<LimitParams>,
) -> ApiResult<Json<AuditList>> {
    Ok(Json(AuditList {
        items: state.fleet.audit(params.limit()?).await?,
    }))
}

/// The caller's name and role, for the console to offer only what the role may do.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "fleet",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("api_token" = ["monitor"]))
)]
pub async fn whoami(Monitor(caller): Monitor) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role,
    })
}
