use std::process::ExitCode;

use clap::Parser;
use common::cli::{Cli, Command};
use notification_service::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::telemetry::init("notification-service");
    let cfg: Config = match common::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let res = match cli.command() {
        Command::Healthcheck => return common::cli::healthcheck(cfg.http.listen).await,
        Command::Migrate => notification_service::migrate(&cfg).await,
        Command::Serve => match tokio::net::TcpListener::bind(cfg.http.listen).await {
            Ok(listener) => {
                notification_service::run(cfg, listener, common::shutdown::on_signal()).await
            }
            Err(e) => Err(anyhow::anyhow!("binding {}: {e}", cfg.http.listen)),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "notification-service failed");
            eprintln!("notification-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}
