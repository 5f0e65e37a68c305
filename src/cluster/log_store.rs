//! A partition's segment log as its Raft log (openraft's `RaftLogStorage`): no second copy of
//! the data.
//!
//! Raft counts entries, Kafka counts records: each entry is one batch, and the [`EntryIndex`]
//! maps an entry's index to its batch's base offset. It holds an offset per entry (offsets,
//! unlike file positions, survive compaction, which keeps every batch of a replicated log) and
//! the first index of each term; it lives in memory and is rebuilt on open by reading the
//! headers of the batches from the first entry's offset, which `replica.meta` records with the
//! vote and the purge point.
//!
//! The log has three ends: what Raft can read (every append, at once), what is durable (after
//! a sync), and the high watermark consumers read below, which only the state machine moves,
//! when entries commit. Writes (appends, syncs, truncations, purges, the vote) run in order on
//! the replica's own I/O thread, never on the async runtime: an append returns once its batch
//! is readable, and its callback fires once a sync covers it, one sync for all the appends
//! that queued meanwhile (group commit). The vote is saved only after every earlier append is
//! durable.
//!
//! Snapshots are metadata only (the last entry they cover, the membership, and the offset
//! after it), kept in `snapshot.meta` and written by the I/O thread in order with the rest.
//! Retention asks Raft to snapshot and purge the entries below the segments it would delete
//! (see `partition.rs`); the purge then deletes them. A replica that installs its leader's
//! snapshot because it lacks entries the leader has purged restarts its log, empty, at the
//! snapshot's offset, and catches up from there by replication. (openraft appends the
//! entries after such a snapshot only once the state machine has installed it: the purge it
//! orders with the install waits for the snapshot, and every later command waits behind it.)
//! The restart is announced in `restart.meta` before the log changes, and finished by the
//! next open if a crash cuts it short, so old batches are never taken for the new entries.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::cluster::entry::{self, UNASSIGNED};
use crate::cluster::raft::{
    Entry, IoFlushed, LogId, LogState, SnapshotMeta, TypeConfig, Vote, log_id, term_of,
};
use crate::cluster::state_machine::SnapshotData;
use crate::error::{Error, IoContext, Result};
use crate::storage::{Fs, PartitionLog, REPLICA_FILE, RESTART_FILE, SNAPSHOT_FILE, meta};

/// Where a replica's storage work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    /// Writes on the replica's own I/O thread, reads on the runtime's blocking threads: never
    /// on the runtime's workers.
    Threads,
    /// Everything on the calling task, an append's sync a moment later on a task of its own
    /// (with the appends made meanwhile): for the deterministic simulation, whose nodes all
    /// run on one thread. `sync: false` plants a bug (appends reported durable without a
    /// sync) that the simulation's checker must catch.
    #[cfg(test)]
    Inline { sync: bool },
}

impl Io {
    /// Runs `f`, which blocks, where this replica's storage work runs.
    pub(crate) async fn blocking<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        match self {
            Io::Threads => tokio::task::spawn_blocking(f).await.map_err(io::Error::other),
            #[cfg(test)]
            Io::Inline { .. } => Ok(f()),
        }
    }
}

/// Bytes read per storage read when collecting entries.
const READ_CHUNK: usize = 1 << 20;

/// How many bytes of entries one AppendEntries carries at most (or one entry, whatever its
/// size: at most [`MAX_ENTRY_BYTES`]), well inside the peer link's frame limit.
const REPLICATION_BYTES: usize = 16 << 20;

/// The largest batch a replicated partition takes, whatever its `max.message.bytes`: one
/// entry must fit in an AppendEntries, whose frame is at most 128 MiB.
pub(crate) const MAX_ENTRY_BYTES: usize = crate::storage::MAX_REPLICATED_BATCH;

/// What `replica.meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ReplicaMeta {
    /// The last vote this replica cast or saw.
    vote: Option<Vote>,
    /// The last entry purged (no longer in the log).
    purged: Option<LogId>,
    /// The index of the log's first entry.
    first_index: u64,
    /// Its offset (where the next entry goes, if the log holds none).
    first_offset: i64,
    /// An entry known committed, at most the last one this replica had made durable.
    committed: Option<LogId>,
}

/// What `restart.meta` holds while a replica's log restarts after a snapshot: the
/// snapshot's last entry and the offset after it, where the log starts again.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Restart {
    pub(crate) last: LogId,
    pub(crate) offset: i64,
}

/// What `snapshot.meta` holds: the replica's last snapshot, built here or installed from the
/// leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: SnapshotData,
}

