//! Sign-in through the identity provider, as the browser goes through it: `/auth/oidc/login`
//! sends it to the provider with a new flow in a cookie, `/auth/oidc/callback` checks the
//! provider's answer and starts a sign-in, and the console picks the sign-in up with
//! `POST /api/v1/session/sso`.
//!
//! The session token reaches the console in a cookie that lives a minute, is sent to that one
//! route only, and cannot be read by scripts: never in a URL (where logs and the Referer keep
//! it), and without inline script, which the console's content security policy forbids.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use plura_proto::{AuditAction, ErrorBody, Session, SingleSignOn, Timestamp};

use super::console::page;
use super::error::{Json, Query};
use super::{ApiError, ApiResult, AppState};
use crate::oidc::{Callback, FLOW_COOKIE, FLOW_LIFETIME, Flow, Refusal, RelyingParty};
use crate::store::{Actor, Audit};

/// Where a sign-in starts.
pub const LOGIN_PATH: &str = "/auth/oidc/login";
/// The route the console picks its sign-in up from, the only one its cookie is sent to.
const PICKUP_PATH: &str = "/api/v1/session/sso";
/// The cookie that carries a new sign-in's token from the callback to the console.
const PICKUP_COOKIE: &str = "plura_sso";
/// How long the console has to pick a sign-in up.
const PICKUP_SECONDS: u64 = 60;

/// Sends the browser to the identity provider.
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let party = match admitted(&state, peer) {
        Ok(party) => party,
        Err(refused) => return refused.into_response(),
    };
    match party.start().await {
        Ok(start) => {
            let cookie = cookie(
                party,
                FLOW_COOKIE,
                &start.flow.cookie(),
                "/auth/oidc",
                "Lax",
                FLOW_LIFETIME.as_secs(),
            );
            with_cookie(Redirect::to(start.url.as_str()).into_response(), cookie)
        }
        Err(refusal) => refused(&state, refusal).await,
    }
}

/// Where the provider sends the browser back: checks its answer, signs the person in, and sends
/// the browser on to the console; or says why not.
pub async fn callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(answer): Query<Callback>,
) -> Response {
    let party = match admitted(&state, peer) {
        Ok(party) => party,
        Err(refused) => return refused.into_response(),
    };
    let flow = cookie_value(&headers, FLOW_COOKIE).and_then(Flow::from_cookie);
    let person = match party.finish(answer, flow).await {
        Ok(person) => person,
        Err(refusal) => return ended_flow(party, refused(&state, refusal).await),
    };
    let session = match state.auth.sso_sign_in(&person).await {
        Ok(Ok(session)) => session,
        // The store audited it already.
        Ok(Err(name)) => {
            let refusal = Refusal::Disabled { name };
            tracing::warn!(from = %peer.ip(), "{refusal}");
            return ended_flow(party, refusal_page(&refusal));
        }
        Err(e) => {
            tracing::error!("cannot record a sign-in through the identity provider: {e}");
            return ended_flow(party, refusal_page(&Refusal::Unrecorded));
        }
    };
    tracing::info!(user = %session.name, role = %session.role, from = %peer.ip(),
        "signed in through the identity provider");
    let pickup = cookie(
        party,
        PICKUP_COOKIE,
        &session.token,
        PICKUP_PATH,
        "Strict",
        PICKUP_SECONDS,
    );
    let console = format!("{}/#sso", party.public_url());
    ended_flow(
        party,
        with_cookie(Redirect::to(&console).into_response(), pickup),
    )
}

/// Whether sign-in through an identity provider is offered, and where it starts.
#[utoipa::path(
    get, path = "/api/v1/session/sso", tag = "fleet",
    responses(
        (status = 200, body = SingleSignOn),
        (status = 404, description = "No identity provider is set up", body = ErrorBody),
    )
)]
pub async fn offer(State(state): State<AppState>) -> ApiResult<Json<SingleSignOn>> {
    let party = state.oidc.as_deref().ok_or_else(not_set_up_error)?;
    Ok(Json(SingleSignOn {
        login_url: LOGIN_PATH.to_string(),
        issuer: party.issuer().to_string(),
    }))
}

