//! [`Consumer`]: reads records from assigned partitions.
//!
//! `poll` long-polls every assigned partition that is not paused (one [`Signal`] wakes it when
//! any of them advances), serves them round-robin so none starves, and returns at most
//! `max.poll.records` records, only from below each partition's high watermark. The records
//! borrow from the fetched batches held by the returned [`ConsumerRecords`]; nothing is copied
//! per record.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::group::{Assignor, MemberRef, OffsetAndMetadata};
use crate::record::{Consumed, OwnedRecord};
use crate::storage::format::{self, HEADER_LEN, RecordContext};
use crate::storage::{Batch, Compression, Headers, PartitionLog, Signal, TimestampOffset};
use crate::storage::{Oversized, ReadPin};

mod membership;

use membership::Membership;
pub use membership::RebalanceListener;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`'s partition `partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Where to start when a partition has no position, or its position is out of range
/// (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the log start offset.
    Earliest,
    /// From the log end: only records produced from now on (Kafka's default).
    #[default]
    Latest,
    /// Fail with [`Error::NoOffset`].
    None,
}

/// Which records of transactions a consumer reads (`isolation.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Every record, those of open and aborted transactions included (Kafka's Java client's
    /// default). Transaction markers are never returned.
    #[default]
    ReadUncommitted,
    /// Only records outside transactions and of committed ones: a partition is read up to
    /// its last stable offset (the first record of its earliest open transaction), and the
    /// records of aborted transactions are skipped.
    ReadCommitted,
}

/// Settings of a consumer.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    isolation_level: IsolationLevel,
    max_poll_records: usize,
    auto_offset_reset: OffsetReset,
    fetch_bytes: usize,
    group_id: Option<String>,
    enable_auto_commit: bool,
    enable_auto_offset_store: bool,
    auto_commit_interval: Duration,
    max_poll_interval: Duration,
    group_instance_id: Option<String>,
    client_id: String,
    assignors: Vec<Assignor>,
    metadata_max_age: Duration,
    poll_spin: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            isolation_level: IsolationLevel::ReadUncommitted,
            max_poll_records: 500,
            auto_offset_reset: OffsetReset::Latest,
            fetch_bytes: 1 << 20,
            group_id: None,
            enable_auto_commit: true,
            enable_auto_offset_store: true,
            auto_commit_interval: Duration::from_secs(5),
            max_poll_interval: Duration::from_secs(300),
            group_instance_id: None,
            client_id: "rivulet".to_string(),
            assignors: vec![Assignor::Range, Assignor::CooperativeSticky],
            metadata_max_age: Duration::from_secs(1),
            poll_spin: Duration::ZERO,
        }
    }
}

