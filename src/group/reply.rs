//! A reply that arrives later: the group coordinator answers JoinGroup and SyncGroup only when
//! the rebalance gets that far. The waiter can block on it with a deadline (in-process
//! consumers) or await it as a future (an async network front end).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// The waiting side of a reply.
#[derive(Debug)]
pub struct Pending<T> {
    slot: Arc<Slot<T>>,
}

/// The answering side.
#[derive(Debug)]
pub(crate) struct Replier<T> {
    slot: Arc<Slot<T>>,
}

#[derive(Debug)]
struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

#[derive(Debug)]
struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A connected pair.
pub(crate) fn reply<T>() -> (Replier<T>, Pending<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            waker: None,
        }),
        ready: Condvar::new(),
    });
    (Replier { slot: slot.clone() }, Pending { slot })
}

impl<T> Pending<T> {
    /// A reply that is already there.
    pub(crate) fn ready(value: T) -> Pending<T> {
        let (tx, rx) = reply();
        tx.send(value);
        rx
    }

    /// Takes the reply if it has come.
    pub fn try_take(&self) -> Option<T> {
        self.slot.state.lock().value.take()
    }

    /// Waits for the reply until `deadline`; `None` if it has not come by then (it can still
    /// be waited for again).
    pub fn wait_until(&self, deadline: Instant) -> Option<T> {
        let mut state = self.slot.state.lock();
        loop {
            if let Some(v) = state.value.take() {
                return Some(v);
            }
            if self.slot.ready.wait_until(&mut state, deadline).timed_out() {
                return state.value.take();
            }
        }
    }
}

impl<T> Replier<T> {
    /// Delivers the reply, waking the waiter.
    pub(crate) fn send(self, value: T) {
        let waker = {
            let mut state = self.slot.state.lock();
            state.value = Some(value);
            state.waker.take()
        };
        self.slot.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Pending<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.slot.state.lock();
        match state.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_reply_can_be_awaited_and_wakes_its_task() {
        let (tx, mut rx) = reply::<u32>();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        tx.send(7);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the waiting task was woken");
        assert_eq!(Pin::new(&mut rx).poll(&mut cx), Poll::Ready(7));
    }

    #[test]
    fn a_blocking_wait_times_out_and_can_wait_again() {
        let (tx, rx) = reply::<u32>();
        assert_eq!(
            rx.wait_until(Instant::now() + std::time::Duration::from_millis(5)),
            None
        );
        std::thread::spawn(move || tx.send(3));
        assert_eq!(
            rx.wait_until(Instant::now() + std::time::Duration::from_secs(10)),
            Some(3)
        );
    }
}