/// Hands the console the sign-in the identity provider's callback just started, from the
/// cookie that carried it here (which this answer clears).
#[utoipa::path(
    post, path = "/api/v1/session/sso", tag = "fleet",
    responses(
        (status = 200, body = Session),
        (status = 401, description = "No sign-in to pick up, or it ended", body = ErrorBody),
        (status = 404, description = "No identity provider is set up", body = ErrorBody),
    )
)]
pub async fn pick_up(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<(HeaderMap, Json<Session>)> {
    let party = state.oidc.as_deref().ok_or_else(not_set_up_error)?;
    let token = cookie_value(&headers, PICKUP_COOKIE)
        .ok_or_else(|| ApiError::unauthorized("no sign-in to pick up: sign in again"))?;
    let caller = state
        .auth
        .caller(token)
        .await?
        .filter(|caller| matches!(caller.credential, crate::store::Credential::Session(_)))
        .ok_or_else(|| ApiError::unauthorized("that sign-in has ended: sign in again"))?;
    let session = Session {
        token: token.to_string(),
        name: caller.name,
        role: caller.role,
        expires_at: caller.expires_at.unwrap_or_else(Timestamp::now),
        end_session_url: party.end_session_url().await,
    };
    let mut cleared = HeaderMap::new();
    cleared.insert(
        header::SET_COOKIE,
        cookie(party, PICKUP_COOKIE, "", PICKUP_PATH, "Strict", 0),
    );
    cleared.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((cleared, Json(session)))
}

/// Why a browser does not get to the identity provider at all.
enum NotAdmitted {
    NotSetUp,
    /// Its source used its budget of sign-ins; this long until the next.
    Busy(std::time::Duration),
}

impl IntoResponse for NotAdmitted {
    fn into_response(self) -> Response {
        match self {
            Self::NotSetUp => not_set_up(),
            Self::Busy(wait) => busy(wait),
        }
    }
}

/// The relying party, for a browser within its source's budget of sign-ins.
fn admitted(state: &AppState, peer: SocketAddr) -> Result<&RelyingParty, NotAdmitted> {
    let party = state.oidc.as_deref().ok_or(NotAdmitted::NotSetUp)?;
    state.sso_tries.take(peer.ip()).map_err(NotAdmitted::Busy)?;
    Ok(party)
}

/// The page of a refusal, after it is in the audit log and the server's log.
async fn refused(state: &AppState, refusal: Refusal) -> Response {
    tracing::warn!("sign-in through the identity provider refused: {refusal}");
    if !matches!(refusal, Refusal::Unrecorded) {
        let audit = Audit {
            by: Actor {
                name: refusal.person().unwrap_or("identity provider"),
                at: Timestamp::now(),
            },
            action: AuditAction::SsoRefused,
            detail: refusal.to_string(),
        };
        if let Err(e) = state.auth.store().record_audit(audit).await {
            tracing::error!("cannot record a refused sign-in in the audit log: {e}");
        }
    }
    refusal_page(&refusal)
}

fn refusal_page(refusal: &Refusal) -> Response {
    page(refusal.status(), "Sign-in refused", &refusal.to_string())
}

fn not_set_up() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "No single sign-on",
        "This server is not set up to sign in through an identity provider: sign in with a user \
         and password or an API token.",
    )
}

fn not_set_up_error() -> ApiError {
    ApiError::not_found("this server is not set up to sign in through an identity provider")
}

fn busy(wait: std::time::Duration) -> Response {
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many sign-ins",
        "Too many sign-ins from this address: wait a few seconds and try again.",
    );
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `response`, with the flow's cookie cleared: a flow is finished once, whatever came of it.
fn ended_flow(party: &RelyingParty, response: Response) -> Response {
    with_cookie(
        response,
        cookie(party, FLOW_COOKIE, "", "/auth/oidc", "Lax", 0),
    )
}

fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A cookie scripts cannot read, sent over HTTPS only when the console is reached so.
fn cookie(
    party: &RelyingParty,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: u64,
) -> HeaderValue {
    let secure = if party.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    ))
    .expect("cookie values are made of URL-safe characters")
}

/// The value of the cookie `name` the browser sent.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value)
}
