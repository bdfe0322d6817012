//! One [`CancellationToken`] per process, cancelled by SIGINT or SIGTERM. It drives the HTTP
//! server's graceful shutdown and every background loop; `main` then waits for its tasks under
//! a hard timeout.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled when the process receives SIGINT or SIGTERM.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
        child.cancel();
    });
    token
}

/// Waits for `work` but gives up after `limit` once shutdown has begun, so a stuck task never
/// keeps the process alive forever.
pub async fn drain<F: Future>(work: F, limit: Duration) -> Option<F::Output> {
    match tokio::time::timeout(limit, work).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(?limit, "tasks did not finish within the shutdown limit");
            None
        }
    }
}
