//! `/v1/me…` (user tokens only). The user is the token's `sub`; nothing in a path or body can
//! name another user. `GET /v1/me` aggregates four users-service reads, fetched concurrently.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method},
    response::{IntoResponse, Response},
};
use common::{auth::Role, http::RawBody, problem::ApiError};

use crate::{AppState, openapi::schema, rate_limit::Caller, upstream::Service};

/// Profile, contacts, devices and preferences in one response.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = schema::Me), (status = 401, body = schema::Problem),
              (status = 403, body = schema::Problem), (status = 404, body = schema::Problem)))]
pub async fn get_me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::User])?;
    let up = &state.upstream;
    let p = &caller.0;
    let (profile, contacts, devices, preferences) = tokio::try_join!(
        up.get_json(Service::Users, "/v1/me/profile", p),
        up.get_json(Service::Users, "/v1/me/contacts", p),
        up.get_json(Service::Users, "/v1/me/devices", p),
        up.get_json(Service::Users, "/v1/me/preferences", p),
    )?;
    // The first part that failed answers for all (its problem+json passes through).
    for (status, body) in [&profile, &contacts, &devices, &preferences] {
        if !status.is_success() {
            let mut resp = (*status, Json(body.clone())).into_response();
            resp.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static(common::problem::PROBLEM_JSON),
            );
            return Ok(resp);
        }
    }
    let mut me = profile.1;
    me["contacts"] = contacts.1;
    me["devices"] = devices.1["items"].clone();
    me["preferences"] = preferences.1;
    Ok(Json(me).into_response())
}

/// The users-service routes of `/v1/me…`: user tokens only.
async fn forward(
    state: &AppState,
    caller: &Caller,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller
        .forward(
            state,
            &[Role::User],
            Service::Users,
            method,
            path,
            headers,
            body,
        )
        .await
}

/// Replace the contact set (absent fields are cleared).
#[utoipa::path(put, path = "/v1/me/contacts", tag = "me", security(("bearer" = [])),
    request_body = schema::Contacts,
    responses((status = 200, body = schema::Contacts), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn put_contacts(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    forward(
        &state,
        &caller,
        Method::PUT,
        "/v1/me/contacts",
        &headers,
        body,
    )
    .await
}

/// Channel switches, category × channel switches, quiet hours, locale.
#[utoipa::path(get, path = "/v1/me/preferences", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = schema::PreferencesView), (status = 401, body = schema::Problem),
              (status = 403, body = schema::Problem)))]
pub async fn get_preferences(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(
        &state,
        &caller,
        Method::GET,
        "/v1/me/preferences",
        &headers,
        Default::default(),
    )
    .await
}

/// Replace the preference document.
#[utoipa::path(put, path = "/v1/me/preferences", tag = "me", security(("bearer" = [])),
    request_body = schema::PreferencesUpdate,
    responses((status = 200, body = schema::PreferencesView), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn put_preferences(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    forward(
        &state,
        &caller,
        Method::PUT,
        "/v1/me/preferences",
        &headers,
        body,
    )
    .await
}

/// The user's push devices.
#[utoipa::path(get, path = "/v1/me/devices", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = schema::DeviceList), (status = 401, body = schema::Problem),
              (status = 403, body = schema::Problem)))]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    forward(
        &state,
        &caller,
        Method::GET,
        "/v1/me/devices",
        &headers,
        Default::default(),
    )
    .await
}

/// Register a push token: 201 when new to this user, 200 when already theirs.
#[utoipa::path(post, path = "/v1/me/devices", tag = "me", security(("bearer" = [])),
    request_body = schema::DeviceRequest,
    responses((status = 201, body = schema::Device), (status = 200, body = schema::Device),
              (status = 422, body = schema::Problem), (status = 401, body = schema::Problem),
              (status = 403, body = schema::Problem)))]
pub async fn add_device(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    forward(
        &state,
        &caller,
        Method::POST,
        "/v1/me/devices",
        &headers,
        body,
    )
    .await
}

/// Remove one of the user's devices.
#[utoipa::path(delete, path = "/v1/me/devices/{id}", tag = "me", security(("bearer" = [])),
    params(("id" = String, Path, description = "device id")),
    responses((status = 204, description = "removed"), (status = 404, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn remove_device(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = super::path_id(&id, "device")?;
    forward(
        &state,
        &caller,
        Method::DELETE,
        &format!("/v1/me/devices/{id}"),
        &headers,
        Default::default(),
    )
    .await
}

/// The user's own notification history, newest first, cursor-paginated.
#[utoipa::path(get, path = "/v1/me/notifications", tag = "me", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1..=100, default 20"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = schema::History), (status = 401, body = schema::Problem),
              (status = 403, body = schema::Problem), (status = 422, body = schema::Problem)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&[Role::User])?; // before looking at the input: 403 beats 422
    let path = super::with_query("/v1/me/notifications", query, b"=&-_%.", 512)?;
    caller
        .forward(
            &state,
            &[Role::User],
            Service::Notifications,
            Method::GET,
            &path,
            &headers,
            Default::default(),
        )
        .await
}
