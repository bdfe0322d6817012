//! `users-service [serve|migrate|healthcheck] [--config file]`; see `common::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::main::<users_service::Config>().await
}
