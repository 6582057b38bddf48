//! Every failure the API answers, as JSON `{error, message}` with the status that fits, and the
//! extractors whose refusals take that same form.

use axum::extract::FromRequest;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use std::fmt;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plura_proto::{ErrorBody, FieldError, Role};

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For 429 and 503: in how many seconds to try again.
    retry_after: Option<u64>,
    /// The database failed: counted in `plura_database_failures_total`.
    storage_failure: bool,
}

/// Marks a response to a request the database failed.
#[derive(Debug, Clone, Copy)]
pub struct StorageFailure;

pub type ApiResult<T> = Result<T, ApiError>;

/// Seconds a caller waits before trying again when the database cannot serve: long enough not
/// to hammer it on its way back, short enough that agents log in soon after.
const DATABASE_RETRY_AFTER: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            storage_failure: false,
        }
    }

    /// 429: `what` happened too often; come back after `wait`, which the message and the
    /// `Retry-After` header say in whole seconds, rounded up.
    pub fn too_many(wait: Duration, what: impl fmt::Display) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let message = format!("{what}; try again in {seconds} s");
        Self {
            retry_after: Some(seconds),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        }
    }

    /// Every turn to check or hash a password is taken: come back in a moment.
    pub fn passwords_busy() -> Self {
        Self::too_many(
            Duration::from_secs(1),
            "the server is busy checking passwords",
        )
    }

    /// 503: the database cannot serve (`why`); the caller tries again after a few seconds,
    /// which the `Retry-After` header says. Counted as a database failure.
    pub fn unavailable(why: impl fmt::Display) -> Self {
        let message = format!("{why}; try again in {DATABASE_RETRY_AFTER} s");
        Self {
            retry_after: Some(DATABASE_RETRY_AFTER),
            storage_failure: true,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn no_agent(id: i64) -> Self {
        Self::not_found(format!("no agent with id {id}"))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(needed: Role, have: Role) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {needed} role; your token has {have}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.into(),
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.storage_failure {
            response.extensions_mut().insert(StorageFailure);
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::fleet::AgentLimit> for ApiError {
    fn from(limit: crate::fleet::AgentLimit) -> Self {
        Self::new(StatusCode::FORBIDDEN, "agent_limit", limit.to_string())
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            e.to_string(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyRegistered { .. }
            | StoreError::UserExists(_)
            | StoreError::TokenExists(_)
            | StoreError::NotLocalUser(_)
            | StoreError::WebhookExists { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            StoreError::Contended(_) => {
                tracing::warn!("{e}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            }
            e if e.unavailable().is_some() => {
                tracing::warn!("{e}");
                let why = e
                    .unavailable()
                    .map(|why| why.to_string())
                    .unwrap_or_default();
                Self::unavailable(why)
            }
            e => {
                tracing::error!("storage failure: {e}");
                Self {
                    storage_failure: true,
                    ..Self::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the server could not complete the request; see its log",
                    )
                }
            }
        }
    }
}

/// Takes axum's own refusal and words it our way: 413 (too large) and 415 (not JSON) stand;
/// any other body, path or query that cannot be read is a 400 (axum answers 422 for JSON that
/// parses but does not fit; 422 is ours for fields that break their rules).
macro_rules! from_rejection {
    ($($rejection:ty => $code:literal),+ $(,)?) => {$(
        impl From<$rejection> for ApiError {
            fn from(r: $rejection) -> Self {
                match r.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", r.body_text())
                    }
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, $code, r.body_text())
                    }
                    _ => Self::new(StatusCode::BAD_REQUEST, $code, r.body_text()),
                }
            }
        }
    )+};
}

from_rejection!(
    JsonRejection => "bad_json",
    PathRejection => "bad_path",
    QueryRejection => "bad_query",
);

/// `axum::Json` whose refusals are JSON too.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose refusals are JSON.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose refusals are JSON.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);
