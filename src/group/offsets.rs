//! Committed offsets, stored as Kafka stores them: records in the internal topic
//! `__consumer_offsets`, keyed by (group, topic, partition), the latest record per key winning,
//! a null value deleting. The store keeps the latest of each key in memory, rebuilt by reading
//! the topic when the broker opens.
//!
//! Encodings (big-endian, Kafka's offset-commit key version 1 and value version 3):
//!
//! ```text
//! key:   version i16 = 1 | group (i16 length, bytes) | topic (i16 length, bytes) | partition i32
//! value: version i16 = 3 | offset i64 | leader epoch i32 | metadata (i16 length, bytes)
//!        | commit timestamp i64
//! ```
//!
//! A commit is written in two steps, as Kafka appends under the group's lock and waits for
//! replication outside it: [`OffsetStore::append`] writes the records to the page cache (the
//! log's order is the commits' order, so it runs where the caller fixes that order, under the
//! group's lock), and [`Written::durable`] waits for `fdatasync` and only then shows the
//! commit to readers, outside any lock other requests need. The log is kept with
//! [`Fsync::Never`] for that reason; nothing is acknowledged before `durable` returns.
//!
//! A transaction's commits ([`OffsetStore::append_transactional`], Kafka's TxnOffsetCommit)
//! are a transactional batch of the transaction's producer: pending, invisible to readers,
//! until the transaction coordinator's marker ([`OffsetStore::complete_transaction`]) commits
//! them (each where its record lies in the log, as a plain commit's) or aborts them.
//!
//! The topic is compacted, as in Kafka: the cleaner keeps the latest commit of each key, and a
//! deleted group's tombstones go after `delete.retention.ms`, so replaying it on open costs
//! about one record per committed partition (plus what was written since the last clean).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::wire::{MAX_STRING_BYTES, Reader, put_string};
use crate::config::{CleanupPolicy, Fsync, LogConfig, TopicConfig};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::storage::producers::Marker;
use crate::storage::{Batch, BatchBuilder, Compression, PartitionLog};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The longest commit metadata stored, in bytes (Kafka's `offset.metadata.max.bytes`
/// default). Longer metadata is refused with [`Error::OffsetMetadataTooLarge`].
pub const MAX_OFFSET_METADATA_BYTES: usize = 4096;

/// The longest group id, in bytes: the most the i16 length of Kafka's offset-commit key
/// holds. A longer one is refused with [`Error::InvalidGroupId`].
pub const MAX_GROUP_ID_BYTES: usize = MAX_STRING_BYTES;

/// Refuses a group id that is empty or too long to store.
pub(crate) fn validate_group_id(group: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidGroupId {
            len: group.len(),
            reason,
        })
    };
    if group.is_empty() {
        return bad("it is empty");
    }
    if group.len() > MAX_GROUP_ID_BYTES {
        return bad("it is longer than 32767 bytes");
    }
    Ok(())
}

/// Refuses a commit whose metadata is longer than [`MAX_OFFSET_METADATA_BYTES`].
pub(crate) fn validate_metadata(tp: &TopicPartition, metadata: &str) -> Result<()> {
    if metadata.len() > MAX_OFFSET_METADATA_BYTES {
        return Err(Error::OffsetMetadataTooLarge {
            topic: tp.topic.clone(),
            partition: tp.partition,
            len: metadata.len(),
            max: MAX_OFFSET_METADATA_BYTES,
        });
    }
    Ok(())
}

/// A committed offset: the next record the group will read, with the committer's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The offset of the next record to consume.
    pub offset: i64,
    /// The leader epoch of the last record consumed, as a Kafka client commits it (-1 if
    /// none: in-process consumers commit none).
    pub leader_epoch: i32,
    /// Free text stored with the commit (Kafka's commit metadata).
    pub metadata: String,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub commit_timestamp: i64,
}

type Key = (String, String, u32);