/// The part of a restart after its `restart.meta` is written (also what an open finishes):
/// `replica.meta` says where the entries now start, the log restarts there, and the marker
/// goes. Returns what `replica.meta` now holds.
fn finish_restart(fs: &dyn Fs, log: &PartitionLog, saved: ReplicaMeta, r: Restart) -> Result<ReplicaMeta> {
    let saved = ReplicaMeta {
        purged: Some(r.last),
        first_index: r.last.index + 1,
        first_offset: r.offset,
        ..saved
    };
    meta::write(fs, &log.dir().join(REPLICA_FILE), &saved)?;
    log.restart_at(r.offset)?;
    // Durably gone before any entry is appended: a marker that came back after a crash would
    // restart the log again, over entries acknowledged since.
    let marker = log.dir().join(RESTART_FILE);
    fs.remove_file(&marker).ctx("remove", &marker)?;
    fs.sync_dir(log.dir()).ctx("fsync", log.dir())?;
    Ok(saved)
}

/// Entry index to offset, and the terms of the entries.
#[derive(Debug, Default)]
pub(crate) struct EntryIndex {
    purged: Option<LogId>,
    first_index: u64,
    /// The base offset of each entry from `first_index` on.
    offsets: VecDeque<i64>,
    /// The offset after the last entry (the log end, for the entries' purposes).
    end_offset: i64,
    /// `(first index, term)` of each run of entries of one term, in order.
    terms: VecDeque<(u64, u64)>,
}

impl EntryIndex {
    fn new(purged: Option<LogId>, first_index: u64, first_offset: i64) -> Self {
        EntryIndex {
            purged,
            first_index,
            offsets: VecDeque::new(),
            end_offset: first_offset,
            terms: VecDeque::new(),
        }
    }

    /// The index the next entry takes.
    pub(crate) fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    /// The base offset of the entry at `index`, or the offset after the last entry for the
    /// next index; `None` outside the log.
    pub(crate) fn offset_of(&self, index: u64) -> Option<i64> {
        if index == self.next_index() {
            return Some(self.end_offset);
        }
        let i = index.checked_sub(self.first_index)?;
        self.offsets.get(usize::try_from(i).ok()?).copied()
    }

    /// The term of the entry at `index`, if the log holds it.
    pub(crate) fn term_of(&self, index: u64) -> Option<u64> {
        if index < self.first_index || index >= self.next_index() {
            return None;
        }
        let run = self.terms.partition_point(|&(first, _)| first <= index);
        Some(self.terms[run - 1].1)
    }

    /// The id of the last entry, or the purge point if the log holds none.
    pub(crate) fn last_log_id(&self) -> Option<LogId> {
        match self.next_index().checked_sub(1) {
            Some(last) if last >= self.first_index => Some(log_id(self.term_of(last)?, last)),
            _ => self.purged,
        }
    }

    fn push(&mut self, index: u64, term: u64, base_offset: i64, end_offset: i64) {
        debug_assert_eq!(index, self.next_index());
        if self.terms.back().is_none_or(|&(_, t)| t != term) {
            self.terms.push_back((index, term));
        }
        self.offsets.push_back(base_offset);
        self.end_offset = end_offset;
    }

    /// Forgets the entries after `last` (all of them for `None`); returns the offset the log
    /// must be cut at.
    fn truncate_after(&mut self, last: Option<u64>) -> i64 {
        let keep = last.map_or(self.first_index, |l| (l + 1).max(self.first_index));
        if let Some(cut) = self.offset_of(keep) {
            let n = (keep - self.first_index) as usize;
            self.offsets.truncate(n);
            self.end_offset = cut;
            while self.terms.back().is_some_and(|&(first, _)| first >= keep) {
                self.terms.pop_back();
            }
        }
        self.end_offset
    }

    /// The index of the last entry that ends at or below `offset`, if any does.
    pub(crate) fn last_entry_below(&self, offset: i64) -> Option<u64> {
        let ends_below = |i: usize| {
            let end = self.offsets.get(i + 1).copied().unwrap_or(self.end_offset);
            end <= offset
        };
        let n = self.offsets.partition_point(|&o| o < offset);
        let last = (0..n).rev().find(|&i| ends_below(i))?;
        Some(self.first_index + last as u64)
    }

