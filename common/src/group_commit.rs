//! Group commit: concurrent callers' work written together, one transaction per batch.
//!
//! A caller hands its item to [`GroupCommit::submit`] and waits for its own answer. A few
//! writer tasks each take whatever is queued (up to `max_batch`; a writer never waits for
//! company, so an idle service writes a lone item at once) and call the batch function with
//! it, which answers every item in order. Used by intake (accepted requests) and by the
//! repeater (status events): both were bound by one transaction — several round trips and a
//! WAL flush — per item.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;

use tokio::sync::{Mutex, mpsc, oneshot};

type Job<T, R> = (T, oneshot::Sender<R>);

/// The writers; cheap to clone. They stop when every handle is dropped.
pub struct GroupCommit<T, R> {
    jobs: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for GroupCommit<T, R> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

/// Why an item got no answer: the writers are gone (shutting down), or one stopped while
/// writing its batch (the batch function panicked). The item comes back when it was not taken yet.
#[derive(Debug)]
pub enum Unanswered<T> {
    Closed(T),
    WriterStopped,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts `writers` tasks; `write` gets a batch of 1..=`max_batch` items and returns one
    /// answer per item, in the same order.
    pub fn start<F, Fut>(writers: usize, max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (jobs, rx) = mpsc::channel::<Job<T, R>>(4 * max_batch);
        let rx = Arc::new(Mutex::new(rx));
        let write = Arc::new(write);
        for _ in 0..writers.max(1) {
            let (rx, write) = (rx.clone(), write.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut batch = vec![first];
                        while batch.len() < max_batch {
                            match rx.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
                        batch.into_iter().unzip();
                    // A panicking batch drops its replies (its callers get `WriterStopped`);
                    // the writer lives on for the next one.
                    let Ok(answers) = AssertUnwindSafe(write(items)).catch_unwind().await else {
                        tracing::error!("a group-commit batch panicked; its callers get an error");
                        continue;
                    };
                    debug_assert_eq!(answers.len(), replies.len());
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
            });
        }
        Self { jobs }
    }

    /// Queues `item` and waits for its answer.
    pub async fn submit(&self, item: T) -> Result<R, Unanswered<T>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((item, _))) = self.jobs.send((item, tx)).await {
            return Err(Unanswered::Closed(item));
        }
        rx.await.map_err(|_| Unanswered::WriterStopped)
    }
}

/// A batch of `count` items written in one go by `together`, which answers every item; if that
/// fails (or there is a single item), each item `i` is written with `alone(i)`, so one item's
/// problem is never another's. `what` names the items in the log line of a failed batch.
pub async fn together_or_alone<R, Fut>(
    count: usize,
    what: &str,
    together: impl Future<Output = anyhow::Result<Vec<R>>>,
    alone: impl Fn(usize) -> Fut,
) -> Vec<R>
where
    Fut: Future<Output = R>,
{
    if count > 1 {
        match together.await {
            Ok(answers) => return answers,
            Err(e) => tracing::warn!(error = %e, count,
                "a group commit of {what} failed; writing them one by one"),
        }
    }
    let mut answers = Vec::with_capacity(count);
    for i in 0..count {
        answers.push(alone(i).await);
    }
    answers
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_batches_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let gc = GroupCommit::start(1, 64, move |items: Vec<u32>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                // Slow enough that later submissions queue up behind this batch.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 10).collect()
            }
        });
        let answers = futures::future::join_all((0..100u32).map(|i| {
            let gc = gc.clone();
            async move { gc.submit(i).await.unwrap() }
        }))
        .await;
        assert_eq!(answers, (0..100u32).map(|i| i * 10).collect::<Vec<_>>());
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 100, "100 items in {batches} batches: none shared");
    }

    #[tokio::test]
    async fn a_writer_that_panics_answers_its_batch_with_an_error() {
        let gc = GroupCommit::start(1, 8, |_items: Vec<u32>| async move {
            panic!("writer fails");
            #[allow(unreachable_code)]
            Vec::<u32>::new()
        });
        assert!(matches!(gc.submit(1).await, Err(Unanswered::WriterStopped)));
        // The writer survived: the next item is taken too (and answered the same way).
        assert!(matches!(gc.submit(2).await, Err(Unanswered::WriterStopped)));
    }

    #[tokio::test]
    async fn a_failed_batch_is_written_again_one_item_at_a_time() {
        let items = [1u32, 2, 3];
        let together = async { anyhow::bail!("one item is bad") };
        let answers = together_or_alone(items.len(), "numbers", together, |i| async move {
            if items[i] == 2 { Err(()) } else { Ok(items[i]) }
        })
        .await;
        assert_eq!(answers, [Ok(1), Err(()), Ok(3)]);
        let whole = together_or_alone(2, "numbers", async { Ok(vec![Ok(7), Ok(8)]) }, |_| async {
            Err::<u32, ()>(())
        })
        .await;
        assert_eq!(whole, [Ok(7), Ok(8)]);
    }
}