/// The committed offsets of every group.
#[derive(Debug)]
pub(crate) struct OffsetStore {
    log: PartitionLog,
    /// The latest durable record of each key. A deletion stays as `None`, so that a commit
    /// made durable later but written earlier cannot bring the key back.
    latest: RwLock<HashMap<Key, Latest>>,
    /// Serializes appends, so that each commit's records are one batch at known offsets, and
    /// holds the keys whose last record appended (durable yet or not) is a commit: what a
    /// deletion must cover, including commits still waiting for the disk.
    writing: Mutex<HashSet<Key>>,
    /// Transactions' commits that no marker has ended yet, by producer id: each key with the
    /// offset of its record.
    pending: Mutex<HashMap<i64, Vec<(Key, Latest)>>>,
}

#[derive(Debug, Clone)]
struct Latest {
    /// The record's offset in the offsets topic.
    at: i64,
    value: Option<OffsetAndMetadata>,
}

/// Records appended but not yet durable; [`Written::durable`] waits for them.
#[must_use = "a commit is not stored until it is durable"]
#[derive(Debug)]
pub(crate) struct Written {
    store: std::sync::Arc<OffsetStore>,
    /// The offset of the first record; the others follow densely.
    base: i64,
    entries: Vec<(Key, Option<OffsetAndMetadata>)>,
}

/// The offsets topic's config: compacted (Kafka's `offsets.topic.*` defaults), and synced by
/// the store itself before it acknowledges anything (see the module's doc).
pub(crate) fn topic_config() -> TopicConfig {
    TopicConfig::default().with_log(
        LogConfig::default()
            .fsync(Fsync::Never)
            .cleanup_policy(CleanupPolicy::Compact)
            .retention_ms(None)
            .segment_bytes(100 << 20)
            .segment_ms(Some(Duration::from_secs(7 * 24 * 3600))),
    )
}

fn key_bytes(group: &str, tp: &TopicPartition) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + group.len() + tp.topic.len());
    k.extend_from_slice(&1i16.to_be_bytes());
    put_string(&mut k, group);
    put_string(&mut k, &tp.topic);
    k.extend_from_slice(&(tp.partition as i32).to_be_bytes());
    k
}

fn value_bytes(o: &OffsetAndMetadata) -> Vec<u8> {
    let mut v = Vec::with_capacity(26 + o.metadata.len());
    v.extend_from_slice(&3i16.to_be_bytes());
    v.extend_from_slice(&o.offset.to_be_bytes());
    v.extend_from_slice(&o.leader_epoch.to_be_bytes());
    put_string(&mut v, &o.metadata);
    v.extend_from_slice(&o.commit_timestamp.to_be_bytes());
    v
}

fn parse_key(k: &[u8]) -> Option<Key> {
    let mut f = Reader(k);
    if f.i16()? != 1 {
        return None;
    }
    let key = (f.string()?, f.string()?, u32::try_from(f.i32()?).ok()?);
    f.is_done().then_some(key)
}

fn parse_value(v: &[u8]) -> Option<OffsetAndMetadata> {
    let mut f = Reader(v);
    if f.i16()? != 3 {
        return None;
    }
    let offset = f.i64()?;
    let leader_epoch = f.i32()?;
    let metadata = f.string()?;
    let commit_timestamp = f.i64()?;
    Some(OffsetAndMetadata {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

/// Puts a record read at `l.at` in `latest`, unless a record placed later in the log is
/// there already.
fn settle(latest: &mut HashMap<Key, Latest>, key: Key, l: Latest) {
    if latest.get(&key).is_some_and(|old| old.at > l.at) {
        return;
    }
    latest.insert(key, l);
}

/// A record of the offsets topic read at `offset`: its key and (`None` for a deletion) its
/// commit. A record this build cannot read (another version, or damage that passed the CRC)
/// is skipped: it must not keep every group from starting.
fn read_record(
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Option<(Key, Option<OffsetAndMetadata>)> {
    let Some(key) = key.and_then(parse_key) else {
        log::warn!("skipping an unreadable key at offset {offset} of {OFFSETS_TOPIC}");
        return None;
    };
    match value {
        None => Some((key, None)),
        Some(v) => match parse_value(v) {
            Some(o) => Some((key, Some(o))),
            None => {
                log::warn!("skipping an unreadable value at offset {offset} of {OFFSETS_TOPIC}");
                None
            }
        },
    }
}

/// The commits of the offsets topic as read so far, in the log's order: the latest of each
/// key, and the commits of transactions not yet ended.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    latest: HashMap<Key, Latest>,
    pending: HashMap<i64, Vec<(Key, Latest)>>,
}

impl Replay {
    /// Takes in the next batch of the topic.
    pub(crate) fn batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        let h = *batch.header();
        if let Some(marker) = Marker::of(batch) {
            let ended = self.pending.remove(&h.producer_id).unwrap_or_default();
            if marker.commit {
                for (key, l) in ended {
                    settle(&mut self.latest, key, l);
                }
            }
            return Ok(());
        }
        if h.is_control() {
            return Ok(());
        }
        for r in batch.records().map_err(Error::InvalidBatch)?.iter() {
            let r = r.map_err(Error::InvalidBatch)?;
            let Some((key, value)) = read_record(r.offset, r.key, r.value) else {
                continue;
            };
            let l = Latest { at: r.offset, value };
            match h.is_transactional() {
                true => self.pending.entry(h.producer_id).or_default().push((key, l)),
                false => settle(&mut self.latest, key, l),
            }
        }
        Ok(())
    }

    /// Every group with committed offsets, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        groups_in(&self.latest)
    }

    /// A group's committed offsets, sorted by partition.
    pub(crate) fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        offsets_in(&self.latest, group)
    }
}