impl ConsumerConfig {
    /// Sets one setting by its Kafka consumer name, parsing the value as Kafka's clients do:
    /// `group.id`, `group.instance.id`, `client.id`, `auto.offset.reset`
    /// (`earliest`, `latest`, `none`), `enable.auto.commit`, `enable.auto.offset.store`,
    /// `auto.commit.interval.ms`, `max.poll.records`, `max.poll.interval.ms`,
    /// `max.partition.fetch.bytes`, `isolation.level` (`read_committed`,
    /// `read_uncommitted`), `partition.assignment.strategy` (assignor names, comma-separated)
    /// and `metadata.max.age.ms`. Any other name (`bootstrap.servers`, say: an embedded
    /// consumer has none) and unparsable values are errors ([`Error::InvalidConfig`]) and
    /// change nothing.
    ///
    /// ```
    /// use rivulet::ConsumerConfig;
    /// let mut config = ConsumerConfig::default();
    /// for (name, value) in [("group.id", "billing"), ("auto.offset.reset", "earliest"), ("max.poll.records", "100")] {
    ///     config.set(name, value)?;
    /// }
    /// assert!(config.set("max.poll.records", "many").is_err());
    /// # Ok::<(), rivulet::Error>(())
    /// ```
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        fn bad(name: &'static str, value: &str, reason: &'static str) -> Error {
            Error::InvalidConfig {
                name,
                value: value.to_string(),
                reason,
            }
        }
        fn number<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
            value
                .trim()
                .parse()
                .map_err(|_| bad(name, value, "not a number in range"))
        }
        fn boolean(name: &'static str, value: &str) -> Result<bool> {
            match value.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(bad(name, value, "true or false")),
            }
        }
        let ms = |name: &'static str| number::<u64>(name, value).map(Duration::from_millis);
        let next = self.clone();
        *self = match name {
            "group.id" => next.group_id(value.trim()),
            "group.instance.id" => next.group_instance_id(value.trim()),
            "client.id" => next.client_id(value.trim()),
            "auto.offset.reset" => next.auto_offset_reset(match value.trim() {
                "earliest" => OffsetReset::Earliest,
                "latest" => OffsetReset::Latest,
                "none" => OffsetReset::None,
                _ => return Err(bad("auto.offset.reset", value, "earliest, latest or none")),
            }),
            "enable.auto.commit" => next.enable_auto_commit(boolean("enable.auto.commit", value)?),
            "enable.auto.offset.store" => {
                next.enable_auto_offset_store(boolean("enable.auto.offset.store", value)?)
            }
            "auto.commit.interval.ms" => next.auto_commit_interval(ms("auto.commit.interval.ms")?),
            "max.poll.records" => match number::<usize>("max.poll.records", value)? {
                0 => return Err(bad("max.poll.records", value, "at least 1")),
                n => next.max_poll_records(n),
            },
            "max.poll.interval.ms" => match ms("max.poll.interval.ms")? {
                d if d.is_zero() || d > crate::group::MAX_TIMEOUT => {
                    return Err(bad("max.poll.interval.ms", value, "from 1 ms to 30 minutes"));
                }
                d => next.max_poll_interval(d),
            },
            "max.partition.fetch.bytes" => match number::<usize>("max.partition.fetch.bytes", value)? {
                0 => return Err(bad("max.partition.fetch.bytes", value, "at least 1")),
                n => next.fetch_bytes(n),
            },
            "isolation.level" => next.isolation_level(match value.trim() {
                "read_committed" => IsolationLevel::ReadCommitted,
                "read_uncommitted" => IsolationLevel::ReadUncommitted,
                _ => {
                    return Err(bad(
                        "isolation.level",
                        value,
                        "read_committed or read_uncommitted",
                    ));
                }
            }),
            "partition.assignment.strategy" => {
                let assignors: Option<Vec<Assignor>> =
                    value.split(',').map(|n| Assignor::from_name(n.trim())).collect();
                match assignors {
                    Some(list) if !list.is_empty() => next.partition_assignment_strategy(&list),
                    _ => {
                        return Err(bad(
                            "partition.assignment.strategy",
                            value,
                            "range, roundrobin, sticky or cooperative-sticky, comma-separated",
                        ));
                    }
                }
            }
            "metadata.max.age.ms" => next.metadata_max_age(ms("metadata.max.age.ms")?),
            _ => {
                return Err(Error::InvalidConfig {
                    name: "consumer config",
                    value: name.to_string(),
                    reason: "not a setting of an embedded consumer",
                });
            }
        };
        Ok(())
    }

    /// `max.poll.records`: the most records one `poll` returns. Default 500; at least 1.
    pub fn max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n.max(1);
        self
    }

    /// `auto.offset.reset`. Default [`OffsetReset::Latest`].
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// `max.partition.fetch.bytes`: bytes read from one partition at a time (at least one
    /// batch is always read). Default 1 MiB.
    pub fn fetch_bytes(mut self, bytes: usize) -> Self {
        self.fetch_bytes = bytes;
        self
    }

    /// `group.id`: the group whose committed offsets this consumer starts from and commits
    /// to. Default none (no commits).
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// `enable.auto.commit`: with a group, commit the positions of records already returned,
    /// at the start of a `poll` once `auto.commit.interval.ms` has passed, and when the
    /// consumer is closed or dropped (at-least-once delivery). Default true. A consumer
    /// dropped while its thread panics commits nothing: the records it returned may not have
    /// been processed.
    pub fn enable_auto_commit(mut self, yes: bool) -> Self {
        self.enable_auto_commit = yes;
        self
    }

    /// `enable.auto.offset.store` (librdkafka's): whether what `poll` returns counts as
    /// processed. Default true: [`Consumer::commit`] and auto-commit commit the positions
    /// past the records returned. Set false to acknowledge records one by one with
    /// [`Consumer::store_offset`]: commits then carry the offsets stored, so a record handed
    /// out but not acknowledged is delivered again after a restart or rebalance (a record
    /// finished out of order does not acknowledge the unfinished ones before it, as long as
    /// offsets are stored in order per partition).
    pub fn enable_auto_offset_store(mut self, yes: bool) -> Self {
        self.enable_auto_offset_store = yes;
        self
    }

    /// `auto.commit.interval.ms`. Default 5 s.
    pub fn auto_commit_interval(mut self, every: Duration) -> Self {
        self.auto_commit_interval = every;
        self
    }

    /// `max.poll.interval.ms`: a subscribed consumer that does not call `poll` for this long
    /// is removed from its group and its partitions go to the others. It is also the longest
    /// a rebalance waits for this member. Default 5 minutes; at most 30 minutes.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval.clamp(Duration::from_millis(1), crate::group::MAX_TIMEOUT);
        self
    }

    /// `group.instance.id`: makes the consumer a static member. It keeps its identity (and,
    /// under a sticky assignor, its partitions) when it is recreated, and dropping it does
    /// not leave the group: it is removed only after `max.poll.interval.ms` of silence.
    pub fn group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// `client.id`: the prefix of the consumer's member id. Default "rivulet".
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// `partition.assignment.strategy`: the assignors this consumer supports, preferred
    /// first; the group uses one every member supports. Default `[Range, CooperativeSticky]`,
    /// as in Kafka's Java client, so a group can be shared with Kafka clients left at their
    /// defaults (librdkafka's `[range, roundrobin]` has range in common). The rebalance
    /// protocol is cooperative only if every assignor listed is, so the default rebalances
    /// eagerly; `[CooperativeSticky]` alone keeps consuming through rebalances. An empty list
    /// keeps the default.
    pub fn partition_assignment_strategy(mut self, assignors: &[Assignor]) -> Self {
        if !assignors.is_empty() {
            self.assignors = assignors.to_vec();
        }
        self
    }

    /// `metadata.max.age.ms`: how often a subscribed consumer looks for new topics matching
    /// its pattern and, as group leader, for partitions added to its topics. Default 1 s.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    /// Which records of transactions to read (`isolation.level`); default
    /// [`IsolationLevel::ReadUncommitted`]. A partition of a cluster held at other nodes is
    /// read at its leader, in the same isolation.
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// How long a `poll` with nothing to return watches for records, yielding its core,
    /// before it sleeps. Default zero: it sleeps at once. Waking a sleeping thread takes the
    /// scheduler several microseconds (tens on some virtual machines), so on a machine with
    /// a core to spare a few tens of microseconds cut in-process produce-to-consume latency
    /// (`docs/benchmarks.md`), at the price of that core while records flow. Not a Kafka
    /// setting.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rivulet::ConsumerConfig;
    /// let low_latency = ConsumerConfig::default().poll_spin(Duration::from_micros(20));
    /// # let _ = low_latency;
    /// ```
    pub fn poll_spin(mut self, spin: Duration) -> Self {
        self.poll_spin = spin;
        self
    }
}

/// Reads records from assigned partitions.
///
/// ```
/// use std::time::Duration;
/// use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig, TopicPartition};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("events", 1, TopicConfig::default())?;
/// Producer::new(&broker).send(ProducerRecord::new("events", b"hello"))?;
///
/// let mut consumer = Consumer::new(&broker, ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest));
/// consumer.assign(&[TopicPartition::new("events", 0)])?;
/// let records = consumer.poll(Duration::from_secs(1))?;
/// assert_eq!(records.iter().next().unwrap().value, Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Consumer {
    broker: Broker,
    config: ConsumerConfig,
    assigned: BTreeMap<TopicPartition, Assigned>,
    /// Raised when an assigned partition advances or the group starts a rebalance.
    signal: Arc<Signal>,
    /// Where the next round-robin pass starts.
    next_first: usize,
    last_commit: Instant,
    /// Set by `assign`: the assignment is the user's, not the group's.
    manual: bool,
    /// Set by `subscribe`.
    membership: Option<Membership>,
    listener: Option<Box<dyn RebalanceListener>>,
    /// Offsets acknowledged with `store_offset` (the next offset to consume), for the next
    /// commit when `enable.auto.offset.store` is off; shared with the asynchronous face.
    stored: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
    /// Set by a [`Wakeup`]: the next or current `poll` returns [`Error::Wakeup`].
    woken: Arc<AtomicBool>,
    /// Per partition, the first offset among records the asynchronous face fetched and has
    /// not handed to the application yet: commits of positions stop there.
    pub(crate) held: Arc<Mutex<BTreeMap<TopicPartition, i64>>>,
}

