//! The bff's port, split: a connection that opens with `GET /v1/me/inbox/stream` is served
//! here, off hyper; every other connection goes to the router (decision 0029).
//!
//! Why: an idle stream held by hyper costs its connection's 8 KiB read buffer and 8 KiB header
//! write buffer for as long as it is open — 16 of the 21.7 KiB a stream measured at 10,000
//! streams. Here the request head is read into a buffer that is freed once parsed, the checks
//! are the router's own (the session cookie carried as a bearer token, [`Caller`]'s
//! authentication and rate limit, [`inbox_stream::open`]'s role, caps and `Last-Event-ID`), and
//! each event is written straight to the socket: what stays is the socket and the stream's
//! state. The answer is HTTP/1.1 and ends with the connection (no `Content-Length`, no chunks:
//! RFC 9112 §6.3), so nothing is buffered to frame it.
//!
//! nginx opens a connection per request to the bff, so through nginx every stream is served
//! here. A client that sends the stream request on a connection it used before (keep-alive)
//! reaches the router's route for it, which serves the same stream through hyper.

use std::{net::SocketAddr, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{self, HeaderMap, HeaderName, HeaderValue, Method},
    response::IntoResponse,
};
use common::problem::ApiError;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use crate::{AppState, inbox_stream, rate_limit::Caller, session};

/// The request line that is served here.
const STREAM_REQUEST: &[u8] = b"GET /v1/me/inbox/stream";
/// Longest request head taken (larger ones go to the router, which answers them).
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request's first bytes, then its whole head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes an event for longer than this is dropped (it resumes with
/// `Last-Event-ID`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The router's side of the split port: the connections that are not streams.
pub struct RouterSide {
    rx: mpsc::Receiver<(TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for RouterSide {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor stopped (shutdown): no more connections; the server is stopping.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Splits `listener`: streams are served here until `shutdown`, the rest is handed to the
/// router through the returned listener.
pub fn split(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<RouterSide> {
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (sock, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum's own loop does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, state) = (tx.clone(), state.clone());
            tokio::spawn(async move {
                if opens_with_stream(&sock).await {
                    serve_stream(sock, state).await;
                } else {
                    let _ = tx.send((sock, addr)).await;
                }
            });
        }
    });
    Ok(RouterSide { rx, local })
}

/// Whether the connection's first bytes are the stream's request line (looked at, not read).
async fn opens_with_stream(sock: &TcpStream) -> bool {
    let mut buf = [0u8; STREAM_REQUEST.len() + 1];
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 || !STREAM_REQUEST.starts_with(&buf[..n.min(STREAM_REQUEST.len())]) {
            return false;
        }
        if n == buf.len() {
            return matches!(buf[STREAM_REQUEST.len()], b' ' | b'?');
        }
        // The line came in pieces: look again shortly.
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves one stream on `sock` until it ends or the client goes.
async fn serve_stream(mut sock: TcpStream, state: AppState) {
    let _ = sock.set_nodelay(true);
    // The setup (head, checks, first read of the change log) is boxed: its futures are large
    // and only the stream's own state is kept while it is open.
    let opened = Box::pin(accept_stream(&mut sock, &state)).await;
    let mut stream = match opened {
        Ok(s) => s,
        Err(Some(e)) => {
            let _ = write_error(&mut sock, e).await;
            return;
        }
        Err(None) => return,
    };
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\
                 x-accel-buffering: no\r\nconnection: close\r\n\r\n";
    if !write(&mut sock, head).await {
        return;
    }
    while let Some((out, s)) = stream.next().await {
        if !write(&mut sock, &out.to_bytes()).await {
            return;
        }
        stream = s;
    }
    let _ = sock.shutdown().await;
}

async fn write(sock: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Reads and checks the request; the opened stream, or the error to answer (`None`: the
/// client went or sent nothing usable in time — no answer).
async fn accept_stream(
    sock: &mut TcpStream,
    state: &AppState,
) -> Result<inbox_stream::Stream, Option<ApiError>> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(sock)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return Err(Some(ApiError::bad_request(
                "bad_request",
                "the request head is malformed or larger than 8 KiB",
            )));
        }
        _ => return Err(None),
    };
    let mut parts = parse(&head).ok_or_else(|| {
        Some(ApiError::bad_request(
            "bad_request",
            "the request head is malformed",
        ))
    })?;
    drop(head);
    session::cookie_to_bearer_for_read(&mut parts.headers).map_err(Some)?;
    let caller = Caller::from_request_parts(&mut parts, state)
        .await
        .map_err(Some)?;
    inbox_stream::open(state, caller, &parts.headers)
        .await
        .map_err(Some)
}

/// The request head (through the blank line), or `None` when it is not one within
/// [`MAX_HEAD`].
async fn read_head(sock: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// The request's method, path and headers as the router's extractors take them.
fn parse(head: &[u8]) -> Option<http::request::Parts> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !req.parse(head).ok()?.is_complete() || req.method != Some("GET") {
        return None;
    }
    let mut builder = http::Request::builder().method(Method::GET).uri(req.path?);
    let map: &mut HeaderMap = builder.headers_mut()?;
    for h in req.headers.iter() {
        map.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

/// `e` as the router would answer it (status, problem+json, its headers), then the end.
async fn write_error(sock: &mut TcpStream, e: ApiError) -> std::io::Result<()> {
    let resp = e.into_response();
    let status = resp.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in resp.headers() {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(&body).await?;
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_becomes_the_parts_the_extractors_take() {
        let parts = parse(
            b"GET /v1/me/inbox/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nLast-Event-ID: 7\r\n\r\n",
        )
        .unwrap();
        assert_eq!(parts.uri.path(), "/v1/me/inbox/stream");
        assert_eq!(parts.headers["authorization"], "Bearer t");
        assert_eq!(parts.headers["last-event-id"], "7");
        assert!(parse(b"POST /v1/me/inbox/stream HTTP/1.1\r\n\r\n").is_none());
        assert!(parse(b"GET /v1/me/inbox/stream HTTP/1.1\r\nHost: x\r\n").is_none());
        assert!(parse(b"GET /v1/me/inbox/stream HTTP/1.1\r\nBad Header: x\r\n\r\n").is_none());
    }

    #[test]
    fn events_are_written_as_server_sent_events() {
        let e = inbox_stream::Out::Event {
            kind: "inbox",
            id: 3,
            data: "{\"a\":1}".into(),
        };
        assert_eq!(e.to_bytes(), b"event: inbox\nid: 3\ndata: {\"a\":1}\n\n");
        assert_eq!(inbox_stream::Out::Comment.to_bytes(), b":\n\n");
    }

    #[tokio::test]
    async fn only_a_connection_opening_with_the_stream_request_is_taken() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        for (sent, taken) in [
            (&b"GET /v1/me/inbox/stream HTTP/1.1\r\n"[..], true),
            (&b"GET /v1/me/inbox/stream?x=1 HTTP/1.1\r\n"[..], true),
            (&b"GET /v1/me/inbox/streamed HTTP/1.1\r\n"[..], false),
            (&b"GET /v1/me/inbox HTTP/1.1\r\n\r\n"[..], false),
            (&b"POST /v1/notifications HTTP/1.1\r\n"[..], false),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = l.accept().await.unwrap();
            client.write_all(sent).await.unwrap();
            assert_eq!(
                opens_with_stream(&server).await,
                taken,
                "{}",
                String::from_utf8_lossy(sent)
            );
        }
    }
}
