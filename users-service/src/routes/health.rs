use axum::{Router, extract::State, response::Response, routing::get};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(common::http::healthz))
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<AppState>) -> Response {
    common::http::readiness(vec![("postgres", common::db::ping(&state.pool).await)])
}
