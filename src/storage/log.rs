//! [`PartitionLog`]: one partition's log, a directory of segments.
//!
//! Concurrency: one writer at a time (the `writer` mutex around append, roll, truncation and
//! retention); readers take no lock but a brief one to copy the segment list (`Arc`s). Sealed
//! segments are immutable; the active one is read only below its `readable` mark. The high
//! watermark is published with release ordering after the bytes below it are readable.
//!
//! Durability ([`Fsync`]): under `Always` an appender waits for an fsync that covers its batch.
//! The first waiter becomes the syncer: it notes the end of the log, syncs outside the writer
//! lock (so appends continue meanwhile), then advances the durable mark and the high watermark
//! for everyone its sync covered (group commit). A failed fsync poisons the log.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::config::{Fsync, LogConfig};
use crate::error::{BatchError, Error, IoContext, Result};
use crate::storage::builder::{BatchBuilder, RecordBatch};
use crate::storage::compaction::CleanStats;
use crate::storage::follow::{Beacon, Followed};
use crate::storage::format::{Batch, BatchHeader, Compression, TimestampType};
use crate::storage::housekeeper::Housekeeper;
use crate::storage::io::{Fs, StdFs};
use crate::storage::producers::{self, Marker, ProducerState};
use crate::storage::reader::{Fetch, LogReader};
use crate::storage::recovery::CLEAN_SHUTDOWN_FILE;
use crate::storage::segment::{AppendError, Segment};
use crate::storage::txnindex::{self, AbortedIndex, AbortedTransaction};

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// The log's clock when it appended the batch, in milliseconds since the Unix epoch (the
    /// batch's timestamp under [`TimestampType::LogAppendTime`]).
    pub log_append_time: i64,
}

/// An offset found by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The first offset whose record has a timestamp at or after the one asked for.
    pub offset: i64,
    /// That record's timestamp.
    pub timestamp: i64,
}

/// One partition's log: segmented, indexed, crash-safe. Cheap to clone; all clones share the
/// log, and it is closed cleanly when the last one is dropped (or by [`PartitionLog::close`]).
///
/// ```
/// use rivulet::storage::{BatchBuilder, Compression, PartitionLog};
/// use rivulet::LogConfig;
///
/// let dir = tempfile::tempdir()?;
/// let log = PartitionLog::open(dir.path(), LogConfig::default())?;
/// let mut batch = BatchBuilder::new(Compression::None);
/// batch.push(1_700_000_000_000, Some(b"key"), Some(b"hello"), &[]);
/// let info = log.append(batch.finish()?)?;
/// assert_eq!(info.base_offset, 0);
///
/// let mut reader = log.reader(0);
/// let record = reader.next()?.expect("one record");
/// assert_eq!(record.value, Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct PartitionLog {
    pub(crate) inner: Arc<Inner>,
}

/// Opens a [`PartitionLog`] with non-default parts.
#[derive(Debug)]
pub struct LogBuilder {
    dir: PathBuf,
    config: LogConfig,
    fs: Arc<dyn Fs>,
    housekeeper: Option<Housekeeper>,
    replicated: bool,
    followed: Option<Arc<Followed>>,
}

impl LogBuilder {
    /// The log's configuration (default: [`LogConfig::default`]).
    pub fn config(mut self, config: LogConfig) -> Self {
        self.config = config;
        self
    }

    /// The file system (default: [`StdFs`]); tests pass a [`crate::storage::FaultyFs`].
    pub fn fs(mut self, fs: Arc<dyn Fs>) -> Self {
        self.fs = fs;
        self
    }

    /// The background thread for interval fsyncs and retention, shared with other logs.
    /// By default each log starts its own.
    pub fn housekeeper(mut self, housekeeper: &Housekeeper) -> Self {
        self.housekeeper = Some(housekeeper.clone());
        self
    }

    /// Opens the log as a replica whose owner decides what readers see (see
    /// [`Inner::replicated`]).
    #[cfg(feature = "cluster")]
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn replicated(mut self) -> Self {
        self.replicated = true;
        self
    }

    /// Publishes the log's high watermark while readers in other processes follow `followed`'s
    /// broker.
    pub(crate) fn followed(mut self, followed: &Arc<Followed>) -> Self {
        self.followed = Some(followed.clone());
        self
    }

    /// Opens the log, creating it if the directory is missing or empty, recovering it if it
    /// was not closed cleanly.
    pub fn open(self) -> Result<PartitionLog> {
        self.config.validate()?;
        let housekeeper = match self.housekeeper {
            Some(h) => h,
            None => Housekeeper::new()?,
        };
        let inner = Inner::open(
            self.dir,
            self.config,
            self.fs,
            housekeeper.clone(),
            self.replicated,
        )?;
        let inner = Arc::new(inner);
        if let Some(followed) = &self.followed {
            let beacon = Beacon::new(&inner.dir, inner.high_watermark.clone(), followed);
            let _ = inner.beacon.set(beacon);
        }
        housekeeper.register(&inner);
        Ok(PartitionLog { inner })
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    /// Changed by `set_config`; read once per operation.
    pub(crate) config: RwLock<LogConfig>,
    pub(super) fs: Arc<dyn Fs>,
    /// The directory lock, released by `close`.
    pub(super) lock: Mutex<Option<File>>,
    /// The log's background thread (kept alive as long as the log).
    pub(super) housekeeper: Housekeeper,
    pub(super) writer: Mutex<Writer>,
    pub(super) segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    pub(super) log_start: AtomicI64,
    pub(super) log_end: AtomicI64,
    /// Shared with the beacon that publishes it to readers in other processes.
    pub(super) high_watermark: Arc<AtomicI64>,
    /// Publishes the high watermark while other processes read the log (see `follow`).
    pub(super) beacon: OnceLock<Arc<Beacon>>,
    pub(super) sync: Mutex<SyncState>,
    pub(super) synced: Condvar,
    /// Long-poll readers wait here for the high watermark to move.
    pub(super) waiters: Mutex<()>,
    pub(super) advanced: Condvar,
    pub(super) waiting: AtomicUsize,
    /// Signals of readers watching several logs at once (consumers), bumped on every advance.
    pub(super) watchers: Mutex<Vec<Weak<Signal>>>,
    pub(super) watched: AtomicUsize,
    pub(super) poison: OnceLock<Arc<io::Error>>,
    pub(super) closed: AtomicBool,
    /// One compaction at a time.
    pub(super) cleaning: Mutex<()>,
    /// The offset below which the log was last compacted.
    pub(super) cleaned_to: AtomicI64,
    /// Bumped by every truncation, under the `sync` lock, before it changes anything: syncs,
    /// cleans and reader pins captured under an older count are stale.
    pub(super) truncations: AtomicU64,
    /// The log is one replica of a replicated partition, and its owner moves the high
    /// watermark ([`PartitionLog::commit_to`]): an append is readable by the owner at once
    /// ([`PartitionLog::read_unpublished`]) and waits for no sync; a sync only makes it
    /// durable; and retention is the owner's to apply.
    pub(super) replicated: bool,
    /// How a replicated log's [`PartitionLog::append`] reaches its leader, once its owner
    /// has said.
    #[cfg(feature = "cluster")]
    pub(super) replicator: OnceLock<Arc<dyn Replicate>>,
    /// The producers that wrote to the log, as of its end (see the `producers` module):
    /// changed under the writer lock, by every write and truncation.
    pub(super) producers: Mutex<ProducerState>,
    /// Every transaction an ABORT marker ended, by marker (see the `txnindex` module):
    /// changed under the writer lock.
    pub(super) aborted: RwLock<AbortedIndex>,
    /// Held by a caller across judging a producer's batches and appending them (see
    /// [`PartitionLog::producing`]).
    pub(super) producing: Mutex<()>,
    /// A replicated log's leader's check that a transaction is open (see
    /// [`PartitionLog::verify_transactions_with`]).
    #[cfg(feature = "cluster")]
    pub(super) verifier: OnceLock<Verifier>,
    /// A replicated log's proposals of producers' batches take turns here before they take a
    /// thread to be judged on.
    #[cfg(feature = "cluster")]
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    /// The log's counters (see [`crate::telemetry`]).
    pub(super) meters: crate::telemetry::LogMeters,
}

/// Asks a transaction's coordinator whether producer `producer_id`'s transaction in `epoch`
/// is open with the log's partition in it, waiting at most the time given.
#[cfg(feature = "cluster")]
#[derive(Clone)]
pub(crate) struct Verifier(pub(crate) Arc<dyn Fn(i64, i16, Duration) -> Result<()> + Send + Sync>);

#[cfg(feature = "cluster")]
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

/// The owner of a replicated log, to which its appends go: it puts a batch through
/// replication and answers once the batch is committed, or with why not. A producer's batch
/// (or a transaction marker) is judged by the partition's leader: a retry of a batch the log
/// holds is answered with that batch's append, a refusal is an [`Error::Producer`].
#[cfg(feature = "cluster")]
pub(crate) trait Replicate: Send + Sync + std::fmt::Debug {
    fn append(&self, batch: RecordBatch) -> Result<AppendInfo>;

