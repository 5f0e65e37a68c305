//! The background thread that runs interval fsyncs, retention and compaction for any number
//! of logs.
//!
//! It holds its logs weakly, so a log that is dropped simply leaves its list. It sleeps until
//! the earliest deadline among them. The thread stops when the last [`Housekeeper`] handle is
//! dropped; every log keeps a handle to the one it was opened with.

use std::sync::{Arc, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::config::Fsync;
use crate::error::{IoContext, Result};
use crate::storage::log::{Inner, now_ms};

/// A background thread for interval fsyncs and retention, shareable between logs.
#[derive(Clone, Debug)]
pub struct Housekeeper {
    handle: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
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

/// Work found due.
enum Due {
    Flush,
    Retention,
}

impl Housekeeper {
    /// Starts the thread.
    pub fn new() -> Result<Housekeeper> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rivulet-housekeeper".into())
            .spawn(move || run(&worker))
            .ctx("spawn", std::path::Path::new("rivulet-housekeeper"))?;
        Ok(Housekeeper {
            handle: Arc::new(Handle {
                shared,
                thread_id: thread.thread().id(),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    pub(crate) fn register(&self, log: &Arc<Inner>) {
        let mut state = self.handle.shared.state.lock();
        state.logs.push(Entry {
            log: Arc::downgrade(log),
            flush_every: None,
            retention_every: Duration::MAX,
            next_flush: None,
            next_retention: Instant::now(),
        });
        drop(state);
        self.update(log);
    }

    /// Takes up a log's changed intervals (interval fsync, retention checks).
    pub(crate) fn update(&self, log: &Inner) {
        let config = log.cfg();
        let flush_every = match config.fsync {
            Fsync::Interval(every) => Some(every),
            _ => None,
        };
        let now = Instant::now();
        let mut state = self.handle.shared.state.lock();
        for e in state
            .logs
            .iter_mut()
            .filter(|e| std::ptr::eq(e.log.as_ptr(), log))
        {
            e.flush_every = flush_every;
            e.next_flush = flush_every.map(|every| now + every);
            e.retention_every = config.retention_check_interval;
            e.next_retention = now + config.retention_check_interval;
        }
        self.handle.shared.wake.notify_all();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        // The last handle can be dropped on the thread itself (by a log it was serving).
        if std::thread::current().id() != self.thread_id
            && let Some(thread) = self.thread.lock().take()
        {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
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
            if let (Some(at), Some(every)) = (e.next_flush, e.flush_every)
                && at <= now
            {
                e.next_flush = Some(now + every);
                due.extend(e.log.upgrade().map(|log| (log, Due::Flush)));
            }
            if e.next_retention <= now {
                e.next_retention = now + e.retention_every;
                due.extend(e.log.upgrade().map(|log| (log, Due::Retention)));
            }
            true
        });
        if !due.is_empty() {
            drop(state);
            for (log, work) in due {
                let result = match work {
                    Due::Flush => log.interval_flush(),
                    Due::Retention => log
                        .enforce_retention(now_ms())
                        .and_then(|_| log.compact(now_ms(), false))
                        .map(drop),
                };
                if let Err(e) = result {
                    log::error!("{}: background work failed: {e}", log.dir.display());
                }
            }
            state = shared.state.lock();
            continue;
        }
        let next = state
            .logs
            .iter()
            .flat_map(|e| e.next_flush.into_iter().chain([e.next_retention]))
            .min();
        // With nothing registered, look again now and then so dropped logs are let go.
        let at = next.unwrap_or(now + Duration::from_secs(60));
        shared.wake.wait_until(&mut state, at);
    }
}
