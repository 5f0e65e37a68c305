//! Configuration of one partition's log. Settings carry Kafka's names in their docs and errors,
//! and Kafka's defaults unless a reason to differ is given. A config is validated once, when a
//! log is opened with it.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::storage::format::{Compression, HEADER_LEN, TimestampType};

/// When appended records are forced to disk, and so when they count as durable.
///
/// The high watermark (the end of what readers may see) advances only over records that are
/// durable under the policy, so no reader ever acts on a record that a crash can take back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fsync {
    /// An append is acknowledged only after `fdatasync` has returned. Concurrent appends share
    /// one `fdatasync` (group commit). Survives power loss.
    Always,
    /// Appends are acknowledged once written to the page cache; the log is `fdatasync`ed every
    /// interval, and readers see records once they have been synced.
    Interval(Duration),
    /// Appends are acknowledged and readable once written to the page cache; the operating
    /// system writes them back when it chooses. Survives a crash of the process, not of the
    /// machine.
    Never,
}

/// Settings of one partition's log.
///
/// Built from [`LogConfig::default`] with the setters, each of which documents its default:
///
/// ```
/// use rivulet::{Fsync, LogConfig};
/// let config = LogConfig::default()
///     .segment_bytes(64 << 20)
///     .fsync(Fsync::Never);
/// assert_eq!(config.get_segment_bytes(), 64 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogConfig {
    pub(crate) segment_bytes: u64,
    pub(crate) segment_ms: Option<Duration>,
    pub(crate) segment_index_bytes: u32,
    pub(crate) index_interval_bytes: u32,
    pub(crate) retention_ms: Option<Duration>,
    pub(crate) retention_bytes: Option<u64>,
    pub(crate) retention_check_interval: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) fsync: Fsync,
    pub(crate) timestamp_type: TimestampType,
    pub(crate) cleanup_policy: CleanupPolicy,
    pub(crate) delete_retention: Duration,
    /// `min.cleanable.dirty.ratio` in millionths (so the config stays `Eq`).
    pub(crate) min_cleanable_dirty_ppm: u32,
}

/// Kafka's default `max.message.bytes`: 1 MiB plus the 12 bytes of a log entry's offset and
/// length, so a batch Kafka accepts by default is accepted here too.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = (1 << 20) + 12;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            retention_check_interval: Duration::from_secs(300),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            fsync: Fsync::Always,
            timestamp_type: TimestampType::CreateTime,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention: Duration::from_secs(24 * 3600),
            min_cleanable_dirty_ppm: 500_000,
        }
    }
}

/// The largest segment: positions in the offset index are 32-bit, and Kafka caps it at
/// `i32::MAX` too.
const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

impl LogConfig {
    /// `segment.bytes`: a segment is rolled when the next batch would take it past this size.
    /// Default 1 GiB; at least 61 bytes (one batch header), at most 2 GiB - 1. A single batch
    /// larger than this gets a segment of its own.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// `segment.ms`: a non-empty segment is rolled at the first append after it has been
    /// active this long (measured from its first append in this process). Default 7 days;
    /// `None` turns time-based rolling off.
    pub fn segment_ms(mut self, age: Option<Duration>) -> Self {
        self.segment_ms = age;
        self
    }

    /// `segment.index.bytes`: the size preallocated for each index file; a segment whose index
    /// is full is rolled. Default 10 MiB; at least 24 bytes.
    pub fn segment_index_bytes(mut self, bytes: u32) -> Self {
        self.segment_index_bytes = bytes;
        self
    }

    /// `index.interval.bytes`: an index entry is added after this many bytes of batches since
    /// the last one. Smaller means faster lookups and larger indexes. Default 4096; 0 indexes
    /// every batch.
    pub fn index_interval_bytes(mut self, bytes: u32) -> Self {
        self.index_interval_bytes = bytes;
        self
    }

    /// `retention.ms`: a sealed segment is deleted once its largest timestamp is older than
    /// this. Default 7 days; `None` keeps segments forever.
    pub fn retention_ms(mut self, age: Option<Duration>) -> Self {
        self.retention_ms = age;
        self
    }

