//! [`Producer`]: sends records to topics.
//!
//! Records from many threads are batched across callers by combining: a sender encodes its
//! record straight into the partition's open batch under a short lock, and whoever finds no
//! append under way takes the open batch, appends it (one write, one fsync under
//! `Fsync::Always`) and hands every record in it its offset. A lone sender appends at once, so
//! no linger delay is needed; under load, batches grow by themselves while an append is in
//! flight. `send` returns when its record is delivered (durable under the topic's policy).
//! Senders whose records wait on an append to the page cache watch for it briefly before
//! sleeping: the append is over sooner than a sleep and a wake-up would be.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};

use crate::broker::{Broker, Topic, refuse_internal};
use crate::config::{CompressionType, Fsync};
use crate::error::{Error, Result};
use crate::storage::{
    AppendInfo, BatchBuilder, Compression, HEADER_LEN, Header, OwnedHeader, PartitionLog, RecordBatch,
    TimestampType, now_ms, watch,
};

/// Kafka's murmur2 hash, as the Java client computes it for keyed partitioning.
///
/// ```
/// assert_eq!(rivulet::murmur2(b"kafka"), 0xd067cf64);
/// assert_eq!(rivulet::murmur2(b""), 0x106e08d9);
/// ```
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Chooses a record's partition.
///
/// ```
/// use std::sync::Arc;
/// use rivulet::storage::Compression;
/// use rivulet::{Broker, Partitioner, Producer, ProducerRecord, TopicConfig};
///
/// /// Keys starting with "eu-" go to partition 0, the rest to partition 1.
/// #[derive(Debug)]
/// struct ByRegion;
///
/// impl Partitioner for ByRegion {
///     fn partition(&self, _topic: &str, key: Option<&[u8]>, _partitions: u32) -> Option<u32> {
///         key.map(|k| if k.starts_with(b"eu-") { 0 } else { 1 })
///     }
/// }
///
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("orders", 2, TopicConfig::default())?;
/// let producer = Producer::with_options(&broker, Arc::new(ByRegion), Compression::None);
/// let sent = producer.send(ProducerRecord::new("orders", b"42 EUR").key(b"eu-7"))?;
/// assert_eq!(sent.partition, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// The partition (below `partitions`) for a record, or `None` to leave an unkeyed record
    /// to the producer's sticky partitioning.
    fn partition(&self, topic: &str, key: Option<&[u8]>, partitions: u32) -> Option<u32>;
}

/// Kafka's default: keyed records go to `(murmur2(key) & 0x7fffffff) % partitions`, as the
/// Java client does, so both put a key in the same partition; unkeyed records are sticky
/// (KIP-480): they go to one partition until its batch is appended, then to another.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultPartitioner;

impl Partitioner for DefaultPartitioner {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, partitions: u32) -> Option<u32> {
        key.map(|k| (murmur2(k) & 0x7fff_ffff) % partitions)
    }
}

/// A record to send.
///
/// ```
/// use rivulet::ProducerRecord;
/// let record = ProducerRecord::new("orders", b"{\"total\": 42}")
///     .key(b"customer-7") // same key, same partition
///     .header("source", b"web")
///     .timestamp(1_700_000_000_000);
/// # let _ = record;
/// ```
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// An explicit partition; otherwise the partitioner chooses.
    pub partition: Option<u32>,
    /// Create time in milliseconds since the Unix epoch; default now.
    pub timestamp: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: Vec<Header<'a>>,
}

impl<'a> ProducerRecord<'a> {
    /// A record with a value.
    pub fn new(topic: &'a str, value: &'a [u8]) -> Self {
        ProducerRecord {
            topic,
            value: Some(value),
            ..Default::default()
        }
    }

