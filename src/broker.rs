//! [`Broker`]: the root handle. It owns a data directory and its lock, the registry of topics,
//! one [`PartitionLog`] per partition, and the background thread they share.
//!
//! ```text
//! <data>/
//!   .lock            held while the broker is open
//!   topics.meta      the registry: every topic, its partition count and its config
//!   <topic>-<n>/     partition n of a topic: a partition log (see docs/format.md)
//! ```
//!
//! Creating a topic writes its partition directories first and the registry last; deleting one
//! writes the registry first and removes the directories after. A crash between the two leaves
//! directories the registry does not name, which the next open removes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::config::{Fsync, TopicConfig};
use crate::consumer::TopicPartition;
use crate::error::{Error, IoContext, Result};
use crate::group::offsets::{self, OFFSETS_TOPIC, OffsetStore};
use crate::group::{GroupCoordinator, GroupDescription, GroupState, OffsetAndMetadata};
use crate::read_only::ReadOnlyBroker;
use crate::storage::follow::{Followed, Lookout};
use crate::storage::io::{self, Fs};
use crate::storage::{Housekeeper, PartitionLog, StdFs, meta};

const REGISTRY_FILE: &str = "topics.meta";
pub(crate) const LOCK_FILE: &str = ".lock";
/// Version 2 added the compaction settings to each topic's config.
const REGISTRY_VERSION: u32 = 2;
/// The most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;
/// The longest topic name, as in Kafka.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// The contents of `topics.meta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Registry {
    version: u32,
    topics: Vec<TopicRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    partitions: u32,
    config: TopicConfig,
}

/// Decodes `topics.meta` of any version up to this build's (the version comes first). A
/// newer version decodes its version alone, and `open` refuses it.
fn decode_registry(payload: &[u8]) -> std::result::Result<Registry, String> {
    let (version, _) = postcard::take_from_bytes::<u32>(payload).map_err(|e| e.to_string())?;
    match version {
        1 => postcard::from_bytes::<legacy::Registry>(payload)
            .map(legacy::Registry::upgrade)
            .map_err(|e| e.to_string()),
        REGISTRY_VERSION => postcard::from_bytes(payload).map_err(|e| e.to_string()),
        newer => Ok(Registry {
            version: newer,
            topics: Vec::new(),
        }),
    }
}

/// The registry's layout at version 1, before topics had compaction settings.
mod legacy {
    use std::time::Duration;

    use serde::Deserialize;

    use crate::config::{CompressionType, Fsync, LogConfig, TopicConfig};
    use crate::storage::TimestampType;

    #[derive(Deserialize)]
    pub(super) struct Registry {
        version: u32,
        topics: Vec<TopicRecord>,
    }

    #[derive(Deserialize)]
    struct TopicRecord {
        name: String,
        partitions: u32,
        log: Log,
        compression: CompressionType,
        _cleanup_policy: u32,
    }

    #[derive(Deserialize)]
    struct Log {
        segment_bytes: u64,
        segment_ms: Option<Duration>,
        segment_index_bytes: u32,
        index_interval_bytes: u32,
        retention_ms: Option<Duration>,
        retention_bytes: Option<u64>,
        retention_check_interval: Duration,
        max_message_bytes: usize,
        fsync: Fsync,
        timestamp_type: TimestampType,
    }

    impl Registry {
        pub(super) fn upgrade(self) -> super::Registry {
            let _ = self.version;
            super::Registry {
                version: super::REGISTRY_VERSION,
                topics: self
                    .topics
                    .into_iter()
                    .map(|t| {
                        let l = t.log;
                        let log = LogConfig {
                            segment_bytes: l.segment_bytes,
                            segment_ms: l.segment_ms,
                            segment_index_bytes: l.segment_index_bytes,
                            index_interval_bytes: l.index_interval_bytes,
                            retention_ms: l.retention_ms,
                            retention_bytes: l.retention_bytes,
                            retention_check_interval: l.retention_check_interval,
                            max_message_bytes: l.max_message_bytes,
                            fsync: l.fsync,
                            timestamp_type: l.timestamp_type,
                            ..LogConfig::default()
                        };
                        super::TopicRecord {
                            name: t.name,
                            partitions: t.partitions,
                            config: TopicConfig::default().with_log(log).compression(t.compression),
                        }
                    })
                    .collect(),
            }
        }
    }
}

/// Settings of a broker, with Kafka's broker-level names in the setter docs.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    dir: PathBuf,
    default_topic: TopicConfig,
    auto_create: bool,
    num_partitions: u32,
    fs: Arc<dyn Fs>,
    initial_rebalance_delay: std::time::Duration,
    /// Every partition is one replica of a replicated partition (a cluster's node).
    #[cfg(feature = "cluster")]
    pub(crate) replicated: bool,
}

impl BrokerBuilder {
    /// The config new topics get unless told otherwise (default: [`TopicConfig::default`],
    /// which syncs every append).
    pub fn default_topic_config(mut self, config: TopicConfig) -> Self {
        self.default_topic = config;
        self
    }

    /// The durability policy of new topics (shorthand for the default topic config's).
    pub fn fsync(mut self, policy: Fsync) -> Self {
        let log = self.default_topic.log.clone().fsync(policy);
        self.default_topic.log = log;
        self
    }

    /// `auto.create.topics.enable`: whether producing to an unknown topic creates it. Default
    /// true, as in Kafka.
    pub fn auto_create_topics(mut self, yes: bool) -> Self {
        self.auto_create = yes;
        self
    }

    /// `num.partitions`: partitions of an automatically created topic. Default 1.
    pub fn num_partitions(mut self, n: u32) -> Self {
        self.num_partitions = n;
        self
    }

    /// The file system partitions are written through (default [`StdFs`]); tests pass a
    /// slow or faulty one.
    pub fn fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = fs;
        self
    }

    /// `group.initial.rebalance.delay.ms`: how long an empty group's first rebalance waits
    /// for more members (see [`GroupCoordinator::with_initial_rebalance_delay`]). Default
    /// zero, for embedded groups whose members start one by one; Kafka's default, 3 s, suits
    /// a broker whose clients start together (the example broker uses it).
    pub fn group_initial_rebalance_delay(mut self, delay: std::time::Duration) -> Self {
        self.initial_rebalance_delay = delay;
        self
    }

    /// Whether the broker's partitions are replicas of a cluster's partitions.
    fn replicas(&self) -> bool {
        #[cfg(feature = "cluster")]
        return self.replicated;
        #[cfg(not(feature = "cluster"))]
        false
    }

    /// Opens (or creates) the broker's data directory.
    pub fn open(self) -> Result<Broker> {
        self.default_topic.log.validate()?;
        #[cfg(feature = "cluster")]
        let alone = !self.replicated;
        #[cfg(not(feature = "cluster"))]
        let alone = true;
        if alone {
            check_alone(&self.default_topic)?;
        }
        if self.num_partitions == 0 || self.num_partitions > MAX_PARTITIONS {
            return Err(Error::InvalidConfig {
                name: "num.partitions",
                value: self.num_partitions.to_string(),
                reason: "must be from 1 to 10000",
            });
        }
        let inner = Arc::new(BrokerInner::open(self)?);
        // Transactions a crash left open or deciding hold their partitions' last stable
        // offsets back until the coordinator ends them: it starts with the broker.
        if alone
            && inner.topic(crate::txn::TRANSACTION_STATE_TOPIC).is_ok()
            && let Err(e) = inner.transactions()
        {
            log::error!("the transaction coordinator did not start: {e}");
        }
        Ok(Broker { inner })
    }
}

