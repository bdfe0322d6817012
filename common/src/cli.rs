//! The command line every service binary shares: `serve` (default), `migrate`,
//! `healthcheck`, and `--config <file>`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

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