    /// `retention.bytes`: the oldest sealed segments are deleted while the log without them
    /// would still hold at least this many bytes. Default `None` (unlimited).
    pub fn retention_bytes(mut self, bytes: Option<u64>) -> Self {
        self.retention_bytes = bytes;
        self
    }

    /// `log.retention.check.interval.ms`: how often the background thread applies retention.
    /// Default 5 minutes; at least 1 ms.
    pub fn retention_check_interval(mut self, every: Duration) -> Self {
        self.retention_check_interval = every;
        self
    }

    /// `max.message.bytes`: the largest batch an append accepts. Default 1,048,588 bytes
    /// ([`DEFAULT_MAX_MESSAGE_BYTES`], Kafka's); at least 61 bytes (one batch header).
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The durability policy. Default [`Fsync::Always`]: nothing acknowledged is lost even on
    /// power loss. Interval periods must be at least 1 ms.
    pub fn fsync(mut self, policy: Fsync) -> Self {
        self.fsync = policy;
        self
    }

    /// `message.timestamp.type`: with [`TimestampType::LogAppendTime`] the log stamps every
    /// batch with the time of its append. Default [`TimestampType::CreateTime`].
    pub fn timestamp_type(mut self, kind: TimestampType) -> Self {
        self.timestamp_type = kind;
        self
    }

    /// `cleanup.policy`: whether old segments are deleted by retention, compacted, or both.
    /// Default [`CleanupPolicy::Delete`].
    pub fn cleanup_policy(mut self, policy: CleanupPolicy) -> Self {
        self.cleanup_policy = policy;
        self
    }

    /// `delete.retention.ms`: how long a tombstone (a record with a null value) stays in a
    /// compacted log after it was written, so consumers that read the key's older value see
    /// its deletion too. Default 1 day.
    pub fn delete_retention(mut self, age: Duration) -> Self {
        self.delete_retention = age;
        self
    }

    /// `min.cleanable.dirty.ratio`: a compacted log is cleaned once the share of its sealed
    /// bytes written since the last clean reaches this. Default 0.5; between 0 and 1.
    pub fn min_cleanable_dirty_ratio(mut self, ratio: f64) -> Self {
        self.min_cleanable_dirty_ppm = if (0.0..=1.0).contains(&ratio) {
            (ratio * 1e6).round() as u32
        } else {
            u32::MAX // refused by `validate`
        };
        self
    }

    /// The configured `cleanup.policy`.
    pub fn get_cleanup_policy(&self) -> CleanupPolicy {
        self.cleanup_policy
    }

    /// The configured `min.cleanable.dirty.ratio`.
    pub fn get_min_cleanable_dirty_ratio(&self) -> f64 {
        self.min_cleanable_dirty_ppm as f64 / 1e6
    }

    /// The configured `segment.bytes`.
    pub fn get_segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The configured durability policy.
    pub fn get_fsync(&self) -> Fsync {
        self.fsync
    }

    /// The configured `message.timestamp.type`.
    pub fn get_timestamp_type(&self) -> TimestampType {
        self.timestamp_type
    }

    /// The configured `max.message.bytes`.
    pub fn get_max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<()> {
        fn bad(name: &'static str, value: impl std::fmt::Debug, reason: &'static str) -> Error {
            Error::InvalidConfig {
                name,
                value: format!("{value:?}"),
                reason,
            }
        }
        if self.segment_bytes < HEADER_LEN as u64 || self.segment_bytes > MAX_SEGMENT_BYTES {
            return Err(bad(
                "segment.bytes",
                self.segment_bytes,
                "must be from 61 to 2147483647",
            ));
        }
        if self.segment_index_bytes < 24 {
            return Err(bad(
                "segment.index.bytes",
                self.segment_index_bytes,
                "must be at least 24",
            ));
        }
        if self.max_message_bytes < HEADER_LEN || self.max_message_bytes > i32::MAX as usize {
            return Err(bad(
                "max.message.bytes",
                self.max_message_bytes,
                "must be from 61 to 2147483647",
            ));
        }
        if self.retention_check_interval < Duration::from_millis(1) {
            return Err(bad(
                "log.retention.check.interval.ms",
                self.retention_check_interval,
                "must be at least 1 ms",
            ));
        }
        if let Fsync::Interval(every) = self.fsync
            && every < Duration::from_millis(1)
        {
            return Err(bad("flush.ms", every, "must be at least 1 ms"));
        }
        if self.min_cleanable_dirty_ppm > 1_000_000 {
            return Err(bad(
                "min.cleanable.dirty.ratio",
                "out of range",
                "must be from 0 to 1",
            ));
        }
        Ok(())
    }
}

