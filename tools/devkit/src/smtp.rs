//! An SMTP catcher (mailin-embedded, real SMTP over TCP on loopback) that keeps every message,
//! optionally writes each as an `.eml` file, and can be told to fail for fault tests.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    path::PathBuf,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use mailin_embedded::{Handler, Response, Server, response};

/// One received message.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    /// The raw RFC 5322 message.
    pub data: Vec<u8>,
    /// When the server accepted it (the end of DATA).
    pub at: chrono::DateTime<chrono::Utc>,
}

impl ReceivedMail {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// How the catcher answers `RCPT TO`. (Failures are injected there, not at the end of DATA:
/// mailin keeps a session in the DATA state after an error reply to the final `.`, so the
/// client's next command is swallowed and the session hangs.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 250: accept.
    Accept,
    /// 451: a transient failure for the next `n` messages, then accept.
    FailTransient(u32),
    /// 550: reject every message permanently.
    RejectAll,
    /// 451 for about `percent` % of messages (pseudo-random, reproducible), accept the rest: a
    /// flaky relay.
    FailRandomly { percent: u32 },
}

#[derive(Default)]
struct Shared {
    mails: Vec<ReceivedMail>,
    mode: Option<Mode>,
    attempts: u64,
    /// xorshift state for `Mode::FailRandomly`.
    dice: u64,
}

/// A running catcher. The server thread lives as long as the process.
#[derive(Clone)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

#[derive(Clone)]
struct SinkHandler {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    dir: Option<PathBuf>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    credentials: Option<(String, String)>,
}

impl Handler for SinkHandler {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn rcpt(&mut self, _to: &str) -> Response {
        let mut s = self.shared.0.lock().unwrap();
        s.attempts += 1;
        match s.mode.unwrap_or(Mode::Accept) {
            Mode::RejectAll => response::NO_MAILBOX,
            Mode::FailTransient(n) if n > 0 => {
                s.mode = Some(Mode::FailTransient(n - 1));
                response::INTERNAL_ERROR
            }
            Mode::FailRandomly { percent } => {
                let mut x = s.dice.max(0x2545_f491_4f6c_dd1d);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.dice = x;
                if x % 100 < u64::from(percent) {
                    response::INTERNAL_ERROR
                } else {
                    response::OK
                }
            }
            _ => response::OK,
        }
    }

    fn data_end(&mut self) -> Response {
        let (lock, cvar) = &*self.shared;
        let mut s = lock.lock().unwrap();
        let mail = ReceivedMail {
            from: self.from.clone(),
            to: self.to.clone(),
            data: std::mem::take(&mut self.data),
            at: chrono::Utc::now(),
        };
        if let Some(dir) = &self.dir {
            let name = format!(
                "{}-{:04}.eml",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                s.mails.len() + 1
            );
            if let Err(e) = std::fs::write(dir.join(name), &mail.data) {
                tracing::warn!(error = %e, "could not write .eml");
            }
        }
        s.mails.push(mail);
        cvar.notify_all();
        response::OK
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }

    fn auth_plain(&mut self, _authz: &str, user: &str, password: &str) -> Response {
        match &self.credentials {
            Some((u, p)) if u == user && p == password => response::AUTH_OK,
            _ => response::INVALID_CREDENTIALS,
        }
    }
}

/// Optional server features.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Offer STARTTLS with this certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Speak SMTP inside TLS from the first byte (implicit TLS, `smtps://`, port 465 style)
    /// with this certificate chain and key (PEM files).
    pub implicit_tls: Option<(PathBuf, PathBuf)>,
    /// Require `AUTH PLAIN` with this user and password.
    pub credentials: Option<(String, String)>,
}

impl SmtpSink {
    /// Starts on `127.0.0.1:port` (0 = any free port); writes `.eml` files into `dir` if set.
    pub fn start(port: u16, dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with(port, dir, SinkOptions::default())
    }

    /// [`start`](Self::start) with STARTTLS and/or authentication.
    pub fn start_with(port: u16, dir: Option<PathBuf>, opts: SinkOptions) -> anyhow::Result<Self> {
        if let Some((cert, key)) = opts.implicit_tls.clone() {
            // The plain server on a private port, and a TLS front on the public one.
            let inner = Self::start_with(
                0,
                dir,
                SinkOptions {
                    implicit_tls: None,
                    ..opts
                },
            )?;
            let front = TcpListener::bind(("127.0.0.1", port))?;
            let addr = front.local_addr()?;
            tls_front(front, inner.addr, &cert, &key)?;
            return Ok(Self { addr, ..inner });
        }
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)?;
        }
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let handler = SinkHandler {
            shared: shared.clone(),
            dir,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
            credentials: opts.credentials.clone(),
        };
        let mut server = Server::new(handler);
        if let Some((cert, key)) = &opts.tls {
            // Both rustls providers are compiled into this workspace; pick one (already set: fine).
            let _ = rustls::crypto::ring::default_provider().install_default();
            server
                .with_ssl(mailin_embedded::SslConfig::SelfSigned {
                    cert_path: cert.display().to_string(),
                    key_path: key.display().to_string(),
                })
                .map_err(|e| anyhow::anyhow!("smtp sink TLS: {e}"))?;
        }
        if opts.credentials.is_some() {
            server.with_auth(mailin_embedded::AuthMechanism::Plain);
        }
        // One thread per open connection: senders keep pooled connections open.
        server
            .with_name("smtp-sink.local")
            .with_num_threads(64)
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name("smtp-sink".into())
            .spawn(move || {
                if let Err(e) = server.serve() {
                    tracing::error!(error = %e, "smtp sink stopped");
                }
            })?;
        Ok(Self { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.0.lock().unwrap().mode = Some(mode);
    }

    /// Messages accepted so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.shared.0.lock().unwrap().mails.clone()
    }

    /// Recipients offered (`RCPT TO`), accepted or not: one per delivery attempt.
    pub fn attempts(&self) -> u64 {
        self.shared.0.lock().unwrap().attempts
    }

    /// Waits until at least `n` messages were accepted or `timeout` passes; returns them
    /// (check the count: fewer means the wait timed out).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= n || tokio::time::Instant::now() >= deadline {
                return mails;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`wait_for`](Self::wait_for) for code outside a runtime: blocks the thread.
    pub fn wait_for_blocking(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.shared;
        let mut s = lock.lock().unwrap();
        while s.mails.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = cvar.wait_timeout(s, left).unwrap().0;
        }
        s.mails.clone()
    }
}

/// Terminates TLS on `front` and relays each connection's plaintext to the server at `inner`
/// (one thread, its own runtime; it lives as long as the process, like the server).
fn tls_front(
    front: TcpListener,
    inner: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<()> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    front.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("smtp-tls-front".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "smtp TLS front: no runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(front) = tokio::net::TcpListener::from_std(front) else {
                    return;
                };
                while let Ok((conn, _)) = front.accept().await {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(conn).await else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(inner).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        })?;
    Ok(())
}
