//! One writer, many readers: what a broker's logs show to processes that open the same data
//! directory read-only ([`crate::ReadOnlyBroker`]).
//!
//! Readers never take the directory's lock and never write. They announce themselves by
//! holding a shared lock on the readers file (`.readers`, created by the writer). The writer's
//! lookout thread probes that lock ten times a second; while some reader holds it, every log
//! publishes its high watermark to a small `watermark` file in its directory whenever the
//! watermark moves, and the lookout writes `1` into the readers file once every log has
//! published (`0` when the last reader leaves, and at the writer's start). Without readers the
//! writer pays one relaxed atomic load per watermark move.
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
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::error::{BatchError, Error, IoContext, Result};
use crate::storage::format::{self, Batch, BatchHeader, HEADER_LEN, crc32c};
use crate::storage::segment;

/// The file whose shared lock readers hold, in the data directory.
pub(crate) const READERS_FILE: &str = ".readers";
/// A log's published high watermark, in its directory.
pub(crate) const WATERMARK_FILE: &str = "watermark";
/// How often the writer's lookout looks for readers.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(100);
/// The readers file's byte while the writer publishes.
const PUBLISHING: u8 = 1;
/// Bytes of a watermark file.
const WATERMARK_LEN: usize = 12;

/// Whether a broker's logs are followed by readers, shared by the logs and the lookout.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    on: AtomicBool,
    beacons: Mutex<Vec<Weak<Beacon>>>,
}

/// A log's publisher of its high watermark.
#[derive(Debug)]
pub(crate) struct Beacon {
    path: PathBuf,
    high_watermark: Arc<AtomicI64>,
    followed: Arc<Followed>,
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
        let beacon = Arc::new(Beacon {
            path: dir.join(WATERMARK_FILE),
            high_watermark,
            followed: followed.clone(),
            published: Mutex::default(),
        });
        followed.beacons.lock().push(Arc::downgrade(&beacon));
        beacon.moved();
        beacon
    }

    /// The watermark moved: published if anyone follows.
    pub(crate) fn moved(&self) {
        if self.followed.on.load(Ordering::Acquire) {
            self.publish();
        }
    }

    /// Writes the watermark as it is now. Under the lock, so the file never goes back to a
    /// value an overtaken writer read earlier.
    fn publish(&self) {
        let mut p = self.published.lock();
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
                    Ok(p.file.insert(file)).map(drop)
                }),
        };
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

/// The writer's thread that looks for readers (see the module's docs).
#[derive(Debug)]
pub(crate) struct Lookout {
    stop: Arc<(Mutex<bool>, Condvar)>,
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
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rivulet-lookout".into())
            .spawn(move || look(&file, &path, &followed, &stopped))
            .ctx("spawn", Path::new("rivulet-lookout"))?;
        Ok(Lookout {
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread (logs publish nothing more).
    pub(crate) fn stop(&self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
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

fn look(file: &File, path: &Path, followed: &Followed, stop: &(Mutex<bool>, Condvar)) {
    let mut stopped = stop.0.lock();
    while !*stopped {
        let readers = match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(e)) => {
                log::warn!("probing {}: {e}", path.display());
                false
            }
        };
        if readers != followed.on.load(Ordering::Acquire) {
            followed.on.store(readers, Ordering::Release);
            let mut beacons = followed.beacons.lock();
            beacons.retain(|b| b.strong_count() > 0);
            let live: Vec<_> = beacons.iter().filter_map(Weak::upgrade).collect();
            drop(beacons);
            if readers {
                // Logs that move meanwhile publish themselves (the flag is up).
                for beacon in &live {
                    beacon.publish();
                }
            }
            if let Err(e) = file.write_all_at(&[u8::from(readers) * PUBLISHING], 0) {
                log::warn!("writing {}: {e}", path.display());
            }
        }
        stop.1.wait_for(&mut stopped, PROBE_EVERY);
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
    let file = File::open(dir.join(WATERMARK_FILE)).ok()?;
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
}

/// What one step of a cursor found at its position.
enum Step {
    /// A whole batch, its header decoded.
    Batch(BatchHeader, Vec<u8>),
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
        self.walk(bound, |_, bytes| {
            out.extend_from_slice(bytes);
            out.len() < max_bytes
        })?;
        Ok(out)
    }

    /// Walks whole batches from the cursor's offset below `bound`, handing each to `each`
    /// (its header and bytes) until `each` says stop; the cursor moves past what was handed.
    pub(crate) fn walk(
        &mut self,
        bound: Bound,
        mut each: impl FnMut(&BatchHeader, &[u8]) -> bool,
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
                Step::Batch(h, bytes) => {
                    let seg = self.open.as_mut().expect("located");
                    seg.position += bytes.len() as u64;
                    if h.last_offset() < self.next {
                        continue;
                    }
                    if !bound.admits(h.base_offset) {
                        seg.position -= bytes.len() as u64;
                        return Ok(());
                    }
                    self.next = h.next_offset();
                    if !each(&h, &bytes) {
                        return Ok(());
                    }
                }
                Step::End => {
                    // On to the segment after this one, if the log has one.
                    let base = self.open.as_ref().expect("located").base;
                    let bases = segment_bases(&self.dir)?;
                    match bases.iter().find(|&&b| b > base) {
                        Some(&later) => {
                            self.next = self.next.max(later);
                            self.open = None;
                        }
                        None => return Ok(()),
                    }
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
            self.next = self.next.max(first);
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
        let seg = self.open.as_ref().expect("located");
        let len = seg.file.metadata().ctx("stat", &seg.path)?.len();
        let available = len.saturating_sub(seg.position);
        if available < HEADER_LEN as u64 {
            return Ok(Step::End);
        }
        let mut head = [0u8; HEADER_LEN];
        seg.file
            .read_exact_at(&mut head, seg.position)
            .ctx("read", &seg.path)?;
        // The frame's length is bounded by the file: a damaged length allocates nothing.
        let max = usize::try_from(available).unwrap_or(usize::MAX);
        let total = match format::frame_len(&head, max) {
            Ok(total) => total,
            // The frame is sound and the file holds all of it.
            Err(BatchError::Incomplete { needed, .. }) => needed,
            Err(e) => return self.damaged_or_end(bound, &head, e),
        };
        let mut bytes = vec![0u8; total];
        seg.file
            .read_exact_at(&mut bytes, seg.position)
            .ctx("read", &seg.path)?;
        if let Err(e) = Batch::parse(&bytes) {
            return self.damaged_or_end(bound, &head, e);
        }
        Ok(Step::Batch(BatchHeader::decode(&bytes), bytes))
    }

    /// What a batch that fails its checks means: the end of what was written, unless a
    /// writer published offsets past it (then the segment is damaged). Zeros (blocks reserved
    /// for appends) and an incomplete tail are the end.
    fn damaged_or_end(&self, bound: Bound, head: &[u8], why: BatchError) -> Result<Step> {
        let seg = self.open.as_ref().expect("located");
        let base = format::be_i64(head, 0);
        let written = head.iter().any(|&b| b != 0);
        match bound {
            Bound::Below(end) if written && base >= self.next && base < end => Err(Error::CorruptSegment {
                segment: seg.path.clone(),
                position: seg.position,
                reason: why,
            }),
            _ => Ok(Step::End),
        }
    }
}
