//! Runs Debian's nginx unprivileged with the repository's config rendered for local ports.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;

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

/// Renders the template: `{{listen}}`, `{{upstreams}}`, `{{prefix}}`.
pub fn render(listen: SocketAddr, upstreams: &[SocketAddr], prefix: &Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    TEMPLATE
        .replace("{{listen}}", &listen.to_string())
        .replace("{{upstreams}}", servers.trim_end())
        .replace("{{prefix}}", &prefix.display().to_string())
}

/// A running nginx; stopped (and waited for) when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// Holds `nginx.conf` and `logs/`.
    pub prefix: PathBuf,
}

impl Nginx {
    /// Writes the rendered config under `prefix` and starts nginx in the foreground.
    pub fn start(
        listen: SocketAddr,
        upstreams: &[SocketAddr],
        prefix: &Path,
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
        std::fs::write(&conf, render(listen, upstreams, prefix))?;
        let mut cmd = Command::new(bin);
        crate::die_with_parent(&mut cmd);
        let child = cmd
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting nginx")?;
        let mut me = Self {
            child,
            addr: listen,
            prefix: prefix.to_path_buf(),
        };
        me.wait_ready(Duration::from_secs(10))?;
        Ok(me)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("nginx exited at start: {status}");
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
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

    /// The access log so far (nginx flushes it at most 1 s late).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/access.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops nginx: SIGTERM makes the master stop its workers and exit (SIGKILL would orphan
    /// the workers); SIGKILL only if it has not exited within 5 s.
    #[allow(unsafe_code)]
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
