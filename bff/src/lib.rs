//! bff: the public edge behind nginx. Holds no database.
//!
//! Every request is authenticated here (JWT, pinned algorithm) and authorised per route
//! (roles), then forwarded with the caller's token to the service that owns the data, which
//! verifies it again. [`upstream`] is the forwarding client; [`routes`] lists the public API.

pub mod config;
pub mod routes;
pub mod upstream;

use std::sync::Arc;

use axum::{Router, extract::FromRef};
use common::auth::JwtVerifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub verifier: Arc<JwtVerifier>,
    pub upstream: Arc<upstream::Upstreams>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(s: &AppState) -> Self {
        s.verifier.clone()
    }
}

pub fn router(state: AppState, cfg: &Config) -> Router {
    let api = Router::new()
        .merge(routes::users::router())
        .merge(routes::notifications::router())
        .merge(routes::health::router())
        .with_state(state);
    common::http::with_edge_layers(api, &cfg.http)
}

/// Serves the public API until `shutdown`; in-flight requests finish first.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = AppState {
        verifier: Arc::new(JwtVerifier::new(&cfg.jwt)?),
        upstream: Arc::new(upstream::Upstreams::new(&cfg.upstreams)?),
    };
    tracing::info!(addr = %listener.local_addr()?, "bff listening");
    common::http::serve(listener, router(state, &cfg), shutdown).await?;
    Ok(())
}

impl common::cli::Service for Config {
    const NAME: &'static str = "bff";

    fn listen(&self) -> std::net::SocketAddr {
        self.http.listen
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        println!("the bff has no database: nothing to migrate");
        Ok(())
    }

    async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        run(self, listener, shutdown).await
    }
}
