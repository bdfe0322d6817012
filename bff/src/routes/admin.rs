//! `/v1/admin/…` (admin tokens only).

use axum::{
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method},
    response::Response,
};
use common::{auth::Role, http::RawBody, problem::ApiError};

use crate::{AppState, openapi::schema, rate_limit::Caller, upstream::Service};

fn template_path(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(format!("/v1/admin/templates/{name}"))
    } else {
        Err(ApiError::not_found("no template has this name"))
    }
}

/// Create or replace a template (all its locales); every variant must compile.
#[utoipa::path(put, path = "/v1/admin/templates/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "template name")),
    request_body = schema::TemplateBody,
    responses((status = 200, body = schema::Template), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn put_template(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let path = template_path(&name)?;
    caller
        .forward(
            &state,
            &[Role::Admin],
            Service::Notifications,
            Method::PUT,
            &path,
            &headers,
            body,
        )
        .await
}

/// A template with every locale.
#[utoipa::path(get, path = "/v1/admin/templates/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "template name")),
    responses((status = 200, body = schema::Template), (status = 404, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let path = template_path(&name)?;
    caller
        .forward(
            &state,
            &[Role::Admin],
            Service::Notifications,
            Method::GET,
            &path,
            &headers,
            Default::default(),
        )
        .await
}

/// Delete a template.
#[utoipa::path(delete, path = "/v1/admin/templates/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "template name")),
    responses((status = 204, description = "deleted"), (status = 404, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn delete_template(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let path = template_path(&name)?;
    caller
        .forward(
            &state,
            &[Role::Admin],
            Service::Notifications,
            Method::DELETE,
            &path,
            &headers,
            Default::default(),
        )
        .await
}

/// Forwards a GET with its query string (checked to plain URL characters).
async fn get_with_query(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    path: &str,
    query: Option<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?; // before looking at the input: 403 beats 422
    let path = super::with_query(path, query, b"=&-_%.@+:", 1024)?;
    caller
        .forward(
            state,
            &[Role::Admin],
            Service::Notifications,
            Method::GET,
            &path,
            headers,
            Default::default(),
        )
        .await
}

/// Notifications by filters, newest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/admin/notifications", tag = "admin", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "a delivery status"),
           ("channel" = Option<String>, Query, description = "a channel"),
           ("category" = Option<String>, Query, description = "a category"),
           ("recipient" = Option<String>, Query, description = "a user id or an address"),
           ("since" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("until" = Option<String>, Query, description = "RFC 3339, exclusive"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1..=200, default 50"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = schema::NotificationPage), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn list_notifications(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    get_with_query(&state, &caller, &headers, "/v1/admin/notifications", query).await
}

/// One delivery with every attempt (provider, outcome, error, duration).
#[utoipa::path(get, path = "/v1/admin/deliveries/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "delivery id")),
    responses((status = 200, body = schema::DeliveryDetail), (status = 404, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = super::path_id(&id, "delivery")?;
    get_with_query(
        &state,
        &caller,
        &headers,
        &format!("/v1/admin/deliveries/{id}"),
        None,
    )
    .await
}

/// Counts per channel × status and accept → sent latency percentiles over a window.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin", security(("bearer" = [])),
    params(("window" = Option<String>, Query, description = "30s, 15m, 1h (default), 7d")),
    responses((status = 200, body = schema::Stats), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    get_with_query(&state, &caller, &headers, "/v1/admin/stats", query).await
}

/// Deliveries that ended `dead`, newest first, keyset-paginated.
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    params(("channel" = Option<String>, Query, description = "a channel"),
           ("error_code" = Option<String>, Query, description = "the last error's code, e.g. smtp_550"),
           ("provider" = Option<String>, Query, description = "the last attempt's provider, e.g. twilio"),
           ("since" = Option<String>, Query, description = "died at or after (RFC 3339)"),
           ("until" = Option<String>, Query, description = "died before (RFC 3339)"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "1..=200, default 50"),
           ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = schema::DeliveryPage), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    get_with_query(&state, &caller, &headers, "/v1/admin/dead-letters", query).await
}

/// Re-drive dead letters by ids or by filter: each gets a new attempt with the whole retry
/// schedule, audited with the admin's subject.
#[utoipa::path(post, path = "/v1/admin/dead-letters/redrive", tag = "admin", security(("bearer" = [])),
    request_body = schema::RedriveRequest,
    responses((status = 200, body = schema::Redriven), (status = 422, body = schema::Problem),
              (status = 401, body = schema::Problem), (status = 403, body = schema::Problem)))]
pub async fn redrive_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller
        .forward(
            &state,
            &[Role::Admin],
            Service::Notifications,
            Method::POST,
            "/v1/admin/dead-letters/redrive",
            &headers,
            body,
        )
        .await
}
