//! `PUT/GET/DELETE /v1/admin/templates/{name}` and `POST /v1/admin/template-preview` (admin).

use api::admin::{Preview, PreviewBody, TemplateBody, TemplateView};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{post, put},
};
use common::{
    auth::{Principal, Role},
    http::AppJson,
    problem::{ApiError, FieldError},
};

use crate::{AppState, db::templates as db, templates};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/templates/{name}",
            put(replace).get(show).delete(remove),
        )
        .route("/v1/admin/template-preview", post(preview))
}

/// Renders one variant with `data` as intake would; a variant that does not compile, data
/// that is not an object or a rendering that fails is a 422 naming the part.
async fn preview(
    principal: Principal,
    AppJson(body): AppJson<PreviewBody>,
) -> Result<Json<Preview>, ApiError> {
    principal.require(&[Role::Admin])?;
    let data = body.data.unwrap_or_else(|| serde_json::json!({}));
    if !data.is_object() {
        return Err(ApiError::invalid_field("data", "must be a JSON object"));
    }
    templates::check(&body.variant).map_err(|e| ApiError::invalid_field("variant", e))?;
    let content = templates::render(&body.variant, &data).map_err(|e| match e {
        templates::RenderError::Data(m) => ApiError::invalid_field("data", m),
        templates::RenderError::Template(m) => ApiError::invalid_field("variant", m),
    })?;
    Ok(Json(Preview {
        subject: content.subject,
        text: content.text,
        html: content.html,
    }))
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    common::address::parse_name(name)
        .map(drop)
        .map_err(|rule| ApiError::invalid_field("name", rule))
}

/// Replaces the template; every variant must compile.
async fn replace(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    AppJson(body): AppJson<TemplateBody>,
) -> Result<Json<TemplateView>, ApiError> {
    principal.require(&[Role::Admin])?;
    valid_name(&name)?;
    let mut errors = Vec::new();
    if body.locales.is_empty() {
        errors.push(FieldError::new("locales", "must hold at least one locale"));
    }
    for (locale, v) in &body.locales {
        if common::address::parse_locale(locale).is_err() {
            errors.push(FieldError::new(
                format!("locales.{locale}"),
                "is not a language tag (e.g. en, de-AT)",
            ));
        }
        if let Err(e) = templates::check(v) {
            errors.push(FieldError::new(format!("locales.{locale}"), e));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut tx = state.pool.begin().await?;
    db::replace(&mut tx, &name, &body.locales).await?;
    tx.commit().await?;
    Ok(Json(TemplateView {
        name,
        locales: body.locales,
    }))
}

async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<TemplateView>, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut conn = state.pool.acquire().await?;
    let locales = db::get(&mut conn, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("no template has this name"))?;
    Ok(Json(TemplateView { name, locales }))
}

async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(&[Role::Admin])?;
    let mut conn = state.pool.acquire().await?;
    if db::delete(&mut conn, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no template has this name"))
    }
}
