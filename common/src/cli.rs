//! The command line every service binary shares: `serve` (default), `migrate`,
//! `healthcheck`, and `--config <file>`.

use std::{future::Future, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
pub struct Cli {
    /// Optional TOML file; `NOTIFY_*` environment variables override it.
    #[arg(long, env = "NOTIFY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Create the database if needed and apply pending migrations, then exit.
    Migrate,
    /// Exit 0 if the running service at the configured address answers `/healthz`.
    Healthcheck,
}

impl Cli {
    pub fn command(&self) -> Command {
        self.command.unwrap_or(Command::Serve)
    }
}

/// `GET http://addr/healthz` with a short timeout, for container health checks.
pub async fn healthcheck(addr: SocketAddr) -> ExitCode {
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build();
    let ok = match client {
        Ok(c) => c
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!("healthcheck failed: http://{addr}/healthz did not answer 200");
        ExitCode::FAILURE
    }
}

/// What a service binary is, seen from its `main`: implemented by each service's `Config`.
pub trait Service: DeserializeOwned + Send + 'static {
    /// Name in logs and error messages.
    const NAME: &'static str;

    /// Where `serve` listens (and `healthcheck` knocks).
    fn listen(&self) -> SocketAddr;
    /// Trace export settings (`[telemetry]`).
    fn telemetry(&self) -> &crate::telemetry::TelemetryConfig;

    /// `migrate`: create the database if needed and apply migrations.
    fn migrate(&self) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// `serve`: run until `shutdown` is cancelled.
    fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The whole `main` of a service: parse the command line, initialise logging, load the
/// config (a bad value exits 2 naming the key), run the subcommand.
pub async fn main<S: Service>() -> ExitCode {
    let cli = Cli::parse();
    let cfg: S =
        match crate::telemetry::while_starting(|| crate::config::load(cli.config.as_deref())) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e:#}", S::NAME);
                return ExitCode::from(2);
            }
        };
    // Only a serving process exports spans; `migrate` and `healthcheck` just log.
    if !matches!(cli.command(), Command::Serve) {
        crate::telemetry::init(S::NAME);
    } else if let Err(e) = crate::telemetry::init_exporting(S::NAME, cfg.telemetry()) {
        eprintln!("{}: {e:#}", S::NAME);
        return ExitCode::from(2);
    }
    let res = match cli.command() {
        Command::Healthcheck => return healthcheck(cfg.listen()).await,
        Command::Migrate => cfg.migrate().await,
        Command::Serve => match TcpListener::bind(cfg.listen()).await {
            Ok(listener) => cfg.serve(listener, crate::shutdown::on_signal()).await,
            Err(e) => Err(anyhow::anyhow!("binding {}: {e}", cfg.listen())),
        },
    };
    crate::telemetry::flush();
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, service = S::NAME, "failed");
            eprintln!("{}: {e:#}", S::NAME);
            ExitCode::FAILURE
        }
    }
}
