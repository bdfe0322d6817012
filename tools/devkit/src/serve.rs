//! A router served from a thread of its own: the local stand-ins (provider sink, OTLP
//! receiver, the chaos run's webhook endpoint) keep answering whatever runtime the caller
//! runs, and are bound before the call returns, so their address is usable at once.

use std::net::SocketAddr;

/// Serves `app` on `127.0.0.1:port` (0: any free port) for as long as the process lives,
/// HTTP/1.1 and cleartext HTTP/2. Returns the bound address.
pub fn on_thread(name: &str, port: u16, app: axum::Router) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let label = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for a served router");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(server = %label, error = %e, "stopped serving");
                }
            });
        })?;
    Ok(addr)
}