    /// A tombstone: a record with `key` and no value, which tells a compacted topic to drop
    /// the key's earlier records (and, after `delete.retention.ms`, itself).
    ///
    /// ```
    /// use rivulet::ProducerRecord;
    /// let delete = ProducerRecord::tombstone("accounts", b"acct-7");
    /// assert_eq!((delete.key, delete.value), (Some(&b"acct-7"[..]), None));
    /// ```
    pub fn tombstone(topic: &'a str, key: &'a [u8]) -> Self {
        ProducerRecord {
            topic,
            key: Some(key),
            ..Default::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the create time, in milliseconds since the Unix epoch. A negative one is refused
    /// when the record is sent ([`Error::InvalidTimestamp`]).
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: &'a str, value: &'a [u8]) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Adds headers (a record's own, to forward it, say).
    pub fn headers(mut self, headers: impl IntoIterator<Item = Header<'a>>) -> Self {
        self.headers.extend(headers);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp: its create time, or the log append time if the topic uses it.
    pub timestamp: i64,
}

/// Sends records to a broker's topics. Cheap to clone; share one between threads so their
/// records are batched together.
///
/// ```
/// use rivulet::{Broker, Producer, ProducerRecord, TopicConfig};
/// let dir = tempfile::tempdir()?;
/// let broker = Broker::open(dir.path())?;
/// broker.create_topic("events", 2, TopicConfig::default())?;
/// let producer = Producer::new(&broker);
/// let meta = producer.send(ProducerRecord::new("events", b"hello").key(b"k1"))?;
/// assert_eq!(meta.offset, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

#[derive(Debug)]
struct ProducerInner {
    broker: Broker,
    partitioner: Arc<dyn Partitioner>,
    compression: Compression,
    /// `buffer.memory`: the sealed bytes a queue holds before asynchronous sends wait.
    buffer_memory: usize,
    queues: Mutex<HashMap<(String, u32), Arc<Queue>>>,
    sticky: Mutex<HashMap<String, u32>>,
    seed: AtomicU64,
}

/// One partition's open batch and the records waiting on it.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    done: Condvar,
    /// Appends finished so far, for senders watching without the lock.
    appended: AtomicU64,
}

impl Queue {
    /// Waits until the append under way finishes (the caller saw `appending` under the lock).
    ///
    /// An append to the page cache takes a few microseconds, less than putting a thread to
    /// sleep and waking it again costs (a context switch each way, and the appender's system
    /// call to wake it). So unless the append waits for the disk (`quick` is false), the
    /// sender first watches `appended` without the lock, giving its core to other threads
    /// (the appender among them) between looks, and sleeps on `done` only if the append takes
    /// longer than `SPIN`.
    fn wait_for_append(&self, state: &mut parking_lot::MutexGuard<'_, QueueState>, quick: bool) {
        const SPIN: Duration = Duration::from_micros(50);
        if !quick {
            self.done.wait(state);
            return;
        }
        let seen = self.appended.load(Ordering::Acquire);
        let finished = parking_lot::MutexGuard::unlocked(state, || {
            watch(SPIN, || self.appended.load(Ordering::Acquire) != seen)
        });
        // Checked again under the lock: the appender clears `appending` and notifies under it,
        // so a sleep that starts here cannot miss the wake-up.
        if !finished && state.appending {
            self.done.wait(state);
        }
    }
}

#[derive(Debug, Default)]
struct QueueState {
    /// Records encoded and not yet appended.
    open: Option<BatchBuilder>,
    /// The generation of `open`; each append takes one generation.
    generation: u64,
    /// Blocking senders with a record in `open`.
    open_blocking: usize,
    /// Where asynchronous senders with a record in `open` learn its outcome.
    open_delivery: Option<Arc<Delivery>>,
    /// Full batches of asynchronous senders, sealed while another append was under way, in
    /// generation order (all before `open`); appended before it.
    sealed: VecDeque<Sealed>,
    /// The bytes of `sealed`, bounded by the producer's `buffer.memory`.
    sealed_bytes: usize,
    /// Records of asynchronous senders waiting for room, in the order they were sent: they
    /// join batches (before any later asynchronous send) as sealed batches are appended.
    overflow: VecDeque<Overflow>,
    appending: bool,
    /// A thread appends until no record is left (started by an asynchronous sender).
    draining: bool,
    /// Outcomes of appended generations, with the number of blocking senders yet to read
    /// each.
    finished: HashMap<u64, (Arc<Outcome>, usize)>,
}

/// A full batch waiting its turn to be appended.
#[derive(Debug)]
struct Sealed {
    batch: BatchBuilder,
    generation: u64,
    blocking: usize,
    delivery: Option<Arc<Delivery>>,
}

/// The most bytes of sealed batches a partition's queue holds for asynchronous senders by
/// default (Kafka's `buffer.memory` default); a sender past it waits for room.
const BUFFER_BYTES: usize = 32 << 20;

/// Settings of a [`Producer`], settable by Kafka's producer names.
///
/// ```
/// use rivulet::{Broker, Producer, ProducerConfig};
/// let mut config = ProducerConfig::default();
/// config.set("compression.type", "zstd")?;
/// config.set("buffer.memory", "67108864")?;
/// assert!(config.set("acks", "all").is_err()); // the topic's fsync policy says when a send is acknowledged
/// # let dir = tempfile::tempdir()?;
/// # let broker = Broker::open(dir.path())?;
/// let producer = Producer::with_config(&broker, config);
/// # let _ = producer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    partitioner: Arc<dyn Partitioner>,
    compression: Compression,
    buffer_memory: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            partitioner: Arc::new(DefaultPartitioner),
            compression: Compression::None,
            buffer_memory: BUFFER_BYTES,
        }
    }
}

impl ProducerConfig {
    /// The partitioner (Kafka's `partitioner.class`). Default [`DefaultPartitioner`].
    pub fn partitioner(mut self, partitioner: Arc<dyn Partitioner>) -> Self {
        self.partitioner = partitioner;
        self
    }

