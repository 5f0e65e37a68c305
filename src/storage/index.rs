//! The sparse indexes of a segment, in Kafka's formats.
//!
//! ```text
//! .index      entries of 8 bytes:  relative offset (u32 BE) | position in .log (u32 BE)
//! .timeindex  entries of 12 bytes: timestamp (i64 BE)        | relative offset (u32 BE)
//! ```
//!
//! An offset entry maps the last offset of a batch to the byte position where that batch
//! starts. A time entry holds the largest timestamp seen so far in the segment and the last
//! offset of the batch that brought it; its timestamps strictly increase. Entries are added at
//! most every `index.interval.bytes` of batches, so lookups are a binary search followed by a
//! short scan of the log.
//!
//! The active segment's index files are preallocated to `segment.index.bytes` and memory-mapped;
//! when the segment is sealed (and when the log closes) they are trimmed to their entries, so
//! a file's length tells how many entries it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::error::{IoContext, Result};
use crate::storage::io::{Fs, FsFile};
use crate::storage::mmap::MappedWords;

/// Which of the two indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKind {
    Offset,
    Time,
}

impl IndexKind {
    /// Words (u32) per entry.
    fn words(self) -> usize {
        match self {
            IndexKind::Offset => 2,
            IndexKind::Time => 3,
        }
    }

    pub(crate) fn entry_bytes(self) -> usize {
        self.words() * 4
    }
}

/// An index file, memory-mapped.
#[derive(Debug)]
pub(crate) struct Index {
    kind: IndexKind,
    path: PathBuf,
    file: Arc<dyn FsFile>,
    /// `None` when the index holds no entries and is sealed (nothing to map). Readers and the
    /// writer take this lock shared; only trimming (which remaps) takes it exclusively.
    map: RwLock<Option<MappedWords>>,
    /// Entries published to readers.
    entries: AtomicUsize,
    /// Entries the current map has room for.
    capacity: AtomicUsize,
}

impl std::fmt::Debug for MappedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedWords({} words)", self.words().len())
    }
}

impl Index {
    /// Opens (or creates) an index file. Its entries are `len / entry size` (a trimmed file);
    /// with `capacity_bytes` set, the file is extended to that size for appending.
    pub(crate) fn open(
        fs: &dyn Fs,
        path: &Path,
        kind: IndexKind,
        capacity_bytes: Option<u32>,
    ) -> Result<Index> {
        let file = fs.open(path, true).ctx("open", path)?;
        let len = file.len().ctx("stat", path)? as usize;
        let entries = len / kind.entry_bytes();
        let index = Index {
            kind,
            path: path.to_path_buf(),
            file,
            map: RwLock::new(None),
            entries: AtomicUsize::new(entries),
            capacity: AtomicUsize::new(0),
        };
        index.remap(capacity_bytes)?;
        Ok(index)
    }

    /// Sets the file to hold the entries plus room up to `capacity_bytes` (or exactly the
    /// entries when `None`), and maps it.
    fn remap(&self, capacity_bytes: Option<u32>) -> Result<()> {
        let entry = self.kind.entry_bytes();
        let mut map = self.map.write();
        if let Some(m) = map.take() {
            m.flush().ctx("msync", &self.path)?;
        }
        let entries = self.entries.load(Ordering::Acquire);
        let wanted = capacity_bytes.map_or(0, |c| c as usize / entry).max(entries);
        let len = wanted * entry;
        self.file.set_len(len as u64).ctx("resize", &self.path)?;
        if len > 0 {
            let words = MappedWords::new(self.file.file(), len).ctx("mmap", &self.path)?;
            if capacity_bytes.is_some()
                && let Err(e) = words.no_read_ahead_from(entries * entry)
            {
                log::debug!("madvise on {}: {e}", self.path.display());
            }
            *map = Some(words);
        }
        self.capacity.store(wanted, Ordering::Release);
        Ok(())
    }