/// What `compression.type` asks of batches written to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CompressionType {
    /// Keep the producer's choice (Kafka's `producer`, the default).
    #[default]
    Producer,
    /// Every batch uses this codec.
    Codec(Compression),
}

/// What happens to old records of a log (`cleanup.policy`).
///
/// ```
/// use rivulet::{CleanupPolicy, TopicConfig};
/// let mut config = TopicConfig::default();
/// config.set("cleanup.policy", "compact,delete")?;
/// let policy = config.log().get_cleanup_policy();
/// assert_eq!(policy, CleanupPolicy::CompactDelete);
/// assert!(policy.compacts() && policy.deletes());
/// assert!(config.set("cleanup.policy", "shred").is_err());
/// # Ok::<(), rivulet::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CleanupPolicy {
    /// Whole old segments are deleted by retention (the default).
    #[default]
    Delete,
    /// Sealed segments are compacted: only the latest record of each key is kept, and
    /// tombstones go after `delete.retention.ms`. Retention deletes nothing.
    Compact,
    /// Both: compaction, and retention deleting whole old segments.
    CompactDelete,
}

impl CleanupPolicy {
    /// True if retention deletes old segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// True if the log is compacted.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Kafka's spelling.
    pub fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// Settings of one topic: the log settings of each of its partitions, and the topic-level
/// ones. Set with typed setters or by Kafka's names with [`TopicConfig::set`].
///
/// ```
/// use rivulet::TopicConfig;
/// let mut config = TopicConfig::default();
/// config.set("retention.ms", "3600000")?;
/// config.set("compression.type", "zstd")?;
/// assert!(config.entries().contains(&("retention.ms", "3600000".to_string())));
/// # Ok::<(), rivulet::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    pub(crate) log: LogConfig,
    pub(crate) compression: CompressionType,
    /// Taken when the topic is created; afterwards its partitions' replicas say it (so it is
    /// neither stored nor sent with the config).
    #[serde(skip)]
    pub(crate) replication_factor: Option<u16>,
}

fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T> {
    value.parse().map_err(|_| Error::InvalidConfig {
        name,
        value: value.to_string(),
        reason: "not a number in range",
    })
}

/// Kafka writes "no limit" as -1.
fn optional_ms(name: &'static str, value: &str) -> Result<Option<Duration>> {
    match parse::<i64>(name, value)? {
        -1 => Ok(None),
        ms if ms >= 0 => Ok(Some(Duration::from_millis(ms as u64))),
        _ => Err(Error::InvalidConfig {
            name,
            value: value.to_string(),
            reason: "must be -1 (no limit) or a duration in ms",
        }),
    }
}

impl TopicConfig {
    /// The settings of the topic's partition logs.
    pub fn log(&self) -> &LogConfig {
        &self.log
    }

    /// Replaces the partition logs' settings.
    pub fn with_log(mut self, log: LogConfig) -> Self {
        self.log = log;
        self
    }

    /// `compression.type`. Default [`CompressionType::Producer`].
    pub fn compression(mut self, compression: CompressionType) -> Self {
        self.compression = compression;
        self
    }

    /// The configured `compression.type`.
    pub fn get_compression(&self) -> CompressionType {
        self.compression
    }

