//! The routes of alerts: the webhooks an admin sets, and the record of deliveries.

use axum::extract::State;
use axum::http::StatusCode;

use plura_proto::{
    CreatedWebhook, DeliveryList, ErrorBody, FieldError, NewWebhook, Role, WebhookList,
};

use super::error::{Json, Path, Query};
use super::manage::LimitParams;
use super::{Admin, ApiError, ApiResult, AppState, Monitor};

/// The webhooks alerts go to, their URLs' paths hidden (admin).
#[utoipa::path(
    get, path = "/api/v1/webhooks", tag = "alerts",
    responses((status = 200, body = WebhookList), (status = 403, body = ErrorBody)),
    security(("api_token" = ["admin"]))
)]
pub async fn webhooks(_: Admin, State(state): State<AppState>) -> ApiResult<Json<WebhookList>> {
    Ok(Json(WebhookList {
        items: state.alerter.webhooks().await?,
    }))
}

/// Adds a webhook; its signing secret is answered only here (admin).
#[utoipa::path(
    post, path = "/api/v1/webhooks", tag = "alerts", request_body = NewWebhook,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 403, body = ErrorBody),
        (status = 409, description = "A webhook of that format to that URL exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn add_webhook(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Json(new): Json<NewWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    new.validate()?;
    state
        .alerter
        .destinations()
        .check(&new.url)
        .await
        .map_err(|refused| FieldError {
            field: "url",
            problem: refused.to_string(),
        })?;
    let created = state.alerter.add_webhook(&new, &caller.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Deletes a webhook and its deliveries (admin).
#[utoipa::path(
    delete, path = "/api/v1/webhooks/{id}", tag = "alerts",
    params(("id" = i64, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn delete_webhook(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if state.alerter.delete_webhook(id, &caller.name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no webhook with id {id}")))
    }
}

/// Recent deliveries of alerts, newest first, with their failures: why one failed is for admins
/// (an error can tell which ports of a host are open).
#[utoipa::path(
    get, path = "/api/v1/alerts/deliveries", tag = "alerts", params(LimitParams),
    responses((status = 200, body = DeliveryList)),
    security(("api_token" = ["monitor"]))
)]
pub async fn deliveries(
    Monitor(caller): Monitor,
    State(state): State<AppState>,
    Query(params): Query<LimitParams>,
) -> ApiResult<Json<DeliveryList>> {
    let mut items = state.alerter.deliveries(params.limit()?).await?;
    if !caller.may(Role::Admin) {
        for delivery in &mut items {
            if delivery.last_error.is_some() {
                delivery.last_error = Some("not delivered (admins see why)".into());
            }
        }
    }
    Ok(Json(DeliveryList { items }))
}
