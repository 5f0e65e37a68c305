//! Log compaction (`cleanup.policy=compact`): the sealed segments are rewritten keeping, for
//! each key, only its latest record, and dropping a latest record that is a tombstone once
//! `delete.retention.ms` has passed since a clean first saw it (the batch's delete horizon,
//! as in Kafka). Records without a key are dropped, as Kafka's cleaner drops them (a
//! compacting log refuses them, so they date from before it compacted). Offsets never change:
//! a batch that loses records keeps its base and last offsets, and a batch that loses all of
//! them disappears, leaving a gap readers step over. The active segment is never touched.
//! Control batches are kept whole, and their keys are not records' keys.
//!
//! A replicated log (one replica of a replicated partition) is cleaned the same way with two
//! differences: a batch that loses all its records stays as an empty batch (the same offsets,
//! producer fields and flags, no records), because each batch is a Raft entry and entries may
//! leave no holes; and only segments wholly below the high watermark are cleaned, because a
//! replica's uncommitted tail may still be cut away and replaced by its leader's. Each replica
//! cleans on its own schedule, so replicas hold the same batches at the same offsets, and
//! their bytes may differ where one has cleaned and another not. As in Kafka, a replica that
//! was away for longer than `delete.retention.ms` may catch up from batches whose tombstones
//! its leader's cleaner already removed, and keep the older value of such a key.
//!
//! A clean is all-or-nothing across the segments it rewrites (a mix could resurrect a deleted
//! key: a cleaned segment without its tombstone next to an uncleaned one with the old value):
//!
//! 1. every cleaned segment is written, synced and sealed in the staging directory
//!    `cleaning/`, under its original file names;
//! 2. the commit marker `clean.commit` is written atomically: from here on the clean happens;
//! 3. each staged file is renamed over its original, the directory synced, the checkpoint
//!    written, and the marker and staging directory removed.
//!
//! Opening a log finishes step 3 if the marker is there and otherwise discards `cleaning/`,
//! so a crash at any point leaves the old segments or the new ones.
//!
//! The cleaner runs when the dirty share of the sealed bytes (segments past the checkpoint,
//! the offset up to which the log was last cleaned) reaches `min.cleanable.dirty.ratio`, on the
//! housekeeper's retention schedule; [`PartitionLog::compact`](super::PartitionLog::compact)
//! runs one now.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::config::LogConfig;
use crate::error::{Error, IoContext, Result};
use crate::storage::builder::BatchBuilder;
use crate::storage::format::{Batch, Record};
use crate::storage::io::Fs;
use crate::storage::log::Inner;
use crate::storage::meta;
use crate::storage::segment::Segment;

pub(super) const STAGING_DIR: &str = "cleaning";
pub(super) const COMMIT_FILE: &str = "clean.commit";
pub(super) const CHECKPOINT_FILE: &str = "cleaner.meta";

/// Contents of `cleaner.meta` and `clean.commit`: the offset below which the log is clean.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Checkpoint {
    cleaned_to: i64,
}

/// What one clean did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    /// Sealed segments rewritten.
    pub segments: usize,
    /// Records kept.
    pub records_kept: u64,
    /// Records removed (superseded, or expired tombstones).
    pub records_removed: u64,
    /// Bytes of the sealed segments before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// The offset below which the log is now clean (where the sealed segments end).
    pub cleaned_to: i64,
}

/// Finishes a committed clean or discards an uncommitted one; returns the checkpoint.
pub(super) fn recover(fs: &dyn Fs, dir: &Path) -> Result<i64> {
    let staging = dir.join(STAGING_DIR);
    if let Some(commit) = meta::read::<Checkpoint>(&dir.join(COMMIT_FILE))? {
        log::info!("{}: finishing a committed compaction", dir.display());
        install(fs, dir, commit)?;
    } else if staging.exists() {
        std::fs::remove_dir_all(&staging).ctx("remove", &staging)?;
    }
    Ok(meta::read::<Checkpoint>(&dir.join(CHECKPOINT_FILE))?.map_or(0, |c| c.cleaned_to))
}

/// Records that the log is clean below `cleaned_to`.
pub(super) fn write_checkpoint(fs: &dyn Fs, dir: &Path, cleaned_to: i64) -> Result<()> {
    meta::write(fs, &dir.join(CHECKPOINT_FILE), &Checkpoint { cleaned_to })
}

