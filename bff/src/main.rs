use std::process::ExitCode;

use bff::Config;
use clap::Parser;
use common::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::telemetry::init("bff");
    let cfg: Config = match common::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let res = match cli.command() {
        Command::Healthcheck => return common::cli::healthcheck(cfg.http.listen).await,
        Command::Migrate => {
            println!("the bff has no database: nothing to migrate");
            Ok(())
        }
        Command::Serve => match tokio::net::TcpListener::bind(cfg.http.listen).await {
            Ok(listener) => bff::run(cfg, listener, common::shutdown::on_signal()).await,
            Err(e) => Err(anyhow::anyhow!("binding {}: {e}", cfg.http.listen)),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "bff failed");
            eprintln!("bff: {e:#}");
            ExitCode::FAILURE
        }
    }
}