fn groups_in(latest: &HashMap<Key, Latest>) -> Vec<String> {
    let mut groups: Vec<String> = latest
        .iter()
        .filter(|(_, l)| l.value.is_some())
        .map(|((g, _, _), _)| g.clone())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

fn offsets_in(latest: &HashMap<Key, Latest>, group: &str) -> Vec<(TopicPartition, OffsetAndMetadata)> {
    let mut v: Vec<_> = latest
        .iter()
        .filter(|((g, _, _), _)| g == group)
        .filter_map(|((_, t, p), l)| Some((TopicPartition::new(t.clone(), *p), l.value.clone()?)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl OffsetStore {
    /// Opens the store on partition 0 of the offsets topic, reading every commit in it.
    pub(crate) fn open(log: PartitionLog) -> Result<OffsetStore> {
        let mut replay = Replay::default();
        let mut at = log.log_start_offset();
        loop {
            let fetch = log.read(at, 1 << 20)?;
            let Some(next) = fetch.next_offset() else {
                break;
            };
            for batch in fetch.batches() {
                replay.batch(&batch)?;
            }
            at = next;
        }
        let Replay { latest, pending } = replay;
        // Deletions stay (as `None`): a transaction still pending may commit an older-placed
        // record of the key, which must not come back over them.
        let live = latest
            .iter()
            .filter(|(_, l)| l.value.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        Ok(OffsetStore {
            log,
            latest: RwLock::new(latest),
            writing: Mutex::new(live),
            pending: Mutex::new(pending),
        })
    }

    /// Writes the commits of a transaction's producer (`producer_id` in `epoch`) for `group`,
    /// as one transactional batch, and waits for the disk: they are pending until the
    /// transaction's marker ends it ([`complete_transaction`](Self::complete_transaction)).
    pub(crate) fn append_transactional(
        &self,
        group: &str,
        producer_id: i64,
        epoch: i16,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        validate_group_id(group)?;
        for (tp, o) in offsets {
            validate_metadata(tp, &o.metadata)?;
        }
        if offsets.is_empty() {
            return Ok(());
        }
        let mut batch = BatchBuilder::new(Compression::None)
            .producer(producer_id, epoch, -1)
            .transactional(true);
        let now = crate::storage::now_ms();
        for (tp, o) in offsets {
            batch.push(now, Some(&key_bytes(group, tp)), Some(&value_bytes(o)), &[]);
        }
        let info = {
            let _order = self.writing.lock();
            self.log.append(batch.finish()?)?
        };
        // Synced outside the lock that orders appends, as a plain commit is.
        self.log.flush()?;
        let mut pending = self.pending.lock();
        let entries = pending.entry(producer_id).or_default();
        for ((tp, o), at) in offsets.iter().zip(info.base_offset..) {
            let key = (group.to_string(), tp.topic.clone(), tp.partition);
            // A transaction's later commit of a key replaces its earlier one.
            entries.retain(|(k, _)| *k != key);
            entries.push((
                key,
                Latest {
                    at,
                    value: Some(o.clone()),
                },
            ));
        }
        Ok(())
    }

    /// Ends the transaction of `producer_id` (in `epoch`) in the offsets topic: writes its
    /// marker durably, then shows its pending commits (`commit`) or drops them.
    pub(crate) fn complete_transaction(&self, producer_id: i64, epoch: i16, marker: Marker) -> Result<()> {
        self.log.append_marker(producer_id, epoch, marker)?;
        self.log.flush()?;
        let mut live = self.writing.lock();
        let ended = self.pending.lock().remove(&producer_id).unwrap_or_default();
        if marker.commit {
            let mut latest = self.latest.write();
            for (key, l) in ended {
                if l.value.is_some() {
                    live.insert(key.clone());
                }
                settle(&mut latest, key, l);
            }
        }
        Ok(())
    }

    /// Whether a transaction's commit for one of `partitions` of `group` is pending (Kafka's
    /// OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub(crate) fn has_pending(&self, group: &str, partitions: &[TopicPartition]) -> bool {
        let pending = self.pending.lock();
        pending.values().flatten().any(|((g, t, p), _)| {
            g == group
                && (partitions.is_empty() || partitions.iter().any(|tp| &tp.topic == t && tp.partition == *p))
        })
    }

    /// Writes a group's commit, all in one batch, without waiting for the disk: the commit is
    /// stored (and visible) once [`Written::durable`] returns. A group id or metadata past
    /// its limit refuses the whole commit before anything is written.
    pub(crate) fn append(
        self: &std::sync::Arc<Self>,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<Written> {
        validate_group_id(group)?;
        for (tp, o) in offsets {
            validate_metadata(tp, &o.metadata)?;
        }
        let entries = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), Some(o.clone())))
            .collect();
        self.write(group, |_| entries)
    }

    /// Writes tombstones for every committed offset of a group, without waiting for the disk
    /// (see [`OffsetStore::append`]).
    pub(crate) fn append_delete_group(self: &std::sync::Arc<Self>, group: &str) -> Result<Written> {
        self.forget_pending(|(g, _, _)| g == group);
        self.write(group, |live| {
            live.iter()
                .filter(|(g, _, _)| g == group)
                .map(|(_, t, p)| (TopicPartition::new(t.clone(), *p), None))
                .collect()
        })
    }

    /// Writes tombstones for a group's committed offsets of `partitions` (those it has),
    /// without waiting for the disk (see [`OffsetStore::append`]).
    pub(crate) fn append_delete_partitions(
        self: &std::sync::Arc<Self>,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Written> {
        self.write(group, |live| {
            partitions
                .iter()
                .filter(|tp| live.contains(&(group.to_string(), tp.topic.clone(), tp.partition)))
                .map(|tp| (tp.clone(), None))
                .collect()
        })
    }

    /// Deletes every group's committed offsets of `topic` (a deleted topic's), durably: a
    /// topic created later under the same name starts without them, as in Kafka.
    pub(crate) fn delete_topic(self: &std::sync::Arc<Self>, topic: &str) -> Result<()> {
        self.forget_pending(|(_, t, _)| t == topic);
        let groups: HashSet<String> = self
            .writing
            .lock()
            .iter()
            .filter(|(_, t, _)| t == topic)
            .map(|(g, _, _)| g.clone())
            .collect();
        // A group that commits for the topic meanwhile can only name a partition that no
        // longer exists, which commits refuse.
        for group in groups {
            self.write(&group, |live| {
                live.iter()
                    .filter(|(g, t, _)| *g == group && t == topic)
                    .map(|(_, t, p)| (TopicPartition::new(t.clone(), *p), None))
                    .collect()
            })?
            .durable()?;
        }
        Ok(())
    }

    /// Drops the pending transactional commits of the keys `deleted` picks (a deleted group's,
    /// topic's or partition's), as Kafka drops them: the transaction's marker must not bring
    /// them back.
    fn forget_pending(&self, deleted: impl Fn(&Key) -> bool) {
        for entries in self.pending.lock().values_mut() {
            entries.retain(|(k, _)| !deleted(k));
        }
    }

    /// Appends one batch for `group`: the records `entries` picks (a commit, or `None` to
    /// delete), given the keys that hold a commit now, under the lock that orders appends.
    fn write(
        self: &std::sync::Arc<Self>,
        group: &str,
        entries: impl FnOnce(&HashSet<Key>) -> Vec<(TopicPartition, Option<OffsetAndMetadata>)>,
    ) -> Result<Written> {
        let mut live = self.writing.lock();
        let entries = entries(&live);
        let deleted: HashSet<Key> = entries
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(tp, _)| (group.to_string(), tp.topic.clone(), tp.partition))
            .collect();
        if !deleted.is_empty() {
            self.forget_pending(|k| deleted.contains(k));
        }
        let mut batch = BatchBuilder::new(Compression::None);
        let now = crate::storage::now_ms();
        let mut written = Vec::new();
        for (tp, o) in &entries {
            let o = o.as_ref();
            let key = key_bytes(group, tp);
            let value = o.map(value_bytes);
            // What is acknowledged must be what a reopen reads back: a record that would not
            // parse is skipped on open, losing the commit.
            let readable = parse_key(&key)
                .is_some_and(|(g, t, p)| g == group && t == tp.topic && p == tp.partition)
                && value.as_deref().is_none_or(|v| parse_value(v).as_ref() == o);
            if !readable {
                return Err(Error::InvalidGroupRequest(format!(
                    "the commit for {tp} of group {group:?} would not read back"
                )));
            }
            batch.push(now, Some(&key), value.as_deref(), &[]);
            written.push(((group.to_string(), tp.topic.clone(), tp.partition), o.cloned()));
        }
        if batch.is_empty() {
            return Ok(Written {
                store: self.clone(),
                base: 0,
                entries: written,
            });
        }
        let info = self.log.append(batch.finish()?)?;
        for (key, o) in &written {
            match o {
                Some(_) => live.insert(key.clone()),
                None => live.remove(key),
            };
        }
        drop(live);
        Ok(Written {
            store: self.clone(),
            base: info.base_offset,
            entries: written,
        })
    }

    /// The committed offset of `tp` for `group`.
    pub(crate) fn committed(&self, group: &str, tp: &TopicPartition) -> Option<OffsetAndMetadata> {
        self.latest
            .read()
            .get(&(group.to_string(), tp.topic.clone(), tp.partition))
            .and_then(|l| l.value.clone())
    }

    /// Every group with committed offsets, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        groups_in(&self.latest.read())
    }

    /// A group's committed offsets, sorted by partition.
    pub(crate) fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        offsets_in(&self.latest.read(), group)
    }
}