    /// Asks for the log's entries below `offset` (an entry boundary at most the high
    /// watermark) to be purged, as retention would delete them; returns at once, and the
    /// purge comes later (through [`PartitionLog::purge_before`]) or not at all.
    fn purge_before(&self, offset: i64);

    /// For a log of which this node holds no replica: reads the partition at a node that
    /// holds one (waiting for it), from `from` (`None`: only its bounds), at most `max_bytes`
    /// past the first batch. `committed`: as a `read_committed` reader, below the last stable
    /// offset (the fetch's end), with the transactions aborted among the batches read. `None`
    /// for a log that is read here.
    fn read_elsewhere(
        &self,
        from: Option<i64>,
        max_bytes: usize,
        committed: bool,
    ) -> Option<Result<Elsewhere>> {
        let _ = (from, max_bytes, committed);
        None
    }

    /// Whether the log is read at another node ([`Replicate::read_elsewhere`]).
    fn reads_elsewhere(&self) -> bool {
        false
    }
}

/// A read at another node: the batches (their end, the high watermark or for a
/// `read_committed` reader the last stable offset) and the transactions aborted among them.
pub(crate) type Elsewhere = (Fetch, Vec<txnindex::Aborted>);

/// What a read does with a first batch larger than its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Oversized {
    /// Returns it whole: a reader must be able to get past any batch.
    Read,
    /// Leaves it unread.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    Skip,
}

impl Oversized {
    fn skips(self, first: &BatchHeader, max_bytes: usize) -> bool {
        self == Oversized::Skip && first.total_len() > max_bytes
    }
}

/// The segment a reader read last, so that its next read can skip the segment lookup and
/// finish a segment that compaction replaced under it.
#[derive(Debug)]
pub(crate) struct ReadPin {
    segment: Arc<Segment>,
    /// The log's truncation count when the pin was taken: a truncation may have cut the
    /// segment or removed it from the log.
    truncations: u64,
}

/// Watches `ready` for up to `spin`, giving the core to other runnable threads between looks;
/// returns whether it came true. For waiters whose event usually comes sooner than a sleep
/// and a wake-up would (a consumer at the tail of a busy log, a sender behind an append to
/// the page cache).
pub(crate) fn watch(spin: Duration, ready: impl Fn() -> bool) -> bool {
    let until = Instant::now() + spin;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::yield_now();
    }
}

/// A wake-up shared by several logs: raised when any of them advances. Waiters note the
/// count, check their logs, and sleep only if the count has not moved since.
///
/// Raising costs an atomic increment when nobody sleeps on it. A waiter may first spin
/// ([`Signal::wait_past_spinning`]): waking a sleeping thread takes the scheduler several
/// microseconds (tens on a virtual machine whose idle CPU halts), most of an in-process
/// produce-to-consume round trip; spinning trades a core for that.
#[derive(Debug, Default)]
pub struct Signal {
    count: AtomicU64,
    /// Threads asleep on `raised` and futures registered in `wakers` (or about to be);
    /// changed under the lock.
    sleepers: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
    raised: Condvar,
}

impl Signal {
    /// A new signal.
    pub fn new() -> Arc<Signal> {
        Arc::new(Signal::default())
    }

    /// How often it has been raised; read before checking the logs.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Raises it, waking every waiter.
    pub fn raise(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        // A sleeper counted itself under the lock before its last look at the count: either it
        // saw this raise, or it is counted here and waits on the lock, which this takes.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let mut wakers = self.wakers.lock();
            self.raised.notify_all();
            for waker in wakers.drain(..) {
                waker.wake();
            }
        }
    }

    /// Waits until the signal is raised past `seen`, or the deadline; returns whether it was.
    pub fn wait_past(&self, seen: u64, deadline: Instant) -> bool {
        self.wait_past_spinning(seen, deadline, Duration::ZERO)
    }

    /// Like [`Signal::wait_past`], but watches the count for up to `spin` before sleeping
    /// (yielding the core to other runnable threads meanwhile).
    pub fn wait_past_spinning(&self, seen: u64, deadline: Instant, spin: Duration) -> bool {
        let spin = spin.min(deadline.saturating_duration_since(Instant::now()));
        if !spin.is_zero() {
            watch(spin, || self.count() != seen);
        }
        if self.count() != seen {
            return true;
        }
        let mut guard = self.wakers.lock();
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut timed_out = false;
        while self.count() == seen && !timed_out {
            timed_out = self.raised.wait_until(&mut guard, deadline).timed_out();
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.count() != seen
    }

    /// A future that completes once the signal is raised past `seen`: the asynchronous
    /// [`Signal::wait_past`] (bound it with the runtime's timeout).
    pub fn raised_past(&self, seen: u64) -> RaisedPast<'_> {
        RaisedPast {
            signal: self,
            seen,
            registered: false,
        }
    }
}

/// The future of [`Signal::raised_past`].
#[derive(Debug)]
pub struct RaisedPast<'a> {
    signal: &'a Signal,
    seen: u64,
    /// Counted in `sleepers`.
    registered: bool,
}

impl Future for RaisedPast<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let signal = self.signal;
        if signal.count() != self.seen {
            return Poll::Ready(());
        }
        let mut wakers = signal.wakers.lock();
        if !self.registered {
            signal.sleepers.fetch_add(1, Ordering::SeqCst);
            self.registered = true;
        }
        // A stale waker of an earlier poll may stay until the next raise: waking it is harmless.
        wakers.push(cx.waker().clone());
        if signal.count() != self.seen {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for RaisedPast<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.signal.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug)]
pub(super) struct Writer {
    pub(super) active: Arc<Segment>,
    /// The largest timestamp of the active segment's first batch, once looked up (for
    /// `segment.ms`; read from the segment after a restart, so its age survives one).
    pub(super) first_timestamp: Option<i64>,
    /// When the active segment got its first batch in this process: its age for `segment.ms`
    /// when that batch has no timestamp.
    pub(super) first_append: Option<Instant>,
    /// The last clean close's marker still stands: the active segment is as that close left
    /// it (its indexes trimmed), and nothing needs syncing.
    pub(super) marked_clean: bool,
}

impl Writer {
    /// Makes `segment` the active one, its age for `segment.ms` unknown until its first
    /// batch.
    pub(super) fn restart_active(&mut self, segment: Arc<Segment>) {
        self.active = segment;
        self.first_append = None;
        self.first_timestamp = None;
    }
}

#[derive(Debug)]
pub(super) struct SyncState {
    /// Offsets below this are on disk.
    pub(super) durable: i64,
    /// A sync is under way.
    pub(super) syncing: bool,
    /// The last truncations: the truncation count each brought the log to, and the first
    /// offset it removed. An append waiting for a sync when a truncation came learns from
    /// them whether its batch survived.
    pub(super) cuts: VecDeque<(u64, i64)>,
}

