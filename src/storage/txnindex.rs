//! The aborted-transaction index, Kafka's `.txnindex`: for every transaction an ABORT marker
//! ended, the producer, the transaction's first offset, the marker's offset and the last
//! stable offset just after it. Each segment's file holds the transactions whose marker it
//! holds; the log keeps all of them in memory as well, ordered by marker, for the
//! `read_committed` fetches that ask which transactions in a range were aborted.
//!
//! An entry is appended to the active segment's file when its marker is written (not
//! synced); the file is synced when the segment rolls and on a clean close, before the
//! producer snapshot that makes recovery skip the segment's batches. Recovery and truncation
//! derive the entries of the batches after the snapshot they start from again, and rewrite
//! the files of those segments when they differ.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoContext, Result};
use crate::storage::format::{be_i16, be_i64};
use crate::storage::io::Fs;
use crate::storage::segment::{Segment, file_stem};

/// The file name suffix.
pub(crate) const SUFFIX: &str = "txnindex";
/// version i16, producer id i64, first offset i64, last offset i64, last stable offset i64.
const ENTRY: usize = 34;
const VERSION: i16 = 0;

/// A transaction an ABORT marker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Aborted {
    pub(crate) producer_id: i64,
    pub(crate) first_offset: i64,
    /// The marker's offset.
    pub(crate) last_offset: i64,
    /// The first offset of the earliest transaction still open after this one ended, else the
    /// offset after the marker: a search for the transactions aborted below an offset can
    /// stop at the first entry whose last stable offset reaches it.
    pub(crate) last_stable_offset: i64,
}

impl Aborted {
    /// Whether `h` is a batch of this transaction (of its producer, from its first offset to
    /// its marker).
    pub(crate) fn covers(&self, h: &crate::storage::BatchHeader) -> bool {
        h.is_transactional()
            && !h.is_control()
            && h.producer_id == self.producer_id
            && self.first_offset <= h.base_offset
            && h.base_offset < self.last_offset
    }

    fn encode(&self) -> [u8; ENTRY] {
        let mut out = [0u8; ENTRY];
        out[..2].copy_from_slice(&VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Aborted> {
        (be_i16(b, 0) == VERSION).then(|| Aborted {
            producer_id: be_i64(b, 2),
            first_offset: be_i64(b, 10),
            last_offset: be_i64(b, 18),
            last_stable_offset: be_i64(b, 26),
        })
    }
}

/// A transaction a `read_committed` reader must drop: the batches of `producer_id` from
/// `first_offset` until its ABORT marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    /// The producer whose transaction was aborted.
    pub producer_id: i64,
    /// The transaction's first offset.
    pub first_offset: i64,
}

/// Every aborted transaction of a log, ordered by marker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AbortedIndex {
    entries: Vec<Aborted>,
}

impl AbortedIndex {
    /// Notes a transaction whose marker follows every one noted.
    pub(crate) fn push(&mut self, entry: Aborted) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|e| e.last_offset < entry.last_offset)
        );
        self.entries.push(entry);
    }

    /// Whether it holds none.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The aborted transactions that overlap the offsets from `from` to below `upto`.
    pub(crate) fn overlapping(&self, from: i64, upto: i64) -> Vec<AbortedTransaction> {
        self.overlapping_entries(from, upto)
            .into_iter()
            .map(|e| AbortedTransaction {
                producer_id: e.producer_id,
                first_offset: e.first_offset,
            })
            .collect()
    }

    /// The entries of the aborted transactions that overlap the offsets from `from` to below
    /// `upto`.
    pub(crate) fn overlapping_entries(&self, from: i64, upto: i64) -> Vec<Aborted> {
        let start = self.entries.partition_point(|e| e.last_offset < from);
        let mut found = Vec::new();
        for e in &self.entries[start..] {
            if e.first_offset < upto {
                found.push(*e);
            }
            // Every transaction open when this one ended started at or after its last
            // stable offset; those ended later and not yet seen started later still.
            if e.last_stable_offset >= upto {
                break;
            }
        }
        found
    }

    /// Forgets the transactions whose marker is at or after `end`.
    pub(crate) fn truncate(&mut self, end: i64) {
        let keep = self.entries.partition_point(|e| e.last_offset < end);
        self.entries.truncate(keep);
    }

    /// Forgets the transactions whose marker is below `start` (their segments are gone).
    pub(crate) fn drop_below(&mut self, start: i64) {
        let n = self.entries.partition_point(|e| e.last_offset < start);
        self.entries.drain(..n);
    }

    /// The transactions whose marker is at or after `from`.
    pub(crate) fn since(&self, from: i64) -> &[Aborted] {
        &self.entries[self.entries.partition_point(|e| e.last_offset < from)..]
    }

    fn within(&self, from: i64, below: i64) -> &[Aborted] {
        let a = self.entries.partition_point(|e| e.last_offset < from);
        let b = self.entries.partition_point(|e| e.last_offset < below);
        &self.entries[a..b]
    }
}

/// The index file of the segment at `base`.
pub(crate) fn path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{}.{SUFFIX}", file_stem(base)))
}

