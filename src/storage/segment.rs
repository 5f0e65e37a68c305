//! A segment: `<base offset, 20 digits>.log` holding whole batches back to back, with its
//! `.index` and `.timeindex`.
//!
//! Invariants: batches in a segment have offsets at or above the segment's base offset and
//! below the next segment's; batch offsets increase. The writer appends at `size`; readers see
//! the bytes below `readable`, which is always a batch boundary and only grows while the bytes
//! below it are durable under the log's policy (truncation aside).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::error::{BatchError, Error, IoContext, Result};
use crate::storage::format::{self, Batch, BatchHeader, HEADER_LEN};
use crate::storage::index::{Index, IndexKind, OffsetIndex, TimeIndex};
use crate::storage::io::{Fs, FsFile};
use crate::storage::mmap::MappedTail;

/// Batches up to this size may be copied into the map of the segment's tail instead of being
/// written with `pwrite`. On the development machine the system call costs about 1 us and then
/// writes 4.5 GB/s, while the map's page faults hold it to about 1 GB/s: the two meet near
/// 1.3 KB.
const MAPPED_APPEND_MAX: usize = 1024;

/// File name stem of a segment: its base offset in 20 digits, as Kafka names them.
pub(crate) fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The base offset of a `<20 digits>.<ext>` file name.
pub(crate) fn parse_file_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    path: PathBuf,
    file: Arc<dyn FsFile>,
    pub(crate) offsets: OffsetIndex,
    pub(crate) times: TimeIndex,
    /// Bytes written. The writer's alone.
    size: AtomicU64,
    /// Bytes readers may see: whole batches, durable under the policy.
    readable: AtomicU64,
    /// One past the last offset written.
    next_offset: AtomicI64,
    /// Largest timestamp written (-1 when none) and the last offset of its batch.
    max_timestamp: AtomicI64,
    offset_of_max_timestamp: AtomicI64,
    /// Bytes of batches since the last index entry. The writer's alone.
    bytes_since_index: AtomicU32,
    /// The map small appends are copied into. The writer's alone.
    tail: Mutex<MappedTail>,
}

/// What a scan of a segment's bytes found.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// The position after the last good batch.
    pub(crate) valid_len: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped_by: Option<BatchError>,
}

impl Segment {
    fn paths(dir: &Path, base_offset: i64) -> [PathBuf; 3] {
        let stem = file_stem(base_offset);
        ["log", "index", "timeindex"].map(|ext| dir.join(format!("{stem}.{ext}")))
    }

    /// Opens or creates the segment's three files. `index_capacity` preallocates the indexes
    /// for appending (the active segment); without it they are taken as trimmed. The returned
    /// segment reports no batches until [`Segment::load`] or [`Segment::rebuild`] has run.
    pub(crate) fn open(
        fs: &dyn Fs,
        dir: &Path,
        base_offset: i64,
        index_capacity: Option<u32>,
    ) -> Result<Segment> {
        let [log, index, timeindex] = Self::paths(dir, base_offset);
        let file = fs.open(&log, true).ctx("open", &log)?;
        let size = file.len().ctx("stat", &log)?;
        Ok(Segment {
            base_offset,
            offsets: OffsetIndex(Index::open(fs, &index, IndexKind::Offset, index_capacity)?),
            times: TimeIndex(Index::open(fs, &timeindex, IndexKind::Time, index_capacity)?),
            path: log,
            file,
            size: AtomicU64::new(size),
            readable: AtomicU64::new(0),
            next_offset: AtomicI64::new(base_offset),
            max_timestamp: AtomicI64::new(-1),
            offset_of_max_timestamp: AtomicI64::new(base_offset),
            bytes_since_index: AtomicU32::new(0),
            tail: Mutex::new(MappedTail::default()),
        })
    }

