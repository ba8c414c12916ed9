//! The threads store work runs on: one small pool per process, shared by every shard,
//! with a lane per shard that keeps the shard's work in order.
//!
//! RocksDB calls block (a synced commit waits for fdatasync), so they stay off the async
//! executor. They do not run on tokio's blocking pool: that pool starts a new thread
//! whenever work arrives a moment before an idle one is back, which even strictly
//! sequential work does, and glibc gives every new thread a malloc arena of its own, so
//! RSS crept up with each (by 9-46% from 10^3 to 10^5 transactions; see benches' `rss`).
//! Nor on a thread per shard, as they once did: a process hosting hundreds of shards had
//! hundreds of threads, and with many shards committing in turn each commit woke a
//! thread that had gone to sleep, a quarter of one shard's commit rate in aggregate.
//!
//! So every shard has a [`StoreLane`]: a queue whose work runs one job at a time, in the
//! order it was asked for, on whichever thread of the process's pool is free. The pool
//! starts threads as lanes need them, up to [`store_threads`], and keeps them: a fixed
//! set of threads (and arenas), warm while there is work.
//!
//! Which thread takes the next lane matters as much as how many there are. A thread that
//! runs out of work looks for more for a moment before it sleeps, and only one looks at
//! a time: the one that just finished, so a host committing its shards in turn has its
//! every store call run on the same warm thread, handed over in microseconds. Threads
//! once took turns instead (the waiting one held the queue, and passed it to a sleeping
//! one as it took a lane): every call woke a thread and ran on a cold one, and 100 shards
//! in turn committed at 0.55x one shard's rate (33 against 61 us a commit).

use crate::store::StoreError;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Default bound on the pool's threads: enough for several synced commits to wait on
/// the disk at once, few enough that hundreds of shards cost a handful of threads.
pub const DEFAULT_STORE_THREADS: usize = 8;

/// Most threads `TRIGGERS_STORE_THREADS` may ask for.
pub const MAX_STORE_THREADS: usize = 256;

/// Jobs a lane runs before it lets the next lane have its thread: a shard with a deep
/// queue (a recovery, a burst of deletes) cannot hold a thread while others wait.
const JOBS_PER_TURN: usize = 32;

/// How many threads the process's store pool may start: `TRIGGERS_STORE_THREADS` (1 to
/// [`MAX_STORE_THREADS`]) when set to such a number, [`DEFAULT_STORE_THREADS`]
/// otherwise (a value out of range or not a number is ignored, with a warning). Read
/// once, when the first shard opens. Each thread blocks for one store call at a time, so
/// this bounds how many shards' store calls run at once: a process whose shards commit
/// synced, on a disk that syncs in parallel, may want more.
pub fn store_threads() -> usize {
    pool().max_threads
}

/// Store work that failed or did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreTaskError {
    /// The store itself failed (RocksDB, or bytes that do not decode).
    #[error("the store failed")]
    Store(#[source] StoreError),
    /// The pool has no thread and could not start one.
    #[error("cannot start a store thread")]
    Start(#[source] std::io::Error),
    /// The lane has stopped (the shard closed), so the work never ran.
    #[error("the store thread has stopped")]
    Stopped,
    /// The work panicked; the lane went on with the next work.
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

/// The process's store threads and the lanes waiting for one.
struct Pool {
    state: Mutex<PoolState>,
    /// Where threads with nothing to do sleep.
    wake: Condvar,
    /// Lanes in `state.ready`, for the looking thread to watch without the lock.
    ready_lanes: AtomicUsize,
    max_threads: usize,
}

/// What the pool's lock guards.
#[derive(Default)]
struct PoolState {
    /// Lanes with work and no thread; a lane is in here at most once.
    ready: VecDeque<Arc<Lane>>,
    /// A thread is looking for work without sleeping (see [`LOOK_BEFORE_SLEEPING`]):
    /// it will take the next lane, so nobody needs waking.
    looking: bool,
    /// Threads asleep on `wake`.
    sleeping: usize,
    /// Wake-ups sent and not yet taken by a sleeper: a lane scheduled while the sleepers
    /// are all already woken starts a thread instead.
    woken: usize,
    /// Threads started.
    threads: usize,
}

thread_local! {
    /// Whether this thread is one of the pool's: such a thread never waits for a lane
    /// to drain (the lane might need this very thread).
    static IN_POOL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        state: Mutex::new(PoolState::default()),
        wake: Condvar::new(),
        ready_lanes: AtomicUsize::new(0),
        max_threads: threads_from_env(std::env::var("TRIGGERS_STORE_THREADS").ok()),
    })
}