    /// `compression.type`: the codec of the producer's batches (a topic's own
    /// `compression.type`, if set to a codec, wins). Default none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// `buffer.memory`: the most bytes of batches a partition's queue holds for
    /// [`Producer::send_async`] before further records wait. Default 32 MiB; at least 1.
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes.max(1);
        self
    }

    /// Sets one setting by its Kafka producer name: `compression.type` (`none`, `gzip`,
    /// `snappy`, `lz4`, `zstd`) or `buffer.memory`. Other names (`acks`, `linger.ms`,
    /// `bootstrap.servers`: an embedded producer's sends are acknowledged by the topic's
    /// fsync policy and batched as they come) and unparsable values are errors and change
    /// nothing.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = |name: &'static str, reason: &'static str| Error::InvalidConfig {
            name,
            value: value.to_string(),
            reason,
        };
        match name {
            "compression.type" => {
                self.compression = match value.trim() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "snappy" => Compression::Snappy,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    _ => return Err(bad("compression.type", "none, gzip, snappy, lz4 or zstd")),
                }
            }
            "buffer.memory" => {
                self.buffer_memory = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| bad("buffer.memory", "a count of bytes, at least 1"))?;
            }
            _ => {
                return Err(Error::InvalidConfig {
                    name: "producer config",
                    value: name.to_string(),
                    reason: "not a setting of an embedded producer",
                });
            }
        }
        Ok(())
    }
}

/// A record of an asynchronous sender waiting for room, with what its batch needs.
#[derive(Debug)]
struct Overflow {
    record: OwnedSend,
    codec: Compression,
    max: usize,
    size: usize,
    place: Arc<Place>,
}

/// Where a waiting record went once it joined a batch: its delivery and index there.
#[derive(Debug, Default)]
struct Place {
    at: OnceLock<(Arc<Delivery>, usize)>,
    waker: Mutex<Option<Waker>>,
}

impl Place {
    fn set(&self, at: (Arc<Delivery>, usize)) {
        let _ = self.at.set(at);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }
}

impl QueueState {
    /// Whether a record of `size` needs the open batch sealed (it does not fit in it).
    fn must_seal(&self, size: usize, max: usize) -> bool {
        self.open
            .as_ref()
            .is_some_and(|open| !open.is_empty() && open.size() + size > max)
    }

    /// Whether an asynchronous sender's record of `size` may join a batch now: it needs no
    /// seal, or the sealed batches hold less than `buffer` bytes.
    fn has_room(&self, size: usize, max: usize, buffer: usize) -> bool {
        !self.must_seal(size, max) || self.sealed_bytes < buffer
    }

    /// Adds an asynchronous sender's record to the open batch, sealing a full one first;
    /// returns the batch's delivery and the record's index in it.
    fn admit(
        &mut self,
        codec: Compression,
        max: usize,
        size: usize,
        record: &ProducerRecord<'_>,
        timestamp: i64,
    ) -> (Arc<Delivery>, usize) {
        if self.must_seal(size, max) {
            let batch = self
                .open
                .replace(BatchBuilder::new(codec))
                .expect("a batch to seal");
            self.sealed_bytes += batch.size();
            let sealed = Sealed {
                batch,
                generation: self.generation,
                blocking: std::mem::take(&mut self.open_blocking),
                delivery: self.open_delivery.take(),
            };
            self.sealed.push_back(sealed);
            self.generation += 1;
        }
        let open = self.open.get_or_insert_with(|| BatchBuilder::new(codec));
        open.push(timestamp, record.key, record.value, &record.headers);
        let index = open.len() - 1;
        (
            self.open_delivery.get_or_insert_with(Default::default).clone(),
            index,
        )
    }

    /// Moves waiting records into batches, in order, while there is room.
    fn admit_overflow(&mut self, buffer: usize) {
        while let Some(next) = self.overflow.front() {
            if !self.has_room(next.size, next.max, buffer) {
                return;
            }
            let next = self.overflow.pop_front().expect("looked at");
            let at = self.admit(
                next.codec,
                next.max,
                next.size,
                &next.record.record(),
                next.record.timestamp,
            );
            next.place.set(at);
        }
    }
}

/// One generation's outcome, for the asynchronous senders of its records.
#[derive(Debug, Default)]
struct Delivery {
    outcome: OnceLock<Arc<Outcome>>,
    /// Senders waiting for it, each at the slot it registered.
    wakers: Mutex<Vec<Waker>>,
}

impl Delivery {
    fn complete(&self, outcome: Arc<Outcome>) {
        let _ = self.outcome.set(outcome);
        for waker in self.wakers.lock().drain(..) {
            waker.wake();
        }
    }
}

/// How one generation's batch was appended: whole, or (if the log refused it as too large)
/// in parts, each with the index of its first record in the batch.
#[derive(Debug)]
struct Outcome {
    parts: Vec<(usize, Result<AppendInfo, Arc<Error>>)>,
}

impl Outcome {
    /// The append the record at `index` of the batch went into, and the record's offset.
    fn of(&self, index: usize) -> Result<(AppendInfo, i64)> {
        let (first, result) = self
            .parts
            .iter()
            .rev()
            .find(|(first, _)| *first <= index)
            .expect("the first part starts at index 0");
        match result {
            Ok(info) => Ok((*info, info.base_offset + (index - first) as i64)),
            Err(e) => Err(Error::BatchFailed { source: e.clone() }),
        }
    }
}

