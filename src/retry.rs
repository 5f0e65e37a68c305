//! Retries and dead letters: a record whose processing failed goes to a retry topic, to be
//! processed again after a delay, and after the last retry to a dead-letter topic that
//! carries the failure in its headers.
//!
//! The topics and headers follow Spring Kafka's non-blocking retries and Kafka Connect's
//! dead-letter queue, so tools written for either read them:
//!
//! - retry topics `<topic>-retry-0`, `<topic>-retry-1`, ... (one per delay), and the
//!   dead-letter topic `<topic>-dlt`;
//! - on every forwarded record: `retry_topic-attempts` (its delivery attempts so far counting
//!   the first, so 2 on the first retry topic, as Spring counts them; a 4-byte big-endian
//!   integer) and `retry_topic-backoff-timestamp` (when it is due again, in
//!   milliseconds since the Unix epoch, 8 bytes big-endian);
//! - on every forwarded record, set at its first failure and kept: Spring's
//!   `kafka_dlt-original-topic`, `-original-partition` (4 bytes big-endian),
//!   `-original-offset` and `-original-timestamp` (8 bytes big-endian) and
//!   `-original-consumer-group`;
//! - on the dead letter, `retry_topic-attempts` (the retries made) and the last failure: Spring's `kafka_dlt-exception-fqcn` and
//!   `kafka_dlt-exception-message`, and Kafka Connect's `__connect.errors.topic`,
//!   `.partition`, `.offset` (as text), `.exception.class.name` and `.exception.message`.
//!
//! [`RetryingConsumer`] runs the loop: it reads the topic and its retry topics, holds a retry
//! topic's partition (paused, at the record) until the record is due, and forwards failures.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::consumer::{Consumer, TopicPartition};
use crate::error::{Error, Result};
use crate::producer::{Producer, ProducerRecord, RecordMetadata};
use crate::record::OwnedRecord;
use crate::storage::{Header, now_ms};

/// Header names (Spring Kafka's and Kafka Connect's).
pub mod headers {
    /// Delivery attempts so far, counting the first (4 bytes, big-endian).
    pub const ATTEMPTS: &str = "retry_topic-attempts";
    /// When the record is due again, in ms since the Unix epoch (8 bytes, big-endian).
    pub const BACKOFF_TIMESTAMP: &str = "retry_topic-backoff-timestamp";
    /// The topic the record was first consumed from.
    pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
    /// Its partition (4 bytes, big-endian).
    pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
    /// Its offset (8 bytes, big-endian).
    pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
    /// Its timestamp (8 bytes, big-endian).
    pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
    /// The group that consumed it.
    pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
    /// The failure's kind (Spring's exception class name).
    pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
    /// The failure's message.
    pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
    /// Kafka Connect's names of the same facts, as text.
    pub const CONNECT_TOPIC: &str = "__connect.errors.topic";
    /// The original partition, as text.
    pub const CONNECT_PARTITION: &str = "__connect.errors.partition";
    /// The original offset, as text.
    pub const CONNECT_OFFSET: &str = "__connect.errors.offset";
    /// The failure's kind.
    pub const CONNECT_EXCEPTION_CLASS: &str = "__connect.errors.exception.class.name";
    /// The failure's message.
    pub const CONNECT_EXCEPTION_MESSAGE: &str = "__connect.errors.exception.message";
}

/// The longest failure message a forwarded record carries, in bytes.
pub const MAX_FAILURE_MESSAGE: usize = 1024;

/// Why a record failed: a kind (what Java names the exception class) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What failed, e.g. `deserialization` or the handler's error type.
    pub kind: String,
    /// The failure's message.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    /// The message is cut to [`MAX_FAILURE_MESSAGE`] bytes: it travels in a header of the
    /// forwarded record, which must stay within the topic's `max.message.bytes`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_FAILURE_MESSAGE {
            let mut end = MAX_FAILURE_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Failure {
            kind: kind.into(),
            message,
        }
    }

    /// The failure an error describes: its type's name and its message.
    pub fn of<E: std::fmt::Display + ?Sized>(error: &E) -> Self {
        Failure::new(std::any::type_name::<E>(), error.to_string())
    }
}