fn threads_from_env(value: Option<String>) -> usize {
    let Some(value) = value else {
        return DEFAULT_STORE_THREADS;
    };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_STORE_THREADS).contains(&n) => n,
        _ => {
            tracing::warn!(
                value,
                default = DEFAULT_STORE_THREADS,
                "TRIGGERS_STORE_THREADS is not a number from 1 to {MAX_STORE_THREADS}; using the default"
            );
            DEFAULT_STORE_THREADS
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Jobs run outside every lock (and catch their own panics), so a poisoned lock
    // still guards consistent state.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a thread that ran out of work looks for more before it sleeps: the next
/// store call of a host committing its shards in turn comes within microseconds of the
/// last one's answer, and waking a sleeping thread costs more than that. One thread
/// looks at a time, and it is the one that just finished (its caches are warm); the
/// others sleep until there is more work than it takes.
const LOOK_BEFORE_SLEEPING: std::time::Duration = std::time::Duration::from_micros(50);

impl Pool {
    /// A pool thread: runs a turn of each lane that has work, for as long as the
    /// process lives (it holds no store while it waits).
    fn serve(&'static self) {
        IN_POOL.with(|flag| flag.set(true));
        let mut state = lock(&self.state);
        loop {
            if let Some(lane) = state.ready.pop_front() {
                self.ready_lanes.fetch_sub(1, Ordering::SeqCst);
                drop(state);
                lane.run_turn(self);
                state = lock(&self.state);
                continue;
            }
            if !state.looking {
                state.looking = true;
                drop(state);
                self.look();
                state = lock(&self.state);
                state.looking = false;
                if !state.ready.is_empty() {
                    continue;
                }
            }
            state.sleeping += 1;
            loop {
                state = self
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                // A wake-up meant for a sleeper (this one or another: any one of them
                // taking it is the same), not a spurious one.
                if state.woken > 0 {
                    state.woken -= 1;
                    break;
                }
            }
            state.sleeping -= 1;
        }
    }

    /// Puts back a lane whose turn ended with work left, behind the lanes waiting: the
    /// thread that ran it comes straight back for the next, so nobody is woken.
    fn requeue(&self, lane: Arc<Lane>) {
        lock(&self.state).ready.push_back(lane);
        self.ready_lanes.fetch_add(1, Ordering::SeqCst);
    }

    /// Starts one more thread (the caller checked the bound).
    fn start_thread(&'static self, state: &mut PoolState) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("shard-store".to_string())
            .spawn(move || self.serve())?;
        state.threads += 1;
        Ok(())
    }

    /// Watches for a ready lane for up to [`LOOK_BEFORE_SLEEPING`], yielding the core
    /// to whoever else may run meanwhile.
    fn look(&self) {
        let until = std::time::Instant::now() + LOOK_BEFORE_SLEEPING;
        while self.ready_lanes.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
    }

    /// Queues a lane for a thread: the looking one takes it (if it has no other to
    /// take), else a sleeping one is woken, else one is started (while the bound allows;
    /// otherwise the lane waits for a thread to finish its turn). An error only when the pool has no thread at all
    /// and cannot start one.
    fn schedule(&'static self, lane: Arc<Lane>) -> Result<(), StoreTaskError> {
        let mut state = lock(&self.state);
        state.ready.push_back(lane);
        self.ready_lanes.fetch_add(1, Ordering::SeqCst);
        // The looking thread takes one lane; any more need threads of their own (a
        // synced commit must not wait behind another shard's).
        if state.looking && state.ready.len() == 1 {
            return Ok(());
        }
        if state.sleeping > state.woken {
            state.woken += 1;
            self.wake.notify_one();
            return Ok(());
        }
        if state.threads >= self.max_threads {
            return Ok(());
        }
        let threads = state.threads;
        match self.start_thread(&mut state) {
            Ok(()) => Ok(()),
            // The lane stays queued for a thread started later; but none may be.
            Err(err) if threads == 0 => Err(StoreTaskError::Start(err)),
            Err(err) => {
                tracing::warn!(%err, threads, "cannot start another store thread; the others serve");
                Ok(())
            }
        }
    }
}

/// One shard's queue of store work.
struct Lane {
    state: Mutex<LaneState>,
    /// Signalled when the queue empties with no job running.
    drained: Condvar,
}

#[derive(Default)]
struct LaneState {
    jobs: VecDeque<Job>,
    /// In the pool's ready queue or on a thread: exactly one of them runs its work.
    scheduled: bool,
    /// A job is running now.
    running: bool,
}

impl Lane {
    /// Runs up to [`JOBS_PER_TURN`] jobs, then gives the thread back: unscheduled when
    /// the queue is empty, at the back of the ready queue when not.
    fn run_turn(self: Arc<Self>, pool: &'static Pool) {
        for _ in 0..JOBS_PER_TURN {
            let job = {
                let mut state = lock(&self.state);
                state.running = false;
                match state.jobs.pop_front() {
                    Some(job) => {
                        state.running = true;
                        job
                    }
                    None => {
                        state.scheduled = false;
                        self.drained.notify_all();
                        return;
                    }
                }
            };
            job();
        }
        let mut state = lock(&self.state);
        state.running = false;
        if state.jobs.is_empty() {
            state.scheduled = false;
            self.drained.notify_all();
        } else {
            drop(state);
            pool.requeue(self);
        }
    }
}

/// How long one caller at a time waits for its store call's answer by yielding to the
/// executor instead of sleeping (see [`wait_for_answer`]).
const WAIT_AWAKE: std::time::Duration = std::time::Duration::from_micros(50);

/// Callers waiting awake now: at most one, so a process whose shards all call at once
/// does not spend its cores yielding while the store threads need them.
static WAITING_AWAKE: AtomicUsize = AtomicUsize::new(0);

/// Waits for a store call's answer. Most take microseconds; a caller that sleeps for one
/// has its thread parked, and on a machine whose other cores are idle the answer must
/// wake a sleeping core (13 to 18 us on the 2-core VM the bench runs on, as much as the
/// call itself). So one caller at a time (`awake` counts it) first yields until the
/// answer comes or [`WAIT_AWAKE`] passes, and only then sleeps: to the executor, so its
/// other tasks run, and to the OS, so a store thread waiting for this core runs too.
/// Nothing blocks. None when the answer never comes (the call was dropped unrun).
/// Cancel-safe: dropping it drops the answer, not the call.
async fn wait_for_answer<T>(
    mut answer: tokio::sync::oneshot::Receiver<T>,
    awake: &AtomicUsize,
) -> Option<T> {
    if awake
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        struct Awake<'a>(&'a AtomicUsize);
        impl Drop for Awake<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::SeqCst);
            }
        }
        let _awake = Awake(awake);
        let until = std::time::Instant::now() + WAIT_AWAKE;
        while std::time::Instant::now() < until {
            match answer.try_recv() {
                Ok(value) => return Some(value),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return None,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    std::thread::yield_now();
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    answer.await.ok()
}

/// A handle to a shard's lane. Cheap to clone; clones share the lane. Dropping the last
/// handle waits for the work queued on it to finish (so the store it holds is closed,
/// and another process may open it, once the drop returns), except on a pool thread.
#[derive(Clone)]
pub(crate) struct StoreLane {
    inner: Arc<LaneHandle>,
}

struct LaneHandle {
    lane: Arc<Lane>,
}

impl std::fmt::Debug for StoreLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLane").finish_non_exhaustive()
    }
}