    /// Forgets the entries up to `upto` inclusive; the log starts after it.
    fn purge(&mut self, upto: LogId) {
        if self.purged.is_some_and(|p| p.index >= upto.index) {
            return;
        }
        self.purged = Some(upto);
        let next = upto.index + 1;
        if next <= self.first_index {
            return;
        }
        let first_offset = self.offset_of(next).unwrap_or(self.end_offset);
        let drop = ((next - self.first_index) as usize).min(self.offsets.len());
        self.offsets.drain(..drop);
        if self.offsets.is_empty() {
            self.terms.clear();
        } else {
            // The run holding the new first entry stays, starting there.
            let run = self.terms.partition_point(|&(first, _)| first <= next);
            self.terms.drain(..run - 1);
            if let Some(front) = self.terms.front_mut() {
                front.0 = next;
            }
        }
        self.first_index = next;
        self.end_offset = self.end_offset.max(first_offset);
    }

    fn first_offset(&self) -> i64 {
        self.offsets.front().copied().unwrap_or(self.end_offset)
    }

    /// Kafka's OffsetForLeaderEpoch over the terms of the entries held, the current term
    /// `current` beginning at the log end if it has no entry yet: the largest term at most
    /// `requested`, and the offset where the next term begins (the log end after the last).
    /// A term older than every one held gets itself and the first held term's start; one past
    /// every term known, `None` (Kafka's undefined epoch).
    pub(crate) fn epoch_end(&self, requested: u64, current: u64) -> Option<(u64, i64)> {
        let later = self.terms.partition_point(|&(_, t)| t <= requested);
        let floor = later.checked_sub(1).map_or(requested, |i| self.terms[i].1);
        if let Some(&(first, _)) = self.terms.get(later) {
            return Some((floor, self.offset_of(first)?));
        }
        // Every run held is at most `requested`; after them, the current term's (perhaps
        // empty) run begins at the log end.
        let last = match self.terms.back() {
            Some(&(_, t)) if t >= current => t,
            _ => current,
        };
        match last.cmp(&requested) {
            std::cmp::Ordering::Greater => Some((floor, self.end_offset)),
            std::cmp::Ordering::Equal => Some((requested, self.end_offset)),
            std::cmp::Ordering::Less => None,
        }
    }
}

/// One replica of a partition: its log, the entry index, and the saved Raft state. Shared by
/// the log store, its readers and the state machine.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) log: PartitionLog,
    fs: Arc<dyn Fs>,
    meta_path: PathBuf,
    pub(crate) index: RwLock<EntryIndex>,
    pub(crate) io: Io,
    /// What `replica.meta` holds (written only by the I/O thread).
    saved: Mutex<ReplicaMeta>,
    snapshot_path: PathBuf,
    /// What `snapshot.meta` holds (written only by the I/O thread).
    snapshot: Mutex<Option<SavedSnapshot>>,
    /// Why a sync failed: the log's state on disk is unknown from then on, and every later
    /// write (a vote above all) is refused.
    failed_sync: Mutex<Option<String>>,
}

impl Replica {
    /// Takes over `log` (opened as replicated) and rebuilds its entry index.
    pub(crate) fn open(log: PartitionLog, fs: Arc<dyn Fs>, io: Io) -> Result<Arc<Replica>> {
        let meta_path = log.dir().join(REPLICA_FILE);
        let snapshot_path = log.dir().join(SNAPSHOT_FILE);
        let snapshot: Option<SavedSnapshot> = meta::read(&snapshot_path)?;
        let mut saved: Option<ReplicaMeta> = meta::read(&meta_path)?;
        let restart_path = log.dir().join(RESTART_FILE);
        if let Some(r) = meta::read::<Restart>(&restart_path)? {
            // A restart after a snapshot that a crash interrupted: done again, whole.
            saved = Some(finish_restart(&*fs, &log, saved.unwrap_or_default(), r)?);
        }
        if saved.is_none() && log.log_end_offset() > log.log_start_offset() {
            // Records written by a single node: no Raft log agrees with them.
            return Err(Error::NotALog {
                path: log.dir().to_path_buf(),
                reason: "it holds records but was never a replica".into(),
            });
        }
        let saved = match saved {
            Some(saved) => saved,
            None => {
                // Marks the log as a replica's from its first entry on.
                let fresh = ReplicaMeta {
                    first_offset: log.log_end_offset(),
                    ..ReplicaMeta::default()
                };
                meta::write(&*fs, &meta_path, &fresh)?;
                fresh
            }
        };
        let mut index = EntryIndex::new(saved.purged, saved.first_index, saved.first_offset);
        let end = log.log_end_offset();
        if saved.first_offset > end
            || log.log_start_offset() > saved.first_offset && end > log.log_start_offset()
        {
            return Err(Error::NotALog {
                path: log.dir().to_path_buf(),
                reason: format!(
                    "its replica's entries start at offset {}, outside its log [{}, {end})",
                    saved.first_offset,
                    log.log_start_offset()
                ),
            });
        }
        if saved.first_offset < end {
            let mut next = saved.first_offset;
            log.for_each_header(saved.first_offset, |h| {
                if h.base_offset != next {
                    return Err(Error::NotALog {
                        path: log.dir().to_path_buf(),
                        reason: format!(
                            "a batch at offset {} where its replica's entry at offset {next} was due",
                            h.base_offset
                        ),
                    });
                }
                let Ok(term) = u64::try_from(h.partition_leader_epoch) else {
                    return Err(Error::NotALog {
                        path: log.dir().to_path_buf(),
                        reason: format!("the batch at offset {} has no leader epoch", h.base_offset),
                    });
                };
                index.push(index.next_index(), term, h.base_offset, h.next_offset());
                next = h.next_offset();
                Ok(())
            })?;
        }
        Ok(Arc::new(Replica {
            log,
            fs,
            meta_path,
            index: RwLock::new(index),
            io,
            saved: Mutex::new(saved),
            snapshot_path,
            snapshot: Mutex::new(snapshot),
            failed_sync: Mutex::new(None),
        }))
    }