/// The value of a record's last header named `key`.
fn last<'a>(record: &'a OwnedRecord, key: &str) -> Option<&'a [u8]> {
    record.header(key).and_then(|h| h.value)
}

/// A header holding a big-endian two's-complement integer of 1 to 8 bytes: a fixed-width
/// Java `int` or `long`, or a `BigInteger`'s shortest bytes (as Spring writes the backoff
/// timestamp).
fn int_header(record: &OwnedRecord, key: &str) -> Option<i64> {
    let bytes = last(record, key)?;
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut wide = [fill; 8];
    wide[8 - bytes.len()..].copy_from_slice(bytes);
    Some(i64::from_be_bytes(wide))
}

/// Sends `record` to `topic` with the failure in its headers (see the module's list); the
/// record's own key, value, timestamp and headers go with it.
pub fn dead_letter(
    producer: &Producer,
    topic: &str,
    record: &OwnedRecord,
    failure: &Failure,
    group: Option<&str>,
) -> Result<RecordMetadata> {
    let mut out = Forward::of(record, group);
    if last(record, headers::ATTEMPTS).is_some() {
        // How many times it was tried before it was given up.
        let attempts = RetryPolicy::attempts(record);
        out.added
            .push((headers::ATTEMPTS, (attempts as i32).to_be_bytes().to_vec()));
    }
    out.text(headers::EXCEPTION_FQCN, &failure.kind);
    out.text(headers::EXCEPTION_MESSAGE, &failure.message);
    out.text(headers::CONNECT_TOPIC, &out.original_topic.clone());
    out.text(headers::CONNECT_PARTITION, &out.original_partition.to_string());
    out.text(headers::CONNECT_OFFSET, &out.original_offset.to_string());
    out.text(headers::CONNECT_EXCEPTION_CLASS, &failure.kind);
    out.text(headers::CONNECT_EXCEPTION_MESSAGE, &failure.message);
    producer.send(out.record(topic))
}

/// A record on its way to a retry or dead-letter topic: its own headers less the ones this
/// module sets, then the original's (kept from its first failure) and the new ones.
struct Forward<'a> {
    record: &'a OwnedRecord,
    added: Vec<(&'static str, Vec<u8>)>,
    original_topic: String,
    original_partition: i64,
    original_offset: i64,
}

impl<'a> Forward<'a> {
    fn of(record: &'a OwnedRecord, group: Option<&str>) -> Forward<'a> {
        let first = last(record, headers::ORIGINAL_TOPIC).is_none();
        let original_topic = match first {
            true => record.topic.clone(),
            false => String::from_utf8_lossy(last(record, headers::ORIGINAL_TOPIC).unwrap_or_default())
                .into_owned(),
        };
        let (partition, offset, timestamp) = match first {
            true => (record.partition.into(), record.offset, record.timestamp),
            false => (
                int_header(record, headers::ORIGINAL_PARTITION).unwrap_or(-1),
                int_header(record, headers::ORIGINAL_OFFSET).unwrap_or(-1),
                int_header(record, headers::ORIGINAL_TIMESTAMP).unwrap_or(-1),
            ),
        };
        let mut added = vec![
            (headers::ORIGINAL_TOPIC, original_topic.clone().into_bytes()),
            (
                headers::ORIGINAL_PARTITION,
                (partition as i32).to_be_bytes().to_vec(),
            ),
            (headers::ORIGINAL_OFFSET, offset.to_be_bytes().to_vec()),
            (headers::ORIGINAL_TIMESTAMP, timestamp.to_be_bytes().to_vec()),
        ];
        let group = match first {
            true => group.map(str::to_string),
            false => last(record, headers::ORIGINAL_CONSUMER_GROUP)
                .map(|g| String::from_utf8_lossy(g).into_owned()),
        };
        if let Some(group) = group {
            added.push((headers::ORIGINAL_CONSUMER_GROUP, group.into_bytes()));
        }
        Forward {
            record,
            added,
            original_topic,
            original_partition: partition,
            original_offset: offset,
        }
    }

    fn text(&mut self, key: &'static str, value: &str) {
        self.added.push((key, value.as_bytes().to_vec()));
    }

    fn record<'b>(&'b self, topic: &'b str) -> ProducerRecord<'b> {
        let set = |key: &[u8]| {
            std::str::from_utf8(key).is_ok_and(|k| {
                k.starts_with("retry_topic-")
                    || k.starts_with("kafka_dlt-")
                    || k.starts_with("__connect.errors.")
            })
        };
        let mut headers: Vec<Header<'b>> = self.record.headers().filter(|h| !set(h.key)).collect();
        headers.extend(self.added.iter().map(|(k, v)| Header::new(k, v)));
        ProducerRecord {
            topic,
            partition: None,
            timestamp: Some(self.record.timestamp),
            key: self.record.key.as_deref(),
            value: self.record.value.as_deref(),
            headers,
        }
    }
}

/// Where a failed record was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// To a retry topic, due again at `due` (ms since the Unix epoch).
    Retry {
        /// Where it was written.
        sent: RecordMetadata,
        /// When it is due.
        due: i64,
    },
    /// To the dead-letter topic: no retry is left.
    DeadLetter(RecordMetadata),
}

