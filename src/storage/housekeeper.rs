//! The background threads that run interval fsyncs, retention and compaction for any number
//! of logs.
//!
//! Two threads share one schedule: the flusher runs `Fsync::Interval` syncs, the cleaner runs
//! retention and compaction. A clean can take minutes; the flusher never waits behind it, so an
//! interval log's syncs (and so its high watermark) keep their period whatever the cleaner does.
//!
//! Both hold their logs weakly, so a log that is dropped simply leaves the schedule. Each
//! sleeps until the earliest of its own deadlines. A panic in one log's work is caught: it is
//! logged, that log is poisoned (it refuses writes until reopened, and says why), and the
//! thread goes on serving the others. The threads stop when the last [`Housekeeper`] handle is
//! dropped; every log keeps a handle to the one it was opened with.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::{Fsync, LogConfig};
use crate::error::{IoContext, Result};
use crate::storage::log::{Inner, now_ms};

/// Background threads for interval fsyncs, retention and compaction, shareable between logs.
#[derive(Clone, Debug)]
pub struct Housekeeper {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    logs: Vec<Entry>,
    stop: bool,
}

#[derive(Debug)]
struct Entry {
    log: Weak<Inner>,
    flush_every: Option<Duration>,
    retention_every: Duration,
    next_flush: Option<Instant>,
    next_retention: Instant,
}

/// The two kinds of work, each with its own thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Flush,
    Retention,
}

impl Work {
    fn thread_name(self) -> &'static str {
        match self {
            Work::Flush => "rivulet-flusher",
            Work::Retention => "rivulet-cleaner",
        }
    }

    /// When the entry's work of this kind is next due, if ever.
    fn due_at(self, e: &Entry) -> Option<Instant> {
        match self {
            Work::Flush => e.next_flush,
            Work::Retention => Some(e.next_retention),
        }
    }

    /// Takes the entry's work if it is due at `now`, scheduling the next round.
    fn take_if_due(self, e: &mut Entry, now: Instant) -> bool {
        match self {
            Work::Flush => match (e.next_flush, e.flush_every) {
                (Some(at), Some(every)) if at <= now => {
                    e.next_flush = Some(after(now, every));
                    true
                }
                _ => false,
            },
            Work::Retention if e.next_retention <= now => {
                e.next_retention = after(now, e.retention_every);
                true
            }
            Work::Retention => false,
        }
    }

    fn run(self, log: &Inner) -> Result<()> {
        if log.poison.get().is_some() {
            // Refusing writes until reopened, and said why when it was poisoned.
            return Ok(());
        }
        match self {
            Work::Flush => log.interval_flush(),
            Work::Retention => log
                .enforce_retention(now_ms())
                .and_then(|_| log.compact(now_ms(), false))
                .map(drop),
        }
    }
}

/// `now + every`, or a time far enough away to mean never (an `Instant` cannot hold
/// `Duration::MAX` past now).
fn after(now: Instant, every: Duration) -> Instant {
    const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now + every.min(NEVER)
}

impl Entry {
    fn new(log: &Arc<Inner>, config: &LogConfig, now: Instant) -> Entry {
        let mut e = Entry {
            log: Arc::downgrade(log),
            flush_every: None,
            retention_every: config.retention_check_interval,
            next_flush: None,
            next_retention: now,
        };
        e.configure(config, now);
        e
    }

    fn configure(&mut self, config: &LogConfig, now: Instant) {
        self.flush_every = match config.fsync {
            Fsync::Interval(every) => Some(every),
            _ => None,
        };
        self.next_flush = self.flush_every.map(|every| after(now, every));
        self.retention_every = config.retention_check_interval;
        self.next_retention = after(now, config.retention_check_interval);
    }
}

impl Housekeeper {
    /// Starts the threads.
    pub fn new() -> Result<Housekeeper> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::with_capacity(2);
        for work in [Work::Flush, Work::Retention] {
            let worker = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(work.thread_name().into())
                .spawn(move || run(&worker, work))
                .ctx("spawn", std::path::Path::new(work.thread_name()));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    shared.state.lock().stop = true;
                    shared.wake.notify_all();
                    for thread in threads {
                        let _ = thread.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Housekeeper {
            handle: Arc::new(Handle {
                shared,
                threads: Mutex::new(threads),
            }),
        })
    }

    /// Adds a log to the schedule, with its intervals, in one step: the threads never see an
    /// entry without them.
    pub(crate) fn register(&self, log: &Arc<Inner>) {
        let entry = Entry::new(log, &log.cfg(), Instant::now());
        self.handle.shared.state.lock().logs.push(entry);
        self.handle.shared.wake.notify_all();
    }

    /// Takes up a log's changed intervals (interval fsync, retention checks).
    pub(crate) fn update(&self, log: &Inner) {
        let config = log.cfg();
        let now = Instant::now();
        let mut state = self.handle.shared.state.lock();
        for e in state
            .logs
            .iter_mut()
            .filter(|e| std::ptr::eq(e.log.as_ptr(), log))
        {
            e.configure(&config, now);
        }
        self.handle.shared.wake.notify_all();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        // The last handle can be dropped on one of the threads (by a log it was serving).
        let current = std::thread::current().id();
        for thread in self.threads.lock().drain(..) {
            if thread.thread().id() != current {
                let _ = thread.join();
            }
        }
    }
}

fn run(shared: &Shared, work: Work) {
    let mut state = shared.state.lock();
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        // Logs are upgraded only when work is due, and those `Arc`s are dropped after the lock
        // is released: dropping the last one closes the log, which may drop the last handle
        // to this housekeeper, which takes the lock.
        state.logs.retain_mut(|e| {
            if e.log.strong_count() == 0 {
                return false;
            }
            if work.take_if_due(e, now) {
                due.extend(e.log.upgrade());
            }
            true
        });
        if !due.is_empty() {
            drop(state);
            for log in due {
                run_one(&log, work);
            }
            state = shared.state.lock();
            continue;
        }
        let next = state.logs.iter().filter_map(|e| work.due_at(e)).min();
        // With nothing due, look again now and then so dropped logs are let go.
        let at = next.unwrap_or_else(|| after(now, Duration::from_secs(60)));
        shared.wake.wait_until(&mut state, at);
    }
}

/// Runs one log's work. An error is logged (the work is tried again next round); a panic is
/// logged and poisons the log, whose state is then unknown.
fn run_one(log: &Inner, work: Work) {
    match catch_unwind(AssertUnwindSafe(|| work.run(log))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::error!("{}: background {work:?} failed: {e}", log.dir.display()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let cause = std::io::Error::other(format!("background {work:?} panicked: {what}"));
            log.poison(cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_too_long_for_an_instant_means_never_instead_of_overflowing() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(365 * 24 * 3600));
        assert_eq!(
            after(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        let mut e = Entry {
            log: Weak::new(),
            flush_every: Some(Duration::MAX),
            retention_every: Duration::MAX,
            next_flush: Some(now),
            next_retention: now,
        };
        assert!(Work::Flush.take_if_due(&mut e, now));
        assert!(Work::Retention.take_if_due(&mut e, now));
        assert!(!Work::Retention.take_if_due(&mut e, now + Duration::from_secs(3600)));
    }
}