    /// The last snapshot this replica built or installed.
    pub(crate) fn snapshot(&self) -> Option<SavedSnapshot> {
        self.snapshot.lock().clone()
    }

    /// Whether `e` may be the first entry of this log at an index past the next one: the log
    /// holds no entries and `e` goes at its end offset (or takes the offset given it).
    fn starts_anew(&self, e: &Entry) -> bool {
        let idx = self.index.read();
        if e.log_id.index < idx.next_index() || !idx.offsets.is_empty() {
            return false;
        }
        let at = entry::stored_base_offset(&e.payload);
        at.is_none_or(|at| at == idx.end_offset)
    }

    /// The entries in `[start, end)` that the log holds, stopping before the first entry that
    /// would take their bytes past `budget` (the first entry is read whatever its size).
    pub(crate) fn read_entries(&self, start: u64, end: u64, budget: usize) -> io::Result<Vec<Entry>> {
        let (from, mut offsets) = {
            let idx = self.index.read();
            let start = start.max(idx.first_index);
            let end = end.min(idx.next_index());
            if start >= end {
                return Ok(Vec::new());
            }
            let skip = (start - idx.first_index) as usize;
            let take = (end - start) as usize;
            let offsets: Vec<i64> = idx.offsets.iter().skip(skip).take(take).copied().collect();
            (start, offsets)
        };
        let mut entries = Vec::with_capacity(offsets.len());
        let mut bytes = 0usize;
        let mut budget_cut = None;
        let mut want = offsets.iter().copied().peekable();
        // Stops short where the log no longer has what the index said: a truncation came.
        'reading: while let Some(&offset) = want.peek() {
            let fetch = match self.log.read_unpublished(offset, READ_CHUNK) {
                Ok(fetch) => fetch,
                Err(Error::OffsetOutOfRange { .. }) => break,
                Err(e) => return Err(io::Error::other(e)),
            };
            if fetch.is_empty() {
                break;
            }
            for batch in fetch.batches() {
                let Some(&expected) = want.peek() else { break };
                if batch.header().base_offset != expected {
                    break 'reading;
                }
                // Past the budget with this entry: it waits for the next read, unless it is
                // the first (a read always makes progress).
                bytes += batch.as_bytes().len();
                if bytes > budget && !entries.is_empty() {
                    budget_cut = Some(entries.len());
                    break 'reading;
                }
                let index = from + entries.len() as u64;
                let (id, payload) = entry::from_batch(index, batch.as_bytes().to_vec())?;
                entries.push(Entry::new(id, payload));
                want.next();
            }
        }
        if let Some(n) = budget_cut {
            offsets.truncate(n);
        }
        // Only entries the index still holds as read are returned: after a truncation (and
        // appends after it) other entries may be at these offsets.
        let idx = self.index.read();
        let held = |i: u64, term: Option<u64>| {
            idx.offset_of(i) == offsets.get((i - from) as usize).copied()
                && term.is_none_or(|t| idx.term_of(i) == Some(t))
        };
        let good = entries
            .iter()
            .take_while(|e| held(e.log_id.index, Some(term_of(&e.log_id))))
            .count();
        let next = from + good as u64;
        if good == entries.len() && good < offsets.len() && held(next, None) {
            return Err(io::Error::other(format!(
                "entry {next} is not at offset {} as its index says",
                offsets[good]
            )));
        }
        entries.truncate(good);
        Ok(entries)
    }

    /// Appends `entries` (on the I/O thread): each must take the next index, except the
    /// first entry of an empty log, which may start it at a later index if it goes at the
    /// log's end offset ([`Replica::starts_anew`]).
    pub(crate) fn append(&self, entries: Vec<Entry>) -> io::Result<()> {
        for e in entries {
            let index = e.log_id.index;
            let next = self.index.read().next_index();
            if index != next {
                if !self.starts_anew(&e) {
                    return Err(io::Error::other(format!(
                        "entry {index} appended where entry {next} is due"
                    )));
                }
                // An empty log restarted further on, at its end offset (entries before it
                // were never here).
                let mut saved = self.saved.lock().clone();
                saved.first_index = index;
                saved.first_offset = self.index.read().end_offset;
                self.save(saved)?;
                self.index.write().first_index = index;
            }
            let (id, payload) = (e.log_id, e.payload);
            let batch = entry::to_batch(&id, payload)?;
            let base = batch.header().base_offset;
            let at = (base != UNASSIGNED).then_some(base);
            let info = self.log.append_entry(batch, at).map_err(io::Error::other)?;
            self.index
                .write()
                .push(index, term_of(&id), info.base_offset, info.last_offset + 1);
        }
        Ok(())
    }

    /// Makes every append so far durable. A replica syncs whatever the topic's policy: Raft
    /// counts an entry a replica acknowledged as held by it, and its vote and commit point are
    /// saved on disk, so an entry only in the page cache could be lost behind them.
    fn sync(&self) -> io::Result<()> {
        self.check_synced()?;
        self.log.flush().map_err(|e| {
            *self.failed_sync.lock() = Some(e.to_string());
            io::Error::other(e)
        })
    }

    /// Refuses any write once a sync has failed.
    fn check_synced(&self) -> io::Result<()> {
        match self.failed_sync.lock().as_ref() {
            Some(why) => Err(io::Error::other(format!("an earlier sync failed: {why}"))),
            None => Ok(()),
        }
    }

    pub(crate) fn truncate_after(&self, last: Option<LogId>) -> io::Result<()> {
        // The index forgets the entries first (readers stop asking for them), then the log
        // cuts them, outside the index's lock.
        let cut = self.index.write().truncate_after(last.map(|l| l.index));
        if cut < self.log.log_end_offset() {
            self.log.truncate_to(cut).map_err(io::Error::other)?;
        }
        Ok(())
    }

    pub(crate) fn purge(&self, upto: LogId) -> io::Result<()> {
        let beyond = upto.index >= self.index.read().next_index();
        if let Some(snap) = self
            .snapshot()
            .filter(|s| beyond && s.meta.last_log_id == Some(upto))
        {
            // The snapshot took the place of entries this log lacks (its write was cut short
            // by a crash): the log starts again where the snapshot ends.
            return self.restart(upto, snap.data.next_offset);
        }
        let (first_index, first_offset) = {
            let mut idx = self.index.write();
            if idx.purged.is_some_and(|p| p.index >= upto.index) {
                return Ok(());
            }
            idx.purge(upto);
            (idx.first_index, idx.first_offset())
        };
        let mut saved = self.saved.lock().clone();
        saved.purged = Some(upto);
        saved.first_index = first_index;
        saved.first_offset = first_offset;
        self.save(saved)?;
        // Whole segments below the new first entry can go; consumers read from there on.
        let start = first_offset.min(self.log.high_watermark());
        if start > self.log.log_start_offset() {
            self.log.purge_before(start).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Keeps `snap` in `snapshot.meta`, and lets readers see what it covers. A snapshot whose
    /// last entry this log neither holds nor has purged (its leader's, installed in place of
    /// entries this replica lacks) restarts the log at its offset.
    ///
    /// A snapshot older than the one kept changes nothing (a snapshot this replica built
    /// may be written after its leader's newer one was installed); the one kept again (a
    /// restart's) is not written again.
    pub(crate) fn save_snapshot(&self, snap: SavedSnapshot) -> io::Result<()> {
        let kept = self.snapshot().and_then(|s| s.meta.last_log_id);
        if snap.meta.last_log_id < kept {
            return Ok(());
        }
        if snap.meta.last_log_id > kept {
            meta::write(&*self.fs, &self.snapshot_path, &snap).map_err(io::Error::other)?;
            *self.snapshot.lock() = Some(snap.clone());
        }
        let Some(last) = snap.meta.last_log_id else {
            return Ok(());
        };
        let covered = {
            let idx = self.index.read();
            idx.term_of(last.index) == Some(term_of(&last))
                || idx.purged.is_some_and(|p| p.index >= last.index)
        };
        if !covered {
            self.restart(last, snap.data.next_offset)?;
        }
        self.log.commit_to(snap.data.next_offset);
        Ok(())
    }

    /// Empties the log and starts it again at `offset`, as the entry after `last`, which a
    /// snapshot covers. `restart.meta` says so first, so that a crash part way is finished on
    /// open rather than leaving old batches where the new entries' offsets are.
    fn restart(&self, last: LogId, offset: i64) -> io::Result<()> {
        log::info!(
            "{}: restarting the log at offset {offset} after the snapshot to entry {}",
            self.log.dir().display(),
            last.index
        );
        let r = Restart { last, offset };
        let marker = self.log.dir().join(RESTART_FILE);
        meta::write(&*self.fs, &marker, &r).map_err(io::Error::other)?;
        // Readers stop asking for the old entries before the log lets them go.
        *self.index.write() = EntryIndex::new(Some(last), last.index + 1, offset);
        let saved = self.saved.lock().clone();
        let saved = self.held_committed(saved);
        let saved = finish_restart(&*self.fs, &self.log, saved, r).map_err(io::Error::other)?;
        *self.saved.lock() = saved;
        Ok(())
    }

    fn save_vote(&self, vote: Vote) -> io::Result<()> {
        let mut saved = self.saved.lock().clone();
        saved.vote = Some(vote);
        self.save(saved)
    }

    /// Writes `replica.meta` (every append before it is durable: the I/O thread syncs first),
    /// with the committed id that is known and held here.
    fn save(&self, saved: ReplicaMeta) -> io::Result<()> {
        let saved = self.held_committed(saved);
        meta::write(&*self.fs, &self.meta_path, &saved).map_err(io::Error::other)?;
        *self.saved.lock() = saved;
        Ok(())
    }

    /// `saved` with its committed id no further than the last entry held (a later one is
    /// still committed, but a restart would look for it here).
    fn held_committed(&self, mut saved: ReplicaMeta) -> ReplicaMeta {
        if let Some(c) = saved.committed {
            let idx = self.index.read();
            if let Some(l) = idx.last_log_id().filter(|l| l.index < c.index) {
                saved.committed = Some(l);
            }
        }
        saved
    }

    fn note_committed(&self, committed: Option<LogId>) {
        self.saved.lock().committed = committed;
    }
}

/// A write for the I/O thread.
enum Write {
    Append {
        entries: Vec<Entry>,
        readable: oneshot::Sender<io::Result<()>>,
        durable: IoFlushed,
    },
    Vote(Vote, oneshot::Sender<io::Result<()>>),
    Truncate(Option<LogId>, oneshot::Sender<io::Result<()>>),
    Purge(LogId, oneshot::Sender<io::Result<()>>),
    Snapshot(SavedSnapshot, oneshot::Sender<io::Result<()>>),
}

/// Runs a replica's writes in order, and syncs before it answers the appends' callbacks (and
/// before any other write).
struct Writer {
    replica: Arc<Replica>,
    /// Appends readable but not yet durable.
    unsynced: Vec<IoFlushed>,
}

impl Writer {
    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        let result = match self.replica.io {
            #[cfg(test)]
            Io::Inline { sync: false } => Ok(()),
            _ => self.replica.sync(),
        };
        for done in self.unsynced.drain(..) {
            done.io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        result
    }

    fn run(&mut self, write: Write) {
        let replica = self.replica.clone();
        match write {
            Write::Append {
                entries,
                readable,
                durable,
            } => match replica.append(entries) {
                Ok(()) => {
                    let _ = readable.send(Ok(()));
                    self.unsynced.push(durable);
                }
                Err(e) => {
                    durable.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                    let _ = readable.send(Err(e));
                }
            },
            Write::Vote(vote, done) => self.after_sync(done, |r| r.save_vote(vote)),
            Write::Truncate(last, done) => self.after_sync(done, |r| r.truncate_after(last)),
            Write::Purge(upto, done) => self.after_sync(done, |r| r.purge(upto)),
            Write::Snapshot(snap, done) => self.after_sync(done, |r| r.save_snapshot(snap)),
        }
    }

    /// Runs `write` once every earlier append is durable (unless a sync has failed), and
    /// answers `done` with how it went.
    fn after_sync(
        &mut self,
        done: oneshot::Sender<io::Result<()>>,
        write: impl FnOnce(&Replica) -> io::Result<()>,
    ) {
        let replica = self.replica.clone();
        let r = self
            .sync()
            .and_then(|()| replica.check_synced())
            .and_then(|()| write(&replica));
        let _ = done.send(r);
    }
}

/// The replica's I/O thread: runs the writes as they come, and syncs when it runs out of them
/// (one sync for all the appends that queued meanwhile).
fn run_writes(replica: Arc<Replica>, writes: mpsc::Receiver<Write>) {
    let mut writer = Writer {
        replica,
        unsynced: Vec::new(),
    };
    loop {
        let write = match writes.try_recv() {
            Ok(w) => w,
            Err(mpsc::TryRecvError::Empty) => {
                let _ = writer.sync();
                match writes.recv() {
                    Ok(w) => w,
                    Err(_) => return,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => {
                let _ = writer.sync();
                return;
            }
        };
        writer.run(write);
    }
}

/// openraft's log store over a [`Replica`].
pub(crate) struct LogStore {
    pub(super) replica: Arc<Replica>,
    writes: Writes,
}

/// Where a replica's writes go: the log store's, and its state machine's snapshots.
#[derive(Clone)]
pub(crate) struct Writes(WritesTo);

#[derive(Clone)]
enum WritesTo {
    /// To the replica's I/O thread.
    Thread(mpsc::Sender<Write>),
    /// Run by the caller; the appends' sync comes a little later, from a task of its own
    /// (as the I/O thread's would), so that a crash can find appends readable but not durable.
    #[cfg(test)]
    Inline(Arc<Mutex<Writer>>),
}

impl LogStore {
    /// Starts the replica's I/O thread, if its writes run on one; it ends when the store is
    /// dropped.
    pub(crate) fn new(replica: Arc<Replica>) -> io::Result<LogStore> {
        let writes = match replica.io {
            Io::Threads => {
                let (writes, rx) = mpsc::channel();
                let r = replica.clone();
                thread::Builder::new()
                    .name(format!("rivulet-raft-io {}", replica.log.dir().display()))
                    .spawn(move || run_writes(r, rx))?;
                WritesTo::Thread(writes)
            }
            #[cfg(test)]
            Io::Inline { .. } => WritesTo::Inline(Arc::new(Mutex::new(Writer {
                replica: replica.clone(),
                unsynced: Vec::new(),
            }))),
        };
        Ok(LogStore {
            replica,
            writes: Writes(writes),
        })
    }

    /// Where the replica's writes go, for its state machine.
    pub(crate) fn writes(&self) -> Writes {
        self.writes.clone()
    }

    async fn ask(&self, write: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Write) -> io::Result<()> {
        self.writes.ask(write).await
    }
}

impl Writes {
    /// Keeps `snap` as the replica's snapshot (restarting its log if it must), in order with
    /// the replica's other writes.
    pub(crate) async fn save_snapshot(&self, snap: SavedSnapshot) -> io::Result<()> {
        self.ask(|done| Write::Snapshot(snap, done)).await
    }

    async fn ask(&self, write: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Write) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        match &self.0 {
            WritesTo::Thread(writes) => writes
                .send(write(tx))
                .map_err(|_| io::Error::other("the replica's I/O thread has stopped"))?,
            #[cfg(test)]
            WritesTo::Inline(writer) => {
                let write = write(tx);
                let append = matches!(write, Write::Append { .. });
                writer.lock().run(write);
                if append {
                    // Synced within a millisecond or two of simulated time (the delay drawn
                    // from the simulation's seed), with whatever else is pending by then.
                    let delay = crate::cluster::raft::seeded_draw().unwrap_or(0) % 3;
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        let _ = writer.lock().sync();
                    });
                }
            }
        }
        rx.await
            .map_err(|_| io::Error::other("the replica's I/O thread has stopped"))?
    }
}

