//! Transactions (Kafka's design, KIP-98): the transaction coordinator, which binds each
//! transactional id to a producer id and epoch, keeps where each transaction is in the
//! compacted topic `__transaction_state`, and ends transactions by writing COMMIT or ABORT
//! markers to every partition they wrote to (the offsets topic's included, for offsets sent
//! with the transaction).
//!
//! A transaction's life, as the coordinator sees it:
//!
//! 1. `init_producer_id`: the id gets a producer id (the same one again after a restart) and
//!    the next epoch, which fences every older producer of the id: a transaction the older
//!    one left open is aborted first, its markers written with the new epoch.
//! 2. `add_partitions` (and `add_offsets` for a group's commits): the transaction is
//!    Ongoing; records of the producer to those partitions are taken (checked against the
//!    coordinator under its read lock, so no end can come between the check and the write).
//! 3. `end`: the decision (PrepareCommit or PrepareAbort) is made durable, then every
//!    partition's marker (each durable), then CompleteCommit or CompleteAbort, which need not
//!    wait for the disk: a coordinator that restarts with a transaction still preparing
//!    writes its markers again (a marker repeated is harmless: it ends nothing).
//!
//! A transaction open for longer than its `transaction.timeout.ms` is aborted by the
//! coordinator's background thread, with the epoch bumped so that its producer is fenced; a
//! transactional id unused for `transactional.id.expiration.ms` (seven days) is forgotten.

pub(crate) mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use state::{TxnMetadata, TxnStatus};

use crate::broker::BrokerInner;
use crate::config::{Fsync, TopicConfig};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::group::OFFSETS_TOPIC;
use crate::storage::producers::Marker;
use crate::storage::{AppendInfo, BatchBuilder, Compression, PartitionLog, now_ms};

/// The internal topic holding the transactions' states.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The longest `transaction.timeout.ms` the coordinator takes (Kafka's
/// `transaction.max.timeout.ms` default, 15 minutes).
pub const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// How long a transactional id is remembered without use (Kafka's
/// `transactional.id.expiration.ms` default, seven days).
pub const TRANSACTIONAL_ID_EXPIRATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most transactional ids remembered at once; a new one past it is refused until some
/// expire.
pub const MAX_TRANSACTIONAL_IDS: usize = 10_000;

/// The most partitions one transaction writes to (the offsets topic's included).
pub const MAX_TRANSACTION_PARTITIONS: usize = 1_000;

/// How many threads write one transaction's markers at once.
const MARKER_WRITERS: usize = 8;

/// The largest record of one transaction's state: bounds how many partitions one
/// transaction may write to.
const MAX_STATE_BYTES: usize = 512 << 10;

/// The coordinator epoch of a single broker's markers (a partition refuses markers of a
/// coordinator older than the last one it saw).
const COORDINATOR_EPOCH: i32 = 0;

/// How long a check that a transaction is open waits for its id's state (see
/// `TxnCoordinator::check_open`).
const CHECK_WAIT: Duration = Duration::from_millis(100);

/// How long a cluster's node waits for another's coordinator to check that a transaction is
/// open (a partition's leader verifying a transaction's first batch waits less, within its
/// proposal's time).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) const CHECK_TTL: Duration = Duration::from_secs(5);

/// How often the background thread looks for transactions to time out or finish.
const TICK: Duration = Duration::from_millis(500);

/// The state topic's config: compacted, and synced by the coordinator itself before it
/// acknowledges anything (as the offsets topic is).
pub(crate) fn topic_config() -> TopicConfig {
    crate::group::offsets::topic_config()
}

/// The calls a producer makes of the transaction coordinator, wherever it runs: this
/// broker's own ([`TxnCoordinator`]), or on a cluster the one at the node that leads the
/// state topic (over the peer link).
pub(crate) trait TxnCalls: Send + Sync {
    /// See [`TxnCoordinator::init_producer_id`].
    fn init_producer_id(&self, id: &str, timeout_ms: i32, expected: Option<(i64, i16)>)
    -> Result<(i64, i16)>;
    /// See [`TxnCoordinator::add_partitions`].
    fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()>;
    /// See [`TxnCoordinator::add_offsets`].
    fn add_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> Result<()>;
    /// See [`TxnCoordinator::end`].
    fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()>;
    /// Runs `write` (the producer's records to `tp`) if its transaction is open with `tp` in
    /// it: under the id's lock at the coordinator itself, so that no end comes in between;
    /// after the coordinator's answer elsewhere (an end the producer did not ask for bumps
    /// the epoch, which the partition's leader refuses the write for).
    fn write_in(
        &self,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
        write: &mut dyn FnMut() -> Result<AppendInfo>,
    ) -> Result<AppendInfo>;
}

impl TxnCalls for TxnCoordinator {
    fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        TxnCoordinator::init_producer_id(self, id, timeout_ms, expected)
    }

    fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        TxnCoordinator::add_partitions(self, id, producer_id, epoch, partitions)
    }

    fn add_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> Result<()> {
        TxnCoordinator::add_offsets(self, id, producer_id, epoch, group)
    }

    fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        TxnCoordinator::end(self, id, producer_id, epoch, commit)
    }

    fn write_in(
        &self,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
        write: &mut dyn FnMut() -> Result<AppendInfo>,
    ) -> Result<AppendInfo> {
        self.with_open_transaction(producer_id, epoch, tp, write)
    }
}

