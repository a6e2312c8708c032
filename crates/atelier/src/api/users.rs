//! `/users`: one's own profile, and user management for admins.

use atelier_store::UserQuery;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, ClientOrigin};
use super::schema::{RoleName, UserResponse};
use crate::app::AppState;
use crate::auth::extract::{AdminUser, AuthUser, SessionUser};
use crate::error::{ApiError, ErrorBody};
use crate::service::accounts::ProfileChange;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 100;

/// Your profile.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])), responses(
    (status = 200, description = "Your account", body = UserResponse),
    (status = 401, description = "`missing_token`, `invalid_token`, `token_expired`, `token_revoked`", body = ErrorBody)))]
pub async fn get_me(
    State(state): State<AppState>,
    AuthUser(me): AuthUser,
) -> Result<Json<UserResponse>, ApiError> {
    Ok(Json(state.accounts.me(me.user_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    /// A new email address.
    pub email: Option<String>,
    /// A new password; every other session of yours ends.
    pub new_password: Option<String>,
    /// Required for any change.
    pub current_password: String,
}

/// Change your email or password.
///
/// A password change ends all your other sessions and voids every access token
/// issued so far, this one included: refresh to continue.
#[utoipa::path(put, path = "/users/me", tag = "users", security(("bearer" = [])), request_body = UpdateMeRequest, responses(
    (status = 200, description = "Updated account", body = UserResponse),
    (status = 403, description = "`wrong_password`", body = ErrorBody),
    (status = 409, description = "`email_taken`", body = ErrorBody),
    (status = 422, description = "`invalid_email`, `weak_password`, `nothing_to_change`", body = ErrorBody),
    (status = 429, description = "`too_many_attempts`", body = ErrorBody)))]
pub async fn update_me(
    State(state): State<AppState>,
    SessionUser(me): SessionUser,
    ClientOrigin(origin): ClientOrigin,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let change = ProfileChange {
        email: body.email,
        new_password: body.new_password,
        current_password: body.current_password,
    };
    Ok(Json(state.accounts.update_me(&me, change, &origin).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersQuery {
    /// Page size, 1 to 100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Only users with this role.
    pub role: Option<RoleName>,
    /// Only users whose email contains this text (case-insensitive).
    pub email: Option<String>,
}

/// One page of users, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserListResponse {
    pub users: Vec<UserResponse>,
    /// Users matching the filters, over all pages.
    pub total: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

/// List users (admin).
#[utoipa::path(get, path = "/users", tag = "users", security(("bearer" = [])), params(ListUsersQuery), responses(
    (status = 200, description = "A page of users", body = UserListResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody),
    (status = 422, description = "`invalid_query`", body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<ListUsersQuery>,
) -> Result<Json<UserListResponse>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let page = state
        .accounts
        .list_users(&UserQuery {
            role: q.role.map(Into::into),
            email_contains: q.email,
            after: q.cursor,
            limit,
        })
        .await?;
    let next_cursor = page.has_more.then(|| page.users.last().map(|u| u.id)).flatten();
    Ok(Json(UserListResponse {
        users: page.users.into_iter().map(Into::into).collect(),
        total: page.total,
        next_cursor,
    }))
}

/// Delete a user (admin). Their sessions end at once.
#[utoipa::path(delete, path = "/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")), responses(
    (status = 204, description = "Deleted"),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody),
    (status = 404, description = "`user_not_found`", body = ErrorBody),
    (status = 409, description = "`cannot_delete_self`, `last_admin`", body = ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientOrigin(origin): ClientOrigin,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts
        .delete_user(Some(admin.user_id), id, &origin)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoleRequest {
    pub role: RoleName,
}

/// Change a user's role (admin). Their earlier access tokens stop working at once.
#[utoipa::path(put, path = "/users/{id}/role", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")), request_body = SetRoleRequest, responses(
    (status = 200, description = "The user with the new role", body = UserResponse),
    (status = 403, description = "`forbidden`: not an admin", body = ErrorBody),
    (status = 404, description = "`user_not_found`", body = ErrorBody),
    (status = 409, description = "`last_admin`", body = ErrorBody)))]
pub async fn set_user_role(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ClientOrigin(origin): ClientOrigin,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<SetRoleRequest>,
) -> Result<Json<UserResponse>, ApiError> {
    let user = state
        .accounts
        .set_role(Some(admin.user_id), id, body.role.into(), &origin)
        .await?;
    Ok(Json(user.into()))
}
