//! Typed records: serializers and deserializers (Kafka's `Serializer` and `Deserializer`),
//! a [`TypedProducer`] that encodes keys and values, and a [`TypedConsumer`] that decodes them
//! and sends what it cannot decode where its [`OnDecodeError`] policy says.
//!
//! The encodings are Kafka's Java clients', so records cross between rivulet and Kafka
//! applications: [`Utf8`] is `StringSerializer`; [`BigEndian`] is `ShortSerializer`,
//! `IntegerSerializer`, `LongSerializer`, `FloatSerializer` and `DoubleSerializer`; [`Raw`]
//! is `ByteArraySerializer`; [`Json`] (feature `json`) is JSON through serde, as Kafka's
//! `JsonSerializer` writes it (no schema envelope).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use crate::consumer::{Consumer, ConsumerRecord};
use crate::error::{Error, Result};
use crate::producer::{Producer, ProducerRecord, RecordMetadata, SendFuture};
use crate::record::Consumed;
use crate::storage::{Header, OwnedHeader};

/// Encodes values of `T` into a record's key or value bytes.
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// Appends `value`'s bytes for `topic` to `out`. A value that cannot be encoded is an
    /// error ([`Error::Serialization`]), and nothing is sent.
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<()>;
}

/// Decodes a record's key or value bytes into a `T`.
pub trait Deserializer<T>: Send + Sync {
    /// The value `bytes` of `topic` hold; an error (a reason) if they hold none.
    fn deserialize(&self, topic: &str, bytes: &[u8]) -> std::result::Result<T, String>;
}

/// Bytes as they are (Kafka's `ByteArraySerializer` and `ByteArrayDeserializer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Serializer<[u8]> for Raw {
    fn serialize(&self, _: &str, value: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(value);
        Ok(())
    }
}

impl Serializer<Vec<u8>> for Raw {
    fn serialize(&self, _: &str, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(value);
        Ok(())
    }
}

impl Deserializer<Vec<u8>> for Raw {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
        Ok(bytes.to_vec())
    }
}

/// Text as UTF-8 (Kafka's `StringSerializer` and `StringDeserializer` at their default
/// encoding). Bytes that are not UTF-8 do not decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Serializer<str> for Utf8 {
    fn serialize(&self, _: &str, value: &str, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
}

impl Serializer<String> for Utf8 {
    fn serialize(&self, _: &str, value: &String, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
}

impl Deserializer<String> for Utf8 {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("not UTF-8: {e}"))
    }
}

/// Numbers in big-endian byte order, as Kafka's Java `ShortSerializer` (`i16`),
/// `IntegerSerializer` (`i32`), `LongSerializer` (`i64`), `FloatSerializer` (`f32`) and
/// `DoubleSerializer` (`f64`) write them. Bytes of another length do not decode.
///
/// ```
/// use rivulet::{BigEndian, Deserializer, Serializer};
/// let mut bytes = Vec::new();
/// BigEndian.serialize("t", &258i32, &mut bytes)?;
/// assert_eq!(bytes, [0, 0, 1, 2]);
/// let back: i32 = BigEndian.deserialize("t", &bytes).unwrap();
/// assert_eq!(back, 258);
/// assert!(Deserializer::<i64>::deserialize(&BigEndian, "t", &bytes).is_err()); // 4 bytes, not 8
/// # Ok::<(), rivulet::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct BigEndian;

macro_rules! big_endian {
    ($($t:ty),*) => {$(
        impl Serializer<$t> for BigEndian {
            fn serialize(&self, _: &str, value: &$t, out: &mut Vec<u8>) -> Result<()> {
                out.extend_from_slice(&value.to_be_bytes());
                Ok(())
            }
        }

        impl Deserializer<$t> for BigEndian {
            fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<$t, String> {
                let array = bytes.try_into().map_err(|_| {
                    format!("{} bytes, not the {} of a {}", bytes.len(), size_of::<$t>(), stringify!($t))
                })?;
                Ok(<$t>::from_be_bytes(array))
            }
        }
    )*};
}

big_endian!(i16, i32, i64, f32, f64);

