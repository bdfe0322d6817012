//! SMTP connections with `TCP_NODELAY`, pooled.
//!
//! lettre writes a message's body and its terminating `\r\n.\r\n` as two writes. On a socket
//! without `TCP_NODELAY`, Nagle's algorithm holds the terminator until the server acknowledges
//! the body, and the server delays that acknowledgement (Linux: 40 ms) because it has nothing
//! to answer yet — so every message took ≥ 40 ms whatever the load (docs/benchmarks.md,
//! "Email"). lettre's pooled transport opens its sockets itself and offers no hook, so for
//! `smtp://` (plain, and STARTTLS with `?tls=required|opportunistic`) this pool opens the
//! socket, sets `TCP_NODELAY`, and hands it to lettre's SMTP client (`connect_with_transport`),
//! which then does EHLO, STARTTLS and AUTH as before. (`smtps://` keeps lettre's own transport:
//! see `crate::email`.)

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        Error,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, Tls},
        extension::ClientId,
    },
};
use tokio::sync::Semaphore;

/// A connection idle longer than this is checked (`NOOP`) before it is used again: servers
/// close idle sessions, and a send on a dead one would fail for nothing.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Why a send failed.
#[derive(Debug)]
pub enum SendError {
    /// The TCP connection could not be made (refused, unreachable, timed out).
    Connect(std::io::Error),
    /// The SMTP session failed (a reply code, TLS, authentication, the connection lost).
    Smtp(Error),
}

impl From<Error> for SendError {
    fn from(e: Error) -> Self {
        Self::Smtp(e)
    }
}

pub struct NodelayPool {
    host: String,
    port: u16,
    tls: Tls,
    credentials: Option<Credentials>,
    hello: ClientId,
    connect_timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    /// One permit per connection that may exist.
    slots: Semaphore,
}

impl NodelayPool {
    pub fn new(
        host: String,
        port: u16,
        tls: Tls,
        credentials: Option<Credentials>,
        hello: ClientId,
        connect_timeout: Duration,
        size: usize,
    ) -> Self {
        Self {
            host,
            port,
            tls,
            credentials,
            hello,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(size.max(1)),
        }
    }

    /// A new session (greeting, EHLO, STARTTLS, AUTH), within the connect timeout: a server
    /// that accepts the connection but never greets (say, a TLS port spoken to in plain) fails
    /// it like one that does not answer.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| {
                SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the SMTP server did not complete the session setup in time",
                ))
            })?
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(SendError::Connect)?;
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        let mut conn =
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await?;
        match &self.tls {
            Tls::Opportunistic(params) if conn.can_starttls() => {
                conn.starttls(params.clone(), &self.hello).await?;
            }
            Tls::Required(params) => conn.starttls(params.clone(), &self.hello).await?,
            _ => {}
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }

    /// Sends one message on a pooled connection (a new one when none is idle). A connection
    /// that failed is dropped, never reused.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), SendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let reused = self.idle.lock().expect("smtp pool").pop();
        let mut conn = match reused {
            Some((mut conn, since)) => {
                if since.elapsed() < CHECK_AFTER_IDLE || conn.test_connected().await {
                    conn
                } else {
                    self.connect().await?
                }
            }
            None => self.connect().await?,
        };
        match conn.send(envelope, email).await {
            Ok(_) => {
                self.idle
                    .lock()
                    .expect("smtp pool")
                    .push((conn, Instant::now()));
                Ok(())
            }
            Err(e) => {
                conn.abort().await;
                Err(e.into())
            }
        }
    }
}