/// One transactional id's state (`None` once forgotten: a caller that finds it so looks it
/// up again).
type Slot = Arc<RwLock<Option<TxnMetadata>>>;

/// The transaction coordinator of one broker. See the module's documentation.
#[derive(Debug)]
pub struct TxnCoordinator {
    broker: Weak<BrokerInner>,
    log: PartitionLog,
    ids: Mutex<HashMap<String, Slot>>,
    /// Which transactional id each producer id is bound to.
    by_producer: RwLock<HashMap<i64, String>>,
    /// The producer id and epoch each id's last KIP-360 bump was asked from: a retry of that
    /// bump is answered with its epoch, and any other older epoch is fenced.
    bumped_from: Mutex<HashMap<String, (i64, i16)>>,
    stopped: AtomicBool,
    /// On a cluster's node: the term in which the node leads the state topic's partition (the
    /// coordinator's epoch). Its state records are written by that leader alone, in that term.
    term: Option<u64>,
}

impl TxnCoordinator {
    /// Opens the coordinator on partition 0 of the state topic, reading every state in it,
    /// and starts its background thread (which first finishes what a restart, or an earlier
    /// coordinator, left preparing). A cluster's node opens it in the `term` in which it
    /// leads the partition, once it has read every state committed before.
    pub(crate) fn open(
        broker: &Arc<BrokerInner>,
        log: PartitionLog,
        term: Option<u64>,
    ) -> Result<Arc<TxnCoordinator>> {
        let mut states: HashMap<String, TxnMetadata> = HashMap::new();
        let mut reader = log.reader(log.log_start_offset());
        while let Some(r) = reader.next()? {
            let Some(id) = r.key.and_then(state::parse_key) else {
                log::warn!(
                    "skipping an unreadable key at offset {} of {TRANSACTION_STATE_TOPIC}",
                    r.offset
                );
                continue;
            };
            match r.value.map(state::parse_value) {
                None => {
                    states.remove(&id);
                }
                Some(Some(m)) => {
                    states.insert(id, m);
                }
                Some(None) => log::warn!(
                    "skipping an unreadable value at offset {} of {TRANSACTION_STATE_TOPIC}",
                    r.offset
                ),
            }
        }
        let by_producer = states.iter().map(|(id, m)| (m.producer_id, id.clone())).collect();
        // New producer ids are issued past every recovered one.
        if let Some(max) = states.values().map(|m| m.producer_id).max() {
            broker.issue_producer_ids_past(max);
        }
        let ids = states
            .into_iter()
            .map(|(id, m)| (id, Arc::new(RwLock::new(Some(m)))))
            .collect();
        let coordinator = Arc::new(TxnCoordinator {
            broker: Arc::downgrade(broker),
            log,
            ids: Mutex::new(ids),
            by_producer: RwLock::new(by_producer),
            bumped_from: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
            term,
        });
        let background = Arc::downgrade(&coordinator);
        std::thread::Builder::new()
            .name("rivulet-txn".into())
            .spawn(move || {
                while let Some(c) = background.upgrade() {
                    if c.stopped.load(Ordering::Acquire) || c.broker.strong_count() == 0 {
                        break;
                    }
                    c.tick(now_ms());
                    drop(c);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| Error::Io {
                op: "spawn",
                path: "rivulet-txn".into(),
                source: e,
            })?;
        Ok(coordinator)
    }

    /// Stops the background thread.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// Stops the coordinator and waits for the calls under way: it answers none from then on
    /// (a cluster's node that leads the state topic again, in a later term, reads the states
    /// only after this).
    #[cfg(feature = "cluster")]
    pub(crate) fn stop_and_drain(&self) {
        self.stop();
        for (_, slot) in self.slots() {
            drop(slot.write());
        }
    }

    /// Refuses calls once the coordinator has stopped (taken over by another).
    fn check_running(&self) -> Result<()> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(Error::NotCoordinator {
                reason: "the coordinator has stopped".to_string(),
            });
        }
        Ok(())
    }

    /// On a cluster's node, confirms that it still leads the state topic in its term.
    fn confirm_leading(&self) -> Result<()> {
        #[cfg(feature = "cluster")]
        if let Some(term) = self.term {
            return self.broker()?.confirm_leading(TRANSACTION_STATE_TOPIC, 0, term);
        }
        Ok(())
    }

    /// On a cluster's node, the term it coordinates in.
    #[cfg(feature = "cluster")]
    pub(crate) fn term(&self) -> Option<u64> {
        self.term
    }

    /// The epoch its markers carry: a partition refuses those of an older coordinator.
    pub(crate) fn coordinator_epoch(&self) -> i32 {
        self.term
            .map_or(COORDINATOR_EPOCH, |t| i32::try_from(t).unwrap_or(i32::MAX))
    }

    fn broker(&self) -> Result<Arc<BrokerInner>> {
        self.broker.upgrade().ok_or(Error::Closed)
    }

    /// The slot of `id`, if it is known.
    fn slot(&self, id: &str) -> Option<Slot> {
        self.ids.lock().get(id).cloned()
    }