/// Step 3: moves the staged files over the originals. Safe to repeat after a crash.
fn install(fs: &dyn Fs, dir: &Path, commit: Checkpoint) -> Result<()> {
    let staging = dir.join(STAGING_DIR);
    if staging.exists() {
        for entry in std::fs::read_dir(&staging).ctx("list", &staging)? {
            let from = entry.ctx("list", &staging)?.path();
            let to = dir.join(from.file_name().expect("a listed file has a name"));
            fs.rename(&from, &to).ctx("rename", &from)?;
        }
    }
    fs.sync_dir(dir).ctx("fsync", dir)?;
    write_checkpoint(fs, dir, commit.cleaned_to)?;
    let marker = dir.join(COMMIT_FILE);
    fs.remove_file(&marker).ctx("remove", &marker)?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging).ctx("remove", &staging)?;
    }
    fs.sync_dir(dir).ctx("fsync", dir)
}

/// Calls `f` on every batch of a sealed segment, reading it in chunks.
fn for_each_batch(seg: &Segment, mut f: impl FnMut(Batch<'_>) -> Result<()>) -> Result<()> {
    let limit = seg.readable();
    let mut pos = 0;
    let mut buf = Vec::new();
    while pos < limit {
        let header = seg.header_at(pos, limit)?;
        buf = seg.read(pos, &header, 1 << 20, limit, i64::MAX, std::mem::take(&mut buf))?;
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let (batch, tail) = Batch::parse_trusted(rest);
            pos += batch.as_bytes().len() as u64;
            rest = tail;
            f(batch)?;
        }
    }
    Ok(())
}

fn for_each_record(batch: &Batch<'_>, mut f: impl FnMut(Record<'_>)) -> Result<()> {
    let records = batch.records().map_err(Error::InvalidBatch)?;
    for r in records.iter() {
        f(r.map_err(Error::InvalidBatch)?);
    }
    Ok(())
}

impl Inner {
    /// Cleans the sealed segments if the log is compacted and (unless `force`) dirty enough.
    /// `None` if there was nothing to do.
    pub(crate) fn compact(&self, now_ms: i64, force: bool) -> Result<Option<CleanStats>> {
        let _one_at_a_time = self.cleaning.lock();
        let config = self.cfg().clone();
        if self.closed.load(Ordering::Acquire) || !config.cleanup_policy.compacts() {
            return Ok(None);
        }
        self.check_writable()?;
        // A truncation while the clean runs may cut or unseal the segments it copies: the clean
        // then gives up (below) rather than install copies of records the log no longer has.
        let truncations = self.truncations.load(Ordering::SeqCst);
        let segments = self.snapshot();
        // The sealed segments, up to the first that reaches past the high watermark (a
        // replica's tail there is not committed yet) or the last stable offset (whether a
        // transaction's records are kept is not known before its marker is readable).
        let committed = self.high_watermark.load(Ordering::Acquire);
        let stable = self.last_stable_offset(committed);
        let cleanable = segments[..segments.len() - 1]
            .iter()
            .take_while(|s| (!self.replicated || s.next_offset() <= committed) && s.next_offset() <= stable)
            .count();
        let sealed: Vec<Arc<Segment>> = segments[..cleanable].to_vec();
        let cleaned_to = self.cleaned_to.load(Ordering::Acquire);
        let total: u64 = sealed.iter().map(|s| s.size()).sum();
        let dirty: u64 = sealed
            .iter()
            .filter(|s| s.next_offset() > cleaned_to)
            .map(|s| s.size())
            .sum();
        let ratio = config.get_min_cleanable_dirty_ratio();
        if sealed.is_empty() || (!force && (dirty == 0 || (dirty as f64) < ratio * total as f64)) {
            return Ok(None);
        }

        let stats = match self.stage(&sealed, &config, now_ms, total) {
            Ok(stats) => stats,
            // Reading a segment that a truncation was cutting can fail: not damage.
            Err(_) if self.truncations.load(Ordering::SeqCst) != truncations => {
                return self.abandon_clean();
            }
            Err(e) => return Err(e),
        };

        // Commit and install, excluding appends, rolls and retention meanwhile.
        let _w = self.writer.lock();
        let now = self.snapshot();
        let unchanged = self.truncations.load(Ordering::SeqCst) == truncations
            && now.len() > sealed.len()
            && sealed.iter().zip(now.iter()).all(|(a, b)| Arc::ptr_eq(a, b));
        if !unchanged {
            // Retention, DeleteRecords or a truncation changed the segments under the clean.
            return self.abandon_clean();
        }
        let commit = Checkpoint {
            cleaned_to: stats.cleaned_to,
        };
        // From the commit marker on, the files on disk may be the cleaned ones while the
        // segments in memory are the old ones, whose files the install unlinks: a failure
        // here poisons the log, and reopening it finishes the install.
        let committed = || -> Result<Vec<Arc<Segment>>> {
            meta::write(&*self.fs, &self.dir.join(COMMIT_FILE), &commit)?;
            install(&*self.fs, &self.dir, commit)?;
            let mut replaced = Vec::with_capacity(now.len());
            for seg in &sealed {
                let fresh = Segment::open(&*self.fs, &self.dir, seg.base_offset, None)?;
                if fresh.load(config.index_interval_bytes, false)?.is_none() {
                    fresh.rebuild(config.index_interval_bytes, false, config.segment_index_bytes)?;
                    fresh.seal()?;
                }
                fresh.publish_all();
                replaced.push(Arc::new(fresh));
            }
            Ok(replaced)
        };
        let mut replaced = match committed() {
            Ok(replaced) => replaced,
            Err(e) => {
                self.poison(io::Error::other(format!("installing a clean: {e}")));
                return Err(e);
            }
        };
        replaced.extend(now[sealed.len()..].iter().cloned());
        *self.segments.write() = Arc::new(replaced);
        self.cleaned_to.store(stats.cleaned_to, Ordering::Release);
        log::info!(
            "{}: compacted {} segment(s), {} -> {} bytes, {} record(s) removed",
            self.dir.display(),
            stats.segments,
            stats.bytes_before,
            stats.bytes_after,
            stats.records_removed
        );
        Ok(Some(stats))
    }

