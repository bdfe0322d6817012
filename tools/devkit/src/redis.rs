//! A Redis server of a test's own (`redis-server` on a reserved port), for fault tests that
//! take Redis down and bring it back. Everything else uses the machine's Redis with a key
//! prefix per test.

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::process::Guarded;

/// A running (or stopped) private Redis; stopped when dropped.
pub struct RedisServer {
    port: u16,
    process: Option<Guarded>,
}

impl RedisServer {
    /// Starts `redis-server` on a reserved loopback port, keeping nothing on disk.
    pub fn start() -> anyhow::Result<Self> {
        let mut me = Self {
            port: crate::ports::try_reserve()?,
            process: None,
        };
        me.restart()?;
        Ok(me)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Guarded::id)
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown). Connections are cut at once.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Guarded::spawn("redis-server", cmd)
            .context("starting redis-server (Debian package redis-server)")?
            .with_grace(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = process.try_wait() {
                anyhow::bail!("redis-server exited at start ({status}) on port {}", self.port);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not listen on {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
        Ok(())
    }
}
