use axum::{Json, extract::State, response::Response};

use crate::{AppState, upstream::Service};

/// The process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Both services behind the bff answer.
pub async fn readyz(State(state): State<AppState>) -> Response {
    common::http::readiness(vec![
        ("users-service", state.upstream.ping(Service::Users).await),
        (
            "notification-service",
            state.upstream.ping(Service::Notifications).await,
        ),
    ])
}