    /// Passes 1 and 2 of a clean: the latest offset of every key, then the cleaned copies of
    /// `sealed` (`total` bytes) in the staging directory, synced.
    fn stage(
        &self,
        sealed: &[Arc<Segment>],
        config: &LogConfig,
        now_ms: i64,
        total: u64,
    ) -> Result<CleanStats> {
        // The aborted transactions' batches are not records to keep: an aborted value must not
        // shadow a committed one of its key (readers in read_committed never see it).
        let start = sealed.first().map_or(0, |s| s.base_offset);
        let aborted = self.aborted.read().since(start).to_vec();
        let dropped = |h: &crate::storage::BatchHeader| aborted.iter().any(|a| a.covers(h));
        // Pass 1: the latest offset of every key.
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        for seg in sealed {
            for_each_batch(seg, |batch| {
                if batch.header().is_control() || dropped(batch.header()) {
                    return Ok(());
                }
                for_each_record(&batch, |r| {
                    if let Some(k) = r.key {
                        match latest.get_mut(k) {
                            Some(o) => *o = r.offset,
                            None => {
                                latest.insert(k.to_vec(), r.offset);
                            }
                        }
                    }
                })
            })?;
        }

        // Pass 2: the cleaned copies, in the staging directory.
        let tombstones = Tombstones {
            now_ms,
            horizon: now_ms.saturating_add(config.delete_retention.as_millis().min(i64::MAX as u128) as i64),
        };
        let staging = self.dir.join(STAGING_DIR);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).ctx("remove", &staging)?;
        }
        std::fs::create_dir(&staging).ctx("create", &staging)?;
        let mut stats = CleanStats {
            cleaned_to: sealed.last().map_or(0, |s| s.next_offset()),
            segments: sealed.len(),
            bytes_before: total,
            ..CleanStats::default()
        };
        for seg in sealed {
            let out = Segment::open(
                &*self.fs,
                &staging,
                seg.base_offset,
                Some(config.segment_index_bytes),
            )?;
            for_each_batch(seg, |batch| {
                let kept = match dropped(batch.header()) {
                    true => {
                        stats.records_removed += batch.header().record_count.max(0) as u64;
                        Kept::None
                    }
                    false => clean_batch(&batch, &latest, tombstones, &mut stats)?,
                };
                let emptied;
                let bytes = match &kept {
                    Kept::All => batch.as_bytes(),
                    Kept::Some(b) => b.as_bytes(),
                    Kept::None if self.replicated => {
                        emptied = BatchBuilder::emptied(batch.header());
                        emptied.as_bytes()
                    }
                    Kept::None => return Ok(()),
                };
                let header = *Batch::parse_trusted(bytes).0.header();
                // Written with system calls: the staged segment is synced whole just below.
                out.append(bytes, &header, config.index_interval_bytes, false)
                    .map_err(|e| e.into_error())
            })?;
            out.sync()?;
            out.seal()?;
            stats.bytes_after += out.size();
        }
        self.fs.sync_dir(&staging).ctx("fsync", &staging)?;
        Ok(stats)
    }

    /// Gives up a clean whose segments changed under it; a later one tries again.
    fn abandon_clean(&self) -> Result<Option<CleanStats>> {
        let staging = self.dir.join(STAGING_DIR);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).ctx("remove", &staging)?;
        }
        Ok(None)
    }
}

enum Kept {
    All,
    Some(crate::storage::RecordBatch),
    None,
}

