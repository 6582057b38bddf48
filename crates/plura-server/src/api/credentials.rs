//! The routes of credentials (admins): API tokens and console users, made, listed and ended.
//! Every change reaches every server within a second, and the audit log.

use axum::extract::State;
use axum::http::StatusCode;

use plura_proto::{
    CreatedToken, CreatedUser, ErrorBody, NewToken, NewUser, PatchUser, Timestamp, TokenList,
    UserInfo, UserList,
};

use super::error::{Json, Path};
use super::{Admin, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::credentials::{self, CredentialError};
use crate::store::{Actor, Credential, UserChange};

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Invalid(e) => e.into(),
            CredentialError::Store(e) => e.into(),
            CredentialError::Hashing(_) => {
                tracing::error!("{e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the password could not be hashed; see the server's log",
                )
            }
        }
    }
}

fn acting(caller: &Caller) -> Actor<'_> {
    Actor {
        name: &caller.name,
        at: Timestamp::now(),
    }
}

/// API tokens, by name; never their secrets (admin).
#[utoipa::path(
    get, path = "/api/v1/tokens", tag = "credentials",
    responses((status = 200, body = TokenList), (status = 403, body = ErrorBody)),
    security(("api_token" = ["admin"]))
)]
pub async fn tokens(_: Admin, State(state): State<AppState>) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList {
        items: state.auth.store().tokens().await?,
    }))
}

/// Makes an API token; its secret is answered only here (admin).
#[utoipa::path(
    post, path = "/api/v1/tokens", tag = "credentials", request_body = NewToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 403, body = ErrorBody),
        (status = 409, description = "A token of that name exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn create_token(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Json(new): Json<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let (token, info) = credentials::create_token(
        state.auth.store(),
        &new.name,
        new.role,
        new.expires_in.as_deref(),
        acting(&caller),
    )
    .await?;
    tracing::info!(token = %info.name, role = %info.role, by = %caller.name, "API token made");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

/// Revokes an API token, named by its name or id: it stops working at once here, and within a
/// second on every other server (admin).
#[utoipa::path(
    delete, path = "/api/v1/tokens/{token}", tag = "credentials",
    params(("token" = String, Path, description = "The token's name or id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn revoke_token(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<StatusCode> {
    let revoked = credentials::revoke_token(state.auth.store(), &token, acting(&caller)).await?;
    state.auth.forget_callers();
    match revoked {
        Some(revoked) => {
            tracing::info!(token = %revoked.name, by = %caller.name, "API token revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!(
            "no API token is named {token:?} or has that id"
        ))),
    }
}

/// Console users, by name, with their open sign-ins (admin).
#[utoipa::path(
    get, path = "/api/v1/users", tag = "credentials",
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)),
    security(("api_token" = ["admin"]))
)]
pub async fn users(_: Admin, State(state): State<AppState>) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        items: state.auth.store().users(Timestamp::now()).await?,
    }))
}

/// Makes a console user; a password made for it is answered only here (admin).
#[utoipa::path(
    post, path = "/api/v1/users", tag = "credentials", request_body = NewUser,
    responses(
        (status = 201, body = CreatedUser),
        (status = 403, body = ErrorBody),
        (status = 409, description = "A user of that name exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn create_user(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Json(new): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    let _check = state
        .auth
        .password_check()
        .await
        .ok_or_else(ApiError::passwords_busy)?;
    let (user, password) = credentials::create_user(
        state.auth.store(),
        &new.name,
        new.role,
        new.password,
        acting(&caller),
    )
    .await?;
    tracing::info!(user = %user.name, role = %user.role, by = %caller.name, "user made");
    Ok((StatusCode::CREATED, Json(CreatedUser { user, password })))
}

/// Disables or enables a user, or sets its password; disabling and a new password end its
/// sign-ins (admin). An admin cannot disable the user it is signed in as.
#[utoipa::path(
    patch, path = "/api/v1/users/{name}", tag = "credentials", request_body = PatchUser,
    params(("name" = String, Path)),
    responses(
        (status = 200, body = UserInfo),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The caller's own sign-in", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn patch_user(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(patch): Json<PatchUser>,
) -> ApiResult<Json<UserInfo>> {
    if patch.disabled.is_none() && patch.password.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give disabled, password or both",
        ));
    }
    if patch.disabled == Some(true) {
        not_oneself(&caller, &name, "disable")?;
    }
    let store = state.auth.store();
    let mut user = None;
    if let Some(password) = patch.password {
        let _check = state
            .auth
            .password_check()
            .await
            .ok_or_else(ApiError::passwords_busy)?;
        user = credentials::set_password(store, &name, password, acting(&caller)).await?;
    }
    if let Some(disabled) = patch.disabled {
        let change = if disabled {
            UserChange::Disable
        } else {
            UserChange::Enable
        };
        user = store.change_user(&name, change, acting(&caller)).await?;
    }
    state.auth.forget_callers();
    let user = user.ok_or_else(|| no_user(&name))?;
    tracing::info!(user = %name, by = %caller.name, "user changed");
    Ok(Json(user))
}

/// Deletes a user and ends its sign-ins (admin). An admin cannot delete the user it is signed in
/// as.
#[utoipa::path(
    delete, path = "/api/v1/users/{name}", tag = "credentials",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The caller's own sign-in", body = ErrorBody),
    ),
    security(("api_token" = ["admin"]))
)]
pub async fn delete_user(
    Admin(caller): Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    not_oneself(&caller, &name, "delete")?;
    let deleted = state
        .auth
        .store()
        .change_user(&name, UserChange::Delete, acting(&caller))
        .await?;
    state.auth.forget_callers();
    deleted.ok_or_else(|| no_user(&name))?;
    tracing::info!(user = %name, by = %caller.name, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses an admin's change that would lock out the user it is signed in as: the last admin
/// would have no way back but the command line.
fn not_oneself(caller: &Caller, name: &str, what: &str) -> Result<(), ApiError> {
    if matches!(caller.credential, Credential::Session(_)) && caller.name == name {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("you cannot {what} the user you are signed in as; another admin can"),
        ));
    }
    Ok(())
}

fn no_user(name: &str) -> ApiError {
    ApiError::not_found(format!("no user is named {name:?}"))
}