/// JSON through serde (feature `json`): any `Serialize` type in, any `DeserializeOwned`
/// type out. Bytes that are not JSON of the type do not decode.
///
/// ```
/// use rivulet::{Deserializer, Json, Serializer};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Reading { meter: String, kva: f64 }
/// let mut bytes = Vec::new();
/// Json.serialize("meters", &Reading { meter: "house-7".into(), kva: 2.3 }, &mut bytes)?;
/// assert_eq!(bytes, br#"{"meter":"house-7","kva":2.3}"#);
/// let back: Reading = Json.deserialize("meters", &bytes).unwrap();
/// assert_eq!(back.meter, "house-7");
/// # Ok::<(), rivulet::Error>(())
/// ```
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl<T: serde::Serialize + ?Sized> Serializer<T> for Json {
    fn serialize(&self, topic: &str, value: &T, out: &mut Vec<u8>) -> Result<()> {
        serde_json::to_writer(out, value).map_err(|e| Error::Serialization {
            topic: topic.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(feature = "json")]
impl<T: serde::de::DeserializeOwned> Deserializer<T> for Json {
    fn deserialize(&self, _: &str, bytes: &[u8]) -> std::result::Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A producer of typed records: keys encoded by `KS`, values by `VS` (Kafka's
/// `key.serializer` and `value.serializer`), sent through a [`Producer`].
///
/// ```
/// use rivulet::{BigEndian, Broker, Producer, TopicConfig, TypedProducer, Utf8};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("scores", 1, TopicConfig::default())?;
/// let scores = TypedProducer::new(Producer::new(&broker), Utf8, BigEndian);
/// scores.send("scores", Some("ada"), Some(&42i64))?;
/// scores.send::<str, i64>("scores", Some("ada"), None)?; // a tombstone
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TypedProducer<KS, VS> {
    producer: Producer,
    keys: KS,
    values: VS,
}

impl<KS, VS> TypedProducer<KS, VS> {
    /// Sends through `producer`, encoding keys with `keys` and values with `values`.
    pub fn new(producer: Producer, keys: KS, values: VS) -> Self {
        TypedProducer {
            producer,
            keys,
            values,
        }
    }

    /// The producer it sends through.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    fn encode<K: ?Sized, V: ?Sized>(
        &self,
        topic: &str,
        key: Option<&K>,
        value: Option<&V>,
    ) -> Result<(Encoded, Encoded)>
    where
        KS: Serializer<K>,
        VS: Serializer<V>,
    {
        let key = key
            .map(|k| {
                let mut out = Vec::new();
                self.keys.serialize(topic, k, &mut out).map(|()| out)
            })
            .transpose()?;
        let value = value
            .map(|v| {
                let mut out = Vec::new();
                self.values.serialize(topic, v, &mut out).map(|()| out)
            })
            .transpose()?;
        Ok((key, value))
    }

    /// Sends a record (a `None` value is a tombstone) and waits for it, as
    /// [`Producer::send`].
    pub fn send<K: ?Sized, V: ?Sized>(
        &self,
        topic: &str,
        key: Option<&K>,
        value: Option<&V>,
    ) -> Result<RecordMetadata>
    where
        KS: Serializer<K>,
        VS: Serializer<V>,
    {
        self.send_with(topic, key, value, &[])
    }

    /// [`TypedProducer::send`] with headers.
    pub fn send_with<K: ?Sized, V: ?Sized>(
        &self,
        topic: &str,
        key: Option<&K>,
        value: Option<&V>,
        headers: &[Header<'_>],
    ) -> Result<RecordMetadata>
    where
        KS: Serializer<K>,
        VS: Serializer<V>,
    {
        let (key, value) = self.encode(topic, key, value)?;
        self.producer.send(raw(topic, &key, &value, headers))
    }

    /// Queues a record and returns the future of its acknowledgement, as
    /// [`Producer::send_async`]. An encoding error is the future's result.
    pub fn send_async<K: ?Sized, V: ?Sized>(
        &self,
        topic: &str,
        key: Option<&K>,
        value: Option<&V>,
    ) -> SendFuture
    where
        KS: Serializer<K>,
        VS: Serializer<V>,
    {
        match self.encode(topic, key, value) {
            Ok((key, value)) => self.producer.send_async(raw(topic, &key, &value, &[])),
            Err(e) => SendFuture::failed(e),
        }
    }
}

/// A key or value encoded (`None`: null).
type Encoded = Option<Vec<u8>>;

fn raw<'a>(
    topic: &'a str,
    key: &'a Option<Vec<u8>>,
    value: &'a Option<Vec<u8>>,
    headers: &[Header<'a>],
) -> ProducerRecord<'a> {
    ProducerRecord {
        topic,
        key: key.as_deref(),
        value: value.as_deref(),
        headers: headers.to_vec(),
        ..Default::default()
    }
}

/// A decoded record: what [`TypedConsumer::poll`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedRecord<K, V> {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: i64,
    /// Create time or log append time, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The decoded key.
    pub key: Option<K>,
    /// The decoded value; `None` is a tombstone.
    pub value: Option<V>,
    /// The headers, in order.
    pub headers: Vec<OwnedHeader>,
}

impl<K, V> Consumed for TypedRecord<K, V> {
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

/// What a [`TypedConsumer`] does with a record whose key or value does not decode.
#[derive(Debug, Clone)]
pub enum OnDecodeError {
    /// `poll` fails with [`Error::Deserialization`], and the consumer's position stays at the
    /// record (as Kafka's `RecordDeserializationException`): the next poll fails again,
    /// until the application seeks past it. Records before it in the same poll are
    /// returned first. The default.
    Fail,
    /// The record is logged and left out.
    Skip,
    /// The record is sent, as it was, to this topic with the failure in its headers (Kafka
    /// Connect's `__connect.errors.*` and Spring's `kafka_dlt-*` names, see
    /// [`dead_letter`](crate::retry::dead_letter)), and left out.
    DeadLetter(String),
}

/// A consumer of typed records: keys decoded by `KD`, values by `VD` (Kafka's
/// `key.deserializer` and `value.deserializer`), undecodable records handled by its
/// [`OnDecodeError`] policy. The [`Consumer`] it wraps is at hand for everything else
/// ([`TypedConsumer::consumer`]).
///
/// ```
/// use std::time::Duration;
/// use rivulet::{
///     BigEndian, Broker, Consumer, ConsumerConfig, OffsetReset, OnDecodeError, Producer,
///     ProducerRecord, TopicConfig, TopicPartition, TypedConsumer, Utf8,
/// };
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("scores", 1, TopicConfig::default())?;
/// let producer = Producer::new(&broker);
/// producer.send(ProducerRecord::new("scores", &42i64.to_be_bytes()).key(b"ada"))?;
/// producer.send(ProducerRecord::new("scores", b"oops").key(b"bob"))?; // not an i64
///
/// let config = ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest);
/// let mut consumer = Consumer::new(&broker, config);
/// consumer.assign(&[TopicPartition::new("scores", 0)])?;
/// let mut scores = TypedConsumer::<String, i64, _, _>::new(consumer, Utf8, BigEndian)
///     .on_decode_error(OnDecodeError::DeadLetter("scores-dlt".into()));
/// let records = scores.poll(Duration::from_secs(1))?;
/// assert_eq!(records.len(), 1);
/// assert_eq!((records[0].key.as_deref(), records[0].value), (Some("ada"), Some(42)));
/// assert_eq!(broker.partition("scores-dlt", 0)?.high_watermark(), 1); // bob's record
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TypedConsumer<K, V, KD, VD> {
    consumer: Consumer,
    keys: KD,
    values: VD,
    on_error: OnDecodeError,
    /// Made when the first record is dead-lettered.
    dead_letters: Option<Producer>,
    /// A record that did not decode, for the next poll to report.
    failed: Option<Error>,
    _records: PhantomData<fn() -> (K, V)>,
}

impl<K, V, KD, VD> std::fmt::Debug for TypedConsumer<K, V, KD, VD> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedConsumer")
            .field("consumer", &self.consumer)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl<K, V, KD: Deserializer<K>, VD: Deserializer<V>> TypedConsumer<K, V, KD, VD> {
    /// Decodes what `consumer` reads with `keys` and `values`; undecodable records fail the
    /// poll ([`OnDecodeError::Fail`]) unless told otherwise.
    pub fn new(consumer: Consumer, keys: KD, values: VD) -> Self {
        TypedConsumer {
            consumer,
            keys,
            values,
            on_error: OnDecodeError::Fail,
            dead_letters: None,
            failed: None,
            _records: PhantomData,
        }
    }

    /// What to do with a record that does not decode.
    pub fn on_decode_error(mut self, policy: OnDecodeError) -> Self {
        self.on_error = policy;
        self
    }

    /// The consumer underneath (to subscribe, assign, seek, commit).
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// The consumer back.
    pub fn into_inner(self) -> Consumer {
        self.consumer
    }

    /// Polls as [`Consumer::poll`] and decodes the records. Under [`OnDecodeError::Fail`], a
    /// partition stops at a record that does not decode: the records decoded before it (of
    /// any partition) are returned, and the next poll fails with [`Error::Deserialization`]
    /// at it; its position stays there until the application seeks past it. A dead letter
    /// that cannot be written fails the poll and hands out none of its records: they are read
    /// again.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<TypedRecord<K, V>>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let records = self.consumer.poll(timeout)?;
        let firsts = records.firsts();
        let mut forwarding = None;
        // Per partition, the offset after the last record dealt with (returned, skipped or
        // dead-lettered): where it is read again from if a dead letter cannot be written.
        let mut done: BTreeMap<crate::TopicPartition, i64> = BTreeMap::new();
        let mut out = Vec::with_capacity(records.len());
        // Partitions stopped at a record that does not decode, with the first such error.
        let mut halted: Vec<(crate::TopicPartition, i64, String)> = Vec::new();
        for r in &records {
            let tp = r.topic_partition();
            if halted.iter().any(|(h, _, _)| *h == tp) {
                continue;
            }
            let next = r.offset + 1;
            match self.decode(&r) {
                Ok(decoded) => {
                    out.push(decoded);
                    done.insert(tp, next);
                }
                Err(reason) => match &self.on_error {
                    OnDecodeError::Fail => halted.push((tp, r.offset, reason)),
                    OnDecodeError::Skip => {
                        log::warn!(
                            "{}-{} offset {} skipped: {reason}",
                            r.topic,
                            r.partition,
                            r.offset
                        );
                        done.insert(tp, next);
                    }
                    OnDecodeError::DeadLetter(topic) => {
                        let producer = self
                            .dead_letters
                            .get_or_insert_with(|| Producer::new(self.consumer.broker()));
                        let failure = crate::retry::Failure::new("deserialization", &reason);
                        let group = self.consumer.group();
                        if let Err(e) =
                            crate::retry::dead_letter(producer, topic, &r.detach(), &failure, group)
                        {
                            forwarding = Some(e);
                            break;
                        }
                        done.insert(tp, next);
                    }
                },
            }
        }
        if let Some(e) = forwarding {
            // What was dealt with stays dealt with (nothing is dead-lettered twice); the rest
            // is read again. The records decoded so far are returned, the error next.
            for (tp, first) in &firsts {
                let at = done.get(tp).copied().unwrap_or(*first);
                if let Err(seek) = self.consumer.seek(tp, at) {
                    log::warn!("{tp}: cannot move back to {at}: {seek}");
                }
            }
            if out.is_empty() {
                return Err(e);
            }
            self.failed = Some(e);
            return Ok(out);
        }
        // A halted partition is read again from its bad record: the next poll meets it first.
        for (tp, offset, _) in &halted {
            self.consumer.seek(tp, *offset)?;
        }
        let Some((tp, offset, reason)) = halted.into_iter().next() else {
            return Ok(out);
        };
        let error = Error::Deserialization {
            topic: tp.topic,
            partition: tp.partition,
            offset,
            reason,
        };
        if out.is_empty() {
            return Err(error);
        }
        // Records decoded before it are returned first; the error is the next poll's.
        self.failed = Some(error);
        Ok(out)
    }

    fn decode(&self, r: &ConsumerRecord<'_>) -> std::result::Result<TypedRecord<K, V>, String> {
        let key = r
            .key
            .map(|k| self.keys.deserialize(r.topic, k))
            .transpose()
            .map_err(|e| format!("key: {e}"))?;
        let value = r
            .value
            .map(|v| self.values.deserialize(r.topic, v))
            .transpose()
            .map_err(|e| format!("value: {e}"))?;
        Ok(TypedRecord {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key,
            value,
            headers: r.headers().map(|h| h.to_owned_header()).collect(),
        })
    }
}
