//! Committed offsets, stored as Kafka stores them: records in the internal topic
//! `__consumer_offsets`, keyed by (group, topic, partition), the latest record per key winning,
//! a null value deleting. The store keeps the latest of each key in memory, rebuilt by reading
//! the topic when the broker opens.
//!
//! Encodings (big-endian, Kafka's offset-commit key version 1 and value version 3):
//!
//! ```text
//! key:   version i16 = 1 | group (i16 length, bytes) | topic (i16 length, bytes) | partition i32
//! value: version i16 = 3 | offset i64 | leader epoch i32 (-1) | metadata (i16 length, bytes)
//!        | commit timestamp i64
//! ```
//!
//! The topic is compacted, as in Kafka: the cleaner keeps the latest commit of each key, and a
//! deleted group's tombstones go after `delete.retention.ms`, so replaying it on open costs
//! about one record per committed partition (plus what was written since the last clean).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::wire::{MAX_STRING_BYTES, Reader, put_string};
use crate::config::{CleanupPolicy, Fsync, LogConfig, TopicConfig};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::storage::{BatchBuilder, Compression, PartitionLog};

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
    latest: RwLock<HashMap<Key, OffsetAndMetadata>>,
    /// Serializes commits so the in-memory view follows the log's order.
    writing: Mutex<()>,
}

/// The offsets topic's config: durable and compacted (Kafka's `offsets.topic.*` defaults).
pub(crate) fn topic_config() -> TopicConfig {
    TopicConfig::default().with_log(
        LogConfig::default()
            .fsync(Fsync::Always)
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
    v.extend_from_slice(&(-1i32).to_be_bytes());
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
    let _leader_epoch = f.i32()?;
    let metadata = f.string()?;
    let commit_timestamp = f.i64()?;
    Some(OffsetAndMetadata {
        offset,
        metadata,
        commit_timestamp,
    })
}

impl OffsetStore {
    /// Opens the store on partition 0 of the offsets topic, reading every commit in it.
    pub(crate) fn open(log: PartitionLog) -> Result<OffsetStore> {
        let mut latest = HashMap::new();
        let mut reader = log.reader(log.log_start_offset());
        while let Some(r) = reader.next()? {
            // A record this build cannot read (another version, or damage that passed the CRC)
            // is skipped: it must not keep every group from starting.
            let Some(key) = r.key.and_then(parse_key) else {
                log::warn!(
                    "skipping an unreadable key at offset {} of {OFFSETS_TOPIC}",
                    r.offset
                );
                continue;
            };
            match r.value {
                None => {
                    latest.remove(&key);
                }
                Some(v) => match parse_value(v) {
                    Some(o) => {
                        latest.insert(key, o);
                    }
                    None => log::warn!(
                        "skipping an unreadable value at offset {} of {OFFSETS_TOPIC}",
                        r.offset
                    ),
                },
            }
        }
        Ok(OffsetStore {
            log,
            latest: RwLock::new(latest),
            writing: Mutex::new(()),
        })
    }

    /// Commits offsets for a group, all in one batch: all are stored, or none. A group id or
    /// metadata past its limit refuses the whole commit before anything is written.
    pub(crate) fn commit(&self, group: &str, offsets: &[(TopicPartition, OffsetAndMetadata)]) -> Result<()> {
        validate_group_id(group)?;
        for (tp, o) in offsets {
            validate_metadata(tp, &o.metadata)?;
        }
        self.write(group, offsets.iter().map(|(tp, o)| (tp, Some(o))))
    }

    /// Deletes a group's committed offsets (tombstones for each).
    pub(crate) fn delete_group(&self, group: &str) -> Result<()> {
        let tps: Vec<TopicPartition> = self
            .latest
            .read()
            .keys()
            .filter(|(g, _, _)| g == group)
            .map(|(_, t, p)| TopicPartition::new(t.clone(), *p))
            .collect();
        self.write(group, tps.iter().map(|tp| (tp, None)))
    }

    fn write<'a>(
        &self,
        group: &str,
        entries: impl Iterator<Item = (&'a TopicPartition, Option<&'a OffsetAndMetadata>)> + Clone,
    ) -> Result<()> {
        let mut batch = BatchBuilder::new(Compression::None);
        let now = crate::storage::now_ms();
        for (tp, o) in entries.clone() {
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
        }
        if batch.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock();
        self.log.append(batch.finish()?)?;
        let mut latest = self.latest.write();
        for (tp, o) in entries {
            let key = (group.to_string(), tp.topic.clone(), tp.partition);
            match o {
                Some(o) => latest.insert(key, o.clone()),
                None => latest.remove(&key),
            };
        }
        Ok(())
    }

    /// The committed offset of `tp` for `group`.
    pub(crate) fn committed(&self, group: &str, tp: &TopicPartition) -> Option<OffsetAndMetadata> {
        self.latest
            .read()
            .get(&(group.to_string(), tp.topic.clone(), tp.partition))
            .cloned()
    }

    /// Every group with committed offsets, sorted.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.latest.read().keys().map(|(g, _, _)| g.clone()).collect();
        groups.sort();
        groups.dedup();
        groups
    }

    /// A group's committed offsets, sorted by partition.
    pub(crate) fn group_offsets(&self, group: &str) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        let mut v: Vec<_> = self
            .latest
            .read()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), o)| (TopicPartition::new(t.clone(), *p), o.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
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
