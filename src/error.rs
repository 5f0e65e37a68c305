//! Errors. Every variant carries the evidence a user needs to act on it: which file, which byte,
//! which checksum. A torn batch at the tail of a log is not an error but an expected outcome of a
//! crash, and recovery handles it (see [`BatchError::Incomplete`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::format::Compression;
pub use crate::storage::producers::ProducerError;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rivulet.
///
/// ```
/// use rivulet::{Broker, Error, TopicConfig};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("t", 1, TopicConfig::default())?;
/// match broker.create_topic("t", 1, TopicConfig::default()) {
///     Err(Error::TopicExists { topic }) => assert_eq!(topic, "t"),
///     other => panic!("expected TopicExists, got {other:?}"),
/// }
/// let err = broker.partition("t", 5).unwrap_err();
/// assert!(matches!(err, Error::UnknownPartition { partitions: 1, .. }), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "fsync", "open", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The error the operating system reported.
        #[source]
        source: io::Error,
    },

    /// A producer's batch, or a marker ending its transaction, refused by what the partition
    /// knows of the producer (see [`ProducerError`]). Nothing was written.
    #[error("producer {producer_id}: {error}")]
    Producer {
        /// The producer's id.
        producer_id: i64,
        /// Why it was refused.
        error: ProducerError,
    },

    /// A transactional producer was fenced: another producer with the same transactional id
    /// started (bumping the epoch), or its transaction timed out and was aborted. The
    /// producer must stop (a new one takes over the id).
    #[error("transactional id {transactional_id:?}: producer epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        /// The transactional id.
        transactional_id: String,
        /// The producer's epoch.
        epoch: i16,
        /// The id's current epoch.
        current: i16,
    },
    /// A transactional request that does not fit where the transaction is (ending one that
    /// was never begun, committing offsets outside one, ...). Nothing changed.
    #[error("transactional id {transactional_id:?}: {reason}")]
    InvalidTxnState {
        /// The transactional id.
        transactional_id: String,
        /// What does not fit.
        reason: String,
    },
    /// The transaction's previous end is still being written; try again shortly.
    #[error("transactional id {transactional_id:?}: the previous transaction is still completing")]
    ConcurrentTransactions {
        /// The transactional id.
        transactional_id: String,
    },
    /// The producer id named is not the one the transactional id is bound to (or the id is
    /// unknown).
    #[error("transactional id {transactional_id:?} is not bound to producer id {producer_id}")]
    InvalidProducerIdMapping {
        /// The transactional id.
        transactional_id: String,
        /// The producer id named.
        producer_id: i64,
    },
    /// A transaction's commit of the group's offsets is still pending (the transaction has
    /// not ended): a `read_committed` consumer does not resume from the offsets committed
    /// before it. Try again once the transaction ends (or times out).
    #[error("group {group:?}: offsets are pending a transaction's end")]
    UnstableOffsets {
        /// The group.
        group: String,
    },
    /// A `transaction.timeout.ms` outside 1 ms to the coordinator's maximum.
    #[error("transaction timeout {timeout_ms} ms is outside 1 to {max_ms} ms")]
    InvalidTransactionTimeout {
        /// The timeout asked for.
        timeout_ms: i64,
        /// The largest the coordinator takes (`transaction.max.timeout.ms`).
        max_ms: i64,
    },

    /// A batch handed to the log is malformed. Nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    /// A batch is larger than the log's `max.message.bytes`. Nothing was written.
    #[error("record batch of {size} bytes exceeds max.message.bytes ({max})")]
    BatchTooLarge {
        /// The batch's size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// A stored batch failed its CRC-32C check. Its records are never returned.
    #[error(
        "CRC mismatch in {} at byte {position}: the batch says {expected:#010x}, its bytes give {actual:#010x}",
        segment.display()
    )]
    ChecksumMismatch {
        /// The segment file holding the batch.
        segment: PathBuf,
        /// The batch's byte position in that file.
        position: u64,
        /// The CRC stored in the batch header.
        expected: u32,
        /// The CRC computed over the stored bytes.
        actual: u32,
    },

    /// A stored batch in a sealed segment is malformed (bad length or magic, impossible count).
    #[error("corrupt batch in {} at byte {position}: {reason}", segment.display())]
    CorruptSegment {
        /// The segment file holding the batch.
        segment: PathBuf,
        /// The batch's byte position in that file.
        position: u64,
        /// What is wrong with it.
        reason: BatchError,
    },

    /// An offset outside `[log start offset, log end offset]` was asked for.
    #[error("offset {offset} is out of range: the log holds offsets {log_start} to {log_end} (exclusive)")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The log start offset.
        log_start: i64,
        /// The log end offset.
        log_end: i64,
    },

    /// Replication between the nodes of a cluster failed (no leader, a lost quorum, a peer
    /// that could not be reached in time).
    #[error("replication: {reason}")]
    Cluster {
        /// What went wrong.
        reason: String,
    },

    /// This cluster node does not coordinate transactions (another node leads the
    /// transaction state topic's partition, or this one is still reading it): ask again, at
    /// the coordinator the cluster names.
    #[error("this node does not coordinate transactions now: {reason}")]
    NotCoordinator {
        /// Why.
        reason: String,
    },

    /// A replica's copy of a batch was to go at `expected`, but the replica's log ends at
    /// `log_end`: the two logs have diverged, and nothing was written.
    #[error("a replicated batch for offset {expected} does not follow the log end {log_end}")]
    OffsetMismatch {
        /// The base offset the batch carries.
        expected: i64,
        /// Where the log ends.
        log_end: i64,
    },

    /// Records that were waiting to become durable were truncated away by `truncate_to`.
    #[error("records from offset {offset} were truncated before they became durable")]
    Truncated {
        /// The first truncated offset.
        offset: i64,
    },

    /// An earlier fsync failed. After a failed fsync the state of the page cache is unknown
    /// (Linux may have dropped the dirty pages and cleared the error), so the log refuses
    /// appends until it is reopened and recovered from what is really on disk. Reads of records
    /// below the high watermark keep working.
    #[error("the log in {} refuses appends after a failed fsync ({cause}); reopen it", dir.display())]
    Poisoned {
        /// The log's directory.
        dir: PathBuf,
        /// The fsync error.
        #[source]
        cause: Arc<io::Error>,
    },

    /// The directory is already open, in this process or another.
    #[error("{} is locked: it is already open in this or another process", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The directory exists and holds something other than a rivulet log.
    #[error("{} is not a rivulet log: {reason}", path.display())]
    NotALog {
        /// The directory.
        path: PathBuf,
        /// What made it not a log.
        reason: String,
    },

    /// A metadata file is damaged.
    #[error("metadata file {} is damaged: {reason}", path.display())]
    CorruptMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A metadata file would be larger than its format holds ([`crate::storage::MAX_METADATA_BYTES`]);
    /// nothing was written.
    #[error("metadata file {} would hold {size} bytes, more than the {max} its format holds", path.display())]
    MetadataTooLarge {
        /// The file.
        path: PathBuf,
        /// The encoded size.
        size: usize,
        /// The largest payload a metadata file holds.
        max: usize,
    },

    /// The directory was written by a newer rivulet with a format this build cannot read.
    #[error("{} has on-disk format version {found}; this build reads versions up to {supported}", path.display())]
    UnsupportedFormat {
        /// The directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },

    /// A configuration value is out of its allowed range.
    #[error("invalid configuration {name} = {value}: {reason}")]
    InvalidConfig {
        /// The Kafka name of the setting, e.g. `segment.bytes`.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The log (or broker) was closed.
    #[error("closed")]
    Closed,

    /// The batch this record was appended in (together with other senders' records) failed.
    #[error("the batch carrying this record failed: {source}")]
    BatchFailed {
        /// The append's error, shared by every record of the batch.
        #[source]
        source: Arc<Error>,
    },

    /// A partition has no position and `auto.offset.reset` is `none`.
    #[error("no offset for {topic}-{partition} and auto.offset.reset is none")]
    NoOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// Group management (`subscribe`) and committed offsets need a `group.id`, and the
    /// consumer has none.
    #[error("the consumer has no group.id, which subscribing and committed offsets need")]
    NoGroup,

    /// A topic's replication factor cannot be met: more copies than nodes, or none.
    #[error("a replication factor of {requested} cannot be met by {available} node(s)")]
    InvalidReplicationFactor {
        /// The replication factor asked for.
        requested: u64,
        /// The nodes there are to hold copies.
        available: usize,
    },

    /// Replica assignments that name unknown nodes, a node twice, or lists of unequal
    /// lengths. Nothing was changed.
    #[error("invalid replica assignment: {reason}")]
    InvalidReplicaAssignment {
        /// What is wrong with it.
        reason: String,
    },

    /// An argument is out of its range (a negative offset or timestamp, say), as Kafka's
    /// clients refuse it. Nothing was changed.
    #[error("invalid {name} {value}: {reason}")]
    InvalidArgument {
        /// What the argument is, e.g. `offset`.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The consumer is not assigned this partition.
    #[error("{topic}-{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// No topic has this name (and topics are not created on first use).
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// The name asked for.
        topic: String,
    },

    /// A topic of this name exists already.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// The name.
        topic: String,
    },

    /// The name breaks Kafka's rules for topic names.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A partition count out of range (zero, too many, or fewer than a topic has).
    #[error("invalid partition count {count} for topic {topic:?}: {reason}")]
    InvalidPartitions {
        /// The topic.
        topic: String,
        /// The count given.
        count: u32,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The topic has no such partition.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },

    /// The group coordinator does not know this member (it never joined, left, or was removed
    /// after its session timed out). Its partitions are lost; it must join again.
    #[error("group {group:?} has no member {member:?}")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member id given.
        member: String,
    },

    /// A request carried a generation that is not the group's current one: the member missed a
    /// rebalance. Nothing was changed (a commit is refused).
    #[error("group {group:?} is at generation {current}, the request is of generation {generation}")]
    IllegalGeneration {
        /// The group.
        group: String,
        /// The generation in the request.
        generation: i32,
        /// The group's generation.
        current: i32,
    },

    /// The group is rebalancing: the member must join again before this request can succeed.
    #[error("group {group:?} is rebalancing")]
    RebalanceInProgress {
        /// The group.
        group: String,
    },

    /// No node of the cluster coordinates groups now (the offsets topic's partition is
    /// electing a leader, or its new leader is still reading the commits), or the node that
    /// did stopped answering: the request may be made again. A commit that failed so may
    /// yet have been taken (its outcome is unknown).
    #[error("group {group:?}: no node coordinates groups now; try again")]
    CoordinatorNotAvailable {
        /// The group.
        group: String,
    },

    /// Another member has joined with the same `group.instance.id` and replaced this one.
    #[error("group {group:?}: instance id {instance:?} now belongs to another member")]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The static instance id.
        instance: String,
    },

    /// The member's protocol type or assignors have nothing in common with the group's.
    #[error("group {group:?}: {reason}")]
    InconsistentGroupProtocol {
        /// The group.
        group: String,
        /// What does not match.
        reason: String,
    },

    /// No group of this id exists (no members, no committed offsets).
    #[error("no group {group:?}")]
    NoSuchGroup {
        /// The group.
        group: String,
    },

    /// The group has active members; the operation needs it empty.
    #[error("group {group:?} has active members")]
    GroupNotEmpty {
        /// The group.
        group: String,
    },

    /// A key or value could not be encoded by its serializer. Nothing was sent.
    #[error("a record for {topic:?} could not be serialized: {reason}")]
    Serialization {
        /// The topic the record was for.
        topic: String,
        /// The serializer's reason.
        reason: String,
    },

    /// A record's key or value did not decode with the consumer's deserializer. The
    /// consumer's position is at the record; seek past it to go on.
    #[error("{topic}-{partition} offset {offset} does not decode: {reason}")]
    Deserialization {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The record's offset.
        offset: i64,
        /// The deserializer's reason.
        reason: String,
    },

    /// A consumer's poll was interrupted by its [`Wakeup`](crate::Wakeup) (Kafka's
    /// `WakeupException`). Nothing was consumed; the consumer can poll again.
    #[error("the consumer was woken up")]
    Wakeup,

    /// A call was made in a state that does not allow it (for example `subscribe` after
    /// `assign`). Nothing was changed.
    #[error("{0}")]
    IllegalState(&'static str),

    /// A group id the broker cannot use: empty, or longer than
    /// [`MAX_GROUP_ID_BYTES`](crate::group::MAX_GROUP_ID_BYTES). Nothing was changed.
    #[error("invalid group id ({len} bytes): {reason}")]
    InvalidGroupId {
        /// The id's length in bytes.
        len: usize,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Commit metadata is longer than Kafka's `offset.metadata.max.bytes`
    /// ([`MAX_OFFSET_METADATA_BYTES`](crate::group::MAX_OFFSET_METADATA_BYTES)). Nothing of the
    /// commit it came in was stored.
    #[error("commit metadata for {topic}-{partition} has {len} bytes; offset.metadata.max.bytes is {max}")]
    OffsetMetadataTooLarge {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The metadata's length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },

    /// A request to the group coordinator is malformed (an empty group id, a zero session
    /// timeout, no protocols, an undecodable subscription).
    #[error("invalid group request: {0}")]
    InvalidGroupRequest(String),

    /// A record without a key was sent to a compacted log (`cleanup.policy` compact), which
    /// keeps records by key; as in Kafka, the whole batch is refused and nothing is written.
    #[error("a compacted log needs a key on every record; record {index} of the batch has none")]
    KeyRequired {
        /// The keyless record's position in the batch (0-based).
        index: usize,
    },

    /// Committed offsets of a topic that members of the group are subscribed to cannot be
    /// deleted (Kafka's GROUP_SUBSCRIBED_TO_TOPIC): the group would commit them again.
    #[error("group {group:?} has members subscribed to topic {topic:?}")]
    GroupSubscribedToTopic {
        /// The group.
        group: String,
        /// The topic.
        topic: String,
    },

    /// A record was given a negative timestamp; as Kafka's producer does, it is refused
    /// (leave the timestamp unset for the current time). Nothing was written.
    #[error("invalid timestamp {timestamp}: a record's timestamp must not be negative")]
    InvalidTimestamp {
        /// The timestamp given.
        timestamp: i64,
    },
}

impl Error {
    /// True if this error reports a full disk (`ENOSPC`).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

/// What is wrong with a record batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The bytes end before the batch does: `needed` bytes are required, `available` are there.
    /// At the tail of a log this is a torn write, the expected result of a crash.
    #[error("incomplete batch: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes the batch needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The batch length field is outside what a batch can be.
    #[error("batch length {length} is out of bounds ({min} to {max})")]
    LengthOutOfBounds {
        /// The length field.
        length: i64,
        /// The smallest legal value.
        min: i64,
        /// The largest accepted value.
        max: i64,
    },
    /// The magic byte is not 2 (only RecordBatch v2 is supported).
    #[error("magic byte is {found}, expected 2")]
    BadMagic {
        /// The magic byte found.
        found: i8,
    },
    /// The CRC-32C in the header does not match the bytes.
    #[error("CRC mismatch: the header says {expected:#010x}, the bytes give {actual:#010x}")]
    CrcMismatch {
        /// The stored CRC.
        expected: u32,
        /// The computed CRC.
        actual: u32,
    },
    /// The record count cannot be right for this batch.
    #[error("impossible record count {count}: {reason}")]
    BadRecordCount {
        /// The count in the header.
        count: i32,
        /// Why it is impossible.
        reason: &'static str,
    },
    /// A record inside the batch is malformed.
    #[error("record {index} is malformed: {reason}")]
    BadRecord {
        /// The record's position in the batch (0-based).
        index: i32,
        /// What is wrong.
        reason: &'static str,
    },
    /// The attributes name a compression codec that does not exist.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// The codec exists but this build was compiled without its cargo feature.
    #[error("compression codec {0:?} is not enabled in this build (cargo feature)")]
    CodecDisabled(Compression),
    /// Decompression failed or produced more than the allowed size.
    #[error("{codec:?} decompression failed: {reason}")]
    Decompression {
        /// The codec.
        codec: Compression,
        /// The codec's complaint, or the size limit that was hit.
        reason: String,
    },
    /// A control batch (a transaction marker, a replicated log's own entry) appended as
    /// records: control batches are written by the log's owner alone.
    #[error("a control batch cannot be appended as records")]
    ControlBatch,
    /// The batch has no records. Empty batches are only produced by compaction.
    #[error("the batch has no records")]
    Empty,
    /// An appended batch carries the cleaner's delete horizon (attribute bit 6), which only
    /// compaction sets: taken at its word, its tombstones would skip `delete.retention.ms`.
    #[error("attribute bit 6 (the cleaner's delete horizon) is set; only compaction sets it")]
    DeleteHorizonSet,
}

/// Attaches the operation and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
