//! Runs Debian's nginx unprivileged with the repository's config rendered for local ports.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::process::Guarded;

/// The template in `nginx/nginx.conf.template`, relative to the workspace root.
pub const TEMPLATE: &str = include_str!("../../../nginx/nginx.conf.template");

/// Finds the nginx binary (PATH or /usr/sbin).
pub fn find_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|p| p.is_file())
}

/// The per-IP limit nginx applies before the bff's per-principal limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerIpLimit {
    /// Requests per second per client address.
    pub rate: u32,
    /// Requests above the rate let through at once before 429s start.
    pub burst: u32,
}

impl Default for PerIpLimit {
    /// What production uses (`nginx/nginx.conf.template`'s documented defaults).
    fn default() -> Self {
        Self {
            rate: 5_000,
            burst: 5_000,
        }
    }
}

/// Where nginx listens: the REST API and the gRPC API (HTTP/2 without TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

/// Renders the template: `{{listen}}`, `{{grpc_listen}}`, `{{upstreams}}` (addresses or
/// `host:port`, as in docker-compose.yml), `{{prefix}}`, `{{per_ip_rate}}`, `{{per_ip_burst}}`.
pub fn render(
    listen: Listen,
    upstreams: &[impl std::fmt::Display],
    prefix: &Path,
    per_ip: PerIpLimit,
) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    TEMPLATE
        .replace("{{listen}}", &listen.http.to_string())
        .replace("{{grpc_listen}}", &listen.grpc.to_string())
        .replace("{{upstreams}}", servers.trim_end())
        .replace("{{prefix}}", &prefix.display().to_string())
        .replace("{{per_ip_rate}}", &per_ip.rate.to_string())
        .replace("{{per_ip_burst}}", &per_ip.burst.to_string())
}

/// `nginx -t` on `conf` (a rendered config) with `prefix` holding its logs and temp files:
/// the error nginx prints when the config does not pass.
pub fn check(conf: &str, prefix: &Path) -> anyhow::Result<()> {
    let bin = find_binary().context(
        "nginx is not installed: `apt-get install -y nginx-light` (Debian's package) is what the stack expects",
    )?;
    std::fs::create_dir_all(prefix.join("logs"))?;
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let out = Command::new(bin)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(prefix)
        .arg("-e")
        .arg(prefix.join("logs/error.log"))
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "nginx -t refused {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A running nginx; stopped (and waited for) when dropped.
pub struct Nginx {
    process: Guarded,
    /// The REST API.
    pub addr: SocketAddr,
    /// The gRPC API.
    pub grpc_addr: SocketAddr,
    /// Holds `nginx.conf` and `logs/`.
    pub prefix: PathBuf,
}

impl Nginx {
    /// Writes the rendered config under `prefix` and starts nginx in the foreground on
    /// `listen`, with the production per-IP limit.
    pub fn start(listen: Listen, upstreams: &[SocketAddr], prefix: &Path) -> anyhow::Result<Self> {
        Self::start_with(listen, upstreams, prefix, PerIpLimit::default())
    }

    /// [`start`](Self::start) with another per-IP limit (tests that exercise it).
    pub fn start_with(
        listen: Listen,
        upstreams: &[SocketAddr],
        prefix: &Path,
        per_ip: PerIpLimit,
    ) -> anyhow::Result<Self> {
        let bin = find_binary().context(
            "nginx is not installed: `apt-get install -y nginx-light` (Debian's package) is what the stack expects",
        )?;
        std::fs::create_dir_all(prefix.join("logs"))?;
        std::fs::create_dir_all(prefix.join("tmp"))?;
        // nginx's workers drop to `nobody` when started as root; let them use the temp dir.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(prefix.join("tmp"), std::fs::Permissions::from_mode(0o777))?;
        }
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, render(listen, upstreams, prefix, per_ip))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGTERM makes the master stop its workers and exit (SIGKILL would orphan them).
        let process = Guarded::spawn("nginx", cmd)?;
        let mut me = Self {
            process,
            addr: listen.http,
            grpc_addr: listen.grpc,
            prefix: prefix.to_path_buf(),
        };
        me.wait_ready(Duration::from_secs(10))?;
        Ok(me)
    }

    /// Starts on reserved loopback ports ([`crate::ports`]), trying others if nginx cannot
    /// bind the first (something outside the reservation scheme took one).
    pub fn start_on_free_port(
        upstreams: &[SocketAddr],
        prefix: &Path,
        per_ip: PerIpLimit,
    ) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = || -> anyhow::Result<SocketAddr> {
                Ok(SocketAddr::from((
                    [127, 0, 0, 1],
                    crate::ports::try_reserve()?,
                )))
            };
            let listen = Listen {
                http: port()?,
                grpc: port()?,
            };
            match Self::start_with(listen, upstreams, prefix, per_ip) {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait() {
                let log =
                    std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default();
                anyhow::bail!("nginx exited at start: {status}\n{log}");
            }
            if std::net::TcpStream::connect(self.addr).is_ok()
                && std::net::TcpStream::connect(self.grpc_addr).is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The access log so far. nginx buffers it (flushed at most 1 s late): poll, do not sleep.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default()
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Stops nginx (master and workers) and waits for it.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled() {
        let conf = render(
            Listen {
                http: "127.0.0.1:8080".parse().unwrap(),
                grpc: "127.0.0.1:8443".parse().unwrap(),
            },
            &["127.0.0.1:9001"],
            Path::new("/tmp/x"),
            PerIpLimit { rate: 7, burst: 3 },
        );
        assert!(!conf.contains("{{"), "{conf}");
        assert!(conf.contains("rate=7r/s"), "{conf}");
        assert!(conf.contains("burst=3 "), "{conf}");
        assert!(conf.contains("listen 127.0.0.1:8443 http2;"), "{conf}");
    }
}
