//! The launcher's child processes: spawned with their logs, stopped together.

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use common::events::all_topics;
use devkit::kafka::DevCluster;

/// Every child process; all are stopped when this is dropped.
pub(super) struct Children {
    pub(super) procs: Vec<(String, Child)>,
}

impl Children {
    pub(super) fn stop_all(&mut self) {
        for (_, c) in &self.procs {
            // SIGTERM: each service drains and exits on its own.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for (name, c) in &mut self.procs {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("  {name} did not stop in time; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.procs.clear();
    }

    pub(super) fn exited(&mut self) -> Option<String> {
        self.procs
            .iter_mut()
            .find_map(|(name, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| name.clone()))
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

pub(super) fn reachable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

pub(super) fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hp = rest.split('/').next().unwrap_or(rest);
    if hp.contains(':') {
        hp.to_owned()
    } else {
        format!("{hp}:{default_port}")
    }
}

pub(crate) fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .context("no exe dir")?
        .to_path_buf();
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build first (`cargo build --workspace --bins`, which `make up` does)",
        path.display()
    );
    Ok(path)
}

/// Starts `bin` as `name` (its log file is `<logs>/<name>.log`).
pub(super) fn spawn(
    name: &str,
    bin: &str,
    args: &[&str],
    env: &[(String, String)],
    logs: &Path,
) -> anyhow::Result<Child> {
    let log = File::create(logs.join(format!("{name}.log")))?;
    let mut cmd = Command::new(binary(bin)?);
    devkit::die_with_parent(&mut cmd);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn().with_context(|| format!("starting {name}"))
}

/// `notifyctl kafka`: only the embedded Kafka, until Ctrl-C.
pub fn kafka_only(prefix: &str) -> anyhow::Result<()> {
    let topics: Vec<String> = all_topics()
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let cluster = DevCluster::start(&topics, 3)?;
    println!("{}", cluster.bootstrap_servers());
    eprintln!(
        "embedded Kafka up: 3 brokers, {} topics × 3 partitions × replication 3; Ctrl-C stops it",
        topics.len()
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wait_for_signal());
    Ok(())
}

pub(super) async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