    /// Trims the file to its entries and makes it durable: the index of a sealed segment.
    pub(crate) fn seal(&self) -> Result<()> {
        self.remap(None)?;
        self.file.sync_data().ctx("fsync", &self.path)
    }

    /// Extends a trimmed index again for appending (a reopened active segment).
    pub(crate) fn unseal(&self, capacity_bytes: u32) -> Result<()> {
        self.remap(Some(capacity_bytes))
    }

    /// Entries visible to readers.
    pub(crate) fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity.load(Ordering::Acquire)
    }

    /// Appends an entry. Only the writer calls this; returns false when the index is full.
    fn push(&self, words: &[u32]) -> bool {
        let map = self.map.read();
        let n = self.entries.load(Ordering::Relaxed);
        if n >= self.capacity.load(Ordering::Relaxed) {
            return false;
        }
        let Some(m) = map.as_ref() else { return false };
        let w = self.kind.words();
        for (slot, v) in m.words()[n * w..(n + 1) * w].iter().zip(words) {
            slot.store(v.to_be(), Ordering::Relaxed);
        }
        self.entries.store(n + 1, Ordering::Release);
        true
    }

    /// Drops the entries from `n` on (they are overwritten by later appends).
    pub(crate) fn truncate_entries(&self, n: usize) {
        let cur = self.entries.load(Ordering::Acquire);
        self.entries.store(n.min(cur), Ordering::Release);
    }

    /// Reads entry `i`'s words.
    fn entry<const W: usize>(words: &[std::sync::atomic::AtomicU32], i: usize) -> [u32; W] {
        std::array::from_fn(|k| u32::from_be(words[i * W + k].load(Ordering::Relaxed)))
    }

    /// All entries, decoded (for checks and tests).
    fn with_words<R>(&self, f: impl FnOnce(&[std::sync::atomic::AtomicU32], usize) -> R) -> R {
        let map = self.map.read();
        let n = self.entries.load(Ordering::Acquire);
        match map.as_ref() {
            Some(m) => f(m.words(), n),
            None => f(&[], 0),
        }
    }

    /// Binary search: the number of entries for which `pred` holds, `pred` being true for a
    /// prefix of the entries.
    fn partition_point<const W: usize>(&self, pred: impl Fn([u32; W]) -> bool) -> (usize, Option<[u32; W]>) {
        self.with_words(|words, n| {
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if pred(Self::entry::<W>(words, mid)) {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let found = lo.checked_sub(1).map(|i| Self::entry::<W>(words, i));
            (lo, found)
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The offset index of a segment.
#[derive(Debug)]
pub(crate) struct OffsetIndex(pub(crate) Index);

impl OffsetIndex {
    /// Adds `(relative last offset, position)`.
    pub(crate) fn push(&self, relative_offset: u32, position: u32) -> bool {
        self.0.push(&[relative_offset, position])
    }

    /// The entry with the largest relative offset at or below `relative`: where to start
    /// scanning for it. `(0, 0)` when there is none.
    pub(crate) fn lookup(&self, relative: u32) -> (u32, u32) {
        let (_, found) = self.0.partition_point::<2>(|[o, _]| o <= relative);
        found.map_or((0, 0), |[o, p]| (o, p))
    }

    /// The entry with the largest position below `position` (for truncation): its index.
    pub(crate) fn entries_before_position(&self, position: u32) -> usize {
        self.0.partition_point::<2>(|[_, p]| p < position).0
    }

    pub(crate) fn last(&self) -> Option<(u32, u32)> {
        self.0.with_words(|w, n| {
            n.checked_sub(1)
                .map(|i| Index::entry::<2>(w, i))
                .map(|[o, p]| (o, p))
        })
    }

    /// Checks the entries' shape: offsets and positions strictly increase and positions lie
    /// within the segment.
    pub(crate) fn is_sane(&self, segment_len: u64) -> bool {
        self.0.with_words(|w, n| {
            let mut prev: Option<[u32; 2]> = None;
            (0..n).all(|i| {
                let e = Index::entry::<2>(w, i);
                let ok = (e[1] as u64) < segment_len && prev.is_none_or(|p| e[0] > p[0] && e[1] > p[1]);
                prev = Some(e);
                ok
            })
        })
    }
}

/// The time index of a segment.
#[derive(Debug)]
pub(crate) struct TimeIndex(pub(crate) Index);

impl TimeIndex {
    /// Adds `(timestamp, relative offset)`; callers only add growing timestamps.
    pub(crate) fn push(&self, timestamp: i64, relative_offset: u32) -> bool {
        let t = timestamp as u64;
        self.0.push(&[(t >> 32) as u32, t as u32, relative_offset])
    }

    fn decode([hi, lo, o]: [u32; 3]) -> (i64, u32) {
        ((((hi as u64) << 32) | lo as u64) as i64, o)
    }

    /// The entry with the largest timestamp strictly below `timestamp`: every record up to its
    /// offset has a smaller timestamp.
    pub(crate) fn last_below(&self, timestamp: i64) -> Option<(i64, u32)> {
        let (_, found) = self.0.partition_point::<3>(|e| Self::decode(e).0 < timestamp);
        found.map(Self::decode)
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.0
            .with_words(|w, n| n.checked_sub(1).map(|i| Self::decode(Index::entry::<3>(w, i))))
    }

    /// The number of entries whose relative offset is below `relative` (for truncation).
    pub(crate) fn entries_before_offset(&self, relative: u32) -> usize {
        self.0.partition_point::<3>(|e| Self::decode(e).1 < relative).0
    }

    /// Timestamps strictly increase and offsets never decrease, up to `max_relative`.
    pub(crate) fn is_sane(&self, max_relative: u32) -> bool {
        self.0.with_words(|w, n| {
            let mut prev: Option<(i64, u32)> = None;
            (0..n).all(|i| {
                let e = Self::decode(Index::entry::<3>(w, i));
                let ok = e.1 <= max_relative && prev.is_none_or(|p| e.0 > p.0 && e.1 >= p.1);
                prev = Some(e);
                ok
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::StdFs;

    #[test]
    fn lookups_find_the_entry_at_or_below() {
        let dir = tempfile::tempdir().unwrap();
        let idx = OffsetIndex(
            Index::open(&StdFs, &dir.path().join("0.index"), IndexKind::Offset, Some(80)).unwrap(),
        );
        assert_eq!(idx.lookup(5), (0, 0));
        for i in 1..=10u32 {
            assert!(idx.push(i * 10, i * 100));
        }
        assert!(idx.0.is_full());
        assert!(!idx.push(200, 2000));
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 100));
        assert_eq!(idx.lookup(55), (50, 500));
        assert_eq!(idx.lookup(1000), (100, 1000));
        assert!(idx.is_sane(1001));
        assert!(!idx.is_sane(1000));
    }

    #[test]
    fn seal_trims_and_reopen_sees_the_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let idx = TimeIndex(Index::open(&StdFs, &path, IndexKind::Time, Some(1200)).unwrap());
        idx.push(-5, 0);
        idx.push(1 << 40, 3);
        idx.push((1 << 40) + 1, 7);
        idx.0.seal().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 36);
        drop(idx);
        let idx = TimeIndex(Index::open(&StdFs, &path, IndexKind::Time, None).unwrap());
        assert_eq!(idx.last(), Some(((1 << 40) + 1, 7)));
        assert_eq!(idx.last_below(1 << 40), Some((-5, 0)));
        assert_eq!(idx.last_below(-5), None);
        assert!(idx.is_sane(7));
        assert!(!idx.is_sane(6));
        // The raw bytes are Kafka's big-endian layout.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[12..20], &(1i64 << 40).to_be_bytes());
        assert_eq!(&bytes[20..24], &3u32.to_be_bytes());
    }
}
