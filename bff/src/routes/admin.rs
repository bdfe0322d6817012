//! `/v1/admin/…` (admin tokens only).

use axum::{
    extract::{Path, State},
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
    caller.require(&[Role::Admin])?;
    let path = template_path(&name)?;
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::PUT,
            &path,
            &caller.0,
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
    caller.require(&[Role::Admin])?;
    let path = template_path(&name)?;
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::GET,
            &path,
            &caller.0,
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
    caller.require(&[Role::Admin])?;
    let path = template_path(&name)?;
    state
        .upstream
        .forward(
            Service::Notifications,
            Method::DELETE,
            &path,
            &caller.0,
            &headers,
            Default::default(),
        )
        .await
}
