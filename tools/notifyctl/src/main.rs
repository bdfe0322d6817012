use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use common::auth::Role;
use notifyctl::{
    bench, bench_digest, bench_inbox, bench_outbox, chaos, dashboard, launcher, ops, scenario,
    smoke, stack::StackFile,
};

#[derive(Parser)]
#[command(
    name = "notifyctl",
    about = "Operate the notification platform (any deployment, or the one `make up` runs) and run it on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send a notification (as a service); --wait follows it until every delivery settled.
    Send(Box<ops::send::SendArgs>),
    /// A notification and each delivery's status; --follow prints every change.
    Status(ops::status::StatusArgs),
    /// Dead letters: list them, re-drive them.
    #[command(subcommand)]
    DeadLetters(ops::dead_letters::DeadLettersCmd),
    /// Deliveries per channel × status and accept → sent latency over a window.
    Stats(ops::stats::StatsArgs),
    /// Every provider attempt as it is recorded, until Ctrl-C.
    Tail(ops::tail::TailArgs),
    /// A shell completion script: `notifyctl completions bash > /etc/bash_completion.d/notifyctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Start everything (embedded Kafka, SMTP catcher, services, 2 bff behind nginx) until Ctrl-C.
    Up(launcher::UpArgs),
    /// Mint a token: with the running stack's signing settings, or a deployment's HS256
    /// secret (--secret / NOTIFY_JWT__SECRET), e.g. an admin's for the operator commands.
    Token {
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
        #[arg(long, default_value = ".dev/stack.json")]
        stack: PathBuf,
        /// Sign with this HS256 secret (a deployment's `jwt.secret`) instead of the stack's.
        #[arg(long, env = "NOTIFY_JWT__SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// With --secret: the deployment's `jwt.issuer`.
        #[arg(long, env = "NOTIFY_JWT__ISSUER", default_value = "notify-dev")]
        issuer: String,
        /// With --secret: the deployment's `jwt.audience`.
        #[arg(long, env = "NOTIFY_JWT__AUDIENCE", default_value = "notify")]
        audience: String,
    },
    /// Only the embedded Kafka: 3 brokers, every topic with 3 partitions × replication 3.
    Kafka {
        /// Prepended to every topic name.
        #[arg(long, default_value = "")]
        topic_prefix: String,
    },
    /// Send notifications through the running stack, wait for `sent`, print latency and RSS.
    Smoke(smoke::SmokeArgs),
    /// The delivery guarantee under load with faults injected in turn (its own Postgres,
    /// Redis and Kafka); exits 1 if anything accepted was lost.
    Chaos(chaos::ChaosArgs),
    /// Commit outbox rows at a steady rate through the real relay and purge (its own database
    /// and Kafka); exits 1 if the outbox did not stay bounded.
    BenchOutbox(bench_outbox::BenchOutboxArgs),
    /// The in-app inbox's streams: Redis pub/sub against Kafka for the signals, then idle
    /// memory and delivery latency at each stream count on one bff of a release stack.
    BenchInbox(bench_inbox::BenchInboxArgs),
    /// What digests cost: a baseline of plain sends, the same sends digested into one window
    /// per recipient, and the close of every window, on a release stack of its own.
    BenchDigest(bench_digest::BenchDigestArgs),
    /// One load scenario against the running stack (`make up`): open-loop requests, then the
    /// accounting from the platform's records; writes JSON and an HTML report. Exits 1 if
    /// anything accepted was lost.
    Load(scenario::LoadArgs),
    /// pgbench's baseline, then the standard scenarios against a fresh release stack of its
    /// own; writes every result and report.html. Exits 1 if anything accepted was lost.
    Bench(bench::BenchArgs),
    /// Draw a Grafana dashboard's panels from a Prometheus (no Grafana needed): an HTML page
    /// of charts, and a PNG of it when chromium is installed.
    Dashboard(dashboard::DashboardArgs),
    /// Rebuild report.html from the results in a directory.
    Report {
        #[arg(default_value = ".dev/load")]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    User,
    Service,
    Admin,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Cmd::Send(args) => ops::send::run(&args),
        Cmd::Status(args) => ops::status::run(&args),
        Cmd::DeadLetters(cmd) => ops::dead_letters::run(&cmd),
        Cmd::Stats(args) => ops::stats::run(&args),
        Cmd::Tail(args) => ops::tail::run(&args),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "notifyctl", &mut std::io::stdout());
            Ok(())
        }
        Cmd::Up(args) => launcher::up(args),
        Cmd::Token {
            role,
            sub,
            ttl,
            stack,
            secret,
            issuer,
            audience,
        } => (|| {
            let jwt = match secret {
                Some(secret) => common::auth::JwtConfig {
                    secret: secret.into(),
                    issuer,
                    audience,
                    ..Default::default()
                },
                None => StackFile::read(&stack)?.jwt_config(),
            };
            let role = match role {
                RoleArg::User => Role::User,
                RoleArg::Service => Role::Service,
                RoleArg::Admin => Role::Admin,
            };
            println!(
                "{}",
                common::auth::mint_hs256(&jwt, &sub, role, ttl)?
            );
            Ok(())
        })(),
        Cmd::Kafka { topic_prefix } => launcher::kafka_only(&topic_prefix),
        Cmd::Smoke(args) => smoke::run(args),
        Cmd::Chaos(args) => chaos::run(args).and_then(|report| {
            anyhow::ensure!(
                report.holds(),
                "the guarantee does not hold: {} lost, {} duplicates of sends that were not in flight at a kill",
                report.lost,
                report.duplicates_unexplained
            );
            Ok(())
        }),
        Cmd::BenchOutbox(args) => bench_outbox::run(args).and_then(|report| {
            anyhow::ensure!(
                report.bounded,
                "the outbox did not stay bounded: {} rows at the end ({} unpublished), bound {}",
                report.final_rows,
                report.final_unpublished,
                report.bound_rows
            );
            Ok(())
        }),
        Cmd::BenchInbox(args) => bench_inbox::run(args).map(|report| {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }),
        Cmd::BenchDigest(args) => bench_digest::run(args).map(|report| {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }),
        Cmd::Load(args) => scenario::run(args.clone()).and_then(|r| {
            print!("{}", scenario::summary(&r));
            println!("report: {}", args.out.join("report.html").display());
            anyhow::ensure!(
                r.deliveries.lost == 0,
                "{} deliveries lost",
                r.deliveries.lost
            );
            Ok(())
        }),
        Cmd::Bench(args) => bench::run(args).and_then(|results| {
            let lost: u64 = results.iter().map(|r| r.deliveries.lost).sum();
            anyhow::ensure!(lost == 0, "{lost} deliveries lost");
            Ok(())
        }),
        Cmd::Report { dir } => notifyctl::report::write_dir(&dir),
        Cmd::Dashboard(args) => dashboard::run(&args).map(|(html, png)| {
            println!("{}", html.display());
            if let Some(png) = png {
                println!("{}", png.display());
            }
        }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notifyctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