/// The root handle of an embedded rivulet: a data directory of topics. Cheap to clone and
/// shareable between threads; closed cleanly when the last clone is dropped or by
/// [`Broker::close`].
///
/// ```
/// use rivulet::{Broker, TopicConfig};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("events", 3, TopicConfig::default())?;
/// assert_eq!(broker.list_topics(), ["events"]);
/// assert_eq!(broker.describe_topic("events")?.partitions.len(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Broker {
    pub(crate) inner: Arc<BrokerInner>,
}

#[derive(Debug)]
pub(crate) struct BrokerInner {
    dir: PathBuf,
    settings: BrokerBuilder,
    lock: Mutex<Option<File>>,
    housekeeper: Housekeeper,
    /// Whether processes that opened the directory read-only follow it, and the thread that
    /// looks for them (see `storage::follow`).
    followed: Arc<Followed>,
    lookout: Lookout,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes changes to the set of topics and the registry file.
    admin: Mutex<()>,
    /// The committed-offset store, opened on first use.
    offsets: Mutex<Option<Arc<OffsetStore>>>,
    /// Group membership.
    pub(crate) groups: GroupCoordinator,
    /// The transaction coordinator, opened on first use.
    transactions: Mutex<Option<Arc<crate::txn::TxnCoordinator>>>,
    /// Held by a cluster node's take-over and release of the transaction coordinator, one
    /// at a time.
    #[cfg(feature = "cluster")]
    transactions_turnover: Mutex<()>,
    /// The next producer id to issue (ids from the clock, so a restarted broker does not
    /// issue one again).
    next_producer_id: std::sync::atomic::AtomicI64,
    closed: AtomicBool,
    /// What a network front end keeps beside the broker's own state (the Kafka front end's
    /// ACLs, for one), once per broker however many servers share it.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) front_end: Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
    /// The cluster this broker is a node of, which decides topic changes for all its nodes.
    #[cfg(feature = "cluster")]
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn Coordinate>>,
}

/// How many producer ids apart a cluster node's ids are: each node's end in its node id modulo
/// this (node ids are below it).
const NODE_SLOTS: i64 = 1024;

/// Decides changes to the set of topics for every node of a cluster: each call returns once
/// the change is decided and this node has made it (through the `*_here` methods).
#[cfg(feature = "cluster")]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))] // what the Kafka front end asks
pub(crate) trait Coordinate: Send + Sync + std::fmt::Debug {
    fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()>;
    /// Creates a topic whose partition `p` is held by the nodes `replicas[p]` (with
    /// `validate_only`, checks the assignment and changes nothing).
    fn create_topic_assigned(
        &self,
        name: &str,
        replicas: Vec<Vec<u64>>,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<()>;
    /// The replication factor `factor` comes to (`None`: the cluster's default), or an error
    /// if the cluster cannot meet it.
    fn check_replication(&self, factor: Option<u16>) -> Result<usize>;
    /// How many nodes hold each partition of `topic`.
    fn replication_of(&self, topic: &str) -> Option<usize>;
    fn delete_topic(&self, name: &str) -> Result<()>;
    fn add_partitions(&self, name: &str, total: u32) -> Result<()>;
    /// Raises `name`'s partition count to `total`, the new partitions held by the nodes
    /// `replicas` names (one list per new partition); with `validate_only`, only checks.
    fn add_partitions_assigned(
        &self,
        name: &str,
        total: u32,
        replicas: Vec<Vec<u64>>,
        validate_only: bool,
    ) -> Result<()>;
    fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()>;
    /// This node's id.
    fn node_id(&self) -> u64;
    /// Every registered node: its id and where it serves Kafka clients.
    fn kafka_nodes(&self) -> Vec<(u64, Option<String>)>;
    /// The node that leads the controller, if one does.
    fn controller(&self) -> Option<u64>;
    /// Where a partition's replicas are, as this node last heard.
    fn placement(&self, topic: &str, partition: u32) -> Option<Placement>;
    /// Kafka's OffsetForLeaderEpoch at this node's replica: the largest epoch at most `epoch`
    /// and the offset where the next begins (the log end after the current one), `None` for
    /// an epoch past every one known; `Err` if this node holds no running replica.
    fn epoch_end(
        &self,
        topic: &str,
        partition: u32,
        epoch: u64,
    ) -> std::result::Result<Option<(u64, i64)>, NotHeld>;
    /// Whether this node coordinates the cluster's groups now: it leads the offsets topic's
    /// partition, and its offset store has read everything committed there.
    fn coordinates_groups(&self) -> bool;
    /// Appends `batch` to this node's replica of a partition while it leads it in `term`
    /// (never at another node, nor in another term): returns once it is committed.
    fn append_leading(
        &self,
        topic: &str,
        partition: u32,
        term: u64,
        batch: crate::storage::RecordBatch,
    ) -> Result<()>;
    /// Confirms (with a round of its followers) that this node still leads `topic`'s
    /// `partition` in `term`.
    fn confirm_leading(&self, topic: &str, partition: u32, term: u64) -> Result<()>;
    /// The transaction coordinator at the node that leads the state topic, for this node's
    /// producers (`NotCoordinator` while none does, or this one is still reading it).
    fn transaction_coordinator(&self) -> Result<Arc<dyn crate::txn::TxnCalls>>;
    /// Asks the node that coordinates transactions whether producer `producer_id`'s
    /// transaction in `epoch` is open with `tp` in it (`NotCoordinator` if none does, or it
    /// does not answer `within`).
    fn check_transaction(
        &self,
        transactional_id: Option<&str>,
        producer: (i64, i16),
        tp: &crate::TopicPartition,
        within: std::time::Duration,
    ) -> Result<()>;
    /// Where this node's in-process group members go: `None` if this node coordinates the
    /// cluster's groups, the coordinator at another node if one leads the offsets topic's
    /// partition, else `CoordinatorNotAvailable` for `group`.
    fn group_coordinator(&self, group: &str) -> Result<Option<Arc<dyn crate::group::RemoteCoordinator>>>;
}

/// This node holds no running replica of the partition (or is stopping).
#[cfg(feature = "cluster")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotHeld;

/// Refuses more than one copy of a topic's partitions on a broker alone.
fn check_alone(config: &TopicConfig) -> Result<()> {
    match config.replication_factor {
        Some(n) if n != 1 => Err(Error::InvalidReplicationFactor {
            requested: u64::from(n),
            available: 1,
        }),
        _ => Ok(()),
    }
}

/// Where a partition's replicas are, as a cluster node last heard.
#[cfg(feature = "cluster")]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Placement {
    /// The node that leads the partition, if one does.
    pub(crate) leader: Option<u64>,
    /// The leader's term (Kafka's leader epoch).
    pub(crate) epoch: u64,
    /// The nodes that hold the partition.
    pub(crate) replicas: Vec<u64>,
    /// Those known to hold what is committed.
    pub(crate) in_sync: Vec<u64>,
}

