//! One writer, many readers: what a broker's logs show to processes that open the same data
//! directory read-only ([`crate::ReadOnlyBroker`]).
//!
//! Readers never take the directory's lock and never write. They announce themselves by
//! holding a shared lock on the readers file (`.readers`, created by the writer). The writer's
//! lookout thread probes that lock ten times a second; while some reader holds it, every log
//! publishes its high watermark to a small `watermark` file in its directory when the
//! watermark moves (at once if the last write is `MIN_ROUND` old, else in the lookout's next
//! round), and the lookout writes `1` into the readers file once every log has published (`0`
//! when the last reader leaves, at the writer's start and at its close). Without readers the
//! writer pays one atomic load per watermark move.
//!
//! A watermark file is written with `pwrite`, never through a map, so that inotify reports it
//! (segments' small appends go through a map and are not reported). A reader reads records
//! only below the published watermark: what it sees was acknowledged, and a crash of the writer
//! cannot take it back (recovery cuts only an incomplete tail, which lies past every
//! published watermark). When no writer holds the directory's lock, readers read every whole
//! batch on disk, as the next writer's recovery would keep it.
//!
//! A watermark file holds the offset (8 bytes, big-endian) and the CRC-32C of those bytes; a
//! torn read fails the CRC and is read again.
//!
//! The reading side lives here too: [`Cursor`] walks a partition's segment files with plain
//! reads, bounded by the watermark.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{BatchError, Error, IoContext, Result};
use crate::storage::format::{self, Batch, BatchHeader, HEADER_LEN, crc32c};
use crate::storage::segment;

/// The file whose shared lock readers hold, in the data directory.
pub(crate) const READERS_FILE: &str = ".readers";
/// A log's published high watermark, in its directory.
pub(crate) const WATERMARK_FILE: &str = "watermark";
/// How often the writer's lookout looks for readers.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(100);
/// The least time between two rounds of publication.
const MIN_ROUND: Duration = Duration::from_micros(250);
/// The readers file's byte while the writer publishes.
const PUBLISHING: u8 = 1;
/// Bytes of a watermark file.
const WATERMARK_LEN: usize = 12;

/// Whether a broker's logs are followed by readers, shared by the logs and the lookout.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    on: AtomicBool,
    beacons: Mutex<Vec<Weak<Beacon>>>,
    work: Mutex<Work>,
    wake: Condvar,
}

/// What the lookout has to do.
#[derive(Debug, Default)]
struct Work {
    stop: bool,
    /// Beacons whose watermark moved since they last published.
    moved: Vec<Arc<Beacon>>,
}

/// A log's publisher of its high watermark.
#[derive(Debug)]
pub(crate) struct Beacon {
    path: PathBuf,
    high_watermark: Arc<AtomicI64>,
    followed: Arc<Followed>,
    /// Queued for the lookout to publish.
    queued: AtomicBool,
    /// When the file was last written, in nanoseconds since `born`.
    born: Instant,
    written_at: AtomicU64,
    me: Weak<Beacon>,
    published: Mutex<Published>,
}

#[derive(Debug, Default)]
struct Published {
    file: Option<File>,
    /// The value in the file, as this process wrote it.
    last: Option<i64>,
    /// A failure was logged (once per log).
    failed: bool,
}

impl Beacon {
    /// A beacon for the log in `dir` whose watermark is `high_watermark`; it publishes at once
    /// if readers follow the broker already.
    pub(crate) fn new(dir: &Path, high_watermark: Arc<AtomicI64>, followed: &Arc<Followed>) -> Arc<Beacon> {
        let beacon = Arc::new_cyclic(|me| Beacon {
            path: dir.join(WATERMARK_FILE),
            high_watermark,
            followed: followed.clone(),
            queued: AtomicBool::new(false),
            born: Instant::now(),
            written_at: AtomicU64::new(0),
            me: me.clone(),
            published: Mutex::default(),
        });
        followed.beacons.lock().push(Arc::downgrade(&beacon));
        beacon.moved();
        beacon
    }