/// Interrupts a [`Consumer`]'s `poll` from another thread (Kafka's `consumer.wakeup()`):
/// the poll waiting now, or else the next one, returns [`Error::Wakeup`] at once. Cheap to
/// clone; made by [`Consumer::wakeup_handle`].
///
/// ```
/// use std::time::Duration;
/// use rivulet::{Broker, Consumer, ConsumerConfig, Error, TopicConfig, TopicPartition};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("quiet", 1, TopicConfig::default())?;
/// let mut consumer = Consumer::new(&broker, ConsumerConfig::default());
/// consumer.assign(&[TopicPartition::new("quiet", 0)])?;
/// let wakeup = consumer.wakeup_handle();
/// let stopper = std::thread::spawn(move || wakeup.wakeup()); // a shutdown hook, say
/// assert!(matches!(consumer.poll(Duration::from_secs(3600)), Err(Error::Wakeup)));
/// stopper.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Wakeup {
    woken: Arc<AtomicBool>,
    signal: Arc<Signal>,
}

impl Wakeup {
    /// Interrupts the consumer's current poll, or its next one.
    pub fn wakeup(&self) {
        self.woken.store(true, Ordering::SeqCst);
        self.signal.raise();
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("assigned", &self.assigned.keys().collect::<Vec<_>>())
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Assigned {
    log: PartitionLog,
    topic: Arc<str>,
    /// The next offset to hand out; `None` until reset by policy.
    position: Option<i64>,
    paused: bool,
    /// Batches fetched but not all returned yet, as Kafka's consumer buffers a fetch.
    buffered: Option<Buffered>,
    /// The last fetch's bytes once all returned: reused for the next fetch if no
    /// `ConsumerRecords` still holds them.
    spare: Option<Arc<Vec<u8>>>,
    /// The segment read last (see `read_pinned`).
    pinned: Option<ReadPin>,
    /// For a partition read at another node: the highest high watermark its leaders gave.
    seen_end: i64,
    /// Under `read_committed`, the aborted transactions among the batches fetched last (the
    /// buffered ones).
    aborted: Vec<crate::storage::txnindex::Aborted>,
    /// Read in `read_committed`: its end is the last stable offset.
    read_committed: bool,
    /// The partition's lag gauge, once it was read (see [`crate::telemetry`]).
    lag: Option<metrics::Gauge>,
}

/// The rest of a fetch: whole batches from byte `at` on, good while the consumer's position
/// is still `position` (a seek drops them).
#[derive(Debug)]
struct Buffered {
    bytes: Arc<Vec<u8>>,
    at: usize,
    position: i64,
}

impl Consumer {
    /// A consumer of `broker`'s topics with no partitions assigned.
    pub fn new(broker: &Broker, config: ConsumerConfig) -> Consumer {
        Consumer {
            broker: broker.clone(),
            config,
            assigned: BTreeMap::new(),
            signal: Signal::new(),
            next_first: 0,
            last_commit: Instant::now(),
            manual: false,
            membership: None,
            listener: None,
            stored: Arc::default(),
            woken: Arc::default(),
            held: Arc::default(),
        }
    }

    /// A handle that interrupts this consumer's `poll` from another thread ([`Wakeup`]).
    pub fn wakeup_handle(&self) -> Wakeup {
        Wakeup {
            woken: self.woken.clone(),
            signal: self.signal.clone(),
        }
    }

    /// Fails with [`Error::Wakeup`] (once) if a [`Wakeup`] was raised.
    fn check_wakeup(&self) -> Result<()> {
        match self.woken.swap(false, Ordering::SeqCst) {
            true => Err(Error::Wakeup),
            false => Ok(()),
        }
    }

    /// Whether a [`Wakeup`] is raised and not yet reported.
    pub(super) fn woken(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    /// Replaces the assignment with `partitions` (manual assignment, no group membership).
    /// Partitions kept keep their positions; new ones start from the group's committed offset
    /// if there is one, else per `auto.offset.reset`. Unknown topics or partitions are errors
    /// and change nothing; so is calling it on a subscribed consumer.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        if self.membership.is_some() {
            return Err(Error::IllegalState(
                "assign on a subscribed consumer (unsubscribe first)",
            ));
        }
        self.set_assignment(partitions)?;
        self.manual = !partitions.is_empty();
        Ok(())
    }

    /// Makes `partitions` the assignment, opening new ones before changing anything.
    fn set_assignment(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let resume = self.resume_points(partitions)?;
        self.apply_assignment(partitions, &resume)
    }

    /// Where the group's consumers resume those of `partitions` not assigned yet: their
    /// committed offsets (asked of the coordinator, which in a cluster may be another node).
    pub(super) fn resume_points(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let new: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| !self.assigned.contains_key(tp))
            .cloned()
            .collect();
        let Some(group) = self.config.group_id.as_deref().filter(|_| !new.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        if self.config.isolation_level == IsolationLevel::ReadCommitted {
            self.wait_for_stable_offsets(group, &new)?;
        }
        let committed = self.committed(&new)?;
        Ok(new
            .into_iter()
            .zip(committed)
            .filter_map(|(tp, c)| Some((tp, c?.offset)))
            .collect())
    }

    /// Waits (at most [`STABLE_OFFSETS_WAIT`]) until no transaction's commit for `partitions`
    /// of `group` is pending, as Kafka's consumers in `read_committed` ask for stable offsets
    /// (KIP-447): a transaction that committed, or is committing, the group's offsets decides
    /// where the group resumes. A transaction whose producer is gone ends when a new producer
    /// of its transactional id starts, or when it times out.
    fn wait_for_stable_offsets(&self, group: &str, partitions: &[TopicPartition]) -> Result<()> {
        // The pending commits are at the group's coordinator: here, or at the cluster's node
        // that coordinates groups (asked less often).
        let remote = self.broker.inner.remote_coordinator(group)?;
        let pause = match remote {
            Some(_) => Duration::from_millis(50),
            None => Duration::from_millis(10),
        };
        let pending = || match &remote {
            Some(remote) => remote.has_pending(group, partitions),
            None => Ok(self.broker.inner.offsets()?.has_pending(group, partitions)),
        };
        let deadline = std::time::Instant::now() + STABLE_OFFSETS_WAIT;
        while pending()? {
            if std::time::Instant::now() >= deadline {
                // Resuming from the offsets committed before the transaction could read its
                // input twice: the caller tries again.
                return Err(Error::UnstableOffsets {
                    group: group.to_string(),
                });
            }
            std::thread::sleep(pause);
        }
        Ok(())
    }

    /// Makes `partitions` the assignment, new ones starting at `resume` (else per
    /// `auto.offset.reset`), opening them before changing anything.
    pub(super) fn apply_assignment(
        &mut self,
        partitions: &[TopicPartition],
        resume: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut opened = Vec::new();
        for tp in partitions {
            if !self.assigned.contains_key(tp) {
                opened.push((tp.clone(), self.broker.partition(&tp.topic, tp.partition)?));
            }
        }
        let mut next = BTreeMap::new();
        for tp in partitions {
            if let Some(a) = self.assigned.remove(tp) {
                next.insert(tp.clone(), a);
            }
        }
        for a in self.assigned.values() {
            a.log.unwatch(&self.signal);
        }
        // Offsets stored for partitions given up are not the next owner's to commit (nor are
        // they this consumer's if the partition comes back).
        self.stored.lock().retain(|tp, _| next.contains_key(tp));
        self.held.lock().retain(|tp, _| next.contains_key(tp));
        for (tp, log) in opened {
            log.watch(&self.signal);
            let a = Assigned {
                log,
                topic: Arc::from(tp.topic.as_str()),
                position: resume.get(&tp).copied(),
                paused: false,
                buffered: None,
                spare: None,
                pinned: None,
                seen_end: 0,
                aborted: Vec::new(),
                read_committed: self.config.isolation_level == IsolationLevel::ReadCommitted,
                lag: None,
            };
            next.insert(tp, a);
        }
        self.assigned = next;
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.keys().cloned().collect()
    }

    fn assigned_mut(&mut self, tp: &TopicPartition) -> Result<&mut Assigned> {
        self.assigned.get_mut(tp).ok_or_else(|| Error::NotAssigned {
            topic: tp.topic.clone(),
            partition: tp.partition,
        })
    }

    /// Sets the next offset `poll` returns from `tp`. An offset outside the log is handled by
    /// `auto.offset.reset` on the next poll, as in Kafka.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rivulet::{Broker, Consumer, ConsumerConfig, Producer, ProducerRecord, TopicConfig, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("t", 1, TopicConfig::default())?;
    /// let producer = Producer::new(&broker);
    /// for i in 0..5u8 {
    ///     producer.send(ProducerRecord::new("t", &[i]).timestamp(1000 + i as i64))?;
    /// }
    /// let tp = TopicPartition::new("t", 0);
    /// let mut consumer = Consumer::new(&broker, ConsumerConfig::default());
    /// consumer.assign(std::slice::from_ref(&tp))?;
    /// // Replay from the first record stamped at or after 1003.
    /// let found = consumer.offsets_for_times(&[(tp.clone(), 1003)])?;
    /// consumer.seek(&tp, found[0].unwrap().offset)?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// let values: Vec<_> = records.iter().map(|r| r.value.unwrap()[0]).collect();
    /// assert_eq!(values, [3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// A negative offset is refused ([`Error::InvalidArgument`]), as by Kafka's clients.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<()> {
        refuse_negative("offset", offset)?;
        self.assigned_mut(tp)?.position = Some(offset);
        self.held.lock().remove(tp);
        Ok(())
    }