/// When tombstones go (Kafka's KIP-534): a clean that finds a batch with tombstones marks it
/// with a delete horizon, `delete.retention.ms` from then, and a clean after that horizon
/// removes them. So a tombstone stays that long after the cleaner first saw it, whatever its
/// own timestamp says: consumers that read the log within that time see the delete.
#[derive(Debug, Clone, Copy)]
struct Tombstones {
    now_ms: i64,
    /// The horizon this clean gives batches it finds tombstones in.
    horizon: i64,
}

/// The part of `batch` that survives: each key's latest record, except tombstones whose
/// batch's delete horizon has passed.
fn clean_batch(
    batch: &Batch<'_>,
    latest: &HashMap<Vec<u8>, i64>,
    tombstones: Tombstones,
    stats: &mut CleanStats,
) -> Result<Kept> {
    let h = batch.header();
    if h.is_control() || h.record_count == 0 {
        return Ok(Kept::All);
    }
    let expired = h.delete_horizon().is_some_and(|at| at <= tombstones.now_ms);
    let keep = |r: &Record<'_>| match r.key {
        None => false,
        Some(k) => latest.get(k) == Some(&r.offset) && !(r.value.is_none() && expired),
    };
    let records = batch.records().map_err(Error::InvalidBatch)?;
    let mut survivors = 0u64;
    let mut total = 0u64;
    let mut tombstone_kept = false;
    for r in records.iter() {
        let r = r.map_err(Error::InvalidBatch)?;
        total += 1;
        let kept = keep(&r);
        survivors += u64::from(kept);
        tombstone_kept |= kept && r.value.is_none();
    }
    stats.records_kept += survivors;
    stats.records_removed += total - survivors;
    let mark = tombstone_kept && h.delete_horizon().is_none();
    if survivors == total && !mark {
        return Ok(Kept::All);
    }
    if survivors == 0 {
        return Ok(Kept::None);
    }
    let codec = h.compression().map_err(Error::InvalidBatch)?;
    let mut b = BatchBuilder::new(codec).like(h);
    if mark {
        b = b.delete_horizon(tombstones.horizon);
    }
    for r in records.iter() {
        let r = r.map_err(Error::InvalidBatch)?;
        if keep(&r) {
            b.push_copy((r.offset - h.base_offset) as i32, &r);
        }
    }
    let mut rebuilt = b
        .last_offset_delta(h.last_offset_delta)
        .finish()
        .map_err(Error::InvalidBatch)?;
    rebuilt.set_base_offset(h.base_offset);
    rebuilt.set_partition_leader_epoch(h.partition_leader_epoch);
    Ok(Kept::Some(rebuilt))
}

#[cfg(test)]
mod tests {
    use crate::config::{CleanupPolicy, Fsync, LogConfig};
    use crate::storage::producers::Marker;
    use crate::storage::{BatchBuilder, Compression, PartitionLog, RecordBatch};

    fn record(key: &[u8], value: &[u8], producer: Option<i64>) -> RecordBatch {
        let b = BatchBuilder::new(Compression::None);
        let mut b = match producer {
            Some(id) => b.producer(id, 0, 0).transactional(true),
            None => b,
        };
        b.push(crate::storage::now_ms(), Some(key), Some(value), &[]);
        b.finish().unwrap()
    }

    fn values(log: &PartitionLog) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut reader = log.reader(log.log_start_offset());
        let mut out = Vec::new();
        while let Some(r) = reader.next().unwrap() {
            out.push((r.key.unwrap().to_vec(), r.value.unwrap().to_vec()));
        }
        out
    }

    #[test]
    fn aborted_values_never_shadow_committed_ones_and_open_transactions_stop_the_cleaner() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig::default()
            .fsync(Fsync::Never)
            .cleanup_policy(CleanupPolicy::Compact);
        let log = PartitionLog::open(dir.path(), config).unwrap();
        let abort = Marker {
            commit: false,
            coordinator_epoch: 0,
        };
        log.append(record(b"k", b"committed", None)).unwrap();
        log.append(record(b"k", b"aborted", Some(7))).unwrap();
        log.append_marker(7, 0, abort).unwrap();
        log.roll().unwrap();
        // An open transaction in the next segment: nothing from it on is cleaned.
        log.append(record(b"j", b"open", Some(8))).unwrap();
        log.append(record(b"j", b"plain", None)).unwrap();
        log.roll().unwrap();
        log.append(record(b"x", b"active", None)).unwrap();

        let stats = log.compact().unwrap().expect("a clean");
        assert_eq!(stats.segments, 1, "only the segment below the open transaction");
        let kept = values(&log);
        assert!(kept.contains(&(b"k".to_vec(), b"committed".to_vec())), "{kept:?}");
        assert!(!kept.contains(&(b"k".to_vec(), b"aborted".to_vec())), "{kept:?}");
        assert!(kept.contains(&(b"j".to_vec(), b"open".to_vec())), "{kept:?}");
    }
}