    /// True if both index files exist (they are created on open when missing).
    pub(crate) fn index_files_exist(dir: &Path, base_offset: i64) -> bool {
        let [_, index, timeindex] = Self::paths(dir, base_offset);
        index.exists() && timeindex.exists()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn readable(&self) -> u64 {
        self.readable.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// The largest timestamp of the segment's first batch (-1 if it has none, or the segment
    /// is empty).
    pub(crate) fn first_batch_timestamp(&self) -> Result<i64> {
        let size = self.size();
        if size == 0 {
            return Ok(-1);
        }
        Ok(self.header_at(0, size)?.max_timestamp)
    }

    /// The time retention judges the segment by, in milliseconds since the epoch: its largest
    /// record timestamp, or, as Kafka does when no record has one (they are all negative), the
    /// log file's modification time.
    pub(crate) fn retention_timestamp(&self) -> i64 {
        let max = self.max_timestamp();
        if max >= 0 {
            return max;
        }
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(i64::MAX, |d| d.as_millis().min(i64::MAX as u128) as i64)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Lets readers see bytes up to `position` (a batch boundary).
    pub(crate) fn publish(&self, position: u64) {
        self.readable.fetch_max(position, Ordering::Release);
    }

    /// The offset relative to the base, as stored in the indexes.
    fn relative(&self, offset: i64) -> u32 {
        (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32
    }

    /// True if a batch whose offsets end at `last_offset` still fits the 32-bit relative
    /// offsets of this segment's indexes.
    pub(crate) fn can_hold_offset(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i32::MAX as i64
    }

    /// Appends one batch's bytes. A small batch is copied into the map of the file's tail
    /// when `through_map` allows it (the policy does not sync every append); others are
    /// written with a system call. On failure the file is cut back to where it was; if even
    /// that fails the error says so and the caller must stop writing.
    pub(crate) fn append(
        &self,
        bytes: &[u8],
        header: &BatchHeader,
        index_interval: u32,
        through_map: bool,
    ) -> Result<(), AppendError> {
        let pos = self.size();
        let mut tail = self.tail.lock();
        let mapped = through_map
            && bytes.len() <= MAPPED_APPEND_MAX
            && self.file.appends_through_map()
            && tail.write(self.file.file(), pos, bytes);
        if !mapped && let Err(e) = self.file.write_all_at(bytes, pos) {
            let cut = tail.shorten(pos, || self.file.set_len(pos));
            let err = Error::Io {
                op: "write",
                path: self.path.clone(),
                source: e,
            };
            return Err(match cut {
                Ok(()) => AppendError::NothingWritten(err),
                Err(_) => AppendError::Damaged(err),
            });
        }
        drop(tail);
        self.note_batch(pos, header, index_interval, true);
        Ok(())
    }

    /// Gives back the blocks reserved past the last batch for mapped appends. Called before
    /// the segment is sealed and when the log closes; a crash leaves them as zeros, which
    /// recovery cuts.
    pub(crate) fn trim(&self) -> Result<()> {
        let mut tail = self.tail.lock();
        let len = self.size();
        if tail.reserved_past(len) {
            tail.shorten(len, || self.file.set_len(len))
                .ctx("truncate", &self.path)?;
        }
        Ok(())
    }

    /// Updates sizes, offsets, timestamps and indexes for a batch now at `pos`.
    fn note_batch(&self, pos: u64, h: &BatchHeader, index_interval: u32, may_index: bool) {
        let len = h.total_len() as u64;
        if h.max_timestamp > self.max_timestamp.load(Ordering::Relaxed) {
            self.max_timestamp.store(h.max_timestamp, Ordering::Release);
            self.offset_of_max_timestamp
                .store(h.last_offset(), Ordering::Release);
        }
        if may_index && self.bytes_since_index.load(Ordering::Relaxed) > index_interval {
            // A full index is caught by the writer's roll check before the append.
            self.offsets.push(self.relative(h.last_offset()), pos as u32);
            self.push_time_entry();
            self.bytes_since_index.store(0, Ordering::Relaxed);
        }
        let since = self.bytes_since_index.load(Ordering::Relaxed);
        self.bytes_since_index
            .store(since.saturating_add(len as u32), Ordering::Relaxed);
        self.next_offset.store(h.next_offset(), Ordering::Release);
        self.size.store(pos + len, Ordering::Release);
    }

    /// Adds a time index entry if the largest timestamp grew since the last one.
    fn push_time_entry(&self) {
        let max = self.max_timestamp.load(Ordering::Acquire);
        if max >= 0 && self.times.last().is_none_or(|(t, _)| max > t) {
            let rel = self.relative(self.offset_of_max_timestamp.load(Ordering::Acquire));
            self.times.push(max, rel);
        }
    }

    /// True if either index has no room for another entry.
    pub(crate) fn indexes_full(&self) -> bool {
        self.offsets.0.is_full() || self.times.0.is_full()
    }

    /// Makes the segment immutable: records its final time index entry, trims both indexes
    /// and syncs them. The caller has synced the log file.
    pub(crate) fn seal(&self) -> Result<()> {
        self.push_time_entry();
        self.offsets.0.seal()?;
        self.times.0.seal()
    }

    /// `fdatasync` of the log file.
    pub(crate) fn sync(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.file.sync_data().ctx("fsync", &self.path);
        crate::telemetry::fsynced(started.elapsed());
        result
    }

    /// Reads the header of the batch at `pos`, which must end at or before `limit`.
    pub(crate) fn header_at(&self, pos: u64, limit: u64) -> Result<BatchHeader> {
        let mut buf = [0u8; HEADER_LEN];
        if pos + HEADER_LEN as u64 > limit {
            return Err(self.corruption(
                pos,
                BatchError::Incomplete {
                    needed: HEADER_LEN,
                    available: limit.saturating_sub(pos) as usize,
                },
            ));
        }
        self.file.read_exact_at(&mut buf, pos).ctx("read", &self.path)?;
        self.checked_header(&buf, pos, limit)
    }

    /// The header at the start of `bytes` (at least `HEADER_LEN` of them), read from `pos`:
    /// its frame must be sound and the batch must end at or before `limit`.
    fn checked_header(&self, bytes: &[u8], pos: u64, limit: u64) -> Result<BatchHeader> {
        let available = (limit - pos).min(usize::MAX as u64) as usize;
        if let Err(reason) = format::frame_len(&bytes[..HEADER_LEN], available) {
            // Only the header is looked at; only a length past `limit` is a problem.
            if !matches!(reason, BatchError::Incomplete { .. }) {
                return Err(self.corruption(pos, reason));
            }
        }
        let h = BatchHeader::decode(bytes);
        if pos + h.total_len() as u64 > limit {
            return Err(self.corruption(
                pos,
                BatchError::Incomplete {
                    needed: h.total_len(),
                    available,
                },
            ));
        }
        Ok(h)
    }

    /// The position of the first batch below `limit` whose last offset is at or above
    /// `offset`, with its header; `None` if there is none.
    ///
    /// The walk from the nearest index entry reads the file in chunks of `FIND_CHUNK` bytes and
    /// steps over the headers in memory: one read covers an index interval of small batches
    /// (reading header by header cost a system call per batch, a dozen for a consumer at the
    /// tail of a log of small batches).
    pub(crate) fn find(&self, offset: i64, limit: u64) -> Result<Option<(u64, BatchHeader)>> {
        const FIND_CHUNK: usize = 4096;
        let (_, pos) = self.offsets.lookup(self.relative(offset));
        let mut pos = pos as u64;
        let mut chunk = [0u8; FIND_CHUNK];
        while pos < limit {
            let n = (limit - pos).min(FIND_CHUNK as u64) as usize;
            if n < HEADER_LEN {
                return Err(self.corruption(
                    pos,
                    BatchError::Incomplete {
                        needed: HEADER_LEN,
                        available: n,
                    },
                ));
            }
            self.file
                .read_exact_at(&mut chunk[..n], pos)
                .ctx("read", &self.path)?;
            let mut at = 0;
            while at + HEADER_LEN <= n {
                let h = self.checked_header(&chunk[at..n], pos + at as u64, limit)?;
                if h.last_offset() >= offset {
                    return Ok(Some((pos + at as u64, h)));
                }
                at += h.total_len();
            }
            pos += at as u64;
        }
        Ok(None)
    }

    /// Reads whole batches from `pos` (a batch boundary below `limit`): as many as fit in
    /// `max_bytes`, and at least the first one whatever its size, stopping before any batch
    /// that starts at or past `below` (the caller's high watermark; the first batch is the
    /// caller's to check). Every batch returned passed its CRC check; reading stops before a
    /// bad one, and a bad first batch is an error.
    ///
    /// `buf` is reused: its old bytes are overwritten, and only growth past its length is
    /// zero-filled (a reader hands back its previous buffer, so that is rarely much).
    pub(crate) fn read(
        &self,
        pos: u64,
        first: &BatchHeader,
        max_bytes: usize,
        limit: u64,
        below: i64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let want = (limit - pos).min(max_bytes as u64).max(first.total_len() as u64) as usize;
        buf.resize(want, 0);
        self.file.read_exact_at(&mut buf, pos).ctx("read", &self.path)?;
        let mut good = 0;
        while good < buf.len() {
            match Batch::parse(&buf[good..]) {
                Ok((batch, _)) if good > 0 && batch.header().base_offset >= below => break,
                Ok((batch, _)) => good += batch.as_bytes().len(),
                Err(BatchError::Incomplete { .. }) if good > 0 => break,
                Err(e) if good > 0 => {
                    log::debug!(
                        "stopping a read before a bad batch in {}: {e}",
                        self.path.display()
                    );
                    break;
                }
                Err(e) => return Err(self.corruption(pos, e)),
            }
        }
        buf.truncate(good);
        Ok(buf)
    }

    /// The error for a bad stored batch at `pos`.
    pub(crate) fn corruption(&self, pos: u64, e: BatchError) -> Error {
        match e {
            BatchError::CrcMismatch { expected, actual } => Error::ChecksumMismatch {
                segment: self.path.clone(),
                position: pos,
                expected,
                actual,
            },
            reason => Error::CorruptSegment {
                segment: self.path.clone(),
                position: pos,
                reason,
            },
        }
    }

    /// Walks the batches from `pos` to the end of the file, checking each one's frame and CRC
    /// and noting it (offsets, timestamps, and index entries when `index` is set). Stops at the
    /// first batch that is torn or bad.
    ///
    /// With `dense`, each batch must start at the offset after the previous one (and the first
    /// at the segment's base): true of every segment compaction has not rewritten, and so of the
    /// active one. It catches damage to the base offset, which the CRC does not cover.
    fn scan_from(&self, mut pos: u64, interval: u32, mut index: bool, dense: bool) -> Result<ScanEnd> {
        const CHUNK: usize = 1 << 20;
        let file_len = self.file.len().ctx("stat", &self.path)?;
        let mut buf = Vec::new();
        while pos < file_len {
            let want = (file_len - pos).min(CHUNK as u64) as usize;
            buf.resize(want, 0);
            self.file.read_exact_at(&mut buf, pos).ctx("read", &self.path)?;
            let mut at = 0;
            while at < buf.len() {
                match Batch::parse(&buf[at..]) {
                    Ok((batch, _)) => {
                        let h = batch.header();
                        let misplaced = if dense {
                            h.base_offset != self.next_offset()
                        } else {
                            h.base_offset < self.next_offset()
                        };
                        if misplaced || !self.can_hold_offset(h.last_offset()) {
                            return Ok(ScanEnd {
                                valid_len: pos + at as u64,
                                stopped_by: Some(BatchError::BadRecordCount {
                                    count: h.record_count,
                                    reason: "batch offsets go backwards or leave the segment",
                                }),
                            });
                        }
                        self.note_batch(pos + at as u64, h, interval, index);
                        index = true;
                        at += h.total_len();
                    }
                    Err(BatchError::Incomplete { needed, .. }) if at > 0 || needed <= buf.len() => break,
                    Err(BatchError::Incomplete { needed, .. }) if pos + (needed as u64) <= file_len => {
                        // A batch larger than the chunk: read it whole.
                        buf.resize(needed, 0);
                        self.file.read_exact_at(&mut buf, pos).ctx("read", &self.path)?;
                    }
                    Err(e) => {
                        return Ok(ScanEnd {
                            valid_len: pos + at as u64,
                            stopped_by: Some(e),
                        });
                    }
                }
            }
            if at == 0 {
                // Not even one batch fits in what is left of the file: a torn tail.
                return Ok(ScanEnd {
                    valid_len: pos,
                    stopped_by: Some(BatchError::Incomplete {
                        needed: HEADER_LEN.max(buf.len() + 1),
                        available: buf.len(),
                    }),
                });
            }
            pos += at as u64;
        }
        Ok(ScanEnd {
            valid_len: pos,
            stopped_by: None,
        })
    }

    /// Rebuilds both indexes and all counters by scanning every batch (see `scan_from` for
    /// `dense`).
    /// The indexes are extended to `capacity` bytes for it; sealing trims them again.
    pub(crate) fn rebuild(&self, interval: u32, dense: bool, capacity: u32) -> Result<ScanEnd> {
        self.unseal(capacity)?;
        self.offsets.0.truncate_entries(0);
        self.times.0.truncate_entries(0);
        self.reset_counters();
        self.scan_from(0, interval, true, dense)
    }

    fn reset_counters(&self) {
        self.next_offset.store(self.base_offset, Ordering::Release);
        self.max_timestamp.store(-1, Ordering::Release);
        self.offset_of_max_timestamp
            .store(self.base_offset, Ordering::Release);
        self.bytes_since_index.store(0, Ordering::Relaxed);
    }

    /// Loads a segment whose indexes are believed good: checks them, then scans only the
    /// batches after the last index entry. Returns `None` if the indexes do not match the log
    /// (the caller rebuilds).
    pub(crate) fn load(&self, interval: u32, dense: bool) -> Result<Option<ScanEnd>> {
        let len = self.file.len().ctx("stat", &self.path)?;
        if !self.offsets.is_sane(len) || !self.times.is_sane(u32::MAX) {
            return Ok(None);
        }
        let last_time = self.times.last();
        let start = match self.offsets.last() {
            None => None,
            // The last entry must point at a batch whose last offset it names.
            Some((rel, pos)) => match self.header_at(pos as u64, len) {
                Ok(h) if h.last_offset() == self.base_offset + rel as i64 && last_time.is_some() => {
                    Some((pos as u64, h))
                }
                _ => return Ok(None),
            },
        };
        self.reset_counters();
        if let Some((ts, rel)) = last_time {
            self.max_timestamp.store(ts, Ordering::Release);
            self.offset_of_max_timestamp
                .store(self.base_offset + rel as i64, Ordering::Release);
        }
        // The last indexed batch is scanned again (it is where the scan starts) but must not
        // be indexed twice.
        let from = start.map_or(0, |(pos, h)| {
            self.next_offset.store(h.base_offset, Ordering::Release);
            pos
        });
        let end = self.scan_from(from, interval, start.is_none(), dense)?;
        // A time entry past the end of the log is stale.
        if last_time.is_some_and(|(_, rel)| self.base_offset + rel as i64 >= self.next_offset()) {
            return Ok(None);
        }
        Ok(Some(end))
    }

    /// True if every byte of the file from `pos` to its end is zero.
    pub(crate) fn zeros_from(&self, mut pos: u64) -> Result<bool> {
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = self.file.read_at(&mut chunk, pos).ctx("read", &self.path)?;
            if n == 0 {
                return Ok(true);
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
        }
    }

    /// Cuts the log file to `len` (a batch boundary found by a scan).
    pub(crate) fn truncate_file(&self, len: u64) -> Result<()> {
        self.tail
            .lock()
            .shorten(len, || self.file.set_len(len))
            .ctx("truncate", &self.path)?;
        self.size.store(len, Ordering::Release);
        self.readable.fetch_min(len, Ordering::AcqRel);
        Ok(())
    }

    /// Removes every batch whose last offset is at or above `offset`; returns the new next
    /// offset. The segment must be the active one (its indexes extended to `capacity`);
    /// `dense` as for [`Segment::rebuild`].
    pub(crate) fn truncate_to(&self, offset: i64, interval: u32, capacity: u32, dense: bool) -> Result<i64> {
        let size = self.size();
        let Some((pos, h)) = self.find(offset, size)? else {
            return Ok(self.next_offset());
        };
        let rel = self.relative(h.base_offset);
        self.offsets
            .0
            .truncate_entries(self.offsets.entries_before_position(pos as u32));
        self.times
            .0
            .truncate_entries(self.times.entries_before_offset(rel));
        self.truncate_file(pos)?;
        // Recompute the counters from the surviving indexes and tail.
        let end = match self.load(interval, dense)? {
            Some(end) => end,
            None => self.rebuild(interval, dense, capacity)?,
        };
        if let Some(why) = end.stopped_by {
            // The bytes before `pos` were whole batches a moment ago.
            return Err(self.corruption(end.valid_len, why));
        }
        Ok(self.next_offset())
    }

    /// Makes a freshly loaded segment readable up to its end.
    pub(crate) fn publish_all(&self) {
        self.publish(self.size());
    }

    /// Removes the segment's files. Readers that still hold it keep reading through their open
    /// handles.
    pub(crate) fn delete_files(&self, fs: &dyn Fs) -> Result<()> {
        let aborted = self.path.with_extension(crate::storage::txnindex::SUFFIX);
        for path in [&self.path, self.offsets.0.path(), self.times.0.path(), &aborted] {
            match fs.remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx("remove", path),
            }
        }
        Ok(())
    }

    /// Extends the indexes of a reopened active segment for appending.
    pub(crate) fn unseal(&self, capacity: u32) -> Result<()> {
        self.offsets.0.unseal(capacity)?;
        self.times.0.unseal(capacity)
    }
}

/// How an append failed.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The file is as it was before.
    NothingWritten(Error),
    /// Part of the batch may be in the file and could not be cut away.
    Damaged(Error),
}

impl AppendError {
    /// The underlying error.
    pub(crate) fn into_error(self) -> Error {
        match self {
            AppendError::NothingWritten(e) | AppendError::Damaged(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_twenty_digit_offsets() {
        assert_eq!(file_stem(42), "00000000000000000042");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some((42, "log")));
        assert_eq!(
            parse_file_name("00000000000000000042.timeindex"),
            Some((42, "timeindex"))
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
    }
}