/// Reads entries for replication and apply.
#[derive(Clone)]
pub(crate) struct LogReader {
    replica: Arc<Replica>,
}

/// `range`'s bounds as `[start, end)`.
fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

/// How many entries a stream of entries (apply's, after a restart) reads at a time.
const STREAM_CHUNK: u64 = 64;

impl openraft::RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let (start, end) = bounds(&range);
        let replica = self.replica.clone();
        replica
            .io
            .blocking(move || replica.read_entries(start, end, usize::MAX))
            .await?
    }

    /// Replication's reads: about [`REPLICATION_BYTES`] of entries at most (one at least), so
    /// that a run of large batches never makes an AppendEntries too large to send.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let replica = self.replica.clone();
        replica
            .io
            .blocking(move || replica.read_entries(start, end, REPLICATION_BYTES))
            .await?
    }

    /// Reads the range [`STREAM_CHUNK`] entries at a time as the stream is consumed, rather
    /// than all at once: a replica that restarts applies everything committed since, which
    /// may be much.
    async fn entries_stream<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> impl futures_util::Stream<Item = io::Result<Entry>> + Send {
        let (start, end) = bounds(&range);
        let replica = self.replica.clone();
        futures_util::stream::unfold(
            (start, VecDeque::new(), false),
            move |(next, mut ready, failed)| {
                let replica = replica.clone();
                async move {
                    if let Some(e) = ready.pop_front() {
                        return Some((Ok(e), (next, ready, failed)));
                    }
                    if failed || next >= end {
                        return None;
                    }
                    let to = end.min(next.saturating_add(STREAM_CHUNK));
                    let io = replica.io;
                    match io
                        .blocking(move || replica.read_entries(next, to, usize::MAX))
                        .await
                        .and_then(|r| r)
                    {
                        Ok(entries) => {
                            let mut ready: VecDeque<Entry> = entries.into();
                            let n = ready.len() as u64;
                            let first = ready.pop_front()?;
                            Some((Ok(first), (next + n, ready, false)))
                        }
                        Err(e) => Some((Err(e), (next, ready, true))),
                    }
                }
            },
        )
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.replica.saved.lock().vote)
    }
}