/// Retry topics with delays, then a dead-letter topic (Spring Kafka's non-blocking retries).
///
/// ```
/// use std::time::Duration;
/// use rivulet::retry::RetryPolicy;
/// let policy = RetryPolicy::new("payments", [Duration::from_secs(1), Duration::from_secs(30)]);
/// assert_eq!(policy.topics(), ["payments", "payments-retry-0", "payments-retry-1"]);
/// assert_eq!(policy.dead_letter(), "payments-dlt");
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    topic: String,
    delays: Vec<Duration>,
    dead_letter: String,
}

impl RetryPolicy {
    /// Retries of `topic`'s records, one retry topic per delay, then `<topic>-dlt`.
    pub fn new(topic: &str, delays: impl IntoIterator<Item = Duration>) -> Self {
        RetryPolicy {
            topic: topic.to_string(),
            delays: delays.into_iter().collect(),
            dead_letter: format!("{topic}-dlt"),
        }
    }

    /// Names another dead-letter topic.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = topic.into();
        self
    }

    /// The dead-letter topic.
    pub fn dead_letter(&self) -> &str {
        &self.dead_letter
    }

    /// The topic and its retry topics: what a consumer of them subscribes to.
    pub fn topics(&self) -> Vec<String> {
        std::iter::once(self.topic.clone())
            .chain((0..self.delays.len()).map(|i| self.retry_topic(i)))
            .collect()
    }

    fn retry_topic(&self, attempt: usize) -> String {
        format!("{}-retry-{attempt}", self.topic)
    }

    /// The delivery attempts of `record` so far, counting the first, as Spring counts them:
    /// 1 for a record of the topic itself, 2 on the first retry topic, and so on.
    pub fn attempts(record: &OwnedRecord) -> u32 {
        int_header(record, headers::ATTEMPTS).map_or(1, |n| n.clamp(1, i32::MAX.into()) as u32)
    }

    /// When `record` (of a retry topic) is due, in ms since the Unix epoch.
    pub fn due(record: &OwnedRecord) -> Option<i64> {
        int_header(record, headers::BACKOFF_TIMESTAMP)
    }

    /// Sends a record whose processing failed to its next retry topic, or to the dead-letter
    /// topic once every retry was made.
    pub fn fail(
        &self,
        producer: &Producer,
        record: &OwnedRecord,
        failure: &Failure,
        group: Option<&str>,
    ) -> Result<Forwarded> {
        let attempts = Self::attempts(record) as usize;
        // The first retry topic is for the second attempt.
        let retry = attempts - 1;
        let Some(delay) = self.delays.get(retry) else {
            return dead_letter(producer, &self.dead_letter, record, failure, group)
                .map(Forwarded::DeadLetter);
        };
        let due = now_ms().saturating_add(delay.as_millis().min(i64::MAX as u128) as i64);
        let mut out = Forward::of(record, group);
        out.added
            .push((headers::ATTEMPTS, (attempts as i32 + 1).to_be_bytes().to_vec()));
        out.added
            .push((headers::BACKOFF_TIMESTAMP, due.to_be_bytes().to_vec()));
        out.text(headers::EXCEPTION_FQCN, &failure.kind);
        out.text(headers::EXCEPTION_MESSAGE, &failure.message);
        let sent = producer.send(out.record(&self.retry_topic(retry)))?;
        Ok(Forwarded::Retry { sent, due })
    }
}