    /// Moves to the log start offset of each partition.
    pub fn seek_to_beginning(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            let a = self.assigned_mut(tp)?;
            a.position = Some(bounds(a)?.0);
        }
        Ok(())
    }

    /// Moves to the end (the high watermark) of each partition.
    pub fn seek_to_end(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            let a = self.assigned_mut(tp)?;
            a.position = Some(bounds(a)?.1);
        }
        Ok(())
    }

    /// The offset of the next record `poll` will return from `tp` (resolving
    /// `auto.offset.reset` if it has no position yet).
    pub fn position(&mut self, tp: &TopicPartition) -> Result<i64> {
        let reset = self.config.auto_offset_reset;
        let a = self.assigned_mut(tp)?;
        resolve(tp, a, reset)
    }

    /// For each partition, the first offset whose record has a timestamp at or after the one
    /// given, or `None` if there is none. Any partition of the broker may be asked about. A
    /// negative timestamp refuses the whole lookup ([`Error::InvalidArgument`]).
    pub fn offsets_for_times(&self, query: &[(TopicPartition, i64)]) -> Result<Vec<Option<TimestampOffset>>> {
        for (_, ts) in query {
            refuse_negative("timestamp", *ts)?;
        }
        query
            .iter()
            .map(|(tp, ts)| {
                self.broker
                    .partition(&tp.topic, tp.partition)?
                    .offset_for_timestamp(*ts)
            })
            .collect()
    }

    /// Stops `poll` from returning records of these partitions until resumed.
    pub fn pause(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.assigned_mut(tp)?.paused = true;
        }
        Ok(())
    }

    /// Lets `poll` return records of these partitions again.
    pub fn resume(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        for tp in partitions {
            self.assigned_mut(tp)?.paused = false;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assigned
            .iter()
            .filter(|(_, a)| a.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Commits the current position of every assigned partition that has one, for the
    /// consumer's group: the group resumes after the records returned so far. A partition
    /// whose topic was deleted (even if recreated since) is left out: its positions were in
    /// the deleted log.
    ///
    /// With `enable.auto.offset.store` off ([`ConsumerConfig::enable_auto_offset_store`]), it
    /// commits the offsets stored with [`Consumer::store_offset`] instead.
    pub fn commit(&mut self) -> Result<()> {
        let assigned: Vec<TopicPartition> = self.assigned.keys().cloned().collect();
        let entries = self.commit_entries(&assigned);
        if entries.is_empty() {
            // Nothing to commit; a consumer without a group is still told it has none.
            return self.config.group_id.as_ref().map(drop).ok_or(Error::NoGroup);
        }
        self.commit_offsets(&entries)
    }

    /// Acknowledges `record`: the next commit (by [`Consumer::commit`] or auto-commit) of its
    /// partition is past it, when `enable.auto.offset.store` is off (librdkafka's
    /// `rd_kafka_offsets_store`). Storing an earlier record of the partition afterwards moves
    /// the stored offset back to it, so store in order within a partition. A record of a
    /// partition not assigned to this consumer is refused ([`Error::IllegalState`]) and
    /// changes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("jobs", 1, TopicConfig::default())?;
    /// let producer = Producer::new(&broker);
    /// for job in [&b"ok"[..], b"crashes", b"ok"] {
    ///     producer.send(ProducerRecord::new("jobs", job))?;
    /// }
    /// let config = ConsumerConfig::default()
    ///     .group_id("workers")
    ///     .auto_offset_reset(OffsetReset::Earliest)
    ///     .enable_auto_offset_store(false);
    /// let mut consumer = Consumer::new(&broker, config);
    /// consumer.assign(&[TopicPartition::new("jobs", 0)])?;
    /// for record in &consumer.poll(Duration::from_secs(1))? {
    ///     if record.value != Some(b"ok") {
    ///         break; // this one and those after it are not acknowledged
    ///     }
    ///     consumer.store_offset(&record)?;
    /// }
    /// consumer.commit()?;
    /// let committed = consumer.committed(&[TopicPartition::new("jobs", 0)])?;
    /// assert_eq!(committed[0].as_ref().map(|c| c.offset), Some(1)); // resumes at "crashes"
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn store_offset(&self, record: &impl Consumed) -> Result<()> {
        let tp = TopicPartition::new(record.topic(), record.partition());
        refuse_negative("offset", record.offset())?;
        if !self.assigned.contains_key(&tp) {
            return Err(Error::IllegalState(
                "an offset stored for a partition not assigned to this consumer",
            ));
        }
        self.stored.lock().insert(tp, record.offset() + 1);
        Ok(())
    }

    /// Commits `record`'s partition at the offset after it, now (Kafka's `commitSync` of one
    /// record's offset): the group resumes that partition after it. Errors as
    /// [`Consumer::commit_offsets`].
    pub fn commit_record(&mut self, record: &impl Consumed) -> Result<()> {
        let tp = TopicPartition::new(record.topic(), record.partition());
        refuse_negative("offset", record.offset())?;
        self.commit_offsets(&[(tp, record.offset() + 1, "")])
    }

    /// What a commit of `partitions` carries: their positions, or with
    /// `enable.auto.offset.store` off the offsets stored for them.
    pub(super) fn commit_entries(
        &self,
        partitions: &[TopicPartition],
    ) -> Vec<(TopicPartition, i64, &'static str)> {
        match self.config.enable_auto_offset_store {
            true => partitions
                .iter()
                .filter_map(|tp| self.committable(tp).map(|p| (tp.clone(), p, "")))
                .collect(),
            false => {
                let stored = self.stored.lock();
                partitions
                    .iter()
                    .filter(|tp| self.committable(tp).is_some())
                    .filter_map(|tp| stored.get(tp).map(|&offset| (tp.clone(), offset, "")))
                    .collect()
            }
        }
    }

    /// The position of an assigned partition, if it has one and its log is still the
    /// broker's partition (not deleted since it was assigned).
    /// Records the asynchronous face holds but has not handed out yet are not past.
    fn committable(&self, tp: &TopicPartition) -> Option<i64> {
        let a = self.assigned.get(tp)?;
        let current = self.broker.partition(&tp.topic, tp.partition).ok()?;
        let position = Arc::ptr_eq(&current.inner, &a.log.inner).then_some(a.position?)?;
        Some(
            self.held
                .lock()
                .get(tp)
                .map_or(position, |&held| held.min(position)),
        )
    }

    /// Commits the given offsets (the next offset to consume, and metadata) for the consumer's
    /// group, all or none.
    ///
    /// A subscribed consumer commits as a member of its current generation: after the group
    /// has rebalanced without it the commit is refused ([`Error::IllegalGeneration`],
    /// [`Error::UnknownMember`], [`Error::RebalanceInProgress`]) and nothing is stored, as in
    /// Kafka. A consumer with assigned partitions may commit only while the group has no
    /// members.
    ///
    /// Metadata longer than [`MAX_OFFSET_METADATA_BYTES`](crate::group::MAX_OFFSET_METADATA_BYTES)
    /// refuses the whole commit ([`Error::OffsetMetadataTooLarge`]), and so do a negative
    /// offset ([`Error::InvalidArgument`]) and a partition that does not exist
    /// ([`Error::UnknownTopic`], [`Error::UnknownPartition`]).
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, i64, &str)]) -> Result<()> {
        let group = self.config.group_id.clone().ok_or(Error::NoGroup)?;
        crate::group::offsets::validate_group_id(&group)?;
        for (tp, offset, metadata) in offsets {
            self.broker.partition(&tp.topic, tp.partition)?;
            refuse_negative("offset", *offset)?;
            crate::group::offsets::validate_metadata(tp, metadata)?;
        }
        let now = crate::storage::now_ms();
        let entries: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
            .iter()
            .map(|(tp, offset, metadata)| {
                let meta = OffsetAndMetadata {
                    offset: *offset,
                    leader_epoch: -1,
                    metadata: metadata.to_string(),
                    commit_timestamp: now,
                };
                (tp.clone(), meta)
            })
            .collect();
        let member = match &self.membership {
            Some(m) => m.member.clone(),
            None => MemberRef {
                generation: -1,
                ..MemberRef::default()
            },
        };
        match self.broker.inner.remote_coordinator(&group)? {
            // A cluster's coordinator at another node checks and writes them there.
            Some(remote) => remote.commit(&group, &member, entries)?,
            None => {
                let store = self.broker.inner.offsets()?;
                self.broker
                    .inner
                    .groups
                    .check_commit(&group, &member, || store.append(&group, &entries))?
                    .durable()?;
            }
        }
        self.last_commit = Instant::now();
        Ok(())
    }

    /// The consumer's group and its membership in it, as a commit names them (generation -1
    /// and no member for a consumer outside the group's membership).
    pub(crate) fn group_member(&self) -> Result<(String, MemberRef)> {
        let group = self.config.group_id.clone().ok_or(Error::NoGroup)?;
        let member = match &self.membership {
            Some(m) => m.member.clone(),
            None => MemberRef {
                generation: -1,
                ..MemberRef::default()
            },
        };
        Ok((group, member))
    }

    /// The group's committed offsets of these partitions (`None` where there is none). In a
    /// cluster, the node that coordinates groups is asked.
    pub fn committed(&self, partitions: &[TopicPartition]) -> Result<Vec<Option<OffsetAndMetadata>>> {
        let group = self.config.group_id.as_deref().ok_or(Error::NoGroup)?;
        if let Some(remote) = self.broker.inner.remote_coordinator(group)? {
            return remote.committed(group, partitions);
        }
        let store = self.broker.inner.offsets()?;
        Ok(partitions.iter().map(|tp| store.committed(group, tp)).collect())
    }

    /// The broker it reads.
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Its group, if it has one.
    pub(crate) fn group(&self) -> Option<&str> {
        self.config.group_id.as_deref()
    }

    /// The offsets stored for the next commit (shared with the asynchronous face).
    #[cfg(feature = "tokio")]
    pub(crate) fn stored_offsets(&self) -> Arc<Mutex<BTreeMap<TopicPartition, i64>>> {
        self.stored.clone()
    }

    fn auto_commit_due(&self) -> bool {
        self.config.group_id.is_some()
            && self.config.enable_auto_commit
            && self.last_commit.elapsed() >= self.config.auto_commit_interval
    }

    /// Returns the records available now, or waits up to `timeout` for some. At most
    /// `max.poll.records`; positions advance past the records returned. With auto-commit,
    /// first commits what earlier polls returned, if the interval has passed.
    ///
    /// A subscribed consumer takes part in its group's rebalances here: it joins, runs the
    /// rebalance listener, and returns no records until it has its assignment (an empty
    /// result if that takes longer than `timeout`; the next poll carries on).
    ///
    /// It waits for the disk only to commit (auto-commit's, which syncs the offsets topic).
    /// A [`Wakeup`] raised from another thread ends it with [`Error::Wakeup`].
    pub fn poll(&mut self, timeout: Duration) -> Result<ConsumerRecords> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.poll_step(deadline)? {
                Step::Ready(records) => return Ok(records),
                Step::Wait { seen, wake } => {
                    if !self.signal.wait_past_spinning(seen, wake, self.config.poll_spin) && wake >= deadline
                    {
                        self.check_wakeup()?;
                        self.renew_if_due();
                        return Ok(ConsumerRecords::default());
                    }
                }
            }
        }
    }

    /// One look for records: takes part in the group's rebalance (if one is under way; it
    /// may wait for it up to `deadline`), auto-commits if due, and fetches. `Wait` if there
    /// were none: until the consumer's signal is raised past `seen` or `wake` (when the
    /// membership is renewed, a partition read at another node asked again, or the deadline
    /// comes).
    pub(crate) fn poll_step(&mut self, deadline: Instant) -> Result<Step> {
        self.check_wakeup()?;
        // Woken by new records, by the group or to renew: a rebalance is handled before
        // fetching.
        if self.membership.is_some() && !self.drive_group(deadline)? {
            self.check_wakeup()?;
            return Ok(Step::Ready(ConsumerRecords::default()));
        }
        if self.auto_commit_due() {
            self.auto_commit()?;
        }
        let seen = self.signal.count();
        let records = self.poll_once()?;
        if !records.is_empty() {
            self.renew_if_due();
            return Ok(Step::Ready(records));
        }
        // A member waiting in poll is alive: it wakes to renew its membership in time.
        let mut wake = self.renewal_due().map_or(deadline, |due| due.min(deadline));
        // Records read at another node signal nothing here: asked for again shortly.
        if self.reads_elsewhere() {
            wake = wake.min(Instant::now() + READ_ELSEWHERE_EVERY);
        }
        Ok(Step::Wait { seen, wake })
    }

    /// The consumer's signal, raised when a partition it reads advances, its group moves, or
    /// a [`Wakeup`] is raised.
    #[cfg(feature = "tokio")]
    pub(crate) fn signal(&self) -> Arc<Signal> {
        self.signal.clone()
    }

    /// Whether a partition the consumer reads is read at another node of a cluster.
    fn reads_elsewhere(&self) -> bool {
        self.assigned
            .values()
            .any(|a| !a.paused && a.log.reads_elsewhere())
    }

    /// Commits the positions of the records returned so far, under auto-commit's error
    /// policy (`refusal_logged`).
    fn auto_commit(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        let result = self.commit();
        self.refusal_logged(result)
    }

    /// Kafka's auto-commit policy: a commit the group refuses because it is rebalancing or has
    /// moved on without this member is logged, not returned (those records will be delivered
    /// again, and the next poll rejoins); any other failure is returned.
    fn refusal_logged(&self, result: Result<()>) -> Result<()> {
        match result {
            Err(e) if membership::is_group_refusal(&e) => {
                log::warn!("commit for group {:?} refused: {e}", self.config.group_id);
                Ok(())
            }
            other => other,
        }
    }

    fn poll_once(&mut self) -> Result<ConsumerRecords> {
        let mut out = ConsumerRecords::default();
        let n = self.assigned.len();
        if n == 0 {
            return Ok(out);
        }
        let reset = self.config.auto_offset_reset;
        let first = self.next_first % n;
        self.next_first = self.next_first.wrapping_add(1);
        let keys: Vec<TopicPartition> = self.assigned.keys().cloned().collect();
        for tp in keys[first..].iter().chain(&keys[..first]) {
            let left = self.config.max_poll_records - out.len();
            if left == 0 {
                break;
            }
            let fetch_bytes = self.config.fetch_bytes;
            let a = self.assigned.get_mut(tp).expect("listed above");
            if a.paused {
                continue;
            }
            let position = match resolve(tp, a, reset) {
                Ok(p) => p,
                // A partition read at another node that cannot answer now: none of its
                // records this time.
                Err(e) if a.log.reads_elsewhere() && !matches!(e, Error::NoOffset { .. }) => {
                    log::debug!("{tp}: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let committed = self.config.isolation_level == IsolationLevel::ReadCommitted;
            let (bytes, at) = match a.buffered.take() {
                Some(b) if b.position == position => (b.bytes, b.at),
                _ => {
                    crate::telemetry::fetched();
                    match fetch(tp, a, reset, position, fetch_bytes, committed)? {
                        Some(bytes) => (bytes, 0),
                        None => continue,
                    }
                }
            };
            let position = a.position.expect("resolved by fetch");
            let (next, at) = out.take((&a.topic, tp.partition), &bytes, at, position, left, &a.aborted)?;
            a.position = Some(next);
            let end = match a.log.reads_elsewhere() {
                true => a.seen_end,
                false => a.log.high_watermark(),
            };
            let group = self.config.group_id.as_deref();
            a.lag
                .get_or_insert_with(|| crate::telemetry::consumer_lag(group, &tp.topic, tp.partition))
                .set((end - next).max(0) as f64);
            if at < bytes.len() {
                a.buffered = Some(Buffered {
                    bytes,
                    at,
                    position: next,
                });
            } else {
                a.spare = Some(bytes);
            }
        }
        if !out.is_empty() {
            crate::telemetry::polled(out.len());
        }
        Ok(out)
    }
}

/// What one [`Consumer::poll_step`] came to.
pub(crate) enum Step {
    /// Records (or none, when a rebalance took the time).
    Ready(ConsumerRecords),
    /// None yet: wait for the signal to pass `seen`, or until `wake`.
    Wait { seen: u64, wake: Instant },
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// How long a `read_committed` consumer waits for a transaction's pending commit of its
/// group's offsets to end before it gives up ([`Error::UnstableOffsets`]).
const STABLE_OFFSETS_WAIT: Duration = Duration::from_secs(60);

/// How often `poll` asks again for records of a partition read at another node of a cluster
/// (one this node holds no replica of), while it waits.
const READ_ELSEWHERE_EVERY: Duration = Duration::from_millis(100);

/// Refuses a negative offset or timestamp, as Kafka's clients do.
pub(crate) fn refuse_negative(name: &'static str, value: i64) -> Result<()> {
    if value < 0 {
        return Err(Error::InvalidArgument {
            name,
            value: value.to_string(),
            reason: "it must not be negative",
        });
    }
    Ok(())
}

/// Fetches `a`'s batches from `position` into a buffer (its spare one, if free); `None` if
/// there are none yet. An offset outside the log is reset by policy first, as in Kafka, which
/// moves `a.position`.
fn fetch(
    tp: &TopicPartition,
    a: &mut Assigned,
    reset: OffsetReset,
    position: i64,
    fetch_bytes: usize,
    committed: bool,
) -> Result<Option<Arc<Vec<u8>>>> {
    if a.log.reads_elsewhere() {
        return fetch_elsewhere(tp, a, reset, position, fetch_bytes);
    }
    let buf = a
        .spare
        .take()
        .and_then(|b| Arc::try_unwrap(b).ok())
        .unwrap_or_default();
    let read = |a: &mut Assigned, position: i64, buf: Vec<u8>| match committed {
        true => {
            let (fetch, aborted) = a
                .log
                .read_pinned_committed(position, fetch_bytes, &mut a.pinned, buf)?;
            a.aborted = aborted;
            Ok(fetch)
        }
        false => a
            .log
            .inner
            .read_pinned(position, fetch_bytes, Oversized::Read, &mut a.pinned, buf),
    };
    let fetch = match read(a, position, buf) {
        Ok(f) => f,
        Err(Error::OffsetOutOfRange { .. }) => {
            a.position = None;
            resolve_out_of_range(tp, a, reset, position)?;
            let position = resolve(tp, a, reset)?;
            read(a, position, Vec::new())?
        }
        Err(e) => return Err(e),
    };
    Ok((!fetch.is_empty()).then(|| Arc::new(fetch.into_bytes())))
}

/// [`fetch`] for a partition of a cluster that this node holds no replica of: read at its
/// leader. A read that fails (no leader known, none reachable) returns nothing this time.
fn fetch_elsewhere(
    tp: &TopicPartition,
    a: &mut Assigned,
    reset: OffsetReset,
    position: i64,
    fetch_bytes: usize,
) -> Result<Option<Arc<Vec<u8>>>> {
    let read = |a: &Assigned, position: i64| {
        a.log
            .read_elsewhere(Some(position), fetch_bytes, a.read_committed)
            .unwrap_or(Err(Error::IllegalState("the partition is read here now")))
    };
    let fetched = match read(a, position) {
        // Past the end of the leader's log, but not of what a leader had committed before: a
        // new leader that does not have everything yet; the position stands, and is read
        // again later.
        Err(Error::OffsetOutOfRange { log_start, .. }) if position >= log_start && position <= a.seen_end => {
            log::debug!("{tp}: offset {position} is past the end of the leader's log");
            return Ok(None);
        }
        Err(e @ Error::OffsetOutOfRange { .. }) if reset == OffsetReset::None => return Err(e),
        Err(Error::OffsetOutOfRange { .. }) => {
            a.position = None;
            resolve(tp, a, reset).and_then(|position| read(a, position))
        }
        other => other,
    };
    a.aborted.clear();
    match fetched {
        Ok((fetch, aborted)) => {
            a.aborted = aborted;
            a.seen_end = a.seen_end.max(fetch.high_watermark());
            Ok((!fetch.is_empty()).then(|| Arc::new(fetch.into_bytes())))
        }
        Err(e) => {
            log::debug!("{tp}: {e}");
            Ok(None)
        }
    }
}

/// The log start and high watermark of `a`'s partition (asked of its leader where this node
/// holds no replica of it).
fn bounds(a: &Assigned) -> Result<(i64, i64)> {
    match a.log.read_elsewhere(None, 0, a.read_committed) {
        // The end read is the last stable offset for a read_committed consumer.
        Some(read) => read.map(|(f, _)| (f.log_start_offset(), f.high_watermark())),
        // A read_committed consumer's end is the last stable offset: starting past the first
        // record of an open transaction would return only part of it.
        None if a.read_committed => Ok((a.log.log_start_offset(), a.log.last_stable_offset())),
        None => Ok((a.log.log_start_offset(), a.log.high_watermark())),
    }
}

/// The position of `a`, set by the reset policy if it has none.
fn resolve(tp: &TopicPartition, a: &mut Assigned, reset: OffsetReset) -> Result<i64> {
    if let Some(p) = a.position {
        return Ok(p);
    }
    let p = match reset {
        OffsetReset::Earliest => bounds(a)?.0,
        OffsetReset::Latest => bounds(a)?.1,
        OffsetReset::None => {
            return Err(Error::NoOffset {
                topic: tp.topic.clone(),
                partition: tp.partition,
            });
        }
    };
    a.position = Some(p);
    Ok(p)
}

fn resolve_out_of_range(
    tp: &TopicPartition,
    a: &mut Assigned,
    reset: OffsetReset,
    offset: i64,
) -> Result<()> {
    match reset {
        OffsetReset::None => Err(Error::OffsetOutOfRange {
            offset,
            log_start: a.log.log_start_offset(),
            log_end: a.log.log_end_offset(),
        }),
        _ => resolve(tp, a, reset).map(drop),
    }
}

/// Records returned by one `poll`. They borrow from the batches this value holds, and are
/// decoded as they are iterated.
#[derive(Debug, Default)]
pub struct ConsumerRecords {
    topics: Vec<Arc<str>>,
    /// Fetched batches (shared with the consumer's fetch buffer) and decompressed bodies.
    buffers: Vec<Arc<Vec<u8>>>,
    runs: Vec<Run>,
    len: usize,
}

/// Records of one batch to hand out: those at or after `from`, `take` of them.
#[derive(Debug, Clone, Copy)]
struct Run {
    topic: u32,
    partition: u32,
    buffer: u32,
    /// The batch's records: `buffers[buffer][start..end]`.
    start: u32,
    end: u32,
    ctx: RecordContext,
    from: i64,
    take: u32,
}

/// One record, borrowed from the [`ConsumerRecords`] it came in.
#[derive(Debug, Clone)]
pub struct ConsumerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: i64,
    /// Create time or log append time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    headers: Headers<'a>,
}

impl<'a> ConsumerRecord<'a> {
    /// The record's headers, in order.
    pub fn headers(&self) -> Headers<'a> {
        self.headers.clone()
    }

    /// The last header with this key (as Kafka's `Headers.lastHeader`).
    pub fn header(&self, key: &str) -> Option<crate::Header<'a>> {
        self.headers().filter(|h| h.key == key.as_bytes()).last()
    }

    /// A copy that owns its bytes, to keep past the [`ConsumerRecords`] it came in.
    pub fn detach(&self) -> OwnedRecord {
        OwnedRecord {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self.headers().map(|h| h.to_owned_header()).collect(),
        }
    }

    /// Where it is: its topic and partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic, self.partition)
    }
}