/// An open topic.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) config: RwLock<TopicConfig>,
    pub(crate) partitions: RwLock<Arc<Vec<PartitionLog>>>,
}

/// A topic as [`Broker::describe_topic`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: String,
    /// Its configuration.
    pub config: TopicConfig,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionDescription>,
}

/// One partition as [`Broker::describe_topic`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDescription {
    /// The partition's number.
    pub partition: u32,
    /// The first readable offset.
    pub log_start_offset: i64,
    /// The offset the next record will get.
    pub log_end_offset: i64,
    /// The end of what consumers may read.
    pub high_watermark: i64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Segments on disk.
    pub segments: usize,
}

/// One partition of a group, as [`Broker::group_offsets`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The partition.
    pub partition: TopicPartition,
    /// What the group committed for it.
    pub committed: OffsetAndMetadata,
    /// The partition's high watermark now.
    pub high_watermark: i64,
    /// Records between the committed offset and the high watermark.
    pub lag: i64,
}

impl GroupOffset {
    /// What `committed` for `partition` means against a high watermark of `high_watermark`.
    pub(crate) fn new(partition: TopicPartition, committed: OffsetAndMetadata, high_watermark: i64) -> Self {
        GroupOffset {
            lag: (high_watermark - committed.offset).max(0),
            high_watermark,
            partition,
            committed,
        }
    }
}

/// Checks a topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and
/// not `.` or `..`.
///
/// ```
/// use rivulet::{Error, validate_topic_name};
/// assert!(validate_topic_name("orders.v2_eu-west").is_ok());
/// assert!(matches!(validate_topic_name("no spaces"), Err(Error::InvalidTopicName { .. })));
/// assert!(validate_topic_name("..").is_err());
/// assert!(validate_topic_name(&"x".repeat(250)).is_err());
/// ```
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidTopicName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad("it is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Refuses creation, writes and deletion by users of an internal topic (as Kafka does).
pub(crate) fn refuse_internal(topic: &str) -> Result<()> {
    if is_internal(topic) {
        return Err(Error::InvalidTopicName {
            name: topic.to_string(),
            reason: "it is an internal topic, created and written only by the broker",
        });
    }
    Ok(())
}

/// Whether `topic` is one of the broker's own: the offsets topic, the transaction log.
pub(crate) fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == crate::txn::TRANSACTION_STATE_TOPIC
}

pub(crate) fn partition_dir(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    dir.join(format!("{topic}-{partition}"))
}

/// A topic as a data directory's registry names it: its name, partition count and config.
pub(crate) type Registered = (String, u32, TopicConfig);

/// The topics a data directory's registry names, read without opening the directory (by a
/// reader in another process: the registry is replaced whole by a rename, never rewritten in
/// place).
pub(crate) fn registered_topics(dir: &Path) -> Result<Vec<Registered>> {
    if !dir.is_dir() {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let Some(registry) = meta::read_with(&dir.join(REGISTRY_FILE), decode_registry)? else {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
            reason: format!("it has no {REGISTRY_FILE}"),
        });
    };
    if registry.version > REGISTRY_VERSION {
        return Err(Error::UnsupportedFormat {
            path: dir.to_path_buf(),
            found: registry.version,
            supported: REGISTRY_VERSION,
        });
    }
    Ok(registry
        .topics
        .into_iter()
        .map(|t| (t.name, t.partitions, t.config))
        .collect())
}

impl Broker {
    /// Opens (or creates) a broker in `dir` with the default settings.
    pub fn open(dir: impl AsRef<Path>) -> Result<Broker> {
        Self::builder(dir).open()
    }