impl Written {
    /// Waits until the records are on disk (sharing one `fdatasync` with concurrent commits),
    /// then shows them to readers. On an error nothing is shown; the log refuses writes
    /// until reopened if the sync failed.
    pub(crate) fn durable(self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.store.log.flush()?;
        let mut latest = self.store.latest.write();
        for (at, (key, value)) in (self.base..).zip(self.entries) {
            // Commits become durable in any order; the log's order decides.
            if latest.get(&key).is_some_and(|l| l.at > at) {
                continue;
            }
            latest.insert(key, Latest { at, value });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_in_kafkas_layout() {
        let tp = TopicPartition::new("orders", 7);
        let k = key_bytes("billing", &tp);
        assert_eq!(&k[..4], &[0, 1, 0, 7]);
        assert_eq!(parse_key(&k), Some(("billing".into(), "orders".into(), 7)));
        let o = OffsetAndMetadata {
            offset: 42,
            leader_epoch: 5,
            metadata: "m".into(),
            commit_timestamp: 1_700_000_000_000,
        };
        let v = value_bytes(&o);
        assert_eq!(&v[..2], &[0, 3]);
        assert_eq!(parse_value(&v), Some(o));
        assert_eq!(parse_key(&v), None);
        assert_eq!(parse_value(&v[..10]), None);
    }
}
