//! Redis for tests: a key prefix of a test's own whose keys are deleted when the test ends
//! ([`TestPrefix`]), and a server of a test's own (`redis-server` on a reserved port) for fault
//! tests that take Redis down and bring it back ([`RedisServer`]).

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::process::Guarded;

/// A unique key prefix (`test:<uuid>:`) on the Redis at `url`; every key under it is deleted
/// when this value is dropped — also while a failed test unwinds.
#[derive(Debug)]
pub struct TestPrefix {
    url: String,
    prefix: String,
}

impl TestPrefix {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            prefix: format!("test:{}:", uuid::Uuid::new_v4().simple()),
        }
    }

    /// On the machine's Redis (`redis://127.0.0.1:6379`).
    pub fn local() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deletes every key under the prefix now.
    pub fn clear(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query::<()>(&mut conn)?;
        }
        Ok(())
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        if let Err(e) = self.clear() {
            eprintln!("redis keys {}* not deleted: {e:#}", self.prefix);
        }
    }
}

/// A running (or stopped) private Redis; stopped when dropped.
pub struct RedisServer {
    port: u16,
    process: Option<Guarded>,
    /// With an append-only file here, a restart keeps what was written.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts `redis-server` on a reserved loopback port, keeping nothing on disk.
    pub fn start() -> anyhow::Result<Self> {
        let mut me = Self {
            port: crate::ports::try_reserve()?,
            process: None,
            dir: None,
        };
        me.restart()?;
        Ok(me)
    }

    /// Starts `redis-server` as production should run it for the workers' dedupe records: with
    /// an append-only file (`appendfsync everysec`) in a temporary directory, so a killed and
    /// restarted server keeps every write it acknowledged. The directory goes when dropped.
    pub fn start_persistent() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("notify-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut me = Self {
            port: crate::ports::try_reserve()?,
            process: None,
            dir: Some(dir),
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

    /// Starts it again on the same port: empty, or with its append-only file
    /// ([`RedisServer::start_persistent`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(["--save", "", "--daemonize", "no"])
            .args(["--logfile", ""]);
        match &self.dir {
            Some(dir) => {
                cmd.arg("--dir")
                    .arg(dir)
                    .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            }
            None => cmd.args(["--appendonly", "no"]),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Guarded::spawn("redis-server", cmd)
            .context("starting redis-server (Debian package redis-server)")?
            .with_grace(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = process.try_wait() {
                anyhow::bail!(
                    "redis-server exited at start ({status}) on port {}",
                    self.port
                );
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A connection to the Redis at `url` for a test to look at keys, with bounded waits: the
/// connection and every command give up after 10 s (a hung Redis fails the test with this
/// message instead of hanging it).
pub async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(std::time::Duration::from_secs(10))
        .set_response_timeout(std::time::Duration::from_secs(10));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| format!("connecting to Redis at {url} (10 s at most)"))
}