/// A consumer of a topic and its retry topics that runs a handler on each record, holds
/// retry topics' records until due, and forwards failures by its [`RetryPolicy`]: the
/// delayed-retry loop (seek, pause, resume) done once.
///
/// ```
/// use std::time::Duration;
/// use rivulet::retry::{RetryPolicy, RetryingConsumer};
/// use rivulet::{Broker, Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?; // creates the retry topics when first written
/// let producer = Producer::new(&broker);
/// producer.send(ProducerRecord::new("payments", b"card declined"))?;
///
/// let policy = RetryPolicy::new("payments", [Duration::from_millis(10)]);
/// let config = ConsumerConfig::default().group_id("billing").auto_offset_reset(OffsetReset::Earliest);
/// let mut payments = RetryingConsumer::new(Consumer::new(&broker, config), producer, policy)?;
/// let mut tries = 0;
/// while tries < 2 {
///     payments.poll(Duration::from_millis(100), |_record| {
///         tries += 1;
///         Err("the bank is down")
///     })?;
/// }
/// // Tried, retried once after 10 ms, then dead-lettered.
/// let mut dead = 0;
/// while dead == 0 {
///     dead = broker.partition("payments-dlt", 0).map_or(0, |p| p.high_watermark());
///     payments.poll(Duration::from_millis(10), |_| Ok::<(), &str>(()))?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RetryingConsumer {
    consumer: Consumer,
    producer: Producer,
    policy: RetryPolicy,
    /// Retry topics' partitions paused at a record not yet due, with when it is.
    held: BTreeMap<TopicPartition, i64>,
}

