//! Shortening a log: retention (whole old segments), `delete_records_before` (the log start
//! offset), and `truncate_to` (the tail, for replication).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, IoContext, Result};
use crate::storage::log::Inner;
use crate::storage::recovery::{FORMAT_VERSION, LogMeta, META_FILE};
use crate::storage::segment::Segment;
use crate::storage::{compaction, meta};

impl Inner {
    /// Cuts the log at the batch holding `offset`.
    ///
    /// Readers, syncs and the cleaner learn of the truncation (its count is bumped and the high
    /// watermark lowered below the first batch to go) before anything on disk changes. On
    /// disk the steps are ordered so that a crash between any two leaves the log cut at some
    /// batch boundary at or after `offset`, never with a hole: the later segments are removed
    /// from the last one back, each removal made durable before the next, and then the
    /// segment holding `offset` is cut and synced. A failure part way poisons the log (its
    /// files no longer match what readers were told); reopening recovers such a prefix.
    pub(super) fn truncate_to(&self, offset: i64) -> Result<i64> {
        let mut w = self.writer.lock();
        self.check_writable()?;
        let end = self.log_end.load(Ordering::Acquire);
        if offset >= end {
            return Ok(end);
        }
        let start = self.log_start.load(Ordering::Acquire);
        if offset < start {
            return Err(self.out_of_range(offset));
        }
        self.unmark_clean(&mut w)?;
        let config = self.cfg();
        let segments = self.snapshot();
        // Keep the segments that start below `offset`, and always the first.
        let keep = segments.partition_point(|s| s.base_offset < offset).max(1);
        let last = segments[keep - 1].clone();
        let first_cut = last
            .find(offset, last.size())?
            .map_or(offset, |(_, h)| h.base_offset.min(offset));
        self.announce_cut(first_cut);
        *self.segments.write() = Arc::new(segments[..keep].to_vec());
        let on_disk = || -> Result<i64> {
            // The producer snapshots past the cut go first, durably: one taken back by a crash
            // must not describe offsets written again since.
            crate::storage::producers::remove_snapshots_above(&*self.fs, &self.dir, first_cut)?;
            for dropped in segments[keep..].iter().rev() {
                dropped.delete_files(&*self.fs)?;
                self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)?;
            }
            if !Arc::ptr_eq(&last, &w.active) {
                last.unseal(config.segment_index_bytes)?;
            }
            let new_end = last.truncate_to(
                offset,
                config.index_interval_bytes,
                config.segment_index_bytes,
                self.is_dense(&last),
            )?;
            last.sync()?;
            Ok(new_end)
        };
        let new_end = match on_disk() {
            Ok(new_end) => new_end,
            Err(e) => {
                self.poison(io::Error::other(format!("truncating to offset {offset}: {e}")));
                return Err(e);
            }
        };
        // Everything below the new end is durable now: the kept segment was just synced, the
        // ones before it at their rolls. Appends waiting for a sync of it are answered.
        {
            let mut s = self.sync.lock();
            s.durable = new_end;
            self.log_end.store(new_end, Ordering::Release);
            self.high_watermark.fetch_min(new_end, Ordering::SeqCst);
            self.publish(&last, last.size(), new_end);
        }
        self.synced.notify_all();
        w.restart_active(last);
        self.lower_checkpoint(new_end);
        if let Err(e) = self.rebuild_producers(new_end) {
            self.poison(io::Error::other(format!("rebuilding the producer state: {e}")));
            return Err(e);
        }
        // Cutting below the log start empties the log; it restarts at the new end. (A crash
        // before this write is harmless: open never puts the log start past the log end.)
        if new_end < start {
            self.write_meta(new_end)?;
            self.log_start.store(new_end, Ordering::Release);
        }
        Ok(new_end)
    }

    /// Empties the log and starts it again at `offset`, before or after its end: for a
    /// replica that installed its leader's snapshot in place of entries its leader no longer
    /// holds. Readers learn first (as of a truncation); on disk the old segments go from the
    /// last back, each removal durable before the next, then the new empty segment and the
    /// log start are written. A crash part way leaves a prefix of the old log (or an empty one
    /// at the old start), which the owner restarts again; a failure poisons the log.
    #[cfg(feature = "cluster")]
    pub(super) fn restart_at(&self, offset: i64) -> Result<()> {
        let mut w = self.writer.lock();
        self.check_writable()?;
        self.unmark_clean(&mut w)?;
        let config = self.cfg();
        let segments = self.snapshot();
        self.announce_cut(self.log_start.load(Ordering::Acquire).min(offset));
        let on_disk = || -> Result<Arc<Segment>> {
            // The producers of the entries it lacked are unknown to it (their batches are gone).
            crate::storage::producers::remove_snapshots_above(&*self.fs, &self.dir, i64::MIN)?;
            for old in segments.iter().rev() {
                old.delete_files(&*self.fs)?;
                self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)?;
            }
            let fresh = Arc::new(Segment::open(
                &*self.fs,
                &self.dir,
                offset,
                Some(config.segment_index_bytes),
            )?);
            self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)?;
            self.write_meta(offset)?;
            Ok(fresh)
        };
        let fresh = match on_disk() {
            Ok(fresh) => fresh,
            Err(e) => {
                self.poison(io::Error::other(format!("restarting at offset {offset}: {e}")));
                return Err(e);
            }
        };
        *self.segments.write() = Arc::new(vec![fresh.clone()]);
        {
            let mut s = self.sync.lock();
            s.durable = offset;
            self.log_start.store(offset, Ordering::Release);
            self.log_end.store(offset, Ordering::Release);
            self.high_watermark.store(offset, Ordering::SeqCst);
            self.publish(&fresh, 0, offset);
            self.watermark_moved();
        }
        self.synced.notify_all();
        w.restart_active(fresh);
        self.lower_checkpoint(offset);
        *self.producers.lock() = Default::default();
        *self.aborted.write() = Default::default();
        Ok(())
    }

    /// Tells readers, syncs and the cleaner, before anything on disk changes, that the offsets
    /// from `first` on are going: the truncation count is bumped and the durable end and the
    /// high watermark lowered below them.
    fn announce_cut(&self, first: i64) {
        let mut s = self.sync.lock();
        let count = self.truncations.fetch_add(1, Ordering::SeqCst) + 1;
        s.note_cut(count, first);
        s.durable = s.durable.min(first);
        self.high_watermark.fetch_min(first, Ordering::SeqCst);
        self.watermark_moved();
    }

    /// Offsets from `end` on hold no cleaned records any more: the checkpoint comes down with
    /// it, so that recovery checks segments written there as strictly as any and the cleaner
    /// counts them dirty. A checkpoint left higher (by a crash or a failure here) only makes
    /// both looser, so a failure is only logged.
    fn lower_checkpoint(&self, end: i64) {
        if self.cleaned_to.load(Ordering::Acquire) > end {
            self.cleaned_to.store(end, Ordering::Release);
            if let Err(e) = compaction::write_checkpoint(&*self.fs, &self.dir, end) {
                log::warn!("{}: lowering the cleaner's checkpoint: {e}", self.dir.display());
            }
        }
    }

    /// Whether every batch of `segment` starts at the offset after the previous one: true of
    /// a segment compaction never rewrote (it leaves gaps), which recovery can then check
    /// more strictly.
    pub(super) fn is_dense(&self, segment: &Segment) -> bool {
        segment.base_offset >= self.cleaned_to.load(Ordering::Acquire)
    }

    pub(super) fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let _w = self.writer.lock();
        self.check_writable()?;
        let hw = self.high_watermark.load(Ordering::Acquire);
        if offset > hw || offset < 0 {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start: self.log_start.load(Ordering::Acquire),
                log_end: hw,
            });
        }
        let start = self.log_start.load(Ordering::Acquire);
        if offset <= start {
            return Ok(start);
        }
        self.write_meta(offset)?;
        self.log_start.store(offset, Ordering::Release);
        let segments = self.snapshot();
        // Segment i holds offsets below segment i + 1's base.
        let n = segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset <= offset)
            .count();
        self.drop_front(&segments, n)?;
        Ok(offset)
    }

    pub(super) fn write_meta(&self, log_start_offset: i64) -> Result<()> {
        let meta = LogMeta {
            format_version: FORMAT_VERSION,
            log_start_offset,
        };
        meta::write(&*self.fs, &self.dir.join(META_FILE), &meta)
    }

    /// Removes the first `n` segments (never the active one).
    pub(super) fn drop_front(&self, segments: &Arc<Vec<Arc<Segment>>>, n: usize) -> Result<()> {
        let n = n.min(segments.len() - 1);
        if n == 0 {
            return Ok(());
        }
        *self.segments.write() = Arc::new(segments[n..].to_vec());
        self.log_start
            .fetch_max(segments[n].base_offset, Ordering::AcqRel);
        self.aborted.write().drop_below(segments[n].base_offset);
        for seg in &segments[..n] {
            seg.delete_files(&*self.fs)?;
        }
        self.fs.sync_dir(&self.dir).ctx("fsync", &self.dir)
    }

    pub(crate) fn enforce_retention(&self, now: i64) -> Result<usize> {
        let _w = self.writer.lock();
        if self.closed.load(Ordering::Acquire) || !self.cfg().cleanup_policy.deletes() {
            return Ok(0);
        }
        let segments = self.snapshot();
        let n = self.expired_segments(&segments, now);
        if self.replicated {
            // A replica's segments go when its owner purges its Raft log up to them, and only
            // below the high watermark (entries that are not committed may not be purged).
            #[cfg(feature = "cluster")]
            if n > 0 {
                let before = segments[n]
                    .base_offset
                    .min(self.high_watermark.load(Ordering::Acquire));
                if before > self.log_start.load(Ordering::Acquire)
                    && let Some(replicator) = self.replicator.get()
                {
                    replicator.purge_before(before);
                }
            }
            return Ok(0);
        }
        self.drop_front(&segments, n)?;
        if n > 0 {
            log::info!("{}: retention deleted {n} segment(s)", self.dir.display());
        }
        Ok(n)
    }

    /// How many of the oldest sealed segments fall outside `retention.ms` (judged at `now`)
    /// or `retention.bytes`.
    fn expired_segments(&self, segments: &[Arc<Segment>], now: i64) -> usize {
        let sealed = &segments[..segments.len() - 1];
        let mut n = 0;
        if let Some(age) = self.cfg().retention_ms {
            let cutoff = now.saturating_sub(age.as_millis() as i64);
            n = sealed
                .iter()
                .take_while(|s| s.retention_timestamp() < cutoff)
                .count();
        }
        if let Some(limit) = self.cfg().retention_bytes {
            let total: u64 = segments.iter().map(|s| s.size()).sum();
            let mut excess = total.saturating_sub(limit) as i64;
            excess -= sealed[..n].iter().map(|s| s.size() as i64).sum::<i64>();
            for seg in &sealed[n..] {
                if excess - (seg.size() as i64) < 0 {
                    break;
                }
                excess -= seg.size() as i64;
                n += 1;
            }
        }
        n
    }
}
