//! Services run in-process by a test, stopped when the test ends — also when it fails.
//!
//! A test that spawns services on the runtime and stops them only at its end hangs when an
//! assertion fails first: the runtime drops the still-running tasks after the test's locals
//! (the Kafka cluster among them) are gone, and a Kafka consumer closed against vanished
//! brokers waits for them forever. A [`TaskGroup`] declared **after** the cluster is dropped
//! **before** it, and its `Drop` cancels every task and waits (bounded) until they ended.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long dropping a group waits for its tasks.
const DROP_WAIT: Duration = Duration::from_secs(10);

/// Named tasks sharing one shutdown token.
pub struct TaskGroup {
    shutdown: CancellationToken,
    tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
}

impl Default for TaskGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskGroup {
    pub fn new() -> Self {
        Self {
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// The token every task must stop on.
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs `fut` as `name` on the current runtime.
    pub fn spawn<F>(&mut self, name: &str, fut: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push((name.to_owned(), tokio::spawn(fut)));
    }

    /// Runs a task that returns nothing (a relay, a consumer loop).
    pub fn spawn_unit<F>(&mut self, name: &str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, async move {
            fut.await;
            Ok(())
        });
    }

    /// The name of a task that has already ended (a service that should be running died).
    pub fn finished(&self) -> Option<&str> {
        self.tasks
            .iter()
            .find(|(_, t)| t.is_finished())
            .map(|(n, _)| n.as_str())
    }

    /// Cancels every task and waits up to `timeout` for all of them; an error names a task
    /// that failed, panicked or did not stop.
    pub async fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut first_error = None;
        for (name, task) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} failed: {e:#}"));
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} panicked: {e}"));
                }
                Err(_) => {
                    first_error
                        .get_or_insert(anyhow::anyhow!("{name} did not stop within {timeout:?}"));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Cancels and waits (blocking this thread) up to `timeout`; true when every task ended.
    /// Needs a multi-threaded runtime: the tasks run on its other threads meanwhile. The group
    /// is empty afterwards (tasks still running are left to the runtime).
    pub fn cancel_and_wait(&mut self, timeout: Duration) -> bool {
        self.shutdown.cancel();
        let deadline = Instant::now() + timeout;
        loop {
            if self.tasks.iter().all(|(_, t)| t.is_finished()) {
                self.tasks.clear();
                return true;
            }
            if Instant::now() >= deadline {
                let left: Vec<&str> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| !t.is_finished())
                    .map(|(n, _)| n.as_str())
                    .collect();
                eprintln!("still running after {timeout:?}: {left:?}");
                self.tasks.clear();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TaskGroup {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.cancel_and_wait(DROP_WAIT);
        }
    }
}
