use axum::{Router, extract::State, response::Response, routing::get};

use crate::{AppState, upstream::Service};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(common::http::healthz))
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> Response {
    common::http::readiness(vec![
        ("users-service", state.upstream.ping(Service::Users).await),
        (
            "notification-service",
            state.upstream.ping(Service::Notifications).await,
        ),
    ])
}
