//! Records that own their bytes, for keeping past the poll that returned them, sending to
//! another task, or forwarding.

use crate::producer::ProducerRecord;
use crate::storage::{Header, OwnedHeader};

/// A consumed record that owns its topic, key, value and headers: what
/// [`ConsumerRecord::detach`](crate::ConsumerRecord::detach) returns and what the
/// asynchronous consumer's stream yields.
///
/// ```
/// use rivulet::{OwnedHeader, OwnedRecord};
/// let record = OwnedRecord {
///     topic: "meters".into(),
///     partition: 0,
///     offset: 41,
///     timestamp: 1_700_000_000_000,
///     key: Some(b"house-7".to_vec()),
///     value: Some(b"2.3 kVA".to_vec()),
///     headers: vec![OwnedHeader::new("unit", "kVA")],
/// };
/// assert_eq!(record.header("unit").and_then(|h| h.value), Some(&b"kVA"[..]));
/// // Forwarded to another topic with its key, value, headers and timestamp:
/// let forward = record.to_producer_record("alerts");
/// assert_eq!((forward.topic, forward.key), ("alerts", Some(&b"house-7"[..])));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: i64,
    /// Create time or log append time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<OwnedHeader>,
}

impl OwnedRecord {
    /// A copy of `record`, read from `partition` of `topic`.
    pub(crate) fn copy(topic: &str, partition: u32, record: &crate::storage::Record<'_>) -> OwnedRecord {
        OwnedRecord {
            topic: topic.to_string(),
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record.headers().map(|h| h.to_owned_header()).collect(),
        }
    }

    /// The headers, borrowed, in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'_>> {
        self.headers.iter().map(OwnedHeader::as_header)
    }

    /// The last header with this key (as Kafka's `Headers.lastHeader`).
    pub fn header(&self, key: &str) -> Option<Header<'_>> {
        self.headers().filter(|h| h.key == key.as_bytes()).last()
    }

    /// A record to send to `topic` with this record's key, value, headers and timestamp (its
    /// partition is left to the partitioner).
    pub fn to_producer_record<'a>(&'a self, topic: &'a str) -> ProducerRecord<'a> {
        ProducerRecord {
            topic,
            partition: None,
            timestamp: Some(self.timestamp),
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers().collect(),
        }
    }
}

/// A consumed record's place: what acknowledging it ([`Consumer::store_offset`],
/// [`Consumer::commit_record`]) needs. Implemented by [`ConsumerRecord`] and [`OwnedRecord`].
///
/// [`Consumer::store_offset`]: crate::Consumer::store_offset
/// [`Consumer::commit_record`]: crate::Consumer::commit_record
/// [`ConsumerRecord`]: crate::ConsumerRecord
pub trait Consumed {
    /// The record's topic.
    fn topic(&self) -> &str;
    /// The record's partition.
    fn partition(&self) -> u32;
    /// The record's offset.
    fn offset(&self) -> i64;
}

impl Consumed for OwnedRecord {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> u32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
}

impl Consumed for crate::ConsumerRecord<'_> {
    fn topic(&self) -> &str {
        self.topic
    }
    fn partition(&self) -> u32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
}
