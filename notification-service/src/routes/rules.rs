//! Digests and caps (decision 0030): `GET /v1/admin/digests/{id}` (a digest and what it
//! folded), `GET /v1/admin/categories`, `PUT|DELETE /v1/admin/categories/{category}` (rules
//! per category), `GET /v1/me/delivery-rules` (what a user's preference center shows).

use api::digests::{CategoryRules, CategoryRulesBody, DeliveryRules, DigestView};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::get,
};
use common::{
    auth::{Principal, Role},
    problem::ApiError,
};
use uuid::Uuid;

use crate::{AppState, category_rules};
use common::http::AppJson;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/digests/{id}", get(digest))
        .route("/v1/admin/categories", get(list))
        .route(
            "/v1/admin/categories/{category}",
            axum::routing::put(put).delete(remove),
        )
        .route("/v1/me/delivery-rules", get(mine))
}

async fn digest(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DigestView>, ApiError> {
    principal.require(&[Role::Admin])?;
    let not_found = || ApiError::not_found("no digest has this id");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let mut conn = state.pool.acquire().await?;
    crate::db::digests::view(&mut conn, id)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}

async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DeliveryRules>, ApiError> {
    principal.require(&[Role::Admin])?;
    Ok(Json(category_rules::view(&state).await?))
}

async fn put(
    State(state): State<AppState>,
    principal: Principal,
    Path(category): Path<String>,
    AppJson(body): AppJson<CategoryRulesBody>,
) -> Result<Json<CategoryRules>, ApiError> {
    principal.require(&[Role::Admin])?;
    Ok(Json(category_rules::put(&state, &category, &body).await?))
}

async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(category): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(&[Role::Admin])?;
    if category_rules::delete(&state, &category).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("this category has no rules"))
    }
}

async fn mine(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DeliveryRules>, ApiError> {
    principal.require(&[Role::User])?;
    Ok(Json(category_rules::view(&state).await?))
}