impl SyncState {
    /// How many truncations `cuts` remembers.
    const CUTS_KEPT: usize = 32;

    /// Notes a truncation that brought the count to `count` and removed offsets from `first`.
    pub(super) fn note_cut(&mut self, count: u64, first: i64) {
        if self.cuts.len() == Self::CUTS_KEPT {
            self.cuts.pop_front();
        }
        self.cuts.push_back((count, first));
    }

    /// Whether the offsets below `end` survived every truncation after the count was
    /// `generation` (false if those truncations are too many to remember).
    fn survived(&self, generation: u64, end: i64) -> bool {
        self.cuts
            .front()
            .is_some_and(|&(count, _)| count <= generation + 1)
            && self
                .cuts
                .iter()
                .filter(|&&(count, _)| count > generation)
                .all(|&(_, first)| first >= end)
    }
}

/// How long a retried batch found in the log waits for it to become readable.
#[cfg(any(feature = "kafka", feature = "cluster"))]
const DUPLICATE_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Why a retried batch is not answered with its first append: the producer sends it again.
#[cfg(any(feature = "kafka", feature = "cluster"))]
#[derive(Debug)]
pub(crate) enum RetryDuplicate {
    /// It is written but not yet readable (durable, or committed on a replica).
    NotDurable,
    /// The log changed under it (a truncation replaced it).
    Replaced,
    /// The log failed.
    Failed(Error),
}

#[cfg(any(feature = "kafka", feature = "cluster"))]
impl std::fmt::Display for RetryDuplicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryDuplicate::NotDurable => f.write_str("the batch is written but not yet durable"),
            RetryDuplicate::Replaced => f.write_str("the log changed under the retried batch"),
            RetryDuplicate::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// The largest batch a replicated log takes, whatever its `max.message.bytes`: each batch is
/// a Raft entry, and one entry must fit in one replication request (whose frame on the peer
/// link is at most 128 MiB).
pub(crate) const MAX_REPLICATED_BATCH: usize = 64 << 20;

/// The largest batch a log with `config` takes: `max.message.bytes`, and at most
/// [`MAX_REPLICATED_BATCH`] if it is `replicated`.
pub(crate) fn batch_limit(config: &LogConfig, replicated: bool) -> usize {
    match replicated {
        true => config.max_message_bytes.min(MAX_REPLICATED_BATCH),
        false => config.max_message_bytes,
    }
}

/// Refuses, changing nothing, a batch that a log with `config` does not take whatever its
/// state: one larger than its [`batch_limit`], one carrying the cleaner's delete horizon, and
/// on a compacted log one with a keyless record. A caller appending several batches as one
/// (a Kafka record set) checks them all first.
pub(crate) fn check_batch(batch: &RecordBatch, config: &LogConfig, replicated: bool) -> Result<()> {
    let max = batch_limit(config, replicated);
    if batch.len() > max {
        return Err(Error::BatchTooLarge {
            size: batch.len(),
            max,
        });
    }
    if batch.header().delete_horizon().is_some() {
        return Err(Error::InvalidBatch(BatchError::DeleteHorizonSet));
    }
    if config.cleanup_policy.compacts() {
        check_keyed(batch)?;
    }
    Ok(())
}