    /// How many nodes of a cluster hold each partition of the topic (default: the cluster's
    /// replication factor, at most the number of nodes). A broker that is not a cluster's
    /// node holds one copy and refuses more. As in Kafka, this is taken when the topic is
    /// created (or grows), and is not one of the settings of its logs: changing a topic's
    /// configuration leaves its replicas as they are.
    ///
    /// ```
    /// use rivulet::TopicConfig;
    /// let config = TopicConfig::default().replication_factor(3);
    /// assert_eq!(config.get_replication_factor(), Some(3));
    /// ```
    pub fn replication_factor(mut self, n: u16) -> Self {
        self.replication_factor = Some(n);
        self
    }

    /// The replication factor asked for, if one was.
    pub fn get_replication_factor(&self) -> Option<u16> {
        self.replication_factor
    }

    /// `cleanup.policy` of the topic's logs. Default [`CleanupPolicy::Delete`].
    pub fn cleanup_policy(mut self, policy: CleanupPolicy) -> Self {
        self.log.cleanup_policy = policy;
        self
    }

    /// Sets one setting by its Kafka name, parsing the value as Kafka does. Unknown names,
    /// unparsable values and values out of range are errors and change nothing.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let mut next = self.clone();
        let log = next.log.clone();
        next.log = match name {
            "retention.ms" => log.retention_ms(optional_ms("retention.ms", value)?),
            "retention.bytes" => log.retention_bytes(match parse::<i64>("retention.bytes", value)? {
                b if b < 0 => None,
                b => Some(b as u64),
            }),
            "segment.bytes" => log.segment_bytes(parse("segment.bytes", value)?),
            "segment.ms" => log.segment_ms(optional_ms("segment.ms", value)?),
            "segment.index.bytes" => log.segment_index_bytes(parse("segment.index.bytes", value)?),
            "index.interval.bytes" => log.index_interval_bytes(parse("index.interval.bytes", value)?),
            "max.message.bytes" => log.max_message_bytes(parse("max.message.bytes", value)?),
            "message.timestamp.type" => log.timestamp_type(match value {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => {
                    return Err(bad_value(
                        "message.timestamp.type",
                        value,
                        "CreateTime or LogAppendTime",
                    ));
                }
            }),
            "flush.messages" => match parse::<i64>("flush.messages", value)? {
                1 => log.fsync(Fsync::Always),
                _ => log.fsync(Fsync::Never),
            },
            "flush.ms" => match parse::<i64>("flush.ms", value)? {
                ms if ms <= 0 => log.fsync(Fsync::Always),
                i64::MAX => log.fsync(Fsync::Never),
                ms => log.fsync(Fsync::Interval(Duration::from_millis(ms as u64))),
            },
            "compression.type" => {
                next.compression = match value {
                    "producer" => CompressionType::Producer,
                    "none" | "uncompressed" => CompressionType::Codec(Compression::None),
                    "gzip" => CompressionType::Codec(Compression::Gzip),
                    "snappy" => CompressionType::Codec(Compression::Snappy),
                    "lz4" => CompressionType::Codec(Compression::Lz4),
                    "zstd" => CompressionType::Codec(Compression::Zstd),
                    _ => {
                        return Err(bad_value(
                            "compression.type",
                            value,
                            "producer, none, gzip, snappy, lz4 or zstd",
                        ));
                    }
                };
                log
            }
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                log.cleanup_policy(match parts[..] {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => {
                        return Err(bad_value(
                            "cleanup.policy",
                            value,
                            "delete, compact or compact,delete",
                        ));
                    }
                })
            }
            "delete.retention.ms" => {
                log.delete_retention(Duration::from_millis(parse("delete.retention.ms", value)?))
            }
            "min.cleanable.dirty.ratio" => {
                log.min_cleanable_dirty_ratio(parse("min.cleanable.dirty.ratio", value)?)
            }
            _ => {
                return Err(Error::InvalidConfig {
                    name: "topic config",
                    value: name.to_string(),
                    reason: "unknown setting",
                });
            }
        };
        next.log.validate()?;
        *self = next;
        Ok(())
    }

    /// Every setting with its Kafka name and value, as Kafka's DescribeConfigs lists them.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Option<Duration>| d.map_or("-1".to_string(), |d| d.as_millis().to_string());
        let l = &self.log;
        let (flush_messages, flush_ms) = match l.fsync {
            Fsync::Always => ("1".to_string(), "0".to_string()),
            Fsync::Interval(d) => (i64::MAX.to_string(), d.as_millis().to_string()),
            Fsync::Never => (i64::MAX.to_string(), i64::MAX.to_string()),
        };
        vec![
            ("cleanup.policy", l.cleanup_policy.name().to_string()),
            (
                "compression.type",
                match self.compression {
                    CompressionType::Producer => "producer".to_string(),
                    CompressionType::Codec(Compression::None) => "none".to_string(),
                    CompressionType::Codec(c) => format!("{c:?}").to_lowercase(),
                },
            ),
            ("flush.messages", flush_messages),
            ("flush.ms", flush_ms),
            ("index.interval.bytes", l.index_interval_bytes.to_string()),
            ("delete.retention.ms", l.delete_retention.as_millis().to_string()),
            ("max.message.bytes", l.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                match l.timestamp_type {
                    TimestampType::CreateTime => "CreateTime".to_string(),
                    TimestampType::LogAppendTime => "LogAppendTime".to_string(),
                },
            ),
            (
                "min.cleanable.dirty.ratio",
                l.get_min_cleanable_dirty_ratio().to_string(),
            ),
            (
                "retention.bytes",
                l.retention_bytes.map_or("-1".to_string(), |b| b.to_string()),
            ),
            ("retention.ms", ms(l.retention_ms)),
            ("segment.bytes", l.segment_bytes.to_string()),
            ("segment.index.bytes", l.segment_index_bytes.to_string()),
            ("segment.ms", ms(l.segment_ms)),
        ]
    }
}