impl ConsumerRecords {
    /// Leaves out the records of `tp` (a partition moved by a seek).
    #[cfg(feature = "tokio")]
    pub(crate) fn drop_partition(&mut self, tp: &TopicPartition) {
        let topics = &self.topics;
        self.runs
            .retain(|run| run.partition != tp.partition || *topics[run.topic as usize] != *tp.topic);
        self.len = self.runs.iter().map(|run| run.take as usize).sum();
    }

    /// The first offset of each partition among the records.
    ///
    /// Read off the runs without decoding a record: a partition's first run starts at the
    /// position the poll read it from, at or below its first record (records a compaction
    /// removed, or control batches, lie between), so moving back there, or holding commits
    /// there, reads again or keeps exactly what this value holds.
    pub(crate) fn firsts(&self) -> Vec<(TopicPartition, i64)> {
        let mut out: Vec<(TopicPartition, i64)> = Vec::new();
        for run in &self.runs {
            let topic = &self.topics[run.topic as usize];
            if !out
                .iter()
                .any(|(tp, _)| tp.partition == run.partition && *tp.topic == **topic)
            {
                out.push((TopicPartition::new(&**topic, run.partition), run.from));
            }
        }
        out
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records, partition by partition, in offset order within each.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("t", 1, TopicConfig::default())?;
    /// Producer::new(&broker).send(ProducerRecord::new("t", b"v").key(b"k").header("trace", b"7"))?;
    /// let config = ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest);
    /// let mut consumer = Consumer::new(&broker, config);
    /// consumer.assign(&[TopicPartition::new("t", 0)])?;
    /// let records = consumer.poll(Duration::from_secs(1))?;
    /// for r in &records {
    ///     assert_eq!((r.topic, r.partition, r.offset), ("t", 0, 0));
    ///     assert_eq!((r.key, r.value), (Some(&b"k"[..]), Some(&b"v"[..])));
    ///     let header = r.headers().next().unwrap();
    ///     assert_eq!((header.key, header.value), (&b"trace"[..], Some(&b"7"[..])));
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> ConsumerRecordsIter<'_> {
        ConsumerRecordsIter {
            records: self,
            run: 0,
            at: 0,
            index: 0,
            taken: 0,
            left: self.len,
        }
    }