/// Appends `entry` to the index file of the segment at `base` (not synced).
pub(crate) fn append(fs: &dyn Fs, dir: &Path, base: i64, entry: &Aborted) -> Result<()> {
    let path = path(dir, base);
    let file = fs.open(&path, true).ctx("open", &path)?;
    let len = file.len().ctx("stat", &path)?;
    // A torn entry left by a crash is overwritten.
    let at = len - len % ENTRY as u64;
    file.write_all_at(&entry.encode(), at).ctx("write", &path)
}

/// Syncs the index file of the segment at `base`, if it has one.
pub(crate) fn sync(fs: &dyn Fs, dir: &Path, base: i64) -> Result<()> {
    let path = path(dir, base);
    if !path.exists() {
        return Ok(());
    }
    fs.open(&path, false)
        .and_then(|f| f.sync_data())
        .ctx("fsync", &path)
}

/// The entries in the index file of the segment at `base` (whole entries, none past a torn
/// or unknown one).
fn read(dir: &Path, base: i64) -> Result<Vec<Aborted>> {
    let path = path(dir, base);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("read", &path),
    };
    Ok(bytes.chunks_exact(ENTRY).map_while(Aborted::decode).collect())
}

/// The index of `segments` as their files hold it, below `below` (the offset from which the
/// caller derives the entries again): each segment's entries whose marker it holds.
pub(crate) fn load(dir: &Path, segments: &[Arc<Segment>], below: i64) -> Result<AbortedIndex> {
    let mut index = AbortedIndex::default();
    for seg in segments {
        let end = seg.next_offset().min(below);
        for e in read(dir, seg.base_offset)? {
            if e.last_offset >= seg.base_offset
                && e.last_offset < end
                && index.entries.last().is_none_or(|l| l.last_offset < e.last_offset)
            {
                index.push(e);
            }
        }
    }
    Ok(index)
}

/// Makes the files of the segments that hold offsets from `from` on hold exactly `index`'s
/// entries (written whole, synced, renamed); a file that already does is left alone.
pub(crate) fn rewrite_from(
    fs: &dyn Fs,
    dir: &Path,
    segments: &[Arc<Segment>],
    index: &AbortedIndex,
    from: i64,
) -> Result<()> {
    let mut changed = false;
    for (i, seg) in segments.iter().enumerate() {
        let below = segments.get(i + 1).map_or(i64::MAX, |s| s.base_offset);
        if below <= from {
            continue;
        }
        let want = index.within(seg.base_offset, below);
        let bytes: Vec<u8> = want.iter().flat_map(Aborted::encode).collect();
        // Compared byte for byte: a file with anything more (an entry that does not decode)
        // is written again.
        let path_now = path(dir, seg.base_offset);
        match std::fs::read(&path_now) {
            Ok(found) if found == bytes => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && want.is_empty() => continue,
            _ => {}
        }
        let path = path_now;
        if want.is_empty() {
            fs.remove_file(&path).ctx("remove", &path)?;
        } else {
            crate::storage::meta::replace_file(fs, &path, &bytes)?;
        }
        changed = true;
    }
    if changed {
        fs.sync_dir(dir).ctx("fsync", dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64, first_offset: i64, last_offset: i64, last_stable_offset: i64) -> Aborted {
        Aborted {
            producer_id,
            first_offset,
            last_offset,
            last_stable_offset,
        }
    }

    #[test]
    fn a_range_finds_the_transactions_that_overlap_it() {
        let mut index = AbortedIndex::default();
        // Producer 1 aborts 0..=10 while producer 2's transaction from 5 is open; producer 2
        // aborts 5..=20; producer 3 aborts 30..=31 alone.
        index.push(entry(1, 0, 10, 5));
        index.push(entry(2, 5, 20, 21));
        index.push(entry(3, 30, 31, 32));
        let ids = |from, upto| -> Vec<i64> {
            index
                .overlapping(from, upto)
                .iter()
                .map(|a| a.producer_id)
                .collect()
        };
        assert_eq!(ids(0, 100), vec![1, 2, 3]);
        assert_eq!(ids(11, 100), vec![2, 3]);
        assert_eq!(ids(0, 5), vec![1]);
        assert_eq!(ids(21, 30), Vec::<i64>::new());
        assert_eq!(ids(21, 31), vec![3]);
        assert_eq!(ids(32, 100), Vec::<i64>::new());
        let mut cut = index.clone();
        cut.truncate(20);
        assert_eq!(cut.entries.len(), 1);
        index.drop_below(11);
        assert_eq!(index.entries[0].producer_id, 2);
    }

    #[test]
    fn entries_round_trip_and_a_torn_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let fs = crate::storage::StdFs;
        let a = entry(7, 100, 140, 141);
        let b = entry(8, 120, 150, 151);
        append(&fs, dir.path(), 100, &a).unwrap();
        append(&fs, dir.path(), 100, &b).unwrap();
        assert_eq!(read(dir.path(), 100).unwrap(), vec![a, b]);
        // A torn third entry is not read, and the next append replaces it.
        let path = path(dir.path(), 100);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 1]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path(), 100).unwrap(), vec![a, b]);
        let c = entry(9, 160, 170, 171);
        append(&fs, dir.path(), 100, &c).unwrap();
        assert_eq!(read(dir.path(), 100).unwrap(), vec![a, b, c]);
    }
}