impl openraft::RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        self.get_log_reader().await.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.replica.saved.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState> {
        let idx = self.replica.index.read();
        Ok(LogState {
            last_purged_log_id: idx.purged,
            last_log_id: idx.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            replica: self.replica.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let vote = *vote;
        self.ask(|done| Write::Vote(vote, done)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Kept with the next write of `replica.meta`: an older committed id is still a
        // committed one, so a late save loses nothing but replay on restart.
        self.replica.note_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.replica.saved.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IoFlushed) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.ask(|readable| Write::Append {
            entries,
            readable,
            durable: callback,
        })
        .await
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        self.ask(|done| Write::Truncate(last, done)).await
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        self.ask(|done| Write::Purge(upto, done)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Terms 1 (offsets 0..10), 3 (10..20) and 4 (20..30) in three entries each.
    fn index() -> EntryIndex {
        let mut idx = EntryIndex::new(None, 1, 0);
        for (i, term) in [1, 1, 1, 3, 3, 3, 4, 4, 4].into_iter().enumerate() {
            let base = [0, 4, 7, 10, 12, 15, 20, 25, 28][i];
            let end = [4, 7, 10, 12, 15, 20, 25, 28, 30][i];
            idx.push(i as u64 + 1, term, base, end);
        }
        idx
    }

    /// As Kafka's leader epoch cache answers: the largest epoch at most the one asked for and
    /// the next one's start; the log end for the current epoch; none past it.
    #[test]
    fn epoch_ends_follow_kafkas_leader_epoch_cache() {
        let idx = index();
        assert_eq!(idx.epoch_end(0, 4), Some((0, 0)), "older than every term held");
        assert_eq!(idx.epoch_end(1, 4), Some((1, 10)));
        assert_eq!(
            idx.epoch_end(2, 4),
            Some((1, 10)),
            "a term with no entries: the one before"
        );
        assert_eq!(idx.epoch_end(3, 4), Some((3, 20)));
        assert_eq!(
            idx.epoch_end(4, 4),
            Some((4, 30)),
            "the current term ends at the log end"
        );
        assert_eq!(idx.epoch_end(5, 4), None, "past every term known");
        // A leader of term 6 that has not written yet: its term begins at the log end.
        assert_eq!(idx.epoch_end(5, 6), Some((4, 30)));
        assert_eq!(idx.epoch_end(6, 6), Some((6, 30)));
        assert_eq!(idx.epoch_end(7, 6), None);
        // After a purge of term 1's entries, term 1 is older than every term held.
        let mut purged = index();
        purged.purge(log_id(1, 3));
        assert_eq!(purged.epoch_end(1, 4), Some((1, 10)));
        assert_eq!(purged.epoch_end(3, 4), Some((3, 20)));
    }
}
