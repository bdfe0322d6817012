//! A PostgreSQL server of a tool's own (`initdb` in a temporary directory, its own reserved
//! port), for fault injection that must restart Postgres (`notifyctl chaos`). Everything else
//! uses the machine's server with a database per test.
//!
//! As root, the server runs as the `postgres` user (initdb and postgres refuse root): the data
//! directory is handed to it and the processes are started through `setpriv`, which execs, so
//! the guarded child is the postmaster itself.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::process::Guarded;

/// A running (or stopped) private Postgres; stopped and its directory removed when dropped.
pub struct PostgresServer {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    process: Option<Guarded>,
}

/// Debian installs the server binaries under /usr/lib/postgresql/<version>/bin.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries not found under /usr/lib/postgresql")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .context("no /usr/lib/postgresql/<version>/bin/initdb")
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` as the `postgres` user when this process is root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    /// `initdb` (trust auth, superuser `postgres`) in a new temporary directory and start.
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!("notify-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown of {} failed", dir.display());
        }
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut me = Self {
            dir,
            port: crate::ports::try_reserve()?,
            bin,
            process: None,
        };
        me.restart()?;
        Ok(me)
    }

    /// `postgres://postgres@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An immediate shutdown (SIGQUIT: no checkpoint, connections cut; the next start runs
    /// crash recovery) — the closest to a crash that leaves the server startable at once.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.signal(libc::SIGQUIT);
            if p.wait_timeout(Duration::from_secs(20)).is_none() {
                p.kill();
            }
        }
    }

    /// Starts it (again) on the same port and data directory; returns once it accepts
    /// connections.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut cmd = as_postgres(&self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGTERM is a "smart" shutdown that waits for clients; the drop path uses `stop`.
        let mut process = Guarded::spawn("postgres", cmd)?.with_grace(Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = process.try_wait() {
                anyhow::bail!("postgres exited at start ({status}) on port {}", self.port);
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres did not accept connections within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process = Some(process);
        Ok(())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