/// A compacted log keeps records by key: refuses a batch with a keyless record.
fn check_keyed(batch: &RecordBatch) -> Result<()> {
    let (view, _) = Batch::parse_trusted(batch.as_bytes());
    let records = view.records()?;
    for (index, record) in records.iter().enumerate() {
        if record?.key.is_none() {
            return Err(Error::KeyRequired { index });
        }
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir` with `config`.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<PartitionLog> {
        Self::builder(dir).config(config).open()
    }

    /// A builder for opening with a custom file system or a shared housekeeper.
    pub fn builder(dir: impl AsRef<Path>) -> LogBuilder {
        LogBuilder {
            dir: dir.as_ref().to_path_buf(),
            config: LogConfig::default(),
            fs: Arc::new(StdFs),
            housekeeper: None,
            replicated: false,
            followed: None,
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file system the log writes through.
    #[cfg(feature = "cluster")]
    pub(crate) fn fs(&self) -> Arc<dyn Fs> {
        self.inner.fs.clone()
    }

    /// The log's configuration.
    pub fn config(&self) -> LogConfig {
        self.inner.cfg()
    }

    /// Whether the log is one replica of a replicated partition (its appends wait for
    /// replication).
    pub(crate) fn is_replicated(&self) -> bool {
        self.inner.replicated
    }

    /// The largest batch the log takes (see [`batch_limit`]).
    pub(crate) fn max_batch_bytes(&self) -> usize {
        batch_limit(&self.inner.config.read(), self.inner.replicated)
    }

    /// The log's fsync policy, without copying the rest of its configuration.
    pub(crate) fn fsync(&self) -> Fsync {
        self.inner.config.read().fsync
    }

    /// Changes the configuration of the open log. Durability, retention, roll and size limits
    /// apply from the next operation; `segment.index.bytes` from the next segment.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        *self.inner.config.write() = config;
        self.inner.housekeeper.update(&self.inner);
        Ok(())
    }

    /// Appends a batch: assigns its offsets (and, under log append time, its timestamp) and
    /// writes it. Returns once the batch is durable under the log's [`Fsync`] policy.
    ///
    /// Errors, each leaving the log unchanged: [`Error::BatchTooLarge`] past
    /// `max.message.bytes`, [`Error::Poisoned`] after a failed fsync, [`Error::Closed`], and
    /// I/O errors such as a full disk. Under `Fsync::Always` a failed fsync is reported as
    /// `Poisoned` and the batch is not acknowledged (it may or may not survive a crash).
    pub fn append(&self, batch: RecordBatch) -> Result<AppendInfo> {
        #[cfg(feature = "cluster")]
        if self.inner.replicated {
            check_batch(&batch, &self.inner.cfg(), true)?;
            if batch.header().is_control() && Marker::of(&batch.view()).is_none() {
                // A replicated log's control batches are its replication's own entries
                // (transaction markers, of a producer, excepted).
                return Err(Error::InvalidBatch(BatchError::ControlBatch));
            }
            let replicator = self.inner.replicator.get().ok_or_else(|| Error::Cluster {
                reason: format!("{} is not replicating yet", self.inner.dir.display()),
            })?;
            return replicator.append(batch);
        }
        self.inner.append(batch)
    }

    /// Sends this replicated log's appends to `replicator` from now on.
    #[cfg(feature = "cluster")]
    pub(crate) fn replicate_through(&self, replicator: Arc<dyn Replicate>) {
        if self.inner.replicator.set(replicator).is_err() {
            log::warn!(
                "{}: already replicating through another owner; kept that one",
                self.inner.dir.display()
            );
        }
    }

    /// For a cluster's partition of which this node holds no replica, reads it at a node that
    /// holds one (see [`Replicate::read_elsewhere`]); `None` for a log that is read here.
    pub(crate) fn read_elsewhere(
        &self,
        from: Option<i64>,
        max_bytes: usize,
        committed: bool,
    ) -> Option<Result<Elsewhere>> {
        #[cfg(feature = "cluster")]
        if let Some(replicator) = self.inner.replicator.get() {
            return replicator.read_elsewhere(from, max_bytes, committed);
        }
        let _ = (from, max_bytes, committed);
        None
    }

    /// Whether the log is read at another node (see [`PartitionLog::read_elsewhere`]).
    pub(crate) fn reads_elsewhere(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Some(replicator) = self.inner.replicator.get() {
            return replicator.reads_elsewhere();
        }
        false
    }

    /// Whether the log's appends go to an owner already.
    #[cfg(feature = "cluster")]
    pub(crate) fn is_replicating(&self) -> bool {
        self.inner.replicator.get().is_some()
    }

    /// Writes a batch of a replicated log without waiting for a sync, and makes it readable
    /// through [`read_unpublished`](Self::read_unpublished) at once: the leader's own batch
    /// (`at` is `None`: offsets and log append time are assigned here) or a replica's copy of
    /// one (`at` is its base offset, which must be the log end: [`Error::OffsetMismatch`]
    /// otherwise, and nothing is written). The batch is durable after a
    /// [`flush`](Self::flush); readers see it after a [`commit_to`](Self::commit_to).
    #[cfg(feature = "cluster")]
    pub(crate) fn append_entry(&self, batch: RecordBatch, at: Option<i64>) -> Result<AppendInfo> {
        debug_assert!(self.inner.replicated, "append_entry is for replicated logs");
        let config = self.inner.cfg();
        self.inner.write(batch, at, &config).map(|(info, _)| info)
    }

    /// Serializes the callers that judge producers' batches and then append them (the Kafka
    /// front end, the transaction coordinator's markers): held across
    /// [`plan_producers`](Self::plan_producers) and the appends, no other producer's batch of
    /// this log is judged in between.
    pub(crate) fn producing(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.producing.lock()
    }

    /// [`producing`](Self::producing), waiting at most `timeout` for it.
    #[cfg(feature = "cluster")]
    pub(crate) fn producing_within(&self, timeout: Duration) -> Option<parking_lot::MutexGuard<'_, ()>> {
        self.inner.producing.try_lock_for(timeout)
    }

    /// Judges a record set's batches against the producers that wrote to the log (see
    /// `ProducerState::plan`): what to do with each, or why the set is refused.
    pub(crate) fn plan_producers(&self, headers: &[BatchHeader]) -> Result<Vec<producers::Verdict>> {
        self.inner.producers.lock().plan(headers)
    }

    /// Judges one batch about to be written (a producer's batch, or a transaction marker)
    /// against the producers the log holds: `None` to write it, the append of the batch it
    /// repeats, or why it is refused. Hold [`producing`](Self::producing) across the judgement
    /// and the write. A replicated log is judged at its leader alone, whose log holds every
    /// entry committed and every one of its own term.
    #[cfg(feature = "cluster")]
    pub(crate) fn judge(&self, batch: &Batch<'_>, within: Duration) -> Result<Option<AppendInfo>> {
        let h = *batch.header();
        if !h.is_control() && h.base_sequence < 0 {
            // Unsequenced: a coordinator's own batch (a transaction's offset commits), which
            // no retry repeats; judged on its epoch alone.
            let known = self
                .inner
                .producers
                .lock()
                .known_epoch(h.producer_id, 0, i64::MAX);
            if let Some(current) = known.filter(|&current| current > h.producer_epoch) {
                return Err(Error::Producer {
                    producer_id: h.producer_id,
                    error: producers::ProducerError::OldEpoch {
                        epoch: h.producer_epoch,
                        current,
                    },
                });
            }
            self.verify(&h, within)?;
            return Ok(None);
        }
        if !h.is_control() {
            if let producers::Verdict::Duplicate(info) = self.plan_producers(&[h])?.remove(0) {
                return Ok(Some(info));
            }
            self.verify(&h, within)?;
            return Ok(None);
        }
        let marker = Marker::of(batch).ok_or(Error::InvalidBatch(BatchError::ControlBatch))?;
        let refused = self
            .inner
            .producers
            .lock()
            .check_marker(h.producer_id, h.producer_epoch, marker);
        match refused {
            Some(error) => Err(Error::Producer {
                producer_id: h.producer_id,
                error,
            }),
            None => Ok(None),
        }
    }

    /// Has `verifier` say, at this replicated log's leader, whether a transaction whose first
    /// batch here is being judged is open with this partition in it (as Kafka's KIP-890
    /// verification): asked while the leader holds the partition's producers' lock, which
    /// the transaction's markers are judged under too, so no marker comes between the
    /// answer and the write. A batch late after its transaction's abort would otherwise open
    /// a transaction nobody ends. Set before the log's replica starts.
    #[cfg(feature = "cluster")]
    pub(crate) fn verify_transactions_with(&self, verifier: Verifier) {
        let _ = self.inner.verifier.set(verifier);
    }

    /// The turn a proposal of a producer's batch to this replicated log waits for (see
    /// [`Inner::turn`]).
    #[cfg(feature = "cluster")]
    pub(crate) fn proposal_turn(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.inner.turn.clone()
    }

    /// Refuses `h`, a transaction's batch that would begin it here, unless the verifier says
    /// the transaction is open with this partition in it.
    #[cfg(feature = "cluster")]
    fn verify(&self, h: &BatchHeader, within: Duration) -> Result<()> {
        let begins = self.inner.producers.lock().begins_transaction(h);
        let Some(verify) = self.inner.verifier.get().filter(|_| begins) else {
            return Ok(());
        };
        let refused = |error| Error::Producer {
            producer_id: h.producer_id,
            error,
        };
        match (verify.0)(h.producer_id, h.producer_epoch, within) {
            Ok(()) => Ok(()),
            Err(Error::ProducerFenced { epoch, current, .. }) => {
                Err(refused(producers::ProducerError::OldEpoch { epoch, current }))
            }
            // The producer may not write: a refusal it sees as such.
            Err(e @ (Error::InvalidTxnState { .. } | Error::InvalidProducerIdMapping { .. })) => {
                Err(refused(producers::ProducerError::InvalidTxnState(e.to_string())))
            }
            // Not asked, or busy ending: nothing written, and sent again.
            Err(e) => Err(refused(producers::ProducerError::Unverified(e.to_string()))),
        }
    }

    /// The answer to a retry of a batch (`h`) the log holds at `info`: that append once it is
    /// readable (durable under the log's policy; committed, on a replica, where a leader of an
    /// earlier epoch may have written it), and only if the batch there is still this one (a
    /// truncation may have replaced it since it was judged). Otherwise why the producer should
    /// send it again, to be judged again.
    #[cfg(any(feature = "kafka", feature = "cluster"))]
    pub(crate) fn answer_duplicate(
        &self,
        h: &BatchHeader,
        info: AppendInfo,
    ) -> std::result::Result<AppendInfo, RetryDuplicate> {
        if self.high_watermark() <= info.last_offset {
            // Its first append may have failed (a failed fsync poisons the log).
            self.inner.check_writable().map_err(RetryDuplicate::Failed)?;
            if !self.wait_for(info.last_offset, DUPLICATE_COMMIT_WAIT) {
                return Err(RetryDuplicate::NotDurable);
            }
        }
        let stored = self.header_at(info.base_offset).map_err(RetryDuplicate::Failed)?;
        let same = stored.is_some_and(|stored| {
            stored.base_offset == info.base_offset
                && stored.producer_id == h.producer_id
                && stored.producer_epoch == h.producer_epoch
                && stored.base_sequence == h.base_sequence
                && stored.last_offset_delta == h.last_offset_delta
        });
        if !same {
            return Err(RetryDuplicate::Replaced);
        }
        Ok(info)
    }

    /// Writes a transaction marker, COMMIT or ABORT, ending the open transaction of producer
    /// `producer_id` in `epoch` (a marker for a producer with none open is written all the
    /// same: the coordinator's retry of a marker it is unsure of). Refused, nothing written,
    /// if the producer's epoch is newer or the marker's coordinator epoch older than the last
    /// one seen. Returns once the marker is durable (committed, on a replicated log).
    pub(crate) fn append_marker(&self, producer_id: i64, epoch: i16, marker: Marker) -> Result<AppendInfo> {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(producer_id, epoch, -1)
            .transactional(true)
            .control(true);
        let (key, value) = marker.record();
        b.push(now_ms(), Some(&key), Some(&value), &[]);
        let batch = b.finish()?;
        if self.inner.replicated {
            // Judged by the partition's leader.
            return self.append(batch);
        }
        let _producing = self.producing();
        if let Some(error) = self
            .inner
            .producers
            .lock()
            .check_marker(producer_id, epoch, marker)
        {
            return Err(Error::Producer { producer_id, error });
        }
        self.append(batch)
    }

    /// The epoch the log knows for `producer_id`, if it wrote no longer than `max_age_ms`
    /// before `now_ms`.
    #[cfg(feature = "kafka")]
    pub(crate) fn producer_epoch(&self, producer_id: i64, now_ms: i64, max_age_ms: i64) -> Option<i16> {
        self.inner
            .producers
            .lock()
            .known_epoch(producer_id, now_ms, max_age_ms)
    }

    /// The transactions aborted in the offsets from `from` to below `upto`, for a
    /// `read_committed` reader of that range: it drops each one's batches (of that producer,
    /// from its first offset) up to its ABORT marker. Ask after reading the
    /// [`last_stable_offset`](Self::last_stable_offset) that bounds the range: every
    /// transaction below it is indexed by then.
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<AbortedTransaction> {
        let index = self.inner.aborted.read();
        if index.is_empty() {
            return Vec::new();
        }
        index.overlapping(from, upto)
    }

    /// The header of the batch that holds `offset`, below the high watermark.
    #[cfg(any(feature = "kafka", feature = "cluster"))]
    pub(crate) fn header_at(&self, offset: i64) -> Result<Option<BatchHeader>> {
        let hw = self.high_watermark();
        let segments = self.inner.snapshot();
        let i = segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let Some(seg) = segments.get(i) else {
            return Ok(None);
        };
        Ok(seg
            .find(offset, seg.readable())?
            .map(|(_, h)| h)
            .filter(|h| h.base_offset <= offset && h.base_offset < hw))
    }

    /// The last stable offset: the end of what readers in `read_committed` may see, the
    /// first offset of the earliest transaction not yet ended by a readable marker, else the
    /// high watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable_offset_below(self.high_watermark())
    }

    /// The last stable offset of a log whose high watermark is `hw`.
    fn last_stable_offset_below(&self, hw: i64) -> i64 {
        self.inner.last_stable_offset(hw)
    }

    /// The high watermark and the last stable offset, read together (the second never past
    /// the first).
    #[cfg(feature = "kafka")]
    pub(crate) fn stable_bounds(&self) -> (i64, i64) {
        let hw = self.high_watermark();
        (hw, self.last_stable_offset_below(hw))
    }

    /// Lets readers of a replicated log see the offsets below `end` (at most the log end).
    #[cfg(feature = "cluster")]
    pub(crate) fn commit_to(&self, end: i64) {
        let end = end.min(self.log_end_offset());
        if end > self.high_watermark() {
            self.inner.advance_high_watermark(end);
        }
    }

    /// Reads as [`read`](Self::read) does, but up to the log end rather than the high
    /// watermark: a replicated log's own view of what it holds.
    #[cfg(feature = "cluster")]
    pub(crate) fn read_unpublished(&self, from: i64, max_bytes: usize) -> Result<Fetch> {
        let end = self.log_end_offset();
        self.inner
            .read_below(from, max_bytes, Oversized::Read, &mut None, Vec::new(), end)
    }

    /// Calls `f` with the header of every batch from the one that holds `from` to the log end,
    /// reading headers only.
    #[cfg(feature = "cluster")]
    pub(crate) fn for_each_header(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader) -> Result<()>,
    ) -> Result<()> {
        let segments = self.inner.snapshot();
        let first = segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        for seg in &segments[first..] {
            let limit = seg.readable();
            let Some((mut pos, mut header)) = seg.find(from, limit)? else {
                continue;
            };
            loop {
                f(&header)?;
                pos += header.total_len() as u64;
                if pos >= limit {
                    break;
                }
                header = seg.header_at(pos, limit)?;
            }
        }
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `from`, up to about `max_bytes`
    /// (at least one batch, whatever its size), from below the high watermark. Reading at the
    /// high watermark returns nothing; reading outside `[log start, log end]` is
    /// [`Error::OffsetOutOfRange`].
    pub fn read(&self, from: i64, max_bytes: usize) -> Result<Fetch> {
        self.inner
            .read_pinned(from, max_bytes, Oversized::Read, &mut None, Vec::new())
    }

    /// Like [`PartitionLog::read`], but a first batch larger than `max_bytes` is neither read
    /// nor returned (the fetch is empty): for a fetch that already holds other partitions'
    /// batches.
    #[cfg(feature = "kafka")]
    pub(crate) fn read_at_most(&self, from: i64, max_bytes: usize) -> Result<Fetch> {
        self.inner
            .read_pinned(from, max_bytes, Oversized::Skip, &mut None, Vec::new())
    }

    /// Reads as [`read`](Self::read) does for a reader in `read_committed`: below the last
    /// stable offset rather than the high watermark, with the transactions aborted among the
    /// batches read ([`Fetch::aborted_transactions`]). Control batches (markers) are returned
    /// like any batch. With `skip_oversized`, a first batch larger than `max_bytes` is left
    /// unread (the fetch is empty), as a fetch that already holds other partitions' batches
    /// needs.
    pub fn read_committed(&self, from: i64, max_bytes: usize, skip_oversized: bool) -> Result<Fetch> {
        let hw = self.high_watermark();
        // The last stable offset first: every transaction below it is indexed by then.
        let lso = self.last_stable_offset_below(hw);
        let oversized = if skip_oversized {
            Oversized::Skip
        } else {
            Oversized::Read
        };
        let fetch = self
            .inner
            .read_below(from, max_bytes, oversized, &mut None, Vec::new(), lso)?;
        let aborted = match fetch.next_offset() {
            Some(end) => self.aborted_transactions(from, end),
            None => Vec::new(),
        };
        Ok(fetch.committed(hw, lso, aborted))
    }

    /// Reads as `read_pinned` does, below the last stable offset (for a consumer in
    /// `read_committed`), with the aborted transactions among the batches read.
    pub(crate) fn read_pinned_committed(
        &self,
        from: i64,
        max_bytes: usize,
        pin: &mut Option<ReadPin>,
        buf: Vec<u8>,
    ) -> Result<(Fetch, Vec<txnindex::Aborted>)> {
        let hw = self.high_watermark();
        let lso = self.inner.last_stable_offset(hw);
        let fetch = self
            .inner
            .read_below(from, max_bytes, Oversized::Read, pin, buf, lso)?;
        let aborted = match fetch.next_offset() {
            Some(end) => {
                let index = self.inner.aborted.read();
                if index.is_empty() {
                    Vec::new()
                } else {
                    index.overlapping_entries(from, end)
                }
            }
            None => Vec::new(),
        };
        Ok((fetch, aborted))
    }

    /// Appends a transaction's batch without waiting for the disk whatever the log's policy:
    /// nobody reads it before its transaction's marker, whose sync makes it durable too.
    pub(crate) fn append_unsynced(&self, batch: RecordBatch) -> Result<AppendInfo> {
        let config = self.inner.cfg();
        check_batch(&batch, &config, self.inner.replicated)?;
        if self.inner.replicated {
            return self.append(batch);
        }
        self.inner.write(batch, None, &config).map(|(info, _)| info)
    }

    /// A reader of records from offset `from`.
    pub fn reader(&self, from: i64) -> LogReader {
        LogReader::new(self.clone(), from)
    }

    /// The first record with the largest timestamp, among records below the high watermark
    /// (Kafka's ListOffsets for `MAX_TIMESTAMP`); `None` if no record has a timestamp.
    pub fn offset_of_max_timestamp(&self) -> Result<Option<TimestampOffset>> {
        let max = self.inner.snapshot().iter().map(|s| s.max_timestamp()).max();
        match max {
            Some(max) if max >= 0 => self.offset_for_timestamp(max),
            _ => Ok(None),
        }
    }

    /// The first offset whose record has a timestamp at or after `timestamp`, among records
    /// below the high watermark; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        self.inner.offset_for_timestamp(timestamp)
    }

    /// The first offset readers can read.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start.load(Ordering::Acquire)
    }

    /// The offset the next appended record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.log_end.load(Ordering::Acquire)
    }

    /// The end of what readers may see: every offset below it is durable under the policy.
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.load(Ordering::Acquire)
    }

    /// Waits until the high watermark passes `offset` (a record at `offset` is readable), for
    /// at most `timeout`. Returns whether it did; also returns when the log closes.
    pub fn wait_for(&self, offset: i64, timeout: Duration) -> bool {
        self.inner.wait_for(offset, timeout)
    }

    /// Raises `signal` whenever the high watermark advances (and when the log closes), until
    /// the signal is dropped. A consumer watches all its partitions with one signal.
    pub fn watch(&self, signal: &Arc<Signal>) {
        let mut watchers = self.inner.watchers.lock();
        watchers.push(Arc::downgrade(signal));
        self.inner.watched.store(watchers.len(), Ordering::SeqCst);
    }

    /// Compacts the sealed segments now, whatever their dirty ratio (`cleanup.policy` must
    /// include `compact`; otherwise nothing happens). `None` if there was nothing to clean.
    /// See the `compaction` module for what is kept and how a crash is survived.
    pub fn compact(&self) -> Result<Option<CleanStats>> {
        self.inner.compact(now_ms(), true)
    }

    /// Stops raising `signal` (undoes one [`watch`](Self::watch)).
    pub fn unwatch(&self, signal: &Arc<Signal>) {
        let mut watchers = self.inner.watchers.lock();
        if let Some(i) = watchers
            .iter()
            .position(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(signal)))
        {
            watchers.swap_remove(i);
        }
        self.inner.watched.store(watchers.len(), Ordering::SeqCst);
    }

    /// Forces everything appended so far to disk, and lets readers see it.
    pub fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        inner.sync_to_end()
    }

    /// Seals the active segment and starts a new one (if the active one holds anything).
    pub fn roll(&self) -> Result<()> {
        let mut w = self.inner.writer.lock();
        self.inner.check_writable()?;
        if w.active.is_empty() {
            return Ok(());
        }
        self.inner.unmark_clean(&mut w)?;
        self.inner.roll_locked(&mut w)
    }

    /// Removes every record at or after `offset` (from the start of the batch that holds it),
    /// for a replica that must agree with its leader. Returns the new log end offset.
    pub fn truncate_to(&self, offset: i64) -> Result<i64> {
        self.inner.truncate_to(offset)
    }

    /// Makes `offset` the log start offset (Kafka's DeleteRecords): records below it are no
    /// longer readable, and segments wholly below it are deleted. `offset` may not pass the
    /// high watermark. Returns the log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64> {
        if self.inner.replicated {
            // Replicas move their start together, when their owner purges them.
            return Err(Error::InvalidArgument {
                name: "offset",
                value: offset.to_string(),
                reason: "records of a replicated partition are deleted by retention alone",
            });
        }
        self.inner.delete_records_before(offset)
    }

    /// Moves a replicated log's start to `offset` (its owner's purge).
    #[cfg(feature = "cluster")]
    pub(crate) fn purge_before(&self, offset: i64) -> Result<i64> {
        self.inner.delete_records_before(offset)
    }

    /// Empties a replicated log and starts it again at `offset` (its owner installed a
    /// snapshot in place of the entries it lacked).
    #[cfg(feature = "cluster")]
    pub(crate) fn restart_at(&self, offset: i64) -> Result<()> {
        self.inner.restart_at(offset)
    }

    /// Applies `retention.ms` (judged at `now_ms`) and `retention.bytes`: deletes the oldest
    /// sealed segments that fall outside them. Returns how many were deleted. The background
    /// housekeeper calls this every `log.retention.check.interval.ms`.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        self.inner.enforce_retention(now_ms)
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.inner.snapshot().len()
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.snapshot().iter().map(|s| s.size()).sum()
    }

    /// Syncs everything, marks the log as cleanly shut down, refuses further writes and
    /// releases the directory lock, so the log can be opened again while old handles (and
    /// readers) still read. Dropping the last handle does the same, ignoring errors.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Inner {
    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        self.segments.read().clone()
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if let Some(cause) = self.poison.get() {
            return Err(Error::Poisoned {
                dir: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        Ok(())
    }

    /// Refuses appends from now on; returns the error to report.
    pub(super) fn poison(&self, cause: io::Error) -> Error {
        let cause = self.poison.get_or_init(|| Arc::new(cause)).clone();
        log::error!("{}: poisoned: {cause}", self.dir.display());
        self.synced.notify_all();
        Error::Poisoned {
            dir: self.dir.clone(),
            cause,
        }
    }

    /// The last stable offset of the log if its high watermark is `hw`.
    pub(super) fn last_stable_offset(&self, hw: i64) -> i64 {
        let mut state = self.producers.lock();
        if !state.has_unstable() {
            return hw;
        }
        // A transaction open from below the log start (retention or DeleteRecords passed
        // it) holds readers at the log start, as in Kafka: never below what can be read.
        let start = self.log_start.load(Ordering::Acquire).min(hw);
        state
            .first_unstable(hw)
            .map_or(hw, |first| first.clamp(start, hw))
    }

    pub(crate) fn cfg(&self) -> LogConfig {
        self.config.read().clone()
    }

    fn append(&self, batch: RecordBatch) -> Result<AppendInfo> {
        let config = self.cfg();
        check_batch(&batch, &config, self.replicated)?;
        let (info, generation) = self.write(batch, None, &config)?;
        if let Some(generation) = generation {
            self.sync_to(info.last_offset + 1, generation)
                .map_err(|e| match e {
                    Error::Truncated { .. } => Error::Truncated {
                        offset: info.base_offset,
                    },
                    e => e,
                })?;
        }
        Ok(info)
    }

    /// Writes `batch` at the log end: assigns its offsets and (under log append time, unless
    /// it is a replica's copy, `at` its base offset) its timestamp. Returns what it did and,
    /// when the caller must wait for a sync before acknowledging, the truncation count.
    fn write(
        &self,
        mut batch: RecordBatch,
        at: Option<i64>,
        config: &LogConfig,
    ) -> Result<(AppendInfo, Option<u64>)> {
        let now = now_ms();
        let mut w = self.writer.lock();
        self.check_writable()?;
        let base = self.log_end.load(Ordering::Relaxed);
        if let Some(at) = at
            && at != base
        {
            return Err(Error::OffsetMismatch {
                expected: at,
                log_end: base,
            });
        }
        self.unmark_clean(&mut w)?;
        let last = base + batch.header().last_offset_delta as i64;
        let stamp = config.timestamp_type == TimestampType::LogAppendTime && at.is_none();
        let timestamp = if stamp { now } else { batch.header().max_timestamp };
        self.maybe_roll(&mut w, config, batch.len(), last, timestamp)?;
        batch.set_base_offset(base);
        if stamp {
            batch.set_log_append_time(now);
        }
        let header = batch.header();
        match w.active.append(
            batch.as_bytes(),
            &header,
            config.index_interval_bytes,
            config.fsync != Fsync::Always,
        ) {
            Ok(()) => {}
            Err(AppendError::NothingWritten(e)) => return Err(e),
            Err(AppendError::Damaged(e)) => {
                self.poison(io::Error::other(e.to_string()));
                return Err(e);
            }
        }
        w.first_append.get_or_insert_with(Instant::now);
        self.meters
            .appended(header.record_count.max(0) as u32, batch.len());
        let end = header.next_offset();
        let info = AppendInfo {
            base_offset: base,
            last_offset: end - 1,
            log_append_time: now,
        };
        // The producer state and the aborted-transaction index first: a reader that sees the
        // batch (the high watermark past it) must also see the transaction it opens or ends.
        if header.producer_id >= 0 {
            let marker = header.is_control().then(|| Marker::of(&batch.view())).flatten();
            let mut state = self.producers.lock();
            let aborted = state.apply(&header, marker, info);
            if let Some(aborted) = aborted {
                let base = w.active.base_offset;
                if let Err(e) = txnindex::append(&*self.fs, &self.dir, base, &aborted) {
                    // The batch is written: the index no longer matches the log.
                    return Err(
                        self.poison(io::Error::other(format!("indexing an aborted transaction: {e}")))
                    );
                }
                self.aborted.write().push(aborted);
            }
        }
        self.log_end.store(end, Ordering::Release);
        if self.replicated {
            w.active.publish(w.active.size());
        } else if config.fsync == Fsync::Never {
            self.publish(&w.active, w.active.size(), end);
        }
        // Only a durable append waits for a sync, and needs the truncation generation.
        let generation = (config.fsync == Fsync::Always && !self.replicated)
            .then(|| self.truncations.load(Ordering::SeqCst));
        Ok((info, generation))
    }

    /// Before the first change to the active segment after a clean open: removes the
    /// clean-shutdown marker, durably, then extends the active segment's indexes for
    /// appending (in that order: a marker must never stand beside untrimmed indexes).
    pub(super) fn unmark_clean(&self, w: &mut Writer) -> Result<()> {
        if !w.marked_clean {
            return Ok(());
        }
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        match self.fs.remove_file(&marker) {
            // Gone already if an earlier attempt failed at the directory sync.
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e).ctx("remove", &marker),
            _ => {}
        }
        self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)?;
        w.active.unseal(self.cfg().segment_index_bytes)?;
        w.marked_clean = false;
        Ok(())
    }

    /// Rolls if the next batch (`len` bytes, ending at `last_offset`, its largest timestamp
    /// `timestamp`) should not go into the active segment.
    ///
    /// A segment is old (`segment.ms`) as Kafka judges it: by how far the new batch's
    /// timestamp is past the timestamp of the segment's first batch, which survives restarts;
    /// only when that batch has no timestamp, by how long ago this process appended it.
    fn maybe_roll(
        &self,
        w: &mut Writer,
        config: &LogConfig,
        len: usize,
        last_offset: i64,
        timestamp: i64,
    ) -> Result<()> {
        if w.active.is_empty() {
            return Ok(());
        }
        let old = match config.segment_ms {
            None => false,
            Some(age) => {
                let first = match w.first_timestamp {
                    Some(t) => t,
                    None => *w.first_timestamp.insert(w.active.first_batch_timestamp()?),
                };
                if first >= 0 {
                    timestamp.saturating_sub(first) >= age.as_millis().min(i64::MAX as u128) as i64
                } else {
                    w.first_append.is_some_and(|since| since.elapsed() >= age)
                }
            }
        };
        let a = &w.active;
        let full = a.size() + len as u64 > config.segment_bytes;
        if full || old || a.indexes_full() || !a.can_hold_offset(last_offset) {
            self.roll_locked(w)?;
        }
        Ok(())
    }

    /// Seals the active segment (synced, whatever the policy, so that only the last segment
    /// can ever have a torn tail) and starts a new one at the log end offset.
    pub(super) fn roll_locked(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        old.trim()?;
        let synced = old
            .sync()
            .and_then(|()| txnindex::sync(&*self.fs, &self.dir, old.base_offset));
        if let Err(e) = synced {
            return Err(match e {
                Error::Io { source, .. } => self.poison(source),
                e => e,
            });
        }
        old.seal()?;
        let end = old.next_offset();
        let new = Arc::new(Segment::open(
            &*self.fs,
            &self.dir,
            end,
            Some(self.cfg().segment_index_bytes),
        )?);
        self.snapshot_producers(end);
        self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)?;
        {
            let mut s = self.sync.lock();
            s.durable = s.durable.max(end);
            self.publish(&old, old.size(), end);
        }
        self.synced.notify_all();
        let mut list = Vec::clone(&self.snapshot());
        list.push(new.clone());
        *self.segments.write() = Arc::new(list);
        w.restart_active(new);
        Ok(())
    }

    /// Lets readers see `segment` up to `position` and the log up to `end_offset` (a
    /// replica's readers only up to where its owner commits).
    pub(super) fn publish(&self, segment: &Segment, position: u64, end_offset: i64) {
        segment.publish(position);
        if !self.replicated {
            self.advance_high_watermark(end_offset);
        }
    }

    /// Moves the high watermark up to `end_offset` and wakes the readers waiting for it.
    pub(super) fn advance_high_watermark(&self, end_offset: i64) {
        self.high_watermark.fetch_max(end_offset, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _g = self.waiters.lock();
            self.advanced.notify_all();
        }
        if self.watched.load(Ordering::SeqCst) > 0 {
            self.signal_watchers();
        }
        self.watermark_moved();
    }

    /// Tells readers in other processes where the high watermark is, if any follow.
    pub(super) fn watermark_moved(&self) {
        if let Some(beacon) = self.beacon.get() {
            beacon.moved();
        }
    }

    fn signal_watchers(&self) {
        let mut watchers = self.watchers.lock();
        watchers.retain(|w| match w.upgrade() {
            Some(signal) => {
                signal.raise();
                true
            }
            None => false,
        });
        self.watched.store(watchers.len(), Ordering::SeqCst);
    }

    /// Syncs everything appended so far.
    pub(super) fn sync_to_end(&self) -> Result<()> {
        let generation = self.truncations.load(Ordering::SeqCst);
        self.sync_to(self.log_end.load(Ordering::Acquire), generation)
    }

    /// Waits until offsets below `target` are durable, syncing if no one else is.
    /// `generation` is the truncation count when `target` was read.
    pub(super) fn sync_to(&self, target: i64, generation: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            if self.truncations.load(Ordering::SeqCst) != generation && !s.survived(generation, target) {
                return Err(Error::Truncated { offset: target });
            }
            if s.durable >= target {
                return Ok(());
            }
            self.check_writable().or_else(|e| match e {
                // A closing log still completes the syncs it owes.
                Error::Closed => Ok(()),
                e => Err(e),
            })?;
            if s.syncing {
                self.synced.wait(&mut s);
                continue;
            }
            s.syncing = true;
            drop(s);
            let (segment, position, end, captured) = {
                let w = self.writer.lock();
                (
                    w.active.clone(),
                    w.active.size(),
                    self.log_end.load(Ordering::Acquire),
                    self.truncations.load(Ordering::SeqCst),
                )
            };
            let result = segment.sync();
            s = self.sync.lock();
            s.syncing = false;
            match result {
                Ok(()) if self.truncations.load(Ordering::SeqCst) == captured => {
                    s.durable = s.durable.max(end);
                    self.publish(&segment, position, end);
                }
                Ok(()) => {}
                Err(Error::Io { source, .. }) => {
                    self.synced.notify_all();
                    return Err(self.poison(source));
                }
                Err(e) => {
                    self.synced.notify_all();
                    return Err(e);
                }
            }
            self.synced.notify_all();
        }
    }

    fn wait_for(&self, offset: i64, timeout: Duration) -> bool {
        let ready =
            || self.high_watermark.load(Ordering::SeqCst) > offset || self.closed.load(Ordering::SeqCst);
        if ready() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let mut g = self.waiters.lock();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if ready() {
                break true;
            }
            if self.advanced.wait_until(&mut g, deadline).timed_out() {
                break ready();
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        result && self.high_watermark.load(Ordering::SeqCst) > offset
    }

    pub(super) fn out_of_range(&self, offset: i64) -> Error {
        Error::OffsetOutOfRange {
            offset,
            log_start: self.log_start.load(Ordering::Acquire),
            log_end: self.log_end.load(Ordering::Acquire),
        }
    }

    /// Reads as [`PartitionLog::read`] does, but first from `pin`, the segment the caller read
    /// last, if it still holds `from`: a reader finishes a segment that compaction replaced
    /// under it. The segment read from is pinned for next time; `buf` is reused for the bytes.
    ///
    /// The fetch is one view of the log: its high watermark and log start were read before
    /// its bytes, and it holds no batch at or past that high watermark.
    pub(crate) fn read_pinned(
        &self,
        from: i64,
        max_bytes: usize,
        oversized: Oversized,
        pin: &mut Option<ReadPin>,
        buf: Vec<u8>,
    ) -> Result<Fetch> {
        let hw = self.high_watermark.load(Ordering::SeqCst);
        self.read_below(from, max_bytes, oversized, pin, buf, hw)
    }

    /// Reads as `read_pinned` does, with `hw` as the end of what may be read.
    fn read_below(
        &self,
        from: i64,
        max_bytes: usize,
        oversized: Oversized,
        pin: &mut Option<ReadPin>,
        buf: Vec<u8>,
        hw: i64,
    ) -> Result<Fetch> {
        let start = self.log_start.load(Ordering::SeqCst);
        // Records below the log start were deleted on purpose (retention, DeleteRecords): a
        // pinned segment that still holds them must not hand them out.
        if from < start || from > self.log_end.load(Ordering::Acquire) {
            return Err(self.out_of_range(from));
        }
        let empty = || Ok(Fetch::new(Vec::new(), hw, start));
        if from >= hw {
            return empty();
        }
        // A truncation bumps the count before it lowers the high watermark, so a pin taken
        // under the current count holds the records below `hw` that the log holds.
        let truncations = self.truncations.load(Ordering::SeqCst);
        if let Some(p) = pin.as_ref()
            && p.truncations == truncations
            && from >= p.segment.base_offset
            && from < p.segment.next_offset()
        {
            let seg = &p.segment;
            let limit = seg.readable();
            if let Some((pos, header)) = seg.find(from, limit)? {
                if header.base_offset >= hw || oversized.skips(&header, max_bytes) {
                    return empty();
                }
                let bytes = seg.read(pos, &header, max_bytes, limit, hw, buf)?;
                return Ok(Fetch::new(bytes, hw, start));
            }
        }
        let segments = self.snapshot();
        let first = segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        for seg in &segments[first..] {
            let limit = seg.readable();
            if let Some((pos, header)) = seg.find(from, limit)? {
                if header.base_offset >= hw || oversized.skips(&header, max_bytes) {
                    return empty();
                }
                let bytes = seg.read(pos, &header, max_bytes, limit, hw, buf)?;
                *pin = Some(ReadPin {
                    segment: seg.clone(),
                    truncations,
                });
                return Ok(Fetch::new(bytes, hw, start));
            }
        }
        empty()
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        let hw = self.high_watermark.load(Ordering::Acquire);
        let start = self.log_start.load(Ordering::Acquire);
        for seg in self.snapshot().iter() {
            if seg.max_timestamp() < timestamp {
                continue;
            }
            // Records up to a time entry's offset are all older than its timestamp.
            let from = seg
                .times
                .last_below(timestamp)
                .map_or(seg.base_offset, |(_, rel)| seg.base_offset + rel as i64 + 1)
                .max(start);
            let limit = seg.readable();
            let Some((mut pos, mut header)) = seg.find(from, limit)? else {
                continue;
            };
            loop {
                if header.base_offset >= hw {
                    return Ok(None);
                }
                if header.max_timestamp >= timestamp {
                    let bytes = seg.read(pos, &header, 0, limit, hw, Vec::new())?;
                    let fetch = Fetch::new(bytes, hw, start);
                    for batch in fetch.batches() {
                        let records = batch.records().map_err(|e| seg.corruption(pos, e))?;
                        for record in records.iter() {
                            let r = record.map_err(|e| seg.corruption(pos, e))?;
                            if r.offset >= from && r.timestamp >= timestamp {
                                return Ok(Some(TimestampOffset {
                                    offset: r.offset,
                                    timestamp: r.timestamp,
                                }));
                            }
                        }
                    }
                }
                pos += header.total_len() as u64;
                if pos >= limit {
                    break;
                }
                header = seg.header_at(pos, limit)?;
            }
        }
        Ok(None)
    }

    /// The background fsync of `Fsync::Interval`.
    /// Writes the producer state as the snapshot at `end` (the log end; the writer lock
    /// held), forgetting idle producers first. The caller syncs the directory.
    ///
    /// A failure is only logged: a snapshot spares recovery the batches before it, and
    /// recovery falls back to an older one (or the log start) without it.
    pub(super) fn snapshot_producers(&self, end: i64) {
        // Encoded under the state's lock, written after: readers of the state (the last
        // stable offset, a produce's checks) do not wait for the disk.
        let bytes = {
            let mut state = self.producers.lock();
            state.expire(now_ms());
            state.encode()
        };
        if let Err(e) = producers::write_snapshot(&*self.fs, &self.dir, end, &bytes) {
            log::warn!(
                "{}: writing the producer snapshot at {end}: {e}",
                self.dir.display()
            );
        }
    }

    /// Rebuilds the producer state for a log now ending at `end` (after a truncation; the
    /// writer lock held).
    pub(super) fn rebuild_producers(&self, end: i64) -> Result<()> {
        let segments = self.snapshot();
        let rebuilt = producers::rebuild(&*self.fs, &self.dir, &segments, end)?;
        *self.producers.lock() = rebuilt.state;
        let mut index = self.aborted.write();
        index.truncate(rebuilt.from);
        for aborted in rebuilt.aborted {
            index.push(aborted);
        }
        txnindex::rewrite_from(&*self.fs, &self.dir, &segments, &index, rebuilt.from)
    }

    pub(crate) fn interval_flush(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) || self.poison.get().is_some() {
            return Ok(());
        }
        self.sync_to_end()
    }

    fn close(&self) -> Result<()> {
        let w = self.writer.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Wake long-pollers: the log will not grow any more.
        {
            let _g = self.waiters.lock();
            self.advanced.notify_all();
        }
        self.signal_watchers();
        if self.poison.get().is_some() || w.marked_clean {
            // Poisoned: leave no clean-shutdown marker, the next open must recover. Marked
            // clean: nothing changed since the last clean close, whose marker still stands.
            self.lock.lock().take();
            return Ok(());
        }
        w.active.trim()?;
        w.active.sync()?;
        txnindex::sync(&*self.fs, &self.dir, w.active.base_offset)?;
        w.active.seal()?;
        self.snapshot_producers(self.log_end.load(Ordering::Acquire));
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        self.fs.open(&marker, true).ctx("create", &marker)?;
        self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)?;
        // Handles that live on can still read; the directory may be opened again.
        self.lock.lock().take();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            log::warn!("{}: closing on drop: {e}", self.dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_reports_whether_the_condition_came_true_in_time() {
        assert!(watch(Duration::ZERO, || true), "already true: no wait");
        let start = Instant::now();
        assert!(!watch(Duration::from_millis(5), || false));
        assert!(
            start.elapsed() >= Duration::from_millis(5),
            "watched the whole window"
        );
        let looks = AtomicU64::new(0);
        assert!(watch(Duration::from_secs(10), || looks
            .fetch_add(1, Ordering::SeqCst)
            >= 3));
        assert_eq!(looks.load(Ordering::SeqCst), 4, "stops at the first true look");
    }

    #[test]
    fn a_spinning_waiter_sees_raises_during_and_after_its_spin() {
        let signal = Signal::new();
        // Not raised: false at the deadline, even with a spin longer than the wait.
        let start = Instant::now();
        let deadline = start + Duration::from_millis(20);
        assert!(!signal.wait_past_spinning(0, deadline, Duration::from_secs(10)));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20), "returned early: {waited:?}");
        assert!(
            waited < Duration::from_secs(5),
            "spun past the deadline: {waited:?}"
        );
        // Raised while the waiter spins, and (second round) after its spin, while it sleeps.
        for (spin, raise_after) in [(Duration::from_secs(5), 10), (Duration::from_millis(1), 50)] {
            let seen = signal.count();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(raise_after));
                    signal.raise();
                });
                let deadline = Instant::now() + Duration::from_secs(10);
                assert!(signal.wait_past_spinning(seen, deadline, spin), "missed a raise");
            });
        }
    }
}