/// A drain of a queue, to run on a thread.
struct Job {
    inner: Arc<ProducerInner>,
    queue: Arc<Queue>,
    log: PartitionLog,
    topic: String,
    partition: u32,
}

impl Job {
    fn run(self) {
        self.inner
            .drain(&self.queue, &self.log, &self.topic, self.partition);
    }
}

/// A [`Job`] handed to tokio's blocking pool (within a runtime) or a thread of its own. One
/// the runtime drops without running it (it is shutting down) starts on a thread of its own:
/// the queue counts on it.
struct DrainJob(Option<Job>);

impl DrainJob {
    fn start(job: Job) {
        let job = DrainJob(Some(job));
        #[cfg(feature = "tokio")]
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || job.run());
            return;
        }
        job.on_a_thread();
    }

    #[cfg(feature = "tokio")]
    fn run(mut self) {
        if let Some(job) = self.0.take() {
            job.run();
        }
    }

    fn on_a_thread(mut self) {
        let Some(job) = self.0.take() else { return };
        let cell = Arc::new(Mutex::new(Some(job)));
        let theirs = cell.clone();
        let spawned = std::thread::Builder::new()
            .name("rivulet-send".into())
            .spawn(move || {
                if let Some(job) = theirs.lock().take() {
                    job.run();
                }
            });
        if let Err(e) = spawned {
            // No thread to be had: appended here rather than never.
            log::error!("no thread for asynchronous sends ({e}); appending on the caller's");
            if let Some(job) = cell.lock().take() {
                job.run();
            }
        }
    }
}

impl Drop for DrainJob {
    fn drop(&mut self) {
        if self.0.is_some() {
            DrainJob(self.0.take()).on_a_thread();
        }
    }
}

/// What [`ProducerInner::prepare`] found for a record.
struct Prepared {
    queue: Arc<Queue>,
    codec: Compression,
    timestamp: i64,
    max: usize,
    quick: bool,
    append_time: bool,
    /// The record's size in a batch, over-estimated.
    size: usize,
    topic: String,
    partition: u32,
    log: PartitionLog,
}

/// An asynchronous sender's record: where it was sent, and what its metadata needs.
#[derive(Debug)]
struct Sent {
    topic: String,
    partition: u32,
    timestamp: i64,
    append_time: bool,
}

/// An asynchronous sender's record in a batch: the batch's delivery and its index there.
#[derive(Debug)]
struct Ticket {
    delivery: Arc<Delivery>,
    index: usize,
    sent: Sent,
}

impl Ticket {
    fn result(&self, outcome: &Outcome) -> Result<RecordMetadata> {
        let (info, offset) = outcome.of(self.index)?;
        let sent = &self.sent;
        Ok(RecordMetadata {
            topic: sent.topic.clone(),
            partition: sent.partition,
            offset,
            timestamp: if sent.append_time {
                info.log_append_time
            } else {
                sent.timestamp
            },
        })
    }
}

/// The future of [`Producer::send_async`]: where the record was written, once it is
/// acknowledged (durable under the topic's [`Fsync`] policy).
///
/// It needs no particular runtime: the append runs on a thread of its own (tokio's blocking
/// pool when the `tokio` feature is on and the send is made within a runtime), never on the
/// task that awaits it. The record is queued when `send_async` returns, and sent whether or
/// not the future is awaited.
#[derive(Debug)]
#[must_use = "a future does nothing unless polled; this one holds the record's outcome"]
pub struct SendFuture {
    state: SendState,
}

#[derive(Debug)]
enum SendState {
    Failed(Option<Error>),
    Queued {
        ticket: Ticket,
        slot: Option<usize>,
    },
    /// Waiting for room, in the queue's overflow.
    Placing {
        place: Arc<Place>,
        sent: Option<Sent>,
    },
}

/// A record kept by a send waiting for room.
#[derive(Debug)]
struct OwnedSend {
    topic: String,
    partition: Option<u32>,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<OwnedHeader>,
}

impl OwnedSend {
    fn of(record: &ProducerRecord<'_>, timestamp: i64) -> OwnedSend {
        OwnedSend {
            topic: record.topic.to_string(),
            partition: record.partition,
            timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record.headers.iter().map(Header::to_owned_header).collect(),
        }
    }

    fn record(&self) -> ProducerRecord<'_> {
        ProducerRecord {
            topic: &self.topic,
            partition: self.partition,
            timestamp: Some(self.timestamp),
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: self.headers.iter().map(OwnedHeader::as_header).collect(),
        }
    }
}

impl SendFuture {
    /// A future that fails with `e` (an encoding error before anything was queued).
    pub(crate) fn failed(e: Error) -> SendFuture {
        SendFuture {
            state: SendState::Failed(Some(e)),
        }
    }
}