    /// Takes up to `left` records at or after `from` out of the batches in `bytes` from byte
    /// `at` on. Returns the position after the last record taken (after the last batch walked,
    /// which may be past its last record where compaction removed some) and where the next
    /// batch to walk starts: `bytes.len()` once all are walked.
    ///
    /// Whole batches are taken by their headers; only a batch that starts before `from` or
    /// holds more than `left` records is walked here. Records are decoded when iterated.
    fn take(
        &mut self,
        (topic, partition): (&Arc<str>, u32),
        bytes: &Arc<Vec<u8>>,
        mut at: usize,
        from: i64,
        left: usize,
        aborted: &[crate::storage::txnindex::Aborted],
    ) -> Result<(i64, usize)> {
        let topic_index = match self.topics.iter().position(|t| Arc::ptr_eq(t, topic)) {
            Some(i) => i,
            None => {
                self.topics.push(topic.clone());
                self.topics.len() - 1
            }
        } as u32;
        let fetched = self.buffers.len() as u32;
        self.buffers.push(bytes.clone());
        let mut next = from;
        let mut taken = 0;
        while at < bytes.len() && taken < left {
            let (batch, _) = Batch::parse_trusted(&bytes[at..]);
            let header = *batch.header();
            let end = at + header.total_len();
            // Control batches (transaction markers, a replicated log's own entries) are not
            // records: stepped over, as Kafka's consumers step over them; so are the batches of
            // aborted transactions, under read_committed.
            let dropped = aborted.iter().any(|a| a.covers(&header));
            if header.next_offset() <= next || header.record_count == 0 || header.is_control() || dropped {
                next = next.max(header.next_offset());
                at = end;
                continue;
            }
            let room = left - taken;
            let compressed = header.compression().map_err(Error::InvalidBatch)? != Compression::None;
            let whole = header.base_offset >= next && header.record_count as usize <= room;
            let mut run = Run {
                topic: topic_index,
                partition,
                buffer: fetched,
                start: (at + HEADER_LEN) as u32,
                end: end as u32,
                ctx: RecordContext::new(&header),
                from: next,
                take: header.record_count as u32,
            };
            let mut finished = true;
            if compressed || !whole {
                let records = batch.records().map_err(Error::InvalidBatch)?;
                if !whole {
                    // Count what this poll takes, and see where it stops.
                    let mut n = 0;
                    let mut iter = records.iter();
                    for record in iter.by_ref() {
                        let r = record.map_err(Error::InvalidBatch)?;
                        if r.offset >= next {
                            n += 1;
                            next = r.offset + 1;
                            if n == room {
                                break;
                            }
                        }
                    }
                    finished = iter.next().is_none();
                    run.take = n as u32;
                }
                if compressed {
                    let body = records.into_body().into_owned();
                    run.buffer = self.buffers.len() as u32;
                    (run.start, run.end) = (0, body.len() as u32);
                    self.buffers.push(Arc::new(body));
                }
            }
            if run.take > 0 {
                self.runs.push(run);
                self.len += run.take as usize;
                taken += run.take as usize;
            }
            if !finished {
                break; // the rest of this batch is for the next poll
            }
            // Step over offsets compaction removed from the batch's end.
            next = next.max(header.next_offset());
            at = end;
        }
        Ok((next, at))
    }
}