    /// Opens `dir` for reading while another process (or this one) has it open for writing:
    /// topics, records as they are appended, committed offsets and lag; never a write. See
    /// [`ReadOnlyBroker`]. A directory that is not a data directory is
    /// [`Error::NotALog`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<ReadOnlyBroker> {
        ReadOnlyBroker::open(dir.as_ref())
    }

    /// A builder for a broker with non-default settings.
    pub fn builder(dir: impl AsRef<Path>) -> BrokerBuilder {
        BrokerBuilder {
            dir: dir.as_ref().to_path_buf(),
            default_topic: TopicConfig::default(),
            auto_create: true,
            num_partitions: 1,
            fs: Arc::new(StdFs),
            initial_rebalance_delay: std::time::Duration::ZERO,
            #[cfg(feature = "cluster")]
            replicated: false,
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        refuse_internal(name)?;
        self.inner.create_topic(name, partitions, config)
    }

    /// Deletes a topic and all its records, and every group's committed offsets of it (as
    /// Kafka does: a topic created later under the name starts without them).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.inner.cluster.get() {
            refuse_internal(name)?;
            self.inner.topic(name)?;
            return cluster.delete_topic(name);
        }
        self.inner.delete_topic_here(name)
    }

    /// The names of all topics, sorted.
    pub fn list_topics(&self) -> Vec<String> {
        self.inner.topics.read().keys().cloned().collect()
    }

    /// A topic's configuration and the state of each partition.
    ///
    /// ```
    /// use rivulet::{Broker, Producer, ProducerRecord, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("events", 3, TopicConfig::default())?;
    /// Producer::new(&broker).send(ProducerRecord::new("events", b"hi").partition(1))?;
    /// let topic = broker.describe_topic("events")?;
    /// assert_eq!(topic.partitions.len(), 3);
    /// assert_eq!(topic.partitions[1].high_watermark, 1);
    /// assert!(broker.describe_topic("nope").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let topic = self.inner.topic(name)?;
        let partitions = topic
            .partitions
            .read()
            .iter()
            .enumerate()
            .map(|(i, log)| PartitionDescription {
                partition: i as u32,
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
                high_watermark: log.high_watermark(),
                size_bytes: log.size_bytes(),
                segments: log.segment_count(),
            })
            .collect();
        Ok(TopicDescription {
            name: topic.name.clone(),
            config: topic.config.read().clone(),
            partitions,
        })
    }

    /// Raises a topic's partition count to `total` (Kafka's CreatePartitions; partitions are
    /// never removed). At most [`MAX_PARTITIONS`]; internal topics keep theirs.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        self.inner.add_partitions(name, total)
    }

    /// Replaces a topic's configuration; it applies to the open partitions at once.
    pub fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        self.inner.alter_topic_config(name, config)
    }

    /// Changes settings of a topic by their Kafka names. All or nothing: one bad entry changes
    /// nothing.
    ///
    /// ```
    /// use rivulet::{Broker, CleanupPolicy, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("state", 1, TopicConfig::default())?;
    /// broker.alter_topic_config_entries("state", &[("cleanup.policy", "compact"), ("retention.ms", "-1")])?;
    /// let bad = broker.alter_topic_config_entries("state", &[("segment.bytes", "1000"), ("retention.ms", "soon")]);
    /// assert!(bad.is_err());
    /// let config = broker.describe_topic("state")?.config;
    /// assert_eq!(config.log().get_cleanup_policy(), CleanupPolicy::Compact);
    /// assert_ne!(config.log().get_segment_bytes(), 1000, "the bad call changed nothing");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn alter_topic_config_entries(&self, name: &str, entries: &[(&str, &str)]) -> Result<()> {
        self.inner.alter_topic_config_with(name, false, |current| {
            let mut config = current.clone();
            for (k, v) in entries {
                config.set(k, v)?;
            }
            Ok(config)
        })
    }

    /// The broker's transaction coordinator (opened, with its state topic
    /// `__transaction_state`, on first use): what Kafka's transactional APIs answer from, and
    /// where an application can describe and list transactions. On a cluster, the node that
    /// leads `__transaction_state` has it; the others answer [`Error::NotCoordinator`].
    pub fn transactions(&self) -> Result<Arc<crate::txn::TxnCoordinator>> {
        self.inner.transactions()
    }

    /// The number of partitions of a topic.
    pub fn partition_count(&self, name: &str) -> Result<u32> {
        Ok(self.inner.topic(name)?.partitions.read().len() as u32)
    }

    /// The log of one partition, for low-level access.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<PartitionLog> {
        self.inner.partition(topic, partition)
    }

    /// Groups that have committed offsets, sorted.
    pub fn list_groups(&self) -> Result<Vec<(String, GroupState)>> {
        let mut groups: BTreeMap<String, GroupState> = self
            .inner
            .offsets()?
            .groups()
            .into_iter()
            .map(|g| (g, GroupState::Empty))
            .collect();
        groups.extend(self.inner.groups.list());
        Ok(groups.into_iter().collect())
    }

    /// A group's state, generation, protocol, leader and members with their assignments.
    /// A group known only by its committed offsets is `Empty`; an unknown one is an error.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        if let Some(d) = self.inner.groups.describe(group) {
            return Ok(d);
        }
        if self.inner.offsets()?.groups().iter().any(|g| g == group) {
            return Ok(GroupDescription {
                group_id: group.to_string(),
                state: GroupState::Empty,
                generation: 0,
                protocol_type: String::new(),
                protocol: String::new(),
                leader: String::new(),
                members: Vec::new(),
            });
        }
        Err(Error::NoSuchGroup {
            group: group.to_string(),
        })
    }

    /// The group coordinator, for front ends that speak Kafka's group protocol.
    pub fn coordinator(&self) -> &GroupCoordinator {
        &self.inner.groups
    }

    /// A group's committed offsets, with each partition's high watermark and the lag between
    /// them (records the group has yet to consume).
    ///
    /// ```
    /// use rivulet::{Broker, Consumer, ConsumerConfig, Producer, ProducerRecord, TopicConfig, TopicPartition};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("t", 1, TopicConfig::default())?;
    /// let producer = Producer::new(&broker);
    /// for _ in 0..10 {
    ///     producer.send(ProducerRecord::new("t", b"x"))?;
    /// }
    /// let tp = TopicPartition::new("t", 0);
    /// let mut consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    /// consumer.assign(std::slice::from_ref(&tp))?;
    /// consumer.commit_offsets(&[(tp.clone(), 4, "")])?;
    /// let offsets = broker.group_offsets("g")?;
    /// assert_eq!((offsets[0].committed.offset, offsets[0].lag), (4, 6));
    ///
    /// // Rewind the group to the start, then delete it.
    /// broker.reset_group_offsets("g", &[(tp, 0)])?;
    /// assert_eq!(broker.group_offsets("g")?[0].lag, 10);
    /// broker.delete_group("g")?;
    /// assert!(broker.group_offsets("g")?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        let store = self.inner.offsets()?;
        store
            .group_offsets(group)
            .into_iter()
            .map(|(tp, committed)| {
                let hw = self
                    .partition(&tp.topic, tp.partition)
                    .map_or(0, |l| l.high_watermark());
                Ok(GroupOffset::new(tp, committed, hw))
            })
            .collect()
    }

    /// Sets a group's committed offsets (Kafka's `--reset-offsets`): the group's consumers
    /// resume from them. As in Kafka, the group must have no active members
    /// ([`Error::GroupNotEmpty`]).
    pub fn reset_group_offsets(&self, group: &str, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        for (tp, _) in offsets {
            self.partition(&tp.topic, tp.partition)?;
        }
        let now = crate::storage::now_ms();
        let entries: Vec<_> = offsets
            .iter()
            .map(|(tp, o)| {
                let meta = OffsetAndMetadata {
                    offset: *o,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp: now,
                };
                (tp.clone(), meta)
            })
            .collect();
        let store = self.inner.offsets()?;
        self.inner
            .groups
            .while_inactive(group, || store.append(group, &entries))?
            .durable()
    }

    /// Deletes a group's committed offsets of `partitions` (Kafka's OffsetDelete), durably,
    /// answering each partition: one whose topic a member of the group is subscribed to is
    /// refused ([`Error::GroupSubscribedToTopic`]: the member would commit it again), one that
    /// does not exist is [`Error::UnknownTopic`] or [`Error::UnknownPartition`], the others are
    /// deleted (nothing to delete is no error). A group the broker does not know is
    /// [`Error::NoSuchGroup`]; one whose members' subscriptions are not a consumer's is
    /// [`Error::GroupNotEmpty`].
    pub fn delete_committed_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        self.describe_group(group)?;
        let store = self.inner.offsets()?;
        let (written, answers) = self.inner.groups.with_subscriptions(group, |subscribed| {
            let Some(subscribed) = subscribed else {
                return Err(Error::GroupNotEmpty {
                    group: group.to_string(),
                });
            };
            let answers: Vec<(TopicPartition, Result<()>)> = partitions
                .iter()
                .map(|tp| {
                    let answer = if subscribed.contains(&tp.topic) {
                        Err(Error::GroupSubscribedToTopic {
                            group: group.to_string(),
                            topic: tp.topic.clone(),
                        })
                    } else {
                        self.partition(&tp.topic, tp.partition).map(drop)
                    };
                    (tp.clone(), answer)
                })
                .collect();
            let free: Vec<TopicPartition> = answers
                .iter()
                .filter(|(_, answer)| answer.is_ok())
                .map(|(tp, _)| tp.clone())
                .collect();
            Ok((store.append_delete_partitions(group, &free)?, answers))
        })?;
        written.durable()?;
        Ok(answers)
    }

    /// Deletes a group and its committed offsets. The group must have no active members
    /// ([`Error::GroupNotEmpty`]).
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let store = self.inner.offsets()?;
        self.inner
            .groups
            .delete(group, || store.append_delete_group(group))?
            .durable()
    }

    /// Closes every partition cleanly and releases the data directory. Handles that live on
    /// refuse writes.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl BrokerInner {
    fn partition_io(&self) -> PartitionIo<'_> {
        PartitionIo {
            housekeeper: &self.housekeeper,
            fs: &self.settings.fs,
            replicated: self.settings.replicas(),
            followed: &self.followed,
        }
    }

    /// The file system the broker's logs are on.
    #[cfg(feature = "cluster")]
    pub(crate) fn fs(&self) -> Arc<dyn Fs> {
        self.settings.fs.clone()
    }

    fn open(settings: BrokerBuilder) -> Result<BrokerInner> {
        let dir = settings.dir.clone();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotALog {
                path: dir,
                reason: "it is not a directory".into(),
            });
        }
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let registry_path = dir.join(REGISTRY_FILE);
        let registry = meta::read_with(&registry_path, decode_registry)?;
        if registry.is_none() {
            // Refuse a foreign directory before writing anything into it.
            io::refuse_foreign_files(&dir, REGISTRY_FILE)?;
        }
        let lock = io::lock_dir(&dir, LOCK_FILE)?;
        let registry = match registry {
            Some(r) if r.version > REGISTRY_VERSION => {
                return Err(Error::UnsupportedFormat {
                    path: dir,
                    found: r.version,
                    supported: REGISTRY_VERSION,
                });
            }
            Some(r) => r,
            None => {
                let fresh = Registry {
                    version: REGISTRY_VERSION,
                    topics: Vec::new(),
                };
                meta::write(&StdFs, &registry_path, &fresh)?;
                fresh
            }
        };
        let housekeeper = Housekeeper::new()?;
        let followed = Arc::new(Followed::default());
        let lookout = Lookout::start(&dir, followed.clone())?;
        let mut topics = BTreeMap::new();
        for record in &registry.topics {
            let topic = open_topic(
                &dir,
                PartitionIo {
                    housekeeper: &housekeeper,
                    fs: &settings.fs,
                    replicated: settings.replicas(),
                    followed: &followed,
                },
                &record.name,
                record.partitions,
                &record.config,
            )?;
            topics.insert(record.name.clone(), Arc::new(topic));
        }
        remove_orphans(&dir, &topics)?;
        let initial_rebalance_delay = settings.initial_rebalance_delay;
        Ok(BrokerInner {
            dir,
            settings,
            lock: Mutex::new(Some(lock)),
            housekeeper,
            followed,
            lookout,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
            offsets: Mutex::new(None),
            groups: GroupCoordinator::new().with_initial_rebalance_delay(initial_rebalance_delay),
            transactions: Mutex::new(None),
            #[cfg(feature = "cluster")]
            transactions_turnover: Mutex::new(()),
            next_producer_id: std::sync::atomic::AtomicI64::new(
                crate::storage::now_ms().saturating_mul(1000),
            ),
            closed: AtomicBool::new(false),
            front_end: Mutex::new(None),
            #[cfg(feature = "cluster")]
            cluster: std::sync::OnceLock::new(),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic {
                topic: name.to_string(),
            })
    }

    /// Whether a topic is created when a Kafka client asks for one that does not exist.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn auto_creates(&self) -> bool {
        self.settings.auto_create
    }

    /// The topic, created with the broker's defaults if it is unknown and auto-creation is on.
    /// The config topics get unless told otherwise.
    pub(crate) fn default_topic_config(&self) -> TopicConfig {
        self.settings.default_topic.clone()
    }

    pub(crate) fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        match self.topic(name) {
            Err(Error::UnknownTopic { .. }) if self.settings.auto_create => {
                match self.create_topic(
                    name,
                    self.settings.num_partitions,
                    self.settings.default_topic.clone(),
                ) {
                    Ok(()) | Err(Error::TopicExists { .. }) => self.topic(name),
                    Err(e) => Err(e),
                }
            }
            other => other,
        }
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<PartitionLog> {
        let topic = self.topic(topic)?;
        topic.partition(partition)
    }

    /// Forgets the committed-offset store read so far: it is read again on next use (a
    /// cluster node that starts coordinating groups has commits other nodes made).
    #[cfg(feature = "cluster")]
    pub(crate) fn forget_offsets(&self) {
        self.offsets.lock().take();
    }

    /// The coordinator of a cluster's groups at another node, for this node's in-process
    /// members of `group` (`None`: this node's own coordinator).
    pub(crate) fn remote_coordinator(
        &self,
        group: &str,
    ) -> Result<Option<Arc<dyn crate::group::RemoteCoordinator>>> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            return cluster.group_coordinator(group);
        }
        let _ = group;
        Ok(None)
    }

    /// Whether the broker is a cluster's node.
    pub(crate) fn is_clustered(&self) -> bool {
        #[cfg(feature = "cluster")]
        if self.cluster.get().is_some() {
            return true;
        }
        false
    }

    /// The committed-offset store, creating the offsets topic on first use.
    pub(crate) fn offsets(&self) -> Result<Arc<OffsetStore>> {
        if let Some(store) = self.offsets.lock().as_ref() {
            return Ok(store.clone());
        }
        // The slot is not held while the topic is created: in a cluster, creating it waits for
        // the node to apply the creation, and applying a topic's deletion opens the store.
        match self.create_topic(OFFSETS_TOPIC, 1, offsets::topic_config()) {
            Ok(()) => {}
            Err(Error::TopicExists { .. }) => {
                // Made by an older build (before the topic was compacted): bring it up to date.
                if *self.topic(OFFSETS_TOPIC)?.config.read() != offsets::topic_config() {
                    self.alter_topic_config(OFFSETS_TOPIC, offsets::topic_config())?;
                }
            }
            Err(e) => return Err(e),
        }
        let mut slot = self.offsets.lock();
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Arc::new(OffsetStore::open(self.partition(OFFSETS_TOPIC, 0)?)?);
        *slot = Some(store.clone());
        Ok(store)
    }

    /// A producer id never issued before by this broker (nor by another node of its
    /// cluster: a node's ids end in its id, modulo [`NODE_SLOTS`]).
    pub(crate) fn new_producer_id(&self) -> i64 {
        let next = self.next_producer_id.fetch_add(1, Ordering::Relaxed);
        match self.node_slot() {
            Some(slot) => next.saturating_mul(NODE_SLOTS) + slot,
            None => next,
        }
    }

    /// Issues producer ids past `id` from now on (one a log or the transaction log holds).
    pub(crate) fn issue_producer_ids_past(&self, id: i64) {
        let counter = match self.node_slot() {
            Some(_) => id / NODE_SLOTS,
            None => id,
        };
        self.next_producer_id
            .fetch_max(counter.saturating_add(1), Ordering::Relaxed);
    }

    /// Where this node's producer ids end, for a cluster's node.
    fn node_slot(&self) -> Option<i64> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            return Some((cluster.node_id() as i64).rem_euclid(NODE_SLOTS));
        }
        None
    }

    /// The transaction coordinator if it is open (without opening it).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn transactions_if_open(&self) -> Option<Arc<crate::txn::TxnCoordinator>> {
        self.transactions.lock().clone()
    }

    /// The transaction coordinator, creating the state topic on first use.
    pub(crate) fn transactions(self: &Arc<Self>) -> Result<Arc<crate::txn::TxnCoordinator>> {
        use crate::txn::{TRANSACTION_STATE_TOPIC, TxnCoordinator, topic_config};
        if let Some(c) = self.transactions.lock().as_ref() {
            return Ok(c.clone());
        }
        if self.is_clustered() {
            // Opened by the node that leads the state topic's partition, once it has read it.
            return Err(Error::NotCoordinator {
                reason: "another node leads the transaction state, or none does yet".to_string(),
            });
        }
        match self.create_topic(TRANSACTION_STATE_TOPIC, 1, topic_config()) {
            Ok(()) => {}
            Err(Error::TopicExists { .. }) => {
                // Its config is the broker's: a compacted log it syncs itself.
                if *self.topic(TRANSACTION_STATE_TOPIC)?.config.read() != topic_config() {
                    self.alter_topic_config(TRANSACTION_STATE_TOPIC, topic_config())?;
                }
            }
            Err(e) => return Err(e),
        }
        let mut slot = self.transactions.lock();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = TxnCoordinator::open(self, self.partition(TRANSACTION_STATE_TOPIC, 0)?, None)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Has this cluster node coordinate transactions, as the leader of the state topic's
    /// partition in `term` that has applied everything committed before it: the coordinator
    /// of an earlier term stops (its calls under way end first), and a new one reads the
    /// states.
    /// A take-over of a term older than the coordinator's (a slow one, overtaken) changes
    /// nothing.
    #[cfg(feature = "cluster")]
    pub(crate) fn take_over_transactions(self: &Arc<Self>, term: u64) -> Result<()> {
        use crate::txn::{TRANSACTION_STATE_TOPIC, TxnCoordinator};
        let _turnover = self.transactions_turnover.lock();
        let current = self.transactions.lock().as_ref().and_then(|c| c.term());
        if current.is_some_and(|t| t >= term) {
            return Ok(());
        }
        self.stop_transactions();
        let c = TxnCoordinator::open(self, self.partition(TRANSACTION_STATE_TOPIC, 0)?, Some(term))?;
        *self.transactions.lock() = Some(c);
        Ok(())
    }

    /// Stops this cluster node's transaction coordinator if it is of `term` or older: the
    /// node no longer leads the state topic in that term.
    #[cfg(feature = "cluster")]
    pub(crate) fn release_transactions(&self, term: u64) {
        let _turnover = self.transactions_turnover.lock();
        let current = self.transactions.lock().as_ref().and_then(|c| c.term());
        if current.is_some_and(|t| t <= term) {
            self.stop_transactions();
        }
    }

    /// Stops the coordinator and waits for its calls under way (outside the slot's lock,
    /// which every call of a producer takes).
    #[cfg(feature = "cluster")]
    fn stop_transactions(&self) {
        let old = self.transactions.lock().take();
        if let Some(old) = old {
            old.stop_and_drain();
        }
    }

    /// Appends `batch` to this node's replica of `topic`'s `partition` while it leads it in
    /// `term` (see [`Coordinate::append_leading`]).
    #[cfg(feature = "cluster")]
    pub(crate) fn append_leading(
        &self,
        topic: &str,
        partition: u32,
        term: u64,
        batch: crate::storage::RecordBatch,
    ) -> Result<()> {
        match self.cluster.get() {
            Some(cluster) => cluster.append_leading(topic, partition, term, batch),
            None => Err(Error::IllegalState("a broker alone leads no term")),
        }
    }

    /// Refuses a write to `tp` by producer `producer_id` in `epoch` unless its transaction is
    /// open with `tp` in it, as the transaction coordinator (here, or at the cluster's node
    /// that coordinates transactions) knows it.
    /// A coordinator at another node is waited for at most `within`.
    pub(crate) fn check_transaction(
        self: &Arc<Self>,
        transactional_id: Option<&str>,
        (producer_id, epoch): (i64, i16),
        tp: &crate::TopicPartition,
        within: std::time::Duration,
    ) -> Result<()> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get()
            && self.transactions_if_open().is_none()
        {
            return cluster.check_transaction(transactional_id, (producer_id, epoch), tp, within);
        }
        let _ = within;
        self.transactions()?
            .check_open(transactional_id, producer_id, epoch, tp)
    }

    /// The transaction coordinator's calls for a producer here: this broker's coordinator, or
    /// on a cluster the one at the node that leads the state topic.
    pub(crate) fn txn_calls(self: &Arc<Self>) -> Result<Arc<dyn crate::txn::TxnCalls>> {
        if let Some(c) = self.transactions_if_open() {
            return Ok(c);
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            return cluster.transaction_coordinator();
        }
        Ok(self.transactions()?)
    }

    /// Writes `offsets` of `group` in producer `producer_id`'s transaction (of transactional
    /// id `id`) at the group's coordinator (here, or at the cluster's node that coordinates
    /// groups), checked against the group's `member` if one is named (under the group's
    /// lock, so a rebalance cannot let a fenced generation's offsets in) and against the
    /// transaction by its coordinator.
    pub(crate) fn commit_in_transaction(
        self: &Arc<Self>,
        id: &str,
        (producer_id, epoch): (i64, i16),
        group: &str,
        member: Option<&crate::group::MemberRef>,
        offsets: &[(crate::TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        if let Some(remote) = self.remote_coordinator(group)? {
            return remote.commit_in_transaction(id, (producer_id, epoch), group, member, offsets);
        }
        self.commit_in_transaction_here(id, (producer_id, epoch), group, member, offsets)
    }

    /// [`commit_in_transaction`](Self::commit_in_transaction) at this broker, which
    /// coordinates the group (a cluster's node that is asked by another).
    pub(crate) fn commit_in_transaction_here(
        self: &Arc<Self>,
        id: &str,
        (producer_id, epoch): (i64, i16),
        group: &str,
        member: Option<&crate::group::MemberRef>,
        offsets: &[(crate::TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        let write = || {
            if !self.is_clustered() || self.transactions_if_open().is_some() {
                return self
                    .transactions()?
                    .commit_offsets(id, producer_id, epoch, group, offsets);
            }
            let tp = crate::TopicPartition::new(OFFSETS_TOPIC, 0);
            self.check_transaction(Some(id), (producer_id, epoch), &tp, crate::txn::CHECK_TTL)?;
            self.offsets()?
                .append_transactional(group, producer_id, epoch, offsets)
        };
        match member {
            Some(member) => self.groups.check_commit(group, member, write),
            None => write(),
        }
    }

    /// Confirms that this cluster node still leads `topic`'s `partition` in `term` (see
    /// [`Coordinate::confirm_leading`]).
    #[cfg(feature = "cluster")]
    pub(crate) fn confirm_leading(&self, topic: &str, partition: u32, term: u64) -> Result<()> {
        match self.cluster.get() {
            Some(cluster) => cluster.confirm_leading(topic, partition, term),
            None => Err(Error::IllegalState("a broker alone leads no term")),
        }
    }

    /// Ends producer `producer_id`'s transaction in the committed offsets: at the offset store
    /// here, or at the node that coordinates a cluster's groups.
    pub(crate) fn complete_offsets_transaction(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: crate::storage::producers::Marker,
    ) -> Result<()> {
        if let Some(remote) = self.remote_coordinator("")? {
            return remote.complete_transaction(producer_id, epoch, marker);
        }
        self.offsets()?.complete_transaction(producer_id, epoch, marker)
    }

    /// Writes the registry from the open topics.
    fn persist(&self, topics: &BTreeMap<String, Arc<Topic>>) -> Result<()> {
        self.persist_grown(topics, None)
    }

    /// Writes the registry from the open topics, with `grown`'s topic at its new partition
    /// count (partitions opened but not yet published).
    fn persist_grown(&self, topics: &BTreeMap<String, Arc<Topic>>, grown: Option<(&str, u32)>) -> Result<()> {
        let registry = Registry {
            version: REGISTRY_VERSION,
            topics: topics
                .values()
                .map(|t| TopicRecord {
                    name: t.name.clone(),
                    partitions: match grown {
                        Some((name, count)) if name == t.name => count,
                        _ => t.partitions.read().len() as u32,
                    },
                    config: t.config.read().clone(),
                })
                .collect(),
        };
        meta::write(&StdFs, &self.dir.join(REGISTRY_FILE), &registry)
    }

    /// The config a topic gets unless told otherwise, and its partition count.
    #[cfg(feature = "kafka")] // for the Kafka front end's CreateTopics
    pub(crate) fn topic_defaults(&self) -> (TopicConfig, u32) {
        (self.settings.default_topic.clone(), self.settings.num_partitions)
    }

    /// Checks that a user's `create_topic` would accept these, changing nothing: as
    /// [`BrokerInner::check_topic`], and internal topics are the broker's to create.
    #[cfg(feature = "kafka")] // for the Kafka front end's CreateTopics validate-only
    pub(crate) fn check_new_topic(&self, name: &str, partitions: u32, config: &TopicConfig) -> Result<()> {
        refuse_internal(name)?;
        self.check_topic(name, partitions, config)?;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            return cluster.check_replication(config.replication_factor).map(drop);
        }
        check_alone(config)
    }

    /// Checks that `create_topic` would accept these, changing nothing.
    pub(crate) fn check_topic(&self, name: &str, partitions: u32, config: &TopicConfig) -> Result<()> {
        self.check_open()?;
        validate_topic_name(name)?;
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                count: partitions,
                reason: "a topic has from 1 to 10000 partitions",
            });
        }
        config.log.validate()?;
        if self.topics.read().contains_key(name) {
            return Err(Error::TopicExists {
                topic: name.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: u32, config: TopicConfig) -> Result<()> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            self.check_topic(name, partitions, &config)?;
            return cluster.create_topic(name, partitions, config);
        }
        check_alone(&config)?;
        self.create_topic_here(name, partitions, config)
    }

    /// Creates a topic whose partition `p` is held by the nodes `replicas[p]` (Kafka's
    /// CreateTopics with replica assignments); with `validate_only`, only checks. A broker
    /// alone is node 0, and holds every partition alone.
    #[cfg(feature = "kafka")]
    pub(crate) fn create_topic_assigned(
        &self,
        name: &str,
        replicas: Vec<Vec<u64>>,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<()> {
        let partitions = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
        self.check_new_topic(name, partitions, &config)?;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            return cluster.create_topic_assigned(name, replicas, config, validate_only);
        }
        if let Some(p) = replicas.iter().position(|r| r.as_slice() != [0]) {
            return Err(Error::InvalidReplicaAssignment {
                reason: format!("partition {p} must be held by broker 0 alone"),
            });
        }
        if validate_only {
            return Ok(());
        }
        self.create_topic_here(name, partitions, config)
    }

    /// Creates a topic on this node alone.
    pub(crate) fn create_topic_here(
        &self,
        name: &str,
        partitions: u32,
        mut config: TopicConfig,
    ) -> Result<()> {
        // Taken when the topic was placed; not kept with its config.
        config.replication_factor = None;
        let _admin = self.admin.lock();
        self.check_topic(name, partitions, &config)?;
        let topic = Arc::new(open_topic(
            &self.dir,
            self.partition_io(),
            name,
            partitions,
            &config,
        )?);
        let mut next = self.topics.read().clone();
        next.insert(name.to_string(), topic.clone());
        if let Err(e) = self.persist(&next) {
            // Not registered: remove what was created.
            drop_partitions(&self.dir, &topic)?;
            return Err(e);
        }
        *self.topics.write() = next;
        Ok(())
    }

    /// Deletes a topic and its committed offsets on this node alone.
    pub(crate) fn delete_topic_here(&self, name: &str) -> Result<()> {
        // A cluster deletes the committed offsets once, before every node deletes the topic.
        #[cfg(feature = "cluster")]
        if self.cluster.get().is_some() {
            return self.delete_topic(name, None);
        }
        // Only a broker that has stored offsets has any to delete. (The store is opened
        // before the admin lock is taken: opening it may create its topic.)
        let offsets = match self.topic(OFFSETS_TOPIC) {
            Ok(_) => Some(self.offsets()?),
            Err(_) => None,
        };
        self.delete_topic(name, offsets.as_ref())
    }

    /// Deletes a topic, and its committed offsets from `offsets`.
    ///
    /// The steps are ordered so that no failure or crash leaves a deleted topic whose commits
    /// a topic created later under its name would inherit: the topic leaves the open topics
    /// first (commits to it are refused from then on), its commits are deleted durably, and
    /// only then is the registry written without it. Until the registry is written a failure
    /// puts the topic back (a crash leaves it in the registry), and deleting it again finishes
    /// the job. The admin lock is held throughout, so no topic of the name is created meanwhile.
    fn delete_topic(&self, name: &str, offsets: Option<&Arc<OffsetStore>>) -> Result<()> {
        let _admin = self.admin.lock();
        self.check_open()?;
        refuse_internal(name)?;
        let topic = self.topic(name)?;
        let before = self.topics.read().clone();
        let mut next = before.clone();
        next.remove(name);
        *self.topics.write() = next.clone();
        let forgotten = offsets.map_or(Ok(()), |o| o.delete_topic(name));
        if let Err(e) = forgotten.and_then(|()| self.persist(&next)) {
            *self.topics.write() = before;
            return Err(e);
        }
        drop_partitions(&self.dir, &topic)
    }

    /// Checks that [`Broker::add_partitions`] would accept these, changing nothing; returns
    /// the topic. Internal topics keep their partitions (the offset store reads one).
    pub(crate) fn check_add_partitions(&self, name: &str, total: u32) -> Result<Arc<Topic>> {
        self.check_open()?;
        refuse_internal(name)?;
        let topic = self.topic(name)?;
        let current = topic.partitions.read().len() as u32;
        if total <= current || total > MAX_PARTITIONS {
            return Err(Error::InvalidPartitions {
                topic: name.to_string(),
                count: total,
                reason: "the new count must exceed the current one and be at most 10000",
            });
        }
        Ok(topic)
    }

    fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            self.check_add_partitions(name, total)?;
            return cluster.add_partitions(name, total);
        }
        self.add_partitions_here(name, total)
    }

    /// Raises a topic's partition count in a cluster, with the nodes holding each new
    /// partition given (Kafka's CreatePartitions with assignments).
    #[cfg(all(feature = "cluster", feature = "kafka"))]
    pub(crate) fn add_partitions_assigned(
        &self,
        name: &str,
        total: u32,
        replicas: Vec<Vec<u64>>,
        validate_only: bool,
    ) -> Result<()> {
        self.check_add_partitions(name, total)?;
        match self.cluster.get() {
            Some(cluster) => cluster.add_partitions_assigned(name, total, replicas, validate_only),
            None => Err(Error::Cluster {
                reason: "a broker alone places partitions on itself".into(),
            }),
        }
    }

    /// Adds partitions on this node alone.
    pub(crate) fn add_partitions_here(&self, name: &str, total: u32) -> Result<()> {
        let _admin = self.admin.lock();
        let topic = self.check_add_partitions(name, total)?;
        let current = topic.partitions.read().clone();
        let config = topic.config.read().log.clone();
        let mut logs = Vec::clone(&current);
        for p in current.len() as u32..total {
            logs.push(open_partition(&self.dir, self.partition_io(), name, p, &config)?);
        }
        // The registry names the new partitions before anyone can write to them: a failed
        // write removes partitions nobody has seen, never records a producer was told are
        // stored. (A crash in between leaves the opened partitions in the registry, or, before
        // it, their directories, which the next open removes.)
        let topics = self.topics.read().clone();
        if let Err(e) = self.persist_grown(&topics, Some((name, total))) {
            for log in &logs[current.len()..] {
                log.close()?;
                std::fs::remove_dir_all(log.dir()).ctx("remove", log.dir())?;
            }
            return Err(e);
        }
        *topic.partitions.write() = Arc::new(logs);
        Ok(())
    }

    fn alter_topic_config(&self, name: &str, config: TopicConfig) -> Result<()> {
        self.alter_topic_config_with(name, false, |_| Ok(config))
    }

    /// Replaces a topic's configuration with what `alter` makes of the current one, under the
    /// admin lock, so concurrent alterations cannot undo each other (each starts from the
    /// last one's result). With `validate_only`, or if nothing changes, nothing is written.
    pub(crate) fn alter_topic_config_with(
        &self,
        name: &str,
        validate_only: bool,
        alter: impl FnOnce(&TopicConfig) -> Result<TopicConfig>,
    ) -> Result<()> {
        let admin = self.admin.lock();
        self.check_open()?;
        let topic = self.topic(name)?;
        let mut config = alter(&topic.config.read())?;
        // Not a setting of the topic's logs: its replicas stay as they are.
        config.replication_factor = None;
        config.log.validate()?;
        if validate_only || *topic.config.read() == config {
            return Ok(());
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.get() {
            drop(admin);
            return cluster.alter_topic_config(name, config);
        }
        self.install_topic_config(&admin, &topic, config)
    }

    /// Sets a topic's configuration on this node alone.
    #[cfg(feature = "cluster")]
    pub(crate) fn alter_topic_config_here(&self, name: &str, config: TopicConfig) -> Result<()> {
        let admin = self.admin.lock();
        let topic = self.topic(name)?;
        if *topic.config.read() == config {
            return Ok(());
        }
        self.install_topic_config(&admin, &topic, config)
    }

    /// Persists and applies `config` as `topic`'s (the admin lock held).
    fn install_topic_config(
        &self,
        _admin: &parking_lot::MutexGuard<'_, ()>,
        topic: &Topic,
        config: TopicConfig,
    ) -> Result<()> {
        let old = std::mem::replace(&mut *topic.config.write(), config.clone());
        if let Err(e) = self.persist(&self.topics.read()) {
            *topic.config.write() = old;
            return Err(e);
        }
        for log in topic.partitions.read().iter() {
            log.set_config(config.log.clone())?;
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        let _admin = self.admin.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(c) = self.transactions.lock().take() {
            c.stop();
        }
        let mut first_error = None;
        for topic in self.topics.read().values() {
            for log in topic.partitions.read().iter() {
                if let Err(e) = log.close() {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.lookout.stop();
        self.lock.lock().take();
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for BrokerInner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!("{}: closing on drop: {e}", self.dir.display());
        }
    }
}

impl Topic {
    pub(crate) fn partition(&self, partition: u32) -> Result<PartitionLog> {
        let partitions = self.partitions.read();
        partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.clone(),
                partition,
                partitions: partitions.len() as u32,
            })
    }
}

/// What opening a partition takes: the broker's housekeeper and file system, whether its
/// partitions are replicas, and whether readers in other processes follow it.
#[derive(Clone, Copy)]
struct PartitionIo<'a> {
    housekeeper: &'a Housekeeper,
    fs: &'a Arc<dyn Fs>,
    replicated: bool,
    followed: &'a Arc<Followed>,
}