impl Future for SendFuture {
    type Output = Result<RecordMetadata>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match &mut self.state {
                SendState::Failed(e) => {
                    return Poll::Ready(Err(e
                        .take()
                        .expect("a SendFuture is not polled after it completed")));
                }
                SendState::Placing { place, sent } => {
                    let at = match place.at.get() {
                        Some(at) => at.clone(),
                        None => {
                            let mut waker = place.waker.lock();
                            match place.at.get() {
                                Some(at) => at.clone(),
                                None => {
                                    *waker = Some(cx.waker().clone());
                                    return Poll::Pending;
                                }
                            }
                        }
                    };
                    let (delivery, index) = at;
                    let sent = sent.take().expect("placed once");
                    self.state = SendState::Queued {
                        ticket: Ticket {
                            delivery,
                            index,
                            sent,
                        },
                        slot: None,
                    };
                }
                SendState::Queued { ticket, slot } => {
                    if let Some(outcome) = ticket.delivery.outcome.get() {
                        return Poll::Ready(ticket.result(outcome));
                    }
                    let mut wakers = ticket.delivery.wakers.lock();
                    // Completed between the look above and the lock: its wakers are gone.
                    if let Some(outcome) = ticket.delivery.outcome.get() {
                        return Poll::Ready(ticket.result(outcome));
                    }
                    match *slot {
                        Some(i) if i < wakers.len() => {
                            if !wakers[i].will_wake(cx.waker()) {
                                wakers[i] = cx.waker().clone();
                            }
                        }
                        _ => {
                            *slot = Some(wakers.len());
                            wakers.push(cx.waker().clone());
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Producer {
    /// A producer with the default partitioner and no compression (unless a topic asks for
    /// one).
    pub fn new(broker: &Broker) -> Producer {
        Self::with_options(broker, Arc::new(DefaultPartitioner), Compression::None)
    }

    /// A producer with its own partitioner and compression (`compression.type` of a topic,
    /// if set to a codec, wins).
    pub fn with_options(
        broker: &Broker,
        partitioner: Arc<dyn Partitioner>,
        compression: Compression,
    ) -> Producer {
        let config = ProducerConfig::default()
            .partitioner(partitioner)
            .compression(compression);
        Self::with_config(broker, config)
    }

    /// A producer with these settings.
    pub fn with_config(broker: &Broker, config: ProducerConfig) -> Producer {
        let ProducerConfig {
            partitioner,
            compression,
            buffer_memory,
        } = config;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Producer {
            inner: Arc::new(ProducerInner {
                broker: broker.clone(),
                partitioner,
                compression,
                buffer_memory,
                queues: Mutex::new(HashMap::new()),
                sticky: Mutex::new(HashMap::new()),
                seed: AtomicU64::new(seed),
            }),
        }
    }

    /// Sends one record and waits until it is delivered: written, and on disk if the topic's
    /// policy is [`Fsync::Always`] (the default; the calling thread then waits for an
    /// `fdatasync`, shared with the records of other threads). Unknown topics are created if
    /// the broker allows it. In async code, [`Producer::send_async`] waits without holding a
    /// thread.
    pub fn send(&self, record: ProducerRecord<'_>) -> Result<RecordMetadata> {
        self.inner.send(record)
    }

    /// Queues one record and returns a future of where it was written, resolved once it is
    /// acknowledged (as [`Producer::send`] returns). The record is encoded into its
    /// partition's open batch before this returns, so the future borrows nothing; records
    /// sent meanwhile, by any task or thread, share batches and `fdatasync`s. An append that
    /// waits for the disk (a topic under [`Fsync::Always`]) runs on a blocking thread, never
    /// on the caller's task or runtime worker; one to the page cache alone is made at once by
    /// the caller when no other append is under way, as [`Producer::send`] makes it.
    ///
    /// Errors found before queueing (an unknown partition, a bad timestamp) are the future's
    /// result. Once a partition's queue holds 32 MiB of batches not yet appended (Kafka's
    /// `buffer.memory`), further records wait, in the order they were sent, as copies held
    /// until there is room: their futures resolve later, and memory grows with the records
    /// sent faster than the disk takes them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use rivulet::{Broker, Producer, ProducerRecord, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("jobs", 1, TopicConfig::default())?;
    /// let producer = Producer::new(&broker);
    /// // Both are queued at once and share one fdatasync.
    /// let first = producer.send_async(ProducerRecord::new("jobs", b"resize 1.png"));
    /// let second = producer.send_async(ProducerRecord::new("jobs", b"resize 2.png"));
    /// assert_eq!((first.await?.offset, second.await?.offset), (0, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_async(&self, record: ProducerRecord<'_>) -> SendFuture {
        let state = match self.inner.enqueue(&record) {
            Ok(state) => state,
            Err(e) => SendState::Failed(Some(e)),
        };
        SendFuture { state }
    }

    /// Appends `records` to one partition as one batch: all or none of them are written, with
    /// consecutive offsets. The partition is `partition`, or the partitioner's choice for the
    /// first record's key. The records' own topic and partition fields are ignored.
    ///
    /// ```
    /// use rivulet::{Broker, Producer, ProducerRecord, TopicConfig};
    /// let dir = tempfile::tempdir()?;
    /// let broker = Broker::open(dir.path())?;
    /// broker.create_topic("ledger", 2, TopicConfig::default())?;
    /// let producer = Producer::new(&broker);
    /// let entries = [ProducerRecord::new("ledger", b"debit 5"), ProducerRecord::new("ledger", b"credit 5")];
    /// let sent = producer.send_batch("ledger", Some(1), &entries)?;
    /// assert_eq!((sent[0].offset, sent[1].offset), (0, 1));
    /// assert!(sent.iter().all(|m| m.partition == 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: &[ProducerRecord<'_>],
    ) -> Result<Vec<RecordMetadata>> {
        self.inner.send_batch(topic, partition, records)
    }
}

impl ProducerInner {
    fn codec(&self, topic: &Topic) -> Compression {
        match topic.config.read().get_compression() {
            CompressionType::Codec(c) => c,
            CompressionType::Producer => self.compression,
        }
    }

    /// The partition for a record: explicit, by the partitioner, or sticky.
    fn choose(&self, topic: &Topic, explicit: Option<u32>, key: Option<&[u8]>) -> Result<u32> {
        let partitions = topic.partitions.read().len() as u32;
        if let Some(p) = explicit {
            if p >= partitions {
                return Err(Error::UnknownPartition {
                    topic: topic.name.clone(),
                    partition: p,
                    partitions,
                });
            }
            return Ok(p);
        }
        if let Some(p) = self.partitioner.partition(&topic.name, key, partitions) {
            return Ok(p % partitions);
        }
        let mut sticky = self.sticky.lock();
        let p = *sticky
            .entry(topic.name.clone())
            .or_insert_with(|| self.random() as u32 % partitions);
        Ok(p % partitions)
    }

    /// Moves unkeyed records of `topic` to another partition once a batch is appended (KIP-480).
    fn next_sticky(&self, topic: &str, partitions: u32, from: u32) {
        if partitions < 2 {
            return;
        }
        let mut sticky = self.sticky.lock();
        if let Some(p) = sticky.get_mut(topic)
            && *p == from
        {
            *p = (from + 1 + self.random() as u32 % (partitions - 1)) % partitions;
        }
    }

    /// xorshift64: cheap, and only for spreading unkeyed records.
    fn random(&self) -> u64 {
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        x
    }

    fn queue(&self, topic: &str, partition: u32) -> Arc<Queue> {
        self.queues
            .lock()
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// Where `record` goes, and what its batch needs to know: the checks every send makes
    /// before its record joins a batch.
    fn prepare(&self, record: &ProducerRecord<'_>) -> Result<Prepared> {
        refuse_internal(record.topic)?;
        check_timestamp(record)?;
        let topic = self.broker.inner.topic_or_create(record.topic)?;
        let partition = self.choose(&topic, record.partition, record.key)?;
        let log = topic.partition(partition)?;
        let config = log.config();
        if record.key.is_none() && config.get_cleanup_policy().compacts() {
            // Refused here, not by the log: it would fail the whole shared batch.
            return Err(Error::KeyRequired { index: 0 });
        }
        let size = HEADER_LEN
            + 32
            + record.key.map_or(0, <[u8]>::len)
            + record.value.map_or(0, <[u8]>::len)
            + record
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 10)
                .sum::<usize>();
        Ok(Prepared {
            queue: self.queue(&topic.name, partition),
            codec: self.codec(&topic),
            timestamp: record.timestamp.unwrap_or_else(now_ms),
            max: config.get_max_message_bytes(),
            // An append that does not wait for the disk is over in microseconds.
            quick: config.get_fsync() != Fsync::Always,
            append_time: config.get_timestamp_type() == TimestampType::LogAppendTime,
            size,
            topic: topic.name.clone(),
            partition,
            log,
        })
    }

    fn send(&self, record: ProducerRecord<'_>) -> Result<RecordMetadata> {
        let Prepared {
            queue,
            codec,
            timestamp,
            max,
            quick,
            append_time,
            size,
            topic,
            partition,
            log,
        } = self.prepare(&record)?;
        let mut state = queue.state.lock();
        // Wait for room in the open batch; a full batch is appended first.
        loop {
            let open = state.open.get_or_insert_with(|| BatchBuilder::new(codec));
            if open.is_empty() || open.size() + size <= max {
                break;
            }
            if state.appending {
                queue.wait_for_append(&mut state, quick);
            } else {
                self.append_open(&queue, &mut state, &log, &topic, partition);
            }
        }
        let open = state.open.as_mut().expect("made above");
        open.push(timestamp, record.key, record.value, &record.headers);
        let index = open.len() - 1;
        let generation = state.generation;
        state.open_blocking += 1;
        loop {
            if let Some((outcome, readers)) = state.finished.get_mut(&generation) {
                let outcome = outcome.clone();
                *readers -= 1;
                if *readers == 0 {
                    state.finished.remove(&generation);
                }
                drop(state);
                let (info, offset) = outcome.of(index)?;
                return Ok(RecordMetadata {
                    topic,
                    partition,
                    offset,
                    timestamp: if append_time {
                        info.log_append_time
                    } else {
                        timestamp
                    },
                });
            }
            if state.appending {
                queue.wait_for_append(&mut state, quick);
            } else {
                self.append_open(&queue, &mut state, &log, &topic, partition);
            }
        }
    }

    /// Adds `record` to its partition's open batch for an asynchronous sender (sealing a full
    /// one), or to the queue's overflow if it has no room or others wait already, and makes
    /// sure a thread appends it.
    fn enqueue(self: &Arc<Self>, record: &ProducerRecord<'_>) -> Result<SendState> {
        let p = self.prepare(record)?;
        let sent = Sent {
            topic: p.topic.clone(),
            partition: p.partition,
            timestamp: p.timestamp,
            append_time: p.append_time,
        };
        let mut state = p.queue.state.lock();
        let queued = if state.overflow.is_empty() && state.has_room(p.size, p.max, self.buffer_memory) {
            let (delivery, index) = state.admit(p.codec, p.max, p.size, record, p.timestamp);
            // An append that waits for no disk (the topic does not sync every batch) is over in
            // microseconds, less than handing it to another thread costs: done here when no
            // one else is appending, as the blocking `send` does.
            // Not for a cluster's partition: its append waits for replication.
            if p.quick && !p.log.is_replicated() && !state.appending && state.sealed.is_empty() {
                self.append_open(&p.queue, &mut state, &p.log, &p.topic, p.partition);
            }
            SendState::Queued {
                ticket: Ticket {
                    delivery,
                    index,
                    sent,
                },
                slot: None,
            }
        } else {
            let place = Arc::new(Place::default());
            state.overflow.push_back(Overflow {
                record: OwnedSend::of(record, p.timestamp),
                codec: p.codec,
                max: p.max,
                size: p.size,
                place: place.clone(),
            });
            SendState::Placing {
                place,
                sent: Some(sent),
            }
        };
        let pending = !state.sealed.is_empty()
            || state.open.as_ref().is_some_and(|b| !b.is_empty())
            || !state.overflow.is_empty();
        if pending && !state.draining {
            state.draining = true;
            drop(state);
            DrainJob::start(Job {
                inner: self.clone(),
                queue: p.queue,
                log: p.log,
                topic: p.topic,
                partition: p.partition,
            });
        }
        Ok(queued)
    }

    /// Appends the queue's sealed and open batches, and admits its waiting records, until none
    /// is left (waiting out other senders' appends). Each append goes to the partition's log
    /// as the broker has it then (`captured` if the topic is gone, to fail the batch).
    fn drain(&self, queue: &Queue, captured: &PartitionLog, topic: &str, partition: u32) {
        let mut state = queue.state.lock();
        loop {
            state.admit_overflow(self.buffer_memory);
            let pending = !state.sealed.is_empty()
                || state.open.as_ref().is_some_and(|b| !b.is_empty())
                || !state.overflow.is_empty();
            if !pending {
                state.draining = false;
                return;
            }
            if state.appending {
                queue.done.wait(&mut state);
            } else {
                let current = self.broker.partition(topic, partition).ok();
                let log = current.as_ref().unwrap_or(captured);
                self.append_open(queue, &mut state, log, topic, partition);
            }
        }
    }

    /// Takes the open batch and appends it with the lock released; records the outcome for
    /// its senders.
    fn append_open(
        &self,
        queue: &Queue,
        state: &mut parking_lot::MutexGuard<'_, QueueState>,
        log: &PartitionLog,
        topic: &str,
        partition: u32,
    ) {
        let (batch, generation, blocking, delivery) = match state.sealed.pop_front() {
            Some(sealed) => {
                state.sealed_bytes -= sealed.batch.size();
                (sealed.batch, sealed.generation, sealed.blocking, sealed.delivery)
            }
            None => {
                let Some(batch) = state.open.take().filter(|b| !b.is_empty()) else {
                    return;
                };
                let generation = state.generation;
                state.generation += 1;
                let blocking = std::mem::take(&mut state.open_blocking);
                (batch, generation, blocking, state.open_delivery.take())
            }
        };
        state.appending = true;
        let outcome = parking_lot::MutexGuard::unlocked(state, || {
            let parts = match batch.finish() {
                Ok(batch) => append_splitting(log, batch, 0),
                Err(e) => vec![(0, Err(Arc::new(Error::from(e))))],
            };
            if let Ok(count) = self.broker.partition_count(topic) {
                self.next_sticky(topic, count, partition);
            }
            Outcome { parts }
        });
        state.appending = false;
        let outcome = Arc::new(outcome);
        if blocking > 0 {
            state.finished.insert(generation, (outcome.clone(), blocking));
        }
        if let Some(delivery) = delivery {
            delivery.complete(outcome);
        }
        queue.appended.fetch_add(1, Ordering::Release);
        queue.done.notify_all();
    }

    fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: &[ProducerRecord<'_>],
    ) -> Result<Vec<RecordMetadata>> {
        refuse_internal(topic)?;
        records.iter().try_for_each(check_timestamp)?;
        let topic = self.broker.inner.topic_or_create(topic)?;
        let partition = self.choose(&topic, partition, records.first().and_then(|r| r.key))?;
        let log = topic.partition(partition)?;
        let now = now_ms();
        let mut builder = BatchBuilder::new(self.codec(&topic));
        for r in records {
            builder.push(r.timestamp.unwrap_or(now), r.key, r.value, &r.headers);
        }
        let info = log.append(builder.finish()?)?;
        let append_time = log.config().get_timestamp_type() == TimestampType::LogAppendTime;
        Ok(records
            .iter()
            .enumerate()
            .map(|(i, r)| RecordMetadata {
                topic: topic.name.clone(),
                partition,
                offset: info.base_offset + i as i64,
                timestamp: if append_time {
                    info.log_append_time
                } else {
                    r.timestamp.unwrap_or(now)
                },
            })
            .collect())
    }
}

/// Appends a batch that senders share, whose first record is the `first`-th of the original
/// one. The producer fills a batch by its records' uncompressed size, but the log judges the
/// compressed batch against `max.message.bytes`: a codec's framing can take a full batch of
/// incompressible records over it. Such a batch is split in halves, each appended (and split
/// again if need be) on its own, as Kafka's producer splits a batch the broker refused, so no
/// record fails because of its neighbours; only a record too large alone does.
fn append_splitting(
    log: &PartitionLog,
    batch: RecordBatch,
    first: usize,
) -> Vec<(usize, Result<AppendInfo, Arc<Error>>)> {
    let count = batch.header().record_count as usize;
    if count < 2 || batch.len() <= log.max_batch_bytes() {
        return vec![(first, log.append(batch).map_err(Arc::new))];
    }
    let halves = split(&batch, count / 2);
    match halves {
        Ok([front, back]) => {
            let mut parts = append_splitting(log, front, first);
            parts.extend(append_splitting(log, back, first + count / 2));
            parts
        }
        Err(e) => vec![(first, Err(Arc::new(e)))],
    }
}

/// The records of `batch` before and from `at`, as two batches of its codec.
fn split(batch: &RecordBatch, at: usize) -> Result<[RecordBatch; 2]> {
    let view = batch.view();
    let codec = view.header().compression()?;
    let records = view.records()?;
    let mut halves = [BatchBuilder::new(codec), BatchBuilder::new(codec)];
    for (i, record) in records.iter().enumerate() {
        let r = record?;
        let (half, delta) = if i < at { (0, i) } else { (1, i - at) };
        halves[half].push_copy(delta as i32, &r);
    }
    let [front, back] = halves;
    Ok([front.finish()?, back.finish()?])
}

/// Refuses a negative timestamp, as Kafka's producer does: retention would judge the record
/// older than any cutoff.
fn check_timestamp(record: &ProducerRecord<'_>) -> Result<()> {
    match record.timestamp {
        Some(timestamp) if timestamp < 0 => Err(Error::InvalidTimestamp { timestamp }),
        _ => Ok(()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // The vectors DESIGN.md gives.
        assert_eq!(murmur2(b"kafka"), 0xd067cf64);
        assert_eq!(murmur2(b""), 0x106e08d9);
        // Every tail length (0 to 3 bytes past a whole word) hashes differently.
        let hashes: Vec<u32> = (0..8).map(|n| murmur2(&b"abcdefgh"[..n])).collect();
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), 8);
    }

    #[test]
    fn a_shared_batch_too_large_once_compressed_is_appended_in_parts_with_every_record() {
        let mut x = 7u64;
        let values: Vec<Vec<u8>> = (0..32)
            .map(|_| {
                (0..16 << 10)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        let build = |codec| {
            let mut b = BatchBuilder::new(codec);
            for v in &values {
                b.push(1_000, None, Some(v), &[]);
            }
            b.finish().unwrap()
        };
        // Its records fit uncompressed, as the producer filled it; snappy's framing does not.
        let raw = build(Compression::None).len();
        let batch = build(Compression::Snappy);
        assert!(batch.len() > raw);
        let dir = tempfile::tempdir().unwrap();
        let config = crate::LogConfig::default()
            .fsync(Fsync::Never)
            .max_message_bytes(raw);
        let log = PartitionLog::open(dir.path(), config).unwrap();
        let outcome = Outcome {
            parts: append_splitting(&log, batch, 0),
        };
        assert!(outcome.parts.len() >= 2, "{outcome:?}");
        let mut reader = log.reader(0);
        for (i, value) in values.iter().enumerate() {
            let (_, offset) = outcome.of(i).unwrap();
            let record = reader.next().unwrap().unwrap();
            assert_eq!((record.offset, record.value), (offset, Some(&value[..])));
        }
        assert!(reader.next().unwrap().is_none());
        // A record too large alone still fails, and only it.
        let mut alone = BatchBuilder::new(Compression::Snappy);
        alone.push(1_000, None, Some(&values[0]), &[]);
        let log = PartitionLog::open(
            dir.path().join("small"),
            crate::LogConfig::default().max_message_bytes(1024),
        )
        .unwrap();
        let parts = append_splitting(&log, alone.finish().unwrap(), 0);
        assert!(matches!(&parts[..], [(0, Err(e))] if matches!(**e, Error::BatchTooLarge { .. })));
    }
}
