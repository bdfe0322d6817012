//! Child processes that cannot outlive whoever started them.
//!
//! * [`Guarded`] stops its process when dropped — on the success path and while a failed test
//!   unwinds — with SIGTERM, then SIGKILL if it has not exited within a grace period.
//! * Every guarded child also gets `PR_SET_PDEATHSIG` (SIGTERM), so it is stopped even when
//!   its parent is SIGKILLed and no destructor runs. Linux delivers that signal when the
//!   **thread** that forked the child exits, not the process; a child forked from a tokio
//!   blocking thread (which exits after 10 s idle) would be killed mid-test. So children are
//!   forked on one spawner thread that lives as long as the process.

use std::{
    process::{Child, Command, ExitStatus},
    sync::{LazyLock, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::Context;

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread every guarded child is forked from. It never exits before the process does.
static SPAWNER: LazyLock<Mutex<mpsc::Sender<Job>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("child-spawner".into())
        .spawn(move || {
            while let Ok((mut cmd, reply)) = rx.recv() {
                crate::die_with_parent(&mut cmd);
                let _ = reply.send(cmd.spawn());
            }
        })
        .expect("starting the child-spawner thread");
    Mutex::new(tx)
});

/// Forks `cmd` on the spawner thread (with `PR_SET_PDEATHSIG`).
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    SPAWNER
        .lock()
        .expect("spawner lock poisoned")
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the child-spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the child-spawner thread is gone"))?
}

/// A child process that is stopped when this value is dropped.
pub struct Guarded {
    name: String,
    child: Child,
    grace: Duration,
}

impl Guarded {
    /// Starts `cmd` as `name` (used in messages).
    pub fn spawn(name: &str, cmd: Command) -> anyhow::Result<Self> {
        let child = spawn(cmd).with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            grace: Duration::from_secs(5),
        })
    }

    /// How long [`stop`](Self::stop) waits after SIGTERM before SIGKILL (default 5 s).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` once it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) if it is still running.
    #[allow(unsafe_code)]
    pub fn signal(&mut self, signal: i32) {
        if self.try_wait().is_none() {
            // SAFETY: kill(2) on our own, not yet reaped child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL at once, and reap it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// SIGTERM; SIGKILL if it has not exited within the grace period. Returns its status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(self.grace) {
            return Some(s);
        }
        eprintln!(
            "{} (pid {}) ignored SIGTERM for {:?}; killing it",
            self.name,
            self.child.id(),
            self.grace
        );
        self.kill()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `pid` is a live process (a zombie — exited, not yet reaped — counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// The direct children of `pid`, forked by any of its threads (from `/proc`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_guard_stops_its_process() {
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let g = Guarded::spawn("sleep", cmd).unwrap();
        let pid = g.id();
        assert!(alive(pid));
        drop(g);
        assert!(!alive(pid));
    }

    #[test]
    fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
        let mut cmd = Command::new("sh");
        // An ignored signal stays ignored across exec: `sleep` itself ignores SIGTERM.
        cmd.args(["-c", "trap '' TERM; exec sleep 600"]);
        let mut g = Guarded::spawn("stubborn", cmd)
            .unwrap()
            .with_grace(Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(200)); // the trap is set
        let started = Instant::now();
        let status = g.stop().unwrap();
        assert!(!status.success());
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_child_forked_from_a_short_lived_thread_survives_that_thread() {
        let g = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("600");
            Guarded::spawn("sleep", cmd).unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            alive(g.id()),
            "PR_SET_PDEATHSIG fired when the calling thread ended"
        );
    }
}
