//! A watch channel that wakes its waiters in the order they began to wait, for the unit
//! tests' Raft groups.
//!
//! openraft's leader waits on shared watch channels, one replication stream per follower.
//! tokio's watch wakes its waiters in an order drawn at random per runtime, so which follower
//! hears of a commit first would change from run to run, and the deterministic simulation
//! would not replay. This one keeps a FIFO of wakers; it is otherwise tokio's contract: a
//! receiver sees a change made after it last looked, `send` fails once every receiver is gone,
//! `changed` fails once every sender is.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use openraft::async_runtime::watch::{RecvError, SendError, Watch, WatchReceiver, WatchSender};
use openraft::{OptionalSend, OptionalSync};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};

/// The channel's type, for [`crate::cluster::raft::Runtime`].
pub(crate) struct FifoWatch;

struct Shared<T> {
    value: RwLock<T>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped (under the value's write lock) by every change.
    version: u64,
    senders: usize,
    receivers: usize,
    /// Waiters by the order they first waited.
    waiters: BTreeMap<u64, Waker>,
    next_waiter: u64,
}

impl<T> Shared<T> {
    /// Wakes every waiter, in order.
    fn wake_all(&self) {
        let waiters = std::mem::take(&mut self.state.lock().waiters);
        for waker in waiters.into_values() {
            waker.wake();
        }
    }
}

pub(crate) struct Sender<T>(Arc<Shared<T>>);

pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl Watch for FifoWatch {
    type Sender<T: OptionalSend + OptionalSync> = Sender<T>;
    type Receiver<T: OptionalSend + OptionalSync> = Receiver<T>;
    type Ref<'a, T: OptionalSend + 'a> = RwLockReadGuard<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            value: RwLock::new(init),
            state: Mutex::new(State {
                senders: 1,
                receivers: 1,
                ..State::default()
            }),
        });
        (Sender(shared.clone()), Receiver { shared, seen: 0 })
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.state.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let last = {
            let mut state = self.0.state.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.0.wake_all();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.state.lock().receivers += 1;
        Receiver {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.state.lock().receivers -= 1;
    }
}

impl<T: OptionalSend + OptionalSync> WatchSender<FifoWatch, T> for Sender<T> {
    fn send(&self, value: T) -> Result<(), SendError<T>> {
        if self.0.state.lock().receivers == 0 {
            return Err(SendError(value));
        }
        self.send_if_modified(|v| {
            *v = value;
            true
        });
        Ok(())
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = {
            let mut value = self.0.value.write();
            let modified = modify(&mut value);
            if modified {
                self.0.state.lock().version += 1;
            }
            modified
        };
        if modified {
            self.0.wake_all();
        }
        modified
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.0.value.read()
    }

    fn subscribe(&self) -> Receiver<T> {
        let mut state = self.0.state.lock();
        state.receivers += 1;
        Receiver {
            shared: self.0.clone(),
            seen: state.version,
        }
    }
}

impl<T: OptionalSend + OptionalSync> WatchReceiver<FifoWatch, T> for Receiver<T> {
    async fn changed(&mut self) -> Result<(), RecvError> {
        /// Takes the waiter out of the queue if the wait is dropped before it ends.
        struct Waiting<'a, T> {
            shared: &'a Shared<T>,
            id: Option<u64>,
        }
        impl<T> Drop for Waiting<'_, T> {
            fn drop(&mut self) {
                if let Some(id) = self.id {
                    self.shared.state.lock().waiters.remove(&id);
                }
            }
        }
        let shared = self.shared.clone();
        let mut waiting = Waiting {
            shared: &shared,
            id: None,
        };
        let seen = &mut self.seen;
        poll_fn(|cx| {
            let mut state = waiting.shared.state.lock();
            if state.version != *seen {
                *seen = state.version;
                return Poll::Ready(Ok(()));
            }
            if state.senders == 0 {
                return Poll::Ready(Err(RecvError(())));
            }
            let id = *waiting.id.get_or_insert_with(|| {
                state.next_waiter += 1;
                state.next_waiter
            });
            state.waiters.insert(id, cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn borrow_watched(&self) -> RwLockReadGuard<'_, T> {
        self.shared.value.read()
    }

    fn borrow_and_update(&mut self) -> RwLockReadGuard<'_, T> {
        let value = self.shared.value.read();
        // Changes bump the version under the value's write lock: it is stable while read.
        self.seen = self.shared.state.lock().version;
        value
    }
}