fn bad_value(name: &'static str, value: &str, reason: &'static str) -> Error {
    Error::InvalidConfig {
        name,
        value: value.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_out_of_range_values_are_named() {
        LogConfig::default().validate().unwrap();
        let err = LogConfig::default().segment_bytes(10).validate().unwrap_err();
        assert!(err.to_string().contains("segment.bytes"), "{err}");
        let err = LogConfig::default()
            .fsync(Fsync::Interval(Duration::ZERO))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("flush.ms"), "{err}");
        let err = LogConfig::default()
            .segment_index_bytes(8)
            .validate()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidConfig {
                name: "segment.index.bytes",
                ..
            }
        ));
    }

    #[test]
    fn topic_settings_by_kafka_name_round_trip_and_bad_ones_change_nothing() {
        let mut c = TopicConfig::default();
        for (k, v) in [
            ("retention.ms", "60000"),
            ("retention.bytes", "1048576"),
            ("segment.bytes", "8388608"),
            ("segment.ms", "-1"),
            ("max.message.bytes", "2000000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("compression.type", "lz4"),
            ("flush.ms", "250"),
        ] {
            c.set(k, v).unwrap();
            assert!(c.entries().contains(&(k, v.to_string())), "{k}");
        }
        assert_eq!(c.log().get_fsync(), Fsync::Interval(Duration::from_millis(250)));
        let before = c.clone();
        assert!(c.set("segment.bytes", "12").is_err());
        assert!(c.set("retention.ms", "soon").is_err());
        assert!(c.set("no.such.setting", "1").is_err());
        assert!(c.set("cleanup.policy", "shred").is_err());
        assert!(c.set("min.cleanable.dirty.ratio", "1.5").is_err());
        assert_eq!(c, before);
        for (k, v) in [
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "compact"),
            ("delete.retention.ms", "1000"),
            ("min.cleanable.dirty.ratio", "0.25"),
        ] {
            c.set(k, v).unwrap();
            assert!(c.entries().contains(&(k, v.to_string())), "{k}");
        }
        assert_eq!(c.log().get_cleanup_policy(), CleanupPolicy::Compact);
    }
}
