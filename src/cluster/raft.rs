//! The one place that names openraft: the type configuration of every Raft group (the
//! partitions' and the controller's), and the aliases the rest of `cluster` uses. A bump of
//! the pinned openraft version touches this file first.
//!
//! Standard leader ids (one leader per term) make the term a Kafka leader epoch; node ids are
//! `u64`; nodes carry nothing (addresses are the controller's state, not membership's).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::cluster::entry::{Payload, Records};

/// What a committed batch became in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Appended {
    /// The offset of its first record.
    pub(crate) base_offset: i64,
    /// The offset of its last record.
    pub(crate) last_offset: i64,
    /// Its largest timestamp (the log's clock, under `LogAppendTime`).
    pub(crate) max_timestamp: i64,
}

openraft::declare_raft_types!(
    /// The types of rivulet's Raft groups.
    pub(crate) TypeConfig:
        D = Records,
        R = Appended,
        NodeId = u64,
        Node = openraft::impls::EmptyNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        Vote = openraft::impls::Vote<openraft::impls::leader_id_std::LeaderId<u64, u64>>,
        Payload = Payload,
        Entry = openraft::Entry<openraft::vote::leader_id_std::CommittedLeaderId<u64>, Payload>,
        AsyncRuntime = Runtime,
);

/// openraft's tokio runtime, except for where its random numbers (election timeouts, the
/// phase of its timers) come from: the thread's generator, or a seeded sequence while a
/// deterministic simulation runs on the thread ([`seed_this_thread`]). In unit tests its
/// watch channels wake their waiters in a fixed order, for the same reason.
#[derive(Debug)]
pub(crate) struct Runtime(TokioRuntime);

thread_local! {
    /// The next seed to draw from, while a simulation runs on this thread.
    static SEEDED: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes every random number openraft draws on this thread come from `seed` (`None`: from
/// the thread's own generator again). A simulation runs all its nodes on one thread, in an
/// order fixed by its seed, so their draws repeat with the seed.
#[cfg(test)]
pub(crate) fn seed_this_thread(seed: Option<u64>) {
    SEEDED.with(|s| s.set(seed));
}

/// A number drawn from the simulation's seed, if one runs on this thread.
#[cfg(test)]
pub(crate) fn seeded_draw() -> Option<u64> {
    next_seed()
}

/// The next seed of a seeded thread (SplitMix64's step), if the thread is seeded.
fn next_seed() -> Option<u64> {
    SEEDED.with(|s| {
        let seed = s.get()?;
        let next = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(Some(next));
        let z = (next ^ (next >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Some(z ^ (z >> 31))
    })
}

impl AsyncRuntime for Runtime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    #[cfg(not(test))]
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    /// One that wakes its waiters in a fixed order, so that simulations replay.
    #[cfg(test)]
    type Watch = crate::cluster::fifo_watch::FifoWatch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        let seed = next_seed().unwrap_or_else(|| rand::rng().next_u64());
        SmallRng::seed_from_u64(seed)
    }

    fn new(threads: usize) -> Self {
        Runtime(TokioRuntime::new(threads))
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.0.block_on(future)
    }
}

pub(crate) type NodeId = u64;
pub(crate) type Node = openraft::impls::EmptyNode;
pub(crate) type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub(crate) type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub(crate) type Membership = openraft::Membership<NodeId, Node>;
pub(crate) type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type LogState = openraft::storage::LogState<TypeConfig>;
pub(crate) type IoFlushed = openraft::storage::IOFlushed<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub(crate) type Snapshot<D> = openraft::type_config::alias::SnapshotOf<TypeConfig, D>;

/// A log id from its term and index.
pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(openraft::vote::leader_id_std::CommittedLeaderId::new(term), index)
}

/// The term of a log id.
pub(crate) fn term_of(id: &LogId) -> u64 {
    id.leader_id.term
}

impl fmt::Display for Appended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsets {}..={}", self.base_offset, self.last_offset)
    }
}