impl<'a> IntoIterator for &'a ConsumerRecords {
    type Item = ConsumerRecord<'a>;
    type IntoIter = ConsumerRecordsIter<'a>;
    fn into_iter(self) -> ConsumerRecordsIter<'a> {
        self.iter()
    }
}

/// Iterator over [`ConsumerRecords`], decoding each record in place.
#[derive(Debug, Clone)]
pub struct ConsumerRecordsIter<'a> {
    records: &'a ConsumerRecords,
    run: usize,
    /// Where the next record starts in the run's bytes, and its index in the batch.
    at: usize,
    index: i32,
    /// Records handed out from the run so far, and in all left to hand out.
    taken: u32,
    left: usize,
}

impl<'a> Iterator for ConsumerRecordsIter<'a> {
    type Item = ConsumerRecord<'a>;

    fn next(&mut self) -> Option<ConsumerRecord<'a>> {
        loop {
            let run = self.records.runs.get(self.run)?;
            if self.taken == run.take {
                (self.run, self.at, self.index, self.taken) = (self.run + 1, 0, 0, 0);
                continue;
            }
            let body = &self.records.buffers[run.buffer as usize][run.start as usize..run.end as usize];
            let (r, used) = format::parse_record(&body[self.at..], &run.ctx, self.index)
                .expect("stored records were validated when appended, and their batch's CRC when read");
            self.at += used;
            self.index += 1;
            if r.offset < run.from {
                continue;
            }
            self.taken += 1;
            self.left -= 1;
            return Some(ConsumerRecord {
                topic: &self.records.topics[run.topic as usize],
                partition: run.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers(),
            });
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ConsumerRecordsIter<'_> {}