fn open_partition(
    dir: &Path,
    io: PartitionIo<'_>,
    topic: &str,
    partition: u32,
    config: &crate::LogConfig,
) -> Result<PartitionLog> {
    let PartitionIo {
        housekeeper,
        fs,
        replicated,
        followed,
    } = io;
    let builder = PartitionLog::builder(partition_dir(dir, topic, partition))
        .config(config.clone())
        .housekeeper(housekeeper)
        .followed(followed)
        .fs(fs.clone());
    #[cfg(feature = "cluster")]
    let builder = if replicated { builder.replicated() } else { builder };
    #[cfg(not(feature = "cluster"))]
    let _ = replicated;
    builder.open()
}

fn open_topic(
    dir: &Path,
    io: PartitionIo<'_>,
    name: &str,
    partitions: u32,
    config: &TopicConfig,
) -> Result<Topic> {
    let logs = (0..partitions)
        .map(|p| open_partition(dir, io, name, p, &config.log))
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic {
        name: name.to_string(),
        config: RwLock::new(config.clone()),
        partitions: RwLock::new(Arc::new(logs)),
    })
}

/// Closes a topic's partitions and removes their directories.
fn drop_partitions(dir: &Path, topic: &Topic) -> Result<()> {
    for log in topic.partitions.read().iter() {
        log.close()?;
        std::fs::remove_dir_all(log.dir()).ctx("remove", log.dir())?;
    }
    StdFs.sync_dir(dir).ctx("fsync", dir)
}

/// Removes partition directories that no registered topic owns (left by a crash while a topic
/// was created or deleted). Only directories holding a partition log are touched.
fn remove_orphans(dir: &Path, topics: &BTreeMap<String, Arc<Topic>>) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(partition) = partition.parse::<u32>() else {
            continue;
        };
        let owned = topics
            .get(topic)
            .is_some_and(|t| partition < t.partitions.read().len() as u32);
        if !owned && entry.path().join("log.meta").exists() {
            log::warn!("removing {}: no registered topic owns it", entry.path().display());
            std::fs::remove_dir_all(entry.path()).ctx("remove", &entry.path())?;
        }
    }
    Ok(())
}
