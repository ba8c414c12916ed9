//! The thread a shard's store work runs on.
//!
//! RocksDB calls block (a synced commit waits for fdatasync), so they stay off the async
//! executor. They run on one thread per shard, started when it opens, rather than on
//! tokio's blocking pool: that pool starts a new thread whenever work arrives a moment
//! before an idle one is back, which even strictly sequential work does, and glibc gives
//! every new thread a malloc arena of its own. Over a long run RSS crept up with each
//! (by 9-46% from 10^3 to 10^5 transactions; see benches' `rss`). One thread also runs
//! a shard's store work in the order it was asked for.

use crate::store::StoreError;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};

type Job = Box<dyn FnOnce() + Send>;

/// Store work that failed or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreTaskError {
    /// The store itself failed (RocksDB, or bytes that do not decode).
    #[error("the store failed")]
    Store(#[source] StoreError),
    /// The store thread could not be started.
    #[error("cannot start the store thread")]
    Start(#[source] std::io::Error),
    /// The store thread has stopped (the shard closed), so the work never ran.
    #[error("the store thread has stopped")]
    Stopped,
    /// The work panicked; the thread went on with the next work.
    #[error("store work panicked: {message}")]
    Panicked {
        /// The panic's message, when it had one.
        message: String,
    },
}

impl From<StoreError> for StoreTaskError {
    fn from(err: StoreError) -> Self {
        StoreTaskError::Store(err)
    }
}

/// A handle to a shard's store thread. Dropping the last handle waits for the queued
/// work to finish and the thread to end: a thread that used RocksDB must not outlive
/// `main`, or its exit races RocksDB's static destructors.
#[derive(Debug, Clone)]
pub(crate) struct StoreThread {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the thread once its work is done.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // The last handle may go with work running on the thread itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl StoreThread {
    /// Starts the thread.
    pub(crate) fn start() -> Result<Self, StoreTaskError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("shard-store".to_string())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    job();
                }
            })
            .map_err(StoreTaskError::Start)?;
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
        })
    }

    /// Runs `work` on the store thread and returns its result. If the caller stops
    /// waiting, the work still runs to its end (a write is never cut in half). A panic
    /// in `work` is an error here, and the thread goes on with the next work.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreTaskError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        let jobs = self.inner.jobs.as_ref().ok_or(StoreTaskError::Stopped)?;
        jobs.send(job).map_err(|_| StoreTaskError::Stopped)?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| text.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                Err(StoreTaskError::Panicked { message })
            }
            Err(_) => Err(StoreTaskError::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_in_order_on_one_thread_and_survives_a_panic() {
        let thread = StoreThread::start().expect("starts");
        let first = thread
            .call(|| std::thread::current().id())
            .await
            .expect("runs");
        let err = thread
            .call(|| -> u32 { panic!("boom") })
            .await
            .expect_err("the panic is an error");
        assert!(err.to_string().contains("boom"), "{err}");
        let after = thread
            .call(|| std::thread::current().id())
            .await
            .expect("still runs");
        assert_eq!(first, after);
        assert_ne!(first, std::thread::current().id());

        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let runs = (0..20).map(|i| {
            let order = order.clone();
            thread.call(move || order.lock().expect("not poisoned").push(i))
        });
        for outcome in futures::future::join_all(runs).await {
            outcome.expect("runs");
        }
        assert_eq!(
            *order.lock().expect("not poisoned"),
            (0..20).collect::<Vec<_>>()
        );
    }

    #[test]
    fn dropping_the_last_handle_waits_for_queued_work() {
        use futures::FutureExt as _;
        let thread = StoreThread::start().expect("starts");
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        // One poll queues the work; then nobody waits for it.
        let queued = thread
            .call(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            })
            .boxed()
            .now_or_never();
        assert!(queued.is_none(), "the work is still running");
        drop(thread);
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }
}