impl Drop for LaneHandle {
    fn drop(&mut self) {
        // A pool thread must not wait: the lane may need it (the last handle may go with
        // work running on the lane itself).
        if IN_POOL.with(|flag| flag.get()) {
            return;
        }
        let mut state = lock(&self.lane.state);
        while state.running || !state.jobs.is_empty() {
            state = self
                .lane
                .drained
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl StoreLane {
    /// A new lane on the process's pool (started with its first thread if need be).
    pub(crate) fn start() -> Result<Self, StoreTaskError> {
        let pool = pool();
        {
            // The first lane starts the first thread, so a process that cannot start
            // one learns it when a shard opens, not at its first commit.
            let mut state = lock(&pool.state);
            if state.threads == 0 {
                pool.start_thread(&mut state)
                    .map_err(StoreTaskError::Start)?;
            }
        }
        Ok(Self {
            inner: Arc::new(LaneHandle {
                lane: Arc::new(Lane {
                    state: Mutex::new(LaneState::default()),
                    drained: Condvar::new(),
                }),
            }),
        })
    }

    /// Runs `work` on the lane, after the work queued before it, and returns its result.
    /// If the caller stops waiting, the work still runs to its end (a write is never cut
    /// in half). A panic in `work` is an error here, and the lane goes on with the next
    /// work.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreTaskError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        self.push(job)?;
        match wait_for_answer(result, &WAITING_AWAKE).await {
            Some(Ok(value)) => Ok(value),
            Some(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| text.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                Err(StoreTaskError::Panicked { message })
            }
            None => Err(StoreTaskError::Stopped),
        }
    }

    fn push(&self, job: Job) -> Result<(), StoreTaskError> {
        let lane = &self.inner.lane;
        let mut state = lock(&lane.state);
        state.jobs.push_back(job);
        if state.scheduled {
            return Ok(());
        }
        state.scheduled = true;
        drop(state);
        pool().schedule(lane.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn runs_work_in_order_off_the_caller_and_survives_a_panic() {
        let lane = StoreLane::start().expect("starts");
        let first = lane
            .call(|| std::thread::current().id())
            .await
            .expect("runs");
        assert_ne!(first, std::thread::current().id());
        let err = lane
            .call(|| -> u32 { panic!("boom") })
            .await
            .expect_err("the panic is an error");
        assert!(err.to_string().contains("boom"), "{err}");
        lane.call(|| ()).await.expect("still runs");

        let order = Arc::new(Mutex::new(Vec::new()));
        let runs = (0..100).map(|i| {
            let order = order.clone();
            lane.call(move || lock(&order).push(i))
        });
        for outcome in futures::future::join_all(runs).await {
            outcome.expect("runs");
        }
        assert_eq!(*lock(&order), (0..100).collect::<Vec<_>>());
    }

    /// Issue 16: hundreds of shards cost a bounded set of threads, each shard's work in
    /// its order and never two of its jobs at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_lanes_share_a_bounded_pool_and_each_keeps_its_order() {
        let lanes: Vec<StoreLane> = (0..300)
            .map(|_| StoreLane::start().expect("starts"))
            .collect();
        let threads = Arc::new(Mutex::new(HashSet::new()));
        let mut runs = Vec::new();
        let mut orders = Vec::new();
        for lane in &lanes {
            let order = Arc::new(Mutex::new(Vec::new()));
            let busy = Arc::new(AtomicBool::new(false));
            for i in 0..20 {
                let (order, busy, threads) = (order.clone(), busy.clone(), threads.clone());
                runs.push(lane.call(move || {
                    assert!(
                        !busy.swap(true, Ordering::SeqCst),
                        "two jobs of one lane at once"
                    );
                    lock(&threads).insert(std::thread::current().id());
                    lock(&order).push(i);
                    busy.store(false, Ordering::SeqCst);
                }));
            }
            orders.push(order);
        }
        for outcome in futures::future::join_all(runs).await {
            outcome.expect("runs");
        }
        for order in orders {
            assert_eq!(*lock(&order), (0..20).collect::<Vec<_>>());
        }
        let used = lock(&threads).len();
        assert!(
            (1..=store_threads()).contains(&used),
            "{used} threads for 300 lanes"
        );
        assert!(lock(&pool().state).threads <= store_threads());
    }

    /// Two shards' work queued together runs at once, on two threads, whether it finds
    /// a thread looking for work, sleeping, or none started yet: a synced commit never
    /// waits behind another shard's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_queued_together_on_two_lanes_runs_at_once() {
        let (first, second) = (
            StoreLane::start().expect("starts"),
            StoreLane::start().expect("starts"),
        );
        for round in 0..40 {
            // Some rounds find the pool's threads looking, others asleep.
            if round % 2 == 1 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let (met, meets) = std::sync::mpsc::channel::<()>();
            let waits = first.call(move || {
                meets
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .is_ok()
            });
            let arrives = second.call(move || {
                let _ = met.send(());
            });
            let (waited, arrived) = tokio::join!(waits, arrives);
            arrived.expect("runs");
            assert!(
                waited.expect("runs"),
                "round {round}: the second lane's work did not run while the first's waited"
            );
        }
    }

    /// One caller at a time waits awake for its answer; it lets go when the answer comes,
    /// when its wait is dropped, and when its time is up (the answer still arrives, asleep).
    #[test]
    fn one_caller_waits_awake_and_lets_go() {
        use futures::FutureExt as _;
        let awake = AtomicUsize::new(0);
        let (send, answer) = tokio::sync::oneshot::channel::<u32>();
        let mut first = wait_for_answer(answer, &awake).boxed();
        assert!((&mut first).now_or_never().is_none(), "no answer yet");
        assert_eq!(
            awake.load(Ordering::SeqCst),
            1,
            "the first caller waits awake"
        );
        let (other_send, other_answer) = tokio::sync::oneshot::channel::<u32>();
        let mut second = wait_for_answer(other_answer, &awake).boxed();
        assert!((&mut second).now_or_never().is_none());
        assert_eq!(
            awake.load(Ordering::SeqCst),
            1,
            "a second caller sleeps instead"
        );
        drop(first);
        assert_eq!(awake.load(Ordering::SeqCst), 0, "a dropped wait lets go");
        drop(send);
        other_send.send(7).expect("waits");
        assert_eq!(second.now_or_never(), Some(Some(7)));

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (send, answer) = tokio::sync::oneshot::channel::<u32>();
        let late = std::thread::spawn(move || {
            std::thread::sleep(WAIT_AWAKE * 100);
            let _ = send.send(8);
        });
        assert_eq!(runtime.block_on(wait_for_answer(answer, &awake)), Some(8));
        assert_eq!(
            awake.load(Ordering::SeqCst),
            0,
            "its time was up long before"
        );
        late.join().expect("sends");
        let (send, answer) = tokio::sync::oneshot::channel::<u32>();
        drop(send);
        assert_eq!(runtime.block_on(wait_for_answer(answer, &awake)), None);
        assert_eq!(awake.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn dropping_the_last_handle_waits_for_queued_work() {
        use futures::FutureExt as _;
        let lane = StoreLane::start().expect("starts");
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        // One poll queues the work; then nobody waits for it.
        let queued = lane
            .call(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                flag.store(true, Ordering::SeqCst);
            })
            .boxed()
            .now_or_never();
        assert!(queued.is_none(), "the work is still running");
        drop(lane);
        assert!(done.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn the_last_handle_may_go_inside_the_lanes_own_work() {
        let lane = StoreLane::start().expect("starts");
        let inside = lane.clone();
        let caller = lane.clone();
        drop(lane);
        let (running, is_running) = tokio::sync::oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (finished, has_finished) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            caller
                .call(move || {
                    let _ = running.send(());
                    let _ = released.recv();
                    // The last handle: dropping it here must not wait for this very job.
                    drop(inside);
                    let _ = finished.send(());
                })
                .await
        });
        is_running.await.expect("the job runs");
        // Its caller goes away, and the job's handle is the last.
        task.abort();
        let _ = task.await;
        release.send(()).expect("the job waits");
        tokio::time::timeout(std::time::Duration::from_secs(10), has_finished)
            .await
            .expect("the job finished: it did not wait for itself")
            .expect("finished");
    }

    #[test]
    fn the_thread_bound_comes_from_the_environment_within_its_bounds() {
        assert_eq!(threads_from_env(None), DEFAULT_STORE_THREADS);
        assert_eq!(threads_from_env(Some("3".into())), 3);
        assert_eq!(threads_from_env(Some(" 256 ".into())), 256);
        for bad in ["0", "257", "many", "-1", ""] {
            assert_eq!(
                threads_from_env(Some(bad.into())),
                DEFAULT_STORE_THREADS,
                "{bad}"
            );
        }
    }
}
