//! `notification-service [serve|migrate|healthcheck] [--config file]`; see `common::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::main::<notification_service::Config>().await
}