impl RetryingConsumer {
    /// Subscribes `consumer` to the policy's topics; failures are forwarded by `producer`.
    /// The retry topics and the dead-letter topic are created if missing, with the topic's
    /// partition count and the broker's defaults (as Spring creates them); the topic itself
    /// must exist.
    pub fn new(mut consumer: Consumer, producer: Producer, policy: RetryPolicy) -> Result<Self> {
        let broker = consumer.broker().clone();
        let partitions = broker.partition_count(&policy.topic)?;
        let more = policy
            .topics()
            .into_iter()
            .skip(1)
            .chain([policy.dead_letter.clone()]);
        for topic in more {
            match broker.create_topic(&topic, partitions, broker.inner.default_topic_config()) {
                Ok(()) | Err(Error::TopicExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        consumer.subscribe(policy.topics())?;
        Ok(RetryingConsumer {
            consumer,
            producer,
            policy,
            held: BTreeMap::new(),
        })
    }

    /// The consumer underneath.
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// Polls once (for at most `timeout`, less if a held record falls due sooner) and runs
    /// `handler` on each record that is due. A record the handler fails goes to its next
    /// retry topic or the dead-letter topic; either way it is done, and the group's offsets
    /// are committed past the records handled. Returns how many were handled.
    pub fn poll<E: std::fmt::Display>(
        &mut self,
        timeout: Duration,
        mut handler: impl FnMut(&OwnedRecord) -> std::result::Result<(), E>,
    ) -> Result<usize> {
        self.resume_due()?;
        let now = now_ms();
        let soonest = self
            .held
            .values()
            .min()
            .map(|&due| Duration::from_millis(due.saturating_sub(now).max(0) as u64));
        let records = self.consumer.poll(soonest.map_or(timeout, |s| s.min(timeout)))?;
        let group = self.consumer.group().map(str::to_string);
        let mut handled = 0;
        // Per partition, the first record not handled yet: where it is read again if a
        // failure cannot be forwarded.
        let mut unhandled: BTreeMap<TopicPartition, i64> = records.firsts().into_iter().collect();
        for r in &records {
            let tp = r.topic_partition();
            if self.held.contains_key(&tp) {
                continue;
            }
            let record = r.detach();
            if let Some(due) = RetryPolicy::due(&record)
                && r.topic != self.policy.topic
                && due > now_ms()
            {
                // Not due: the partition waits at it, paused.
                self.consumer.seek(&tp, r.offset)?;
                self.consumer.pause(std::slice::from_ref(&tp))?;
                self.held.insert(tp, due);
                continue;
            }
            if let Err(e) = handler(&record) {
                let failure = Failure::new(std::any::type_name::<E>(), e.to_string());
                if let Err(e) = self
                    .policy
                    .fail(&self.producer, &record, &failure, group.as_deref())
                {
                    for (tp, offset) in &unhandled {
                        if !self.held.contains_key(tp)
                            && let Err(seek) = self.consumer.seek(tp, *offset)
                        {
                            log::warn!("{tp}: cannot move back to {offset}: {seek}");
                        }
                    }
                    return Err(e);
                }
            }
            handled += 1;
            unhandled.insert(tp, r.offset + 1);
            match self.consumer.store_offset(&record) {
                Ok(()) | Err(Error::IllegalState(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if handled > 0 && group.is_some() {
            self.consumer.commit()?;
        }
        Ok(handled)
    }

    /// Resumes the held partitions whose record is due (and forgets those no longer
    /// assigned).
    fn resume_due(&mut self) -> Result<()> {
        let assigned = self.consumer.assignment();
        self.held.retain(|tp, _| assigned.contains(tp));
        let now = now_ms();
        let due: Vec<TopicPartition> = self
            .held
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        if !due.is_empty() {
            self.consumer.resume(&due)?;
            for tp in &due {
                self.held.remove(tp);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::OwnedHeader;

    fn with_header(key: &str, value: &[u8]) -> OwnedRecord {
        OwnedRecord {
            topic: "t-retry-0".into(),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers: vec![OwnedHeader::new(key, value)],
        }
    }

    #[test]
    fn a_long_failure_message_is_cut_at_a_character() {
        let long = "é".repeat(MAX_FAILURE_MESSAGE); // two bytes each
        let failure = Failure::new("handler", long);
        assert_eq!(failure.message.len(), MAX_FAILURE_MESSAGE);
        assert!(failure.message.chars().all(|c| c == 'é'));
        assert_eq!(Failure::new("handler", "short").message, "short");
    }

    #[test]
    fn integer_headers_read_java_ints_longs_and_big_integers() {
        // A BigInteger's shortest bytes, as Spring writes the backoff timestamp.
        let due: i64 = 1_764_500_000_000;
        let short = &due.to_be_bytes()[2..];
        assert_eq!(short.len(), 6);
        assert_eq!(
            RetryPolicy::due(&with_header(headers::BACKOFF_TIMESTAMP, short)),
            Some(due)
        );
        assert_eq!(
            RetryPolicy::due(&with_header(headers::BACKOFF_TIMESTAMP, &due.to_be_bytes())),
            Some(due)
        );
        assert_eq!(
            RetryPolicy::attempts(&with_header(headers::ATTEMPTS, &3i32.to_be_bytes())),
            3
        );
        // Negative values sign-extend; nonsense is ignored.
        assert_eq!(int_header(&with_header("x", &[0xff]), "x"), Some(-1));
        assert_eq!(int_header(&with_header("x", &[0; 9]), "x"), None);
        assert_eq!(RetryPolicy::attempts(&with_header("other", b"")), 1);
    }
}
