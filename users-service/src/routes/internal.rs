//! Internal endpoints for notification-service (not routed by nginx or the bff).

use api::profiles::{ProfilesRequest, ProfilesResponse};
use axum::{Json, Router, extract::State, routing::post};
use common::{
    auth::{Principal, Role},
    http::AppJson,
    problem::ApiError,
};

use crate::{AppState, db};

/// Most user ids one batch may ask for.
pub const MAX_BATCH: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route("/internal/v1/profiles/batch", post(profiles))
}

/// Delivery profiles of up to 1,000 users in one call (one query).
async fn profiles(
    State(state): State<AppState>,
    principal: Principal,
    AppJson(body): AppJson<ProfilesRequest>,
) -> Result<Json<ProfilesResponse>, ApiError> {
    principal.require(&[Role::Service])?;
    if !state
        .internal_callers
        .iter()
        .any(|c| c == principal.subject())
    {
        return Err(ApiError::forbidden(format!(
            "`{}` may not read delivery profiles; only {}",
            principal.subject(),
            state.internal_callers.join(", ")
        )));
    }
    if body.user_ids.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "user_ids",
            format!("at most {MAX_BATCH} ids per call"),
        ));
    }
    let mut conn = state.pool.acquire().await?;
    let profiles = db::profiles(&mut conn, &body.user_ids, &state.mandatory_categories).await?;
    Ok(Json(ProfilesResponse { profiles }))
}