    /// The watermark moved: published if anyone follows. The caller (an append, under the
    /// log's locks) pays an atomic load when no one does. When the last publication is
    /// `MIN_ROUND` old, the caller writes the file itself (appends that far apart are few, and
    /// a reader then sees a record as soon as it is acknowledged); otherwise the beacon is
    /// queued for the lookout's next round, and moves while it is queued cost an atomic swap:
    /// one write publishes them all.
    pub(crate) fn moved(&self) {
        if !self.followed.on.load(Ordering::SeqCst) {
            return;
        }
        let now = self.born.elapsed().as_nanos() as u64;
        if now.saturating_sub(self.written_at.load(Ordering::SeqCst)) >= MIN_ROUND.as_nanos() as u64
            && let Some(mut p) = self.published.try_lock()
        {
            self.write(&mut p);
            return;
        }
        if self.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(me) = self.me.upgrade() {
            self.followed.work.lock().moved.push(me);
            self.followed.wake.notify_one();
        }
    }

    /// Writes the watermark as it is now. Under the lock, so the file never goes back to a
    /// value an overtaken writer read earlier.
    fn publish(&self) {
        self.write(&mut self.published.lock());
    }

    fn write(&self, p: &mut Published) {
        let hw = self.high_watermark.load(Ordering::SeqCst);
        if p.last == Some(hw) {
            return;
        }
        let mut bytes = [0u8; WATERMARK_LEN];
        bytes[..8].copy_from_slice(&hw.to_be_bytes());
        let crc = crc32c(&bytes[..8]);
        bytes[8..].copy_from_slice(&crc.to_be_bytes());
        let written = match &p.file {
            Some(file) => file.write_all_at(&bytes, 0),
            None => File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&self.path)
                .and_then(|file| {
                    file.write_all_at(&bytes, 0)?;
                    p.file = Some(file);
                    Ok(())
                }),
        };
        self.written_at
            .store(self.born.elapsed().as_nanos() as u64, Ordering::SeqCst);
        match written {
            Ok(()) => p.last = Some(hw),
            Err(e) if !p.failed => {
                // Readers lag behind; the writer is not hurt.
                p.failed = true;
                log::warn!("publishing the watermark to {}: {e}", self.path.display());
            }
            Err(_) => {}
        }
    }
}

