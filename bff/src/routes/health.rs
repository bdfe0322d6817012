use axum::{Json, extract::State, response::Response};

use crate::{AppState, upstream::Service};

/// The process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Both services behind the bff answer: a bare status on the public port (what failed is
/// logged, and shown on the admin port by [`readyz_detailed`]).
pub async fn readyz(State(state): State<AppState>) -> Response {
    common::http::readiness_bare(checks(&state).await)
}

/// [`readyz`] naming each dependency and its error: on `http.metrics_listen` only.
pub async fn readyz_detailed(State(state): State<AppState>) -> Response {
    common::http::readiness(checks(&state).await)
}

async fn checks(state: &AppState) -> Vec<(&'static str, Result<(), String>)> {
    vec![
        ("users-service", state.upstream.ping(Service::Users).await),
        (
            "notification-service",
            state.upstream.ping(Service::Notifications).await,
        ),
    ]
}