    /// Binds `transactional_id` to a producer id and a new epoch (see the module's
    /// documentation): returns them. `expected` is the producer id and epoch a producer that
    /// has them names (KIP-360: it asks for the next epoch after an abortable error); a
    /// producer that names others is fenced.
    pub fn init_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16)> {
        validate_id(transactional_id)?;
        if !(1..=MAX_TRANSACTION_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(Error::InvalidTransactionTimeout {
                timeout_ms: timeout_ms.into(),
                max_ms: MAX_TRANSACTION_TIMEOUT_MS.into(),
            });
        }
        loop {
            let slot = {
                let mut ids = self.ids.lock();
                if !ids.contains_key(transactional_id) && ids.len() >= MAX_TRANSACTIONAL_IDS {
                    return Err(Error::InvalidTxnState {
                        transactional_id: transactional_id.to_string(),
                        reason: format!(
                            "{MAX_TRANSACTIONAL_IDS} transactional ids are in use; \
                             unused ones are forgotten after {TRANSACTIONAL_ID_EXPIRATION:?}"
                        ),
                    });
                }
                ids.entry(transactional_id.to_string()).or_default().clone()
            };
            let mut m = slot.write();
            self.check_running()?;
            if m.is_none()
                && !self
                    .ids
                    .lock()
                    .get(transactional_id)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot))
            {
                continue; // forgotten meanwhile: look it up again
            }
            let now = now_ms();
            let next = match m.as_ref() {
                None => TxnMetadata {
                    producer_id: self.broker()?.new_producer_id(),
                    producer_epoch: 0,
                    timeout_ms,
                    status: TxnStatus::Empty,
                    partitions: BTreeSet::new(),
                    last_update_ms: now,
                    start_ms: -1,
                },
                Some(current) => {
                    if let Some((id, epoch)) = expected.filter(|(id, _)| *id >= 0) {
                        let retried = self.bumped_from.lock().get(transactional_id) == Some(&(id, epoch));
                        if retried
                            && id == current.producer_id
                            && epoch.checked_add(1) == Some(current.producer_epoch)
                            && !current.status.is_preparing()
                            && current.status != TxnStatus::Ongoing
                        {
                            // A retry of the bump that gave the current epoch.
                            return Ok((current.producer_id, current.producer_epoch));
                        }
                        if id != current.producer_id || epoch != current.producer_epoch {
                            return Err(Error::ProducerFenced {
                                transactional_id: transactional_id.to_string(),
                                epoch,
                                current: current.producer_epoch,
                            });
                        }
                    }
                    let mut current = current.clone();
                    if current.status.is_preparing() {
                        // A restart left it preparing: its markers first.
                        let commit = current.status == TxnStatus::PrepareCommit;
                        current = self.complete(transactional_id, current, commit)?;
                    }
                    if current.status == TxnStatus::Ongoing {
                        // The older producer's transaction is aborted, fenced by the epoch
                        // the new producer gets.
                        let prepared = TxnMetadata {
                            status: TxnStatus::PrepareEpochFence,
                            ..fenced(&current, now)
                        };
                        self.persist(transactional_id, Some(&prepared), true)?;
                        *m = Some(prepared.clone());
                        let done = self.complete(transactional_id, prepared, false)?;
                        // At the last epoch the fence could not bump it: a new producer id.
                        let done = match done.producer_epoch {
                            i16::MAX => self.bump(&done, now),
                            _ => done,
                        };
                        TxnMetadata { timeout_ms, ..done }
                    } else {
                        TxnMetadata {
                            timeout_ms,
                            status: TxnStatus::Empty,
                            partitions: BTreeSet::new(),
                            last_update_ms: now,
                            start_ms: -1,
                            ..self.bump(&current, now)
                        }
                    }
                }
            };
            if let Err(e) = self.persist(transactional_id, Some(&next), true) {
                if m.is_none() {
                    // Removed while its lock is held, so no other caller takes it meanwhile
                    // (no caller holds `ids` while it waits for a slot).
                    let mut ids = self.ids.lock();
                    if ids.get(transactional_id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                        ids.remove(transactional_id);
                    }
                }
                return Err(e);
            }
            let kip360 =
                expected.filter(|&(id, _)| id >= 0 && m.as_ref().is_some_and(|c| c.producer_id == id));
            match kip360 {
                Some(from) => self.bumped_from.lock().insert(transactional_id.to_string(), from),
                None => self.bumped_from.lock().remove(transactional_id),
            };
            if let Some(old) = m.as_ref().filter(|old| old.producer_id != next.producer_id) {
                self.by_producer.write().remove(&old.producer_id);
            }
            self.by_producer
                .write()
                .insert(next.producer_id, transactional_id.to_string());
            let answer = (next.producer_id, next.producer_epoch);
            *m = Some(next);
            return Ok(answer);
        }
    }

    /// `m` with the next epoch (or, past the last epoch, a new producer id at epoch 0).
    fn bump(&self, m: &TxnMetadata, now: i64) -> TxnMetadata {
        let (producer_id, producer_epoch) = match m.producer_epoch.checked_add(1).filter(|&e| e < i16::MAX) {
            Some(epoch) => (m.producer_id, epoch),
            None => match self.broker() {
                Ok(broker) => (broker.new_producer_id(), 0),
                Err(_) => (m.producer_id, m.producer_epoch),
            },
        };
        TxnMetadata {
            producer_id,
            producer_epoch,
            last_update_ms: now,
            ..m.clone()
        }
    }

    /// Runs `f` on the state of `transactional_id` under its write lock, after checking that
    /// `producer_id` and `epoch` are its current ones.
    fn with_current<T>(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        f: impl FnOnce(&mut TxnMetadata) -> Result<T>,
    ) -> Result<T> {
        let unbound = || Error::InvalidProducerIdMapping {
            transactional_id: transactional_id.to_string(),
            producer_id,
        };
        let slot = self.slot(transactional_id).ok_or_else(unbound)?;
        let mut guard = slot.write();
        self.check_running()?;
        let m = guard.as_mut().ok_or_else(unbound)?;
        if m.producer_id != producer_id {
            return Err(unbound());
        }
        if epoch != m.producer_epoch {
            return Err(Error::ProducerFenced {
                transactional_id: transactional_id.to_string(),
                epoch,
                current: m.producer_epoch,
            });
        }
        f(m)
    }

    /// Adds `partitions` to the transaction of `transactional_id` (producer `producer_id` in
    /// `epoch`), which is Ongoing from then on. Every partition must exist.
    pub fn add_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[TopicPartition],
    ) -> Result<()> {
        let broker = self.broker()?;
        for tp in partitions {
            if tp.topic != OFFSETS_TOPIC {
                broker.partition(&tp.topic, tp.partition)?;
            }
        }
        self.with_current(transactional_id, producer_id, epoch, |m| {
            if m.status.is_preparing() {
                return Err(Error::ConcurrentTransactions {
                    transactional_id: transactional_id.to_string(),
                });
            }
            let ongoing = m.status == TxnStatus::Ongoing;
            if ongoing && partitions.iter().all(|tp| m.partitions.contains(tp)) {
                return Ok(());
            }
            let now = now_ms();
            let mut next = m.clone();
            if !ongoing {
                next.partitions.clear();
                next.start_ms = now;
            }
            next.status = TxnStatus::Ongoing;
            next.partitions.extend(partitions.iter().cloned());
            next.last_update_ms = now;
            if next.partitions.len() > MAX_TRANSACTION_PARTITIONS {
                return Err(Error::InvalidTxnState {
                    transactional_id: transactional_id.to_string(),
                    reason: format!(
                        "a transaction writes to at most {MAX_TRANSACTION_PARTITIONS} partitions"
                    ),
                });
            }
            self.persist(transactional_id, Some(&next), true)?;
            *m = next;
            Ok(())
        })
    }

    /// Adds the offsets topic to the transaction, for the commits of `group` the producer
    /// will send with it ([`commit_offsets`](Self::commit_offsets)).
    pub fn add_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
    ) -> Result<()> {
        crate::group::offsets::validate_group_id(group)?;
        let broker = self.broker()?;
        if !broker.is_clustered() {
            // The offsets topic exists from here on (a cluster makes it when it starts).
            broker.offsets()?;
        }
        let offsets = [TopicPartition::new(OFFSETS_TOPIC, 0)];
        self.add_partitions(transactional_id, producer_id, epoch, &offsets)
    }

    /// Writes `group`'s commits as part of the transaction (Kafka's TxnOffsetCommit): they
    /// are shown to readers if the transaction commits. The transaction must be Ongoing
    /// with the offsets topic added.
    pub fn commit_offsets(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        offsets: &[(TopicPartition, crate::group::OffsetAndMetadata)],
    ) -> Result<()> {
        let broker = self.broker()?;
        if let Some(remote) = broker.remote_coordinator(group)? {
            // The offsets go to the group's coordinator (as Kafka clients send them).
            return Err(Error::NotCoordinator {
                reason: format!(
                    "node {} coordinates groups: a transaction's offsets are written there",
                    remote.node()
                ),
            });
        }
        let store = broker.offsets()?;
        let slot = self
            .slot(transactional_id)
            .ok_or_else(|| Error::InvalidProducerIdMapping {
                transactional_id: transactional_id.to_string(),
                producer_id,
            })?;
        // Under the read lock: the transaction cannot end before the commits are written.
        let guard = slot.read();
        self.check_open_in(
            transactional_id,
            guard.as_ref(),
            producer_id,
            epoch,
            &TopicPartition::new(OFFSETS_TOPIC, 0),
        )?;
        store.append_transactional(group, producer_id, epoch, offsets)
    }

    /// Runs `write` (a transactional batch of `producer_id` in `epoch` to `tp`) if the
    /// producer's transaction is Ongoing with `tp` added, under the transaction's read
    /// lock: no end of the transaction comes between the check and the write.
    pub(crate) fn with_open_transaction<T>(
        &self,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
        write: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let id = self.by_producer.read().get(&producer_id).cloned();
        let Some(id) = id else {
            return Err(Error::InvalidTxnState {
                transactional_id: String::new(),
                reason: format!("producer id {producer_id} is bound to no transactional id"),
            });
        };
        let slot = self.slot(&id).ok_or_else(|| Error::InvalidProducerIdMapping {
            transactional_id: id.clone(),
            producer_id,
        })?;
        let guard = slot.read();
        self.check_open_in(&id, guard.as_ref(), producer_id, epoch, tp)?;
        write()
    }

    /// The transactional id `producer_id` is bound to, if any.
    /// Refuses a write to `tp` by producer `producer_id` in `epoch` (whose request names
    /// `transactional_id`, if it is a Kafka client's) unless its transaction is open with
    /// `tp` in it: for a cluster's node that takes the write without coordinating
    /// transactions (no end of the transaction is held back while it writes).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn check_open(
        &self,
        transactional_id: Option<&str>,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
    ) -> Result<()> {
        let bound = self.bound_id(producer_id);
        if transactional_id.is_some_and(|id| bound.as_deref() != Some(id)) {
            return Err(Error::InvalidProducerIdMapping {
                transactional_id: transactional_id.unwrap_or_default().to_string(),
                producer_id,
            });
        }
        let id = self.bound_id(producer_id).ok_or_else(|| Error::InvalidTxnState {
            transactional_id: String::new(),
            reason: format!("producer id {producer_id} is bound to no transactional id"),
        })?;
        let slot = self.slot(&id).ok_or_else(|| Error::InvalidProducerIdMapping {
            transactional_id: id.clone(),
            producer_id,
        })?;
        // Asked by a partition's leader that holds its producers' lock, which the markers of
        // an end under way wait for: a transaction busy ending is not waited for. (Taken
        // besides a reader of the same id, a write that holds it across its append, even
        // with a writer queued.)
        let guard = slot
            .try_read_recursive_for(CHECK_WAIT)
            .ok_or_else(|| Error::ConcurrentTransactions {
                transactional_id: id.clone(),
            })?;
        self.check_open_in(&id, guard.as_ref(), producer_id, epoch, tp)
    }

    #[cfg_attr(not(feature = "kafka"), allow(dead_code))] // the Kafka front end's produce
    pub(crate) fn bound_id(&self, producer_id: i64) -> Option<String> {
        self.by_producer.read().get(&producer_id).cloned()
    }

    fn check_open_in(
        &self,
        id: &str,
        m: Option<&TxnMetadata>,
        producer_id: i64,
        epoch: i16,
        tp: &TopicPartition,
    ) -> Result<()> {
        self.check_running()?;
        let Some(m) = m.filter(|m| m.producer_id == producer_id) else {
            return Err(Error::InvalidProducerIdMapping {
                transactional_id: id.to_string(),
                producer_id,
            });
        };
        if epoch != m.producer_epoch {
            return Err(Error::ProducerFenced {
                transactional_id: id.to_string(),
                epoch,
                current: m.producer_epoch,
            });
        }
        if m.status != TxnStatus::Ongoing || !m.partitions.contains(tp) {
            return Err(Error::InvalidTxnState {
                transactional_id: id.to_string(),
                reason: format!("{tp} was not added to an open transaction"),
            });
        }
        // Past its timeout a transaction takes nothing more: the background sweep aborts it
        // (however busy its producer keeps its lock).
        if now_ms().saturating_sub(m.start_ms) > i64::from(m.timeout_ms) {
            return Err(Error::InvalidTxnState {
                transactional_id: id.to_string(),
                reason: format!("the transaction is open past its timeout of {} ms", m.timeout_ms),
            });
        }
        Ok(())
    }

    /// Ends the transaction of `transactional_id`: commits it (`commit`) or aborts it, and
    /// returns once every partition's marker is durable. Ending again the way it ended is
    /// answered as the first time (a retry).
    pub fn end(&self, transactional_id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<()> {
        self.with_current(transactional_id, producer_id, epoch, |m| {
            let invalid = |reason: &str| Error::InvalidTxnState {
                transactional_id: transactional_id.to_string(),
                reason: reason.to_string(),
            };
            match (m.status, commit) {
                (TxnStatus::Ongoing, _) => {}
                (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
                    // A retry, answered from memory: by the coordinator of the cluster alone
                    // (a deposed one may not know of a later transaction of the producer).
                    self.confirm_leading()?;
                    return Ok(());
                }
                (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                    // A restart left it preparing: finish it.
                    let done = self.complete(transactional_id, m.clone(), commit)?;
                    *m = done;
                    return Ok(());
                }
                (s, _) if s.is_preparing() => {
                    return Err(Error::ConcurrentTransactions {
                        transactional_id: transactional_id.to_string(),
                    });
                }
                (TxnStatus::Empty, _) => return Err(invalid("no transaction is open")),
                _ => return Err(invalid("the transaction already ended the other way")),
            }
            pause_at("before-prepare");
            if commit {
                self.sync_records(m)?;
            }
            let prepared = TxnMetadata {
                status: if commit {
                    TxnStatus::PrepareCommit
                } else {
                    TxnStatus::PrepareAbort
                },
                last_update_ms: now_ms(),
                ..m.clone()
            };
            self.persist(transactional_id, Some(&prepared), true)?;
            *m = prepared.clone();
            if commit {
                pause_at("after-prepare");
            }
            // Decided: the answer is success whatever happens to the markers now (as Kafka
            // answers once the decision is durable); markers that fail are written again by
            // the background thread.
            match self.complete(transactional_id, prepared, commit) {
                Ok(done) => *m = done,
                Err(e) => log::warn!(
                    "transactional id {transactional_id:?}: writing markers: {e}; tried again later"
                ),
            }
            Ok(())
        })
    }

    /// Writes the markers of a prepared transaction, then its completion (not waiting for
    /// the disk): the state it ends in.
    fn complete(&self, transactional_id: &str, prepared: TxnMetadata, commit: bool) -> Result<TxnMetadata> {
        self.write_markers(&prepared, commit)?;
        let done = TxnMetadata {
            status: if commit {
                TxnStatus::CompleteCommit
            } else {
                TxnStatus::CompleteAbort
            },
            partitions: BTreeSet::new(),
            last_update_ms: now_ms(),
            start_ms: -1,
            ..prepared
        };
        self.persist(transactional_id, Some(&done), false)?;
        Ok(done)
    }

    /// Writes the marker of `m`'s transaction to each of its partitions, at once, each
    /// durable before this returns.
    fn write_markers(&self, m: &TxnMetadata, commit: bool) -> Result<()> {
        let broker = self.broker()?;
        let marker = Marker {
            commit,
            coordinator_epoch: self.coordinator_epoch(),
        };
        if commit && m.partitions.len() > 1 && paused_at("between-markers") {
            // A crash test stops between two markers: one at a time.
            for (i, tp) in m.partitions.iter().enumerate() {
                if i == 1 {
                    pause_at("between-markers");
                }
                write_marker(&broker, tp, m.producer_id, m.producer_epoch, marker)?;
            }
            return Ok(());
        }
        on_each(&m.partitions, |tp| {
            write_marker(&broker, tp, m.producer_id, m.producer_epoch, marker)
        })
    }

    /// Before a commit is decided: syncs the transaction's records in every partition that
    /// promises durability (`Fsync::Always`), so that no crash can take back a record of a
    /// transaction whose commit survived it (records written by the embedded producer are
    /// not synced one by one). Partitions of other policies promise less, and are left.
    fn sync_records(&self, m: &TxnMetadata) -> Result<()> {
        let broker = self.broker()?;
        on_each(&m.partitions, |tp| {
            if tp.topic == OFFSETS_TOPIC {
                return Ok(()); // its commits were synced when written
            }
            match broker.partition(&tp.topic, tp.partition) {
                // A replica's records are on a majority once written.
                Ok(log) if log.fsync() == Fsync::Always && !log.is_replicated() => log.flush(),
                Ok(_) | Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Writes `transactional_id`'s state (`None`: forgets it) to the state topic, durably if
    /// `durable`.
    fn persist(&self, transactional_id: &str, m: Option<&TxnMetadata>, durable: bool) -> Result<()> {
        let value = m.map(state::value_bytes);
        if let Some(v) = value.as_ref().filter(|v| v.len() > MAX_STATE_BYTES) {
            return Err(Error::InvalidTxnState {
                transactional_id: transactional_id.to_string(),
                reason: format!(
                    "the transaction names too many partitions ({} bytes of state, at most {MAX_STATE_BYTES})",
                    v.len()
                ),
            });
        }
        let mut b = BatchBuilder::new(Compression::None);
        b.push(
            now_ms(),
            Some(&state::key_bytes(transactional_id)),
            value.as_deref(),
            &[],
        );
        let batch = b.finish()?;
        #[cfg(feature = "cluster")]
        if let Some(term) = self.term {
            // Committed on a majority when written, by this node's replica in its term alone.
            return self
                .broker()?
                .append_leading(TRANSACTION_STATE_TOPIC, 0, term, batch);
        }
        self.log.append(batch)?;
        if durable {
            self.log.flush()?;
        }
        Ok(())
    }

    /// Every known id with its slot (taken out of the map's lock).
    fn slots(&self) -> Vec<(String, Slot)> {
        self.ids
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The state of `transactional_id`, if it is known.
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.slot(transactional_id)?.read().clone()
    }

    /// Every known transactional id with its producer id, status and the start of its open
    /// transaction (-1 for none), sorted by id.
    pub fn list(&self) -> Vec<(String, i64, TxnStatus, i64)> {
        let slots = self.slots();
        let mut found: Vec<(String, i64, TxnStatus, i64)> = slots
            .into_iter()
            .filter_map(|(id, slot)| {
                let guard = slot.read();
                let m = guard.as_ref()?;
                Some((id, m.producer_id, m.status, m.start_ms))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Aborts the transactions open past their timeout (bumping their epochs, which fences
    /// their producers), finishes those a restart left preparing, and forgets ids unused for
    /// [`TRANSACTIONAL_ID_EXPIRATION`].
    pub(crate) fn tick(&self, now: i64) {
        self.tick_waiting(now, Duration::from_millis(20));
    }

    /// [`tick`](Self::tick), waiting up to `wait` for each busy id.
    fn tick_waiting(&self, now: i64, wait: Duration) {
        let slots = self.slots();
        let expiration = TRANSACTIONAL_ID_EXPIRATION.as_millis() as i64;
        for (id, slot) in slots {
            // One in use is looked at next time (a produce may hold it across a sync).
            let Some(mut guard) = slot.try_write_for(wait) else {
                continue;
            };
            if self.check_running().is_err() {
                return;
            }
            let Some(m) = guard.clone() else {
                continue;
            };
            let result = match m.status {
                TxnStatus::Ongoing if now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms) => {
                    log::info!(
                        "transactional id {id:?}: aborting a transaction open past {} ms",
                        m.timeout_ms
                    );
                    let prepared = TxnMetadata {
                        status: TxnStatus::PrepareAbort,
                        ..fenced(&m, now)
                    };
                    self.persist(&id, Some(&prepared), true).and_then(|()| {
                        *guard = Some(prepared.clone());
                        self.complete(&id, prepared, false)
                    })
                }
                s if s.is_preparing() => self.complete(&id, m.clone(), s == TxnStatus::PrepareCommit),
                TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort | TxnStatus::Dead
                    if now.saturating_sub(m.last_update_ms) > expiration =>
                {
                    match self.persist(&id, None, false) {
                        Ok(()) => {
                            *guard = None;
                            drop(guard);
                            let mut ids = self.ids.lock();
                            if ids.get(&id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                                ids.remove(&id);
                            }
                            let mut by_producer = self.by_producer.write();
                            if by_producer.get(&m.producer_id) == Some(&id) {
                                by_producer.remove(&m.producer_id);
                            }
                            self.bumped_from.lock().remove(&id);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => continue,
            };
            match result {
                Ok(next) => *guard = Some(next),
                Err(e) => log::warn!("transactional id {id:?}: {e}; tried again later"),
            }
        }
    }
}

impl Drop for TxnCoordinator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `f` on each of `partitions` on at most [`MARKER_WRITERS`] threads (each taking a
/// share of them in turn), and returns the first error.
fn on_each(
    partitions: &BTreeSet<TopicPartition>,
    f: impl Fn(&TopicPartition) -> Result<()> + Sync,
) -> Result<()> {
    let all: Vec<&TopicPartition> = partitions.iter().collect();
    if all.len() < 2 {
        return all.into_iter().try_for_each(f);
    }
    let f = &f;
    let share = all.len().div_ceil(MARKER_WRITERS);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let mut running = Vec::new();
        for chunk in all.chunks(share) {
            let spawned = std::thread::Builder::new()
                .name("rivulet-marker".into())
                .spawn_scoped(s, move || chunk.iter().map(|tp| f(tp)).collect::<Vec<_>>());
            running.push((chunk, spawned));
        }
        running
            .into_iter()
            .flat_map(|(chunk, spawned)| match spawned {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| vec![Err(Error::IllegalState("a marker's writer panicked"))]),
                // No thread to spare: this share is done here.
                Err(_) => chunk.iter().map(|tp| f(tp)).collect(),
            })
            .collect()
    });
    results.into_iter().collect()
}

/// `m` with the next epoch, for the markers of a transaction aborted to fence its producer
/// (the same producer id: its open transaction is what the markers end). At the last epoch,
/// the epoch stays; the next `init_producer_id` moves the id to a new producer id.
fn fenced(m: &TxnMetadata, now: i64) -> TxnMetadata {
    TxnMetadata {
        producer_epoch: m.producer_epoch.saturating_add(1),
        last_update_ms: now,
        ..m.clone()
    }
}

/// Writes one partition's marker durably: the offsets topic's through the offset store (which
/// then shows or drops the transaction's commits). A partition deleted since is skipped.
fn write_marker(
    broker: &BrokerInner,
    tp: &TopicPartition,
    producer_id: i64,
    epoch: i16,
    marker: Marker,
) -> Result<()> {
    if tp.topic == OFFSETS_TOPIC {
        return broker.complete_offsets_transaction(producer_id, epoch, marker);
    }
    let log = match broker.partition(&tp.topic, tp.partition) {
        Ok(log) => log,
        Err(Error::UnknownTopic { .. } | Error::UnknownPartition { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    log.append_marker(producer_id, epoch, marker)?;
    match log.is_replicated() {
        true => Ok(()), // on a majority once written
        false => log.flush(),
    }
}

/// Whether the process is to stop at `point` (feature `failpoints`, for rivulet's crash
/// tests: `RIVULET_PAUSE_AT` names the point).
fn paused_at(point: &str) -> bool {
    cfg!(feature = "failpoints") && std::env::var("RIVULET_PAUSE_AT").is_ok_and(|p| p == point)
}

/// Stops the process at `point` if a crash test asks for it: says so on standard output and
/// sleeps until the test kills it.
fn pause_at(point: &str) {
    if paused_at(point) {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "rivulet: paused at {point}");
        let _ = out.flush();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Refuses an empty transactional id, or one too long for the state topic's key.
fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > state::MAX_TRANSACTIONAL_ID_BYTES {
        return Err(Error::InvalidArgument {
            name: "transactional.id",
            value: format!("{} bytes", id.len()),
            reason: "a transactional id has 1 to 32,767 bytes",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::storage::producers::Verdict;
    use crate::{Broker, Fsync};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Status {
        Empty,
        Ongoing,
        Committed,
        Aborted,
    }

    /// What a transactional id should be, by Kafka's rules.
    #[derive(Debug, Clone)]
    struct Model {
        producer_id: i64,
        epoch: i16,
        status: Status,
        partitions: BTreeSet<TopicPartition>,
        /// The first offset its open transaction wrote at in each partition.
        first: BTreeMap<TopicPartition, i64>,
    }

    fn open(dir: &std::path::Path) -> (Broker, Arc<TxnCoordinator>) {
        let broker = Broker::builder(dir).fsync(Fsync::Never).open().unwrap();
        let c = broker.transactions().unwrap();
        (broker, c)
    }

    /// Writes one transactional record of `id`'s producer to `tp`, as the Kafka front end and
    /// the embedded producer do: checked against the open transaction, judged, appended.
    fn write(
        broker: &Broker,
        c: &TxnCoordinator,
        m: &Model,
        sequence: i32,
        tp: &TopicPartition,
    ) -> Result<i64> {
        let log = broker.partition(&tp.topic, tp.partition)?;
        c.with_open_transaction(m.producer_id, m.epoch, tp, || {
            let mut b = BatchBuilder::new(Compression::None)
                .producer(m.producer_id, m.epoch, sequence)
                .transactional(true);
            b.push(1, Some(b"k"), Some(b"v"), &[]);
            let batch = b.finish()?;
            let _producing = log.producing();
            match log.plan_producers(&[batch.header()])?.remove(0) {
                Verdict::Append => log.append_unsynced(batch).map(|i| i.base_offset),
                other => panic!("judged {other:?}"),
            }
        })
    }

    #[test]
    fn the_coordinator_and_the_last_stable_offsets_follow_a_model() {
        let partitions: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
        for seed in 1..=6u64 {
            let dir = tempfile::tempdir().unwrap();
            let (mut broker, mut c) = open(dir.path());
            broker
                .create_topic("t", 3, crate::TopicConfig::default())
                .unwrap();
            let ids = ["a", "b", "c"];
            let mut models: BTreeMap<&str, Model> = BTreeMap::new();
            let mut sequences: BTreeMap<(i64, i16, TopicPartition), i32> = BTreeMap::new();
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut rng = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for step in 0..150 {
                let id = ids[(rng() % 3) as usize];
                let known = models.get(id).cloned();
                let what = rng() % 12;
                match (what, known) {
                    (0 | 1, m) => {
                        let (producer_id, epoch) = c.init_producer_id(id, 60_000, None).unwrap();
                        let expected_epoch = m.as_ref().map_or(0, |m| m.epoch + 1);
                        assert_eq!(epoch, expected_epoch, "seed {seed} step {step}: init {id}");
                        if let Some(m) = &m {
                            assert_eq!(producer_id, m.producer_id);
                        }
                        models.insert(
                            id,
                            Model {
                                producer_id,
                                epoch,
                                // A new epoch starts Empty; one that fenced an open
                                // transaction ends with its abort.
                                status: match m.map(|m| m.status) {
                                    Some(Status::Ongoing) => Status::Aborted,
                                    _ => Status::Empty,
                                },
                                partitions: BTreeSet::new(),
                                first: BTreeMap::new(),
                            },
                        );
                    }
                    (2, Some(m)) if m.epoch > 0 => {
                        // An older epoch: fenced, wherever the transaction is.
                        let stale = c.end(id, m.producer_id, m.epoch - 1, true);
                        assert!(matches!(stale, Err(Error::ProducerFenced { .. })), "{stale:?}");
                        let stale = c.init_producer_id(id, 60_000, Some((m.producer_id, m.epoch - 1)));
                        assert!(matches!(stale, Err(Error::ProducerFenced { .. })), "{stale:?}");
                    }
                    (3..=5, Some(mut m)) => {
                        let tp = partitions[(rng() % 3) as usize].clone();
                        c.add_partitions(id, m.producer_id, m.epoch, std::slice::from_ref(&tp))
                            .unwrap();
                        if m.status != Status::Ongoing {
                            m.partitions.clear();
                            m.first.clear();
                        }
                        m.status = Status::Ongoing;
                        m.partitions.insert(tp);
                        models.insert(id, m);
                    }
                    (6..=8, Some(mut m)) => {
                        let tp = partitions[(rng() % 3) as usize].clone();
                        let key = (m.producer_id, m.epoch, tp.clone());
                        let sequence = *sequences.get(&key).unwrap_or(&0);
                        let written = write(&broker, &c, &m, sequence, &tp);
                        if m.status == Status::Ongoing && m.partitions.contains(&tp) {
                            let at = written.unwrap();
                            sequences.insert(key, sequence + 1);
                            m.first.entry(tp).or_insert(at);
                            models.insert(id, m);
                        } else {
                            assert!(
                                written.is_err(),
                                "seed {seed} step {step}: a write outside a transaction"
                            );
                        }
                    }
                    (9 | 10, Some(mut m)) => {
                        let commit = rng() % 2 == 0;
                        let ended = c.end(id, m.producer_id, m.epoch, commit);
                        match (m.status, commit) {
                            (Status::Ongoing, _) => {
                                ended.unwrap();
                                m.status = if commit {
                                    Status::Committed
                                } else {
                                    Status::Aborted
                                };
                                m.first.clear();
                            }
                            (Status::Committed, true) | (Status::Aborted, false) => ended.unwrap(),
                            _ => assert!(matches!(ended, Err(Error::InvalidTxnState { .. })), "{ended:?}"),
                        }
                        models.insert(id, m);
                    }
                    (11, _) if rng() % 2 == 0 => {
                        // Time passes beyond every timeout: open transactions are aborted and
                        // their producers fenced (the epoch moves on).
                        c.tick_waiting(now_ms() + 20 * 60 * 1000, Duration::from_secs(60));
                        for m in models.values_mut() {
                            if m.status == Status::Ongoing {
                                m.status = Status::Aborted;
                                m.epoch += 1;
                                m.first.clear();
                            }
                        }
                    }
                    (11, _) => {
                        // A restart.
                        c.stop();
                        drop(c);
                        broker.close().unwrap();
                        drop(broker);
                        (broker, c) = open(dir.path());
                    }
                    _ => continue,
                }
                for (id, m) in &models {
                    let d = c.describe(id).expect("known");
                    assert_eq!(
                        (d.producer_id, d.producer_epoch),
                        (m.producer_id, m.epoch),
                        "seed {seed} step {step}: {id}"
                    );
                    let status = match d.status {
                        TxnStatus::Empty => Status::Empty,
                        TxnStatus::Ongoing => Status::Ongoing,
                        TxnStatus::CompleteCommit => Status::Committed,
                        TxnStatus::CompleteAbort => Status::Aborted,
                        other => panic!("seed {seed} step {step}: {id} left {other:?}"),
                    };
                    assert_eq!(status, m.status, "seed {seed} step {step}: {id}");
                }
                for tp in &partitions {
                    let log = broker.partition(&tp.topic, tp.partition).unwrap();
                    let held = models.values().filter_map(|m| m.first.get(tp)).min();
                    let expected = held.copied().unwrap_or(log.high_watermark());
                    assert_eq!(
                        log.last_stable_offset(),
                        expected,
                        "seed {seed} step {step}: {tp}"
                    );
                }
            }
        }
    }
}