/// The writer's thread that looks for readers and publishes the watermarks that moved (see
/// the module's docs).
#[derive(Debug)]
pub(crate) struct Lookout {
    followed: Arc<Followed>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Lookout {
    /// Creates the readers file in `dir` (saying nothing is published yet) and starts looking.
    pub(crate) fn start(dir: &Path, followed: Arc<Followed>) -> Result<Lookout> {
        let path = dir.join(READERS_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open", &path)?;
        // A crashed writer may have left it saying that it published.
        file.write_all_at(&[0], 0).ctx("write", &path)?;
        let looking = followed.clone();
        let thread = std::thread::Builder::new()
            .name("rivulet-lookout".into())
            .spawn(move || look(&file, &path, &looking))
            .ctx("spawn", Path::new("rivulet-lookout"))?;
        Ok(Lookout {
            followed,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread (logs publish nothing more).
    pub(crate) fn stop(&self) {
        self.followed.work.lock().stop = true;
        self.followed.wake.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Lookout {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a reader holds the readers file (shared).
fn probe(file: &File, path: &Path) -> bool {
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(e)) => {
            log::warn!("probing {}: {e}", path.display());
            false
        }
    }
}

fn look(file: &File, path: &Path, followed: &Followed) {
    let mut next_probe = Instant::now();
    let mut next_round = Instant::now();
    let mut work = followed.work.lock();
    while !work.stop {
        if Instant::now() >= next_probe {
            MutexGuard::unlocked(&mut work, || turn(file, path, followed));
            next_probe = Instant::now() + PROBE_EVERY;
            continue;
        }
        if !work.moved.is_empty() && Instant::now() < next_round {
            // Under a steady stream of appends, rounds are spaced: each publishes every move
            // since the last, and the thread takes little of the appenders' processors.
            followed.wake.wait_until(&mut work, next_round);
            continue;
        }
        let moved = std::mem::take(&mut work.moved);
        if !moved.is_empty() {
            next_round = Instant::now() + MIN_ROUND;
            MutexGuard::unlocked(&mut work, || {
                for beacon in moved {
                    // Cleared first: a move while it publishes queues it again.
                    beacon.queued.store(false, Ordering::SeqCst);
                    beacon.publish();
                }
            });
            continue;
        }
        followed.wake.wait_until(&mut work, next_probe);
    }
    // The last moves are published (what was acknowledged before the close shows), and the
    // queue, which holds the beacons, emptied. Readers are told to look for the writer again.
    let moved = std::mem::take(&mut work.moved);
    drop(work);
    for beacon in moved {
        beacon.queued.store(false, Ordering::SeqCst);
        beacon.publish();
    }
    followed.on.store(false, Ordering::SeqCst);
    if let Err(e) = file.write_all_at(&[0], 0) {
        log::warn!("writing {}: {e}", path.display());
    }
}

/// Starts publishing when readers came, stops when the last one went.
fn turn(file: &File, path: &Path, followed: &Followed) {
    let readers = probe(file, path);
    if readers == followed.on.load(Ordering::SeqCst) {
        return;
    }
    followed.on.store(readers, Ordering::SeqCst);
    let mut beacons = followed.beacons.lock();
    beacons.retain(|b| b.strong_count() > 0);
    let live: Vec<_> = beacons.iter().filter_map(Weak::upgrade).collect();
    drop(beacons);
    for beacon in &live {
        match readers {
            // Logs that move meanwhile are queued (the flag is up).
            true => beacon.publish(),
            // The files are closed while no one reads: the writer keeps no descriptor for them.
            false => *beacon.published.lock() = Published::default(),
        }
    }
    if let Err(e) = file.write_all_at(&[u8::from(readers) * PUBLISHING], 0) {
        log::warn!("writing {}: {e}", path.display());
    }
}

/// Whether the writer of `dir` says its logs publish their watermarks.
pub(crate) fn publishing(dir: &Path) -> bool {
    let mut byte = [0u8];
    File::open(dir.join(READERS_FILE))
        .and_then(|f| f.read_at(&mut byte, 0))
        .is_ok_and(|n| n == 1 && byte[0] == PUBLISHING)
}

/// The watermark the writer last published for the log in `dir`, if any.
pub(crate) fn published_watermark(dir: &Path) -> Option<i64> {
    read_watermark(&File::open(dir.join(WATERMARK_FILE)).ok()?)
}

/// A log's watermark file, kept open between reads.
#[derive(Debug)]
pub(crate) struct Watermark {
    path: PathBuf,
    file: Option<File>,
}

impl Watermark {
    /// The watermark file of the log in `dir`.
    pub(crate) fn new(dir: &Path) -> Watermark {
        Watermark {
            path: dir.join(WATERMARK_FILE),
            file: None,
        }
    }

    /// What the writer published last, if anything.
    pub(crate) fn read(&mut self) -> Option<i64> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        read_watermark(self.file.as_ref()?)
    }

    /// Opens the file again on the next read (its directory changed: it may be another file).
    pub(crate) fn reopen(&mut self) {
        self.file = None;
    }
}

fn read_watermark(file: &File) -> Option<i64> {
    // A read racing the writer's may be torn: it fails the CRC, and is read again.
    for _ in 0..3 {
        let mut bytes = [0u8; WATERMARK_LEN];
        if file.read_exact_at(&mut bytes, 0).is_err() {
            return None;
        }
        let crc = u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes"));
        if crc == crc32c(&bytes[..8]) {
            return Some(i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")));
        }
    }
    None
}

/// The base offsets of the segments in a log's directory, sorted (empty if it is gone).
pub(crate) fn segment_bases(dir: &Path) -> Result<Vec<i64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("list", dir),
    };
    let mut bases = Vec::new();
    for entry in entries {
        let name = entry.ctx("list", dir)?.file_name();
        if let Some((base, "log")) = segment::parse_file_name(&name.to_string_lossy()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// How far a reader may read a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// Below this offset (the published watermark of a live writer).
    Below(i64),
    /// Every whole batch on disk (no writer holds the directory).
    Whole,
}

impl Bound {
    fn admits(self, offset: i64) -> bool {
        match self {
            Bound::Below(end) => offset < end,
            Bound::Whole => true,
        }
    }
}

/// A reader's place in one log's segment files: the next offset it wants, and the open
/// segment and byte where it stands.
#[derive(Debug)]
pub(crate) struct Cursor {
    dir: PathBuf,
    next: i64,
    open: Option<OpenSegment>,
}

#[derive(Debug)]
struct OpenSegment {
    base: i64,
    path: PathBuf,
    file: File,
    position: u64,
    /// The file's length when last looked at.
    len: u64,
    /// Bytes read from the file at `buffered_at`, kept for one walk.
    buffer: Vec<u8>,
    buffered_at: u64,
}

/// How much a walk reads from a file first: a follower at the tail reads a little. Each
/// further read of the walk reads twice as much, up to `MAX_CHUNK` (more when a batch is
/// larger).
const FIRST_CHUNK: usize = 4 << 10;
const MAX_CHUNK: usize = 1 << 20;

impl OpenSegment {
    /// Whether the file holds `n` bytes from the position; if so they are in the buffer.
    fn buffered(&mut self, n: usize) -> Result<bool> {
        let (from, to) = (self.buffered_at, self.buffered_at + self.buffer.len() as u64);
        if self.position >= from && self.position + n as u64 <= to {
            return Ok(true);
        }
        // A file cut between its length and the read (a restarted writer's recovery trims
        // the reserved blocks past its last whole batch) is looked at again.
        for _ in 0..3 {
            self.len = self.file.metadata().ctx("stat", &self.path)?.len();
            let available = self.len.saturating_sub(self.position);
            if available < n as u64 {
                break;
            }
            let chunk = (self.buffer.len() * 2).clamp(FIRST_CHUNK, MAX_CHUNK);
            let read = (n.max(chunk) as u64).min(available) as usize;
            self.buffer.resize(read, 0);
            self.buffered_at = self.position;
            match self.file.read_exact_at(&mut self.buffer, self.position) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e).ctx("read", &self.path),
            }
        }
        self.buffer.clear();
        Ok(false)
    }

    /// The buffered bytes from the position on.
    fn here(&self) -> &[u8] {
        &self.buffer[(self.position - self.buffered_at) as usize..]
    }
}

/// What one step of a cursor found at its position.
enum Step {
    /// A whole batch, its header decoded, its length in bytes.
    Batch(BatchHeader, usize),
    /// Nothing more in this segment.
    End,
}

impl Cursor {
    /// A cursor over the log in `dir`, wanting `next` first.
    pub(crate) fn new(dir: PathBuf, next: i64) -> Cursor {
        Cursor {
            dir,
            next,
            open: None,
        }
    }

    /// The next offset the cursor wants.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next
    }

    /// Moves to `offset` (read from the segment holding it on the next read).
    pub(crate) fn seek(&mut self, offset: i64) {
        self.next = offset;
        self.open = None;
    }

    /// Reads whole batches holding offsets from the cursor's on, below `bound`, about
    /// `max_bytes` of them (at least one batch when there is one). Each batch passed its CRC.
    /// The cursor moves past them.
    pub(crate) fn read(&mut self, bound: Bound, max_bytes: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let walked = self.walk(bound, |_, bytes| {
            out.extend_from_slice(bytes);
            out.len() < max_bytes
        });
        match walked {
            // The cursor moved past what `out` holds: it is returned, and the error comes
            // again on the next read.
            Err(_) if !out.is_empty() => Ok(out),
            Err(e) => Err(e),
            Ok(()) => Ok(out),
        }
    }

    /// Drops the open segment if its file is no longer the one its name shows (the topic was
    /// deleted and made again, or the segment replaced): the next read finds its place anew.
    pub(crate) fn revalidate(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Some(seg) = &self.open else { return };
        let same = match (seg.file.metadata(), std::fs::metadata(&seg.path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            _ => false,
        };
        if !same {
            self.open = None;
        }
    }

    /// Walks whole batches from the cursor's offset below `bound`, handing each to `each`
    /// (its header and bytes) until `each` says stop; the cursor moves past what was handed.
    ///
    /// The bound was read before the walk, and the walk reads the files afresh: every batch
    /// below the bound was whole before its bytes were read.
    pub(crate) fn walk(
        &mut self,
        bound: Bound,
        mut each: impl FnMut(&BatchHeader, &[u8]) -> bool,
    ) -> Result<()> {
        let result = self.walk_buffered(bound, &mut each);
        if let Some(seg) = &mut self.open {
            seg.buffer = Vec::new();
        }
        result
    }

    fn walk_buffered(
        &mut self,
        bound: Bound,
        each: &mut impl FnMut(&BatchHeader, &[u8]) -> bool,
    ) -> Result<()> {
        // Bounded: each turn hands a batch, skips one, or moves to a later segment.
        loop {
            if !bound.admits(self.next) {
                return Ok(());
            }
            if self.open.is_none() && !self.locate()? {
                return Ok(());
            }
            match self.step(bound)? {
                Step::Batch(h, len) => {
                    if h.last_offset() < self.next {
                        self.open.as_mut().expect("located").position += len as u64;
                        continue;
                    }
                    if !bound.admits(h.base_offset) {
                        return Ok(());
                    }
                    self.next = h.next_offset();
                    let seg = self.open.as_mut().expect("located");
                    let more = each(&h, &seg.here()[..len]);
                    seg.position += len as u64;
                    if !more {
                        return Ok(());
                    }
                }
                Step::End => {
                    // On to the segment after this one, if the log has one. A later segment
                    // exists only once this one is sealed: it is looked at once more first,
                    // for batches appended between the look and the listing.
                    let base = self.open.as_ref().expect("located").base;
                    let bases = segment_bases(&self.dir)?;
                    let Some(&later) = bases.iter().find(|&&b| b > base) else {
                        return Ok(());
                    };
                    let seg = self.open.as_mut().expect("located");
                    seg.buffer.clear();
                    if let Step::Batch(..) = self.step(bound)? {
                        continue;
                    }
                    self.next = self.next.max(later);
                    self.open = None;
                }
            }
        }
    }

    /// Opens the segment holding the cursor's offset (the first segment, if retention passed
    /// the offset). False if the log has no segment.
    fn locate(&mut self) -> Result<bool> {
        // A segment removed between the listing and the open (retention, compaction) is
        // looked for again.
        for _ in 0..8 {
            let bases = segment_bases(&self.dir)?;
            let Some(&first) = bases.first() else {
                return Ok(false);
            };
            // Records below the log start (raised by DeleteRecords) are gone.
            let start = crate::storage::recorded_log_start(&self.dir).map_or(first, |s| s.max(first));
            self.next = self.next.max(start);
            let base = *bases
                .iter()
                .rev()
                .find(|&&b| b <= self.next)
                .expect("first <= next");
            let path = self.dir.join(format!("{}.log", segment::file_stem(base)));
            match File::open(&path) {
                Ok(file) => {
                    self.open = Some(OpenSegment {
                        base,
                        path,
                        file,
                        position: 0,
                        len: 0,
                        buffer: Vec::new(),
                        buffered_at: 0,
                    });
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("open", &path),
            }
        }
        Ok(false)
    }

    /// Reads the batch at the open segment's position.
    fn step(&mut self, bound: Bound) -> Result<Step> {
        let next = self.next;
        let seg = self.open.as_mut().expect("located");
        if !seg.buffered(HEADER_LEN)? {
            return Ok(Step::End);
        }
        // The frame's length is bounded by the file: a damaged length allocates nothing.
        let available = usize::try_from(seg.len - seg.position).unwrap_or(usize::MAX);
        let total = match format::frame_len(&seg.here()[..HEADER_LEN], available) {
            Ok(total) => total,
            // The frame is sound and the file holds all of it.
            Err(BatchError::Incomplete { needed, .. }) => needed,
            Err(e) => return judge(seg, next, bound, e),
        };
        if !seg.buffered(total)? {
            return Ok(Step::End);
        }
        match Batch::parse(&seg.here()[..total]) {
            Ok((batch, _)) => Ok(Step::Batch(*batch.header(), total)),
            Err(e) => judge(seg, next, bound, e),
        }
    }
}

/// What a batch that fails its checks means: the end of what was written, unless a writer
/// published offsets past it (then the segment is damaged). Zeros (blocks reserved for
/// appends) and an incomplete tail are the end.
fn judge(seg: &OpenSegment, next: i64, bound: Bound, why: BatchError) -> Result<Step> {
    let head = &seg.here()[..HEADER_LEN];
    let base = format::be_i64(head, 0);
    let written = head.iter().any(|&b| b != 0);
    match bound {
        Bound::Below(end) if written && base >= next && base < end => Err(Error::CorruptSegment {
            segment: seg.path.clone(),
            position: seg.position,
            reason: why,
        }),
        _ => Ok(Step::End),
    }
}
