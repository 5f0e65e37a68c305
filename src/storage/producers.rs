//! One partition's producer state (Kafka's design, KIP-98): for every idempotent or
//! transactional producer that wrote to the partition, its epoch, its last batches' sequence
//! numbers and offsets, its transaction coordinator's epoch and the first offset of its open
//! transaction. It is what lets a retried batch be answered with its first append instead of
//! being written twice, an older epoch be fenced, and readers in `read_committed` stop at the
//! first open transaction (the last stable offset).
//!
//! The state is a function of the log: every batch written ([`ProducerState::apply`]) updates
//! it, under the log's writer lock, whoever wrote it (a leader's append, a replica's copy).
//! It is kept in `<offset>.snapshot` files beside the segments, Kafka's producer snapshot
//! format (version 1), written when a segment rolls and on a clean close; opening a log loads
//! the newest snapshot at or below its end and applies the headers of the batches after it.
//! A truncation does the same from the newest snapshot at or below the new end.
//!
//! A snapshot keeps each producer's last batch only (as Kafka's does): a retry of one of the
//! four batches before it, arriving after the log rolled and restarted in between, is judged
//! on that last batch alone.
//!
//! Every build keeps the state (a log written by the Kafka front end may be opened by a
//! build without it); judging batches against it is the Kafka front end's.
#![cfg_attr(not(feature = "kafka"), allow(dead_code))]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::storage::format::{Batch, BatchHeader, be_i16, be_i32, be_i64, crc32c};
use crate::storage::io::Fs;
use crate::storage::log::AppendInfo;
use crate::storage::segment::Segment;
use crate::storage::txnindex::Aborted;

/// How many recent batches per producer are remembered (a producer has at most five
/// requests in flight).
pub(crate) const REMEMBERED: usize = 5;

/// The most producers one partition remembers. Past it, a new producer makes room by
/// forgetting the hundredth of them that wrote least recently (none with an open
/// transaction); a forgotten producer's next batch is taken as a new producer's.
pub(crate) const MAX_PRODUCERS: usize = 10_000;

/// How long a producer that writes nothing is remembered (Kafka's default
/// `producer.id.expiration.ms`, one day), judged by its last batch's timestamp when a
/// snapshot is written. One with an open transaction is kept.
pub(crate) const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The file name suffix of producer snapshots.
pub(crate) const SNAPSHOT_SUFFIX: &str = "snapshot";

/// How many snapshot files a log keeps (the newest ones): an older one is the fallback for a
/// newer one a crash damaged.
const SNAPSHOTS_KEPT: usize = 3;

/// Kafka's producer snapshot version.
const SNAPSHOT_VERSION: i16 = 1;
/// version i16, crc u32, count i32.
const SNAPSHOT_HEADER: usize = 2 + 4 + 4;
/// producer id i64, epoch i16, last sequence i32, last offset i64, offset delta i32,
/// timestamp i64, coordinator epoch i32, open transaction's first offset i64.
const SNAPSHOT_ENTRY: usize = 46;

/// A batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first_sequence: i32,
    last_sequence: i32,
    info: AppendInfo,
}

/// What a partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Its last batches (at most [`REMEMBERED`]), oldest first, in its current epoch.
    recent: VecDeque<Written>,
    /// The epoch of the transaction coordinator that wrote its last marker (-1: none).
    coordinator_epoch: i32,
    /// The first offset of its open transaction.
    open_since: Option<i64>,
    /// Its last batch's largest timestamp.
    last_timestamp: i64,
}

/// A transaction marker: the record of a control batch that ends a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) commit: bool,
    pub(crate) coordinator_epoch: i32,
}

/// The control record key's type of a COMMIT marker.
const COMMIT_TYPE: i16 = 1;
/// The control record key's type of an ABORT marker.
const ABORT_TYPE: i16 = 0;

impl Marker {
    /// The marker a control batch carries, if it is one: a control batch of a producer whose
    /// first record's key is (version 0, type ABORT or COMMIT).
    pub(crate) fn of(batch: &Batch<'_>) -> Option<Marker> {
        let h = batch.header();
        if !h.is_control() || h.producer_id < 0 {
            return None;
        }
        let records = batch.records().ok()?;
        let record = records.iter().next()?.ok()?;
        let key = record.key.filter(|k| k.len() >= 4 && be_i16(k, 0) == 0)?;
        let commit = match be_i16(key, 2) {
            COMMIT_TYPE => true,
            ABORT_TYPE => false,
            _ => return None,
        };
        let coordinator_epoch = record.value.filter(|v| v.len() >= 6).map_or(-1, |v| be_i32(v, 2));
        Some(Marker {
            commit,
            coordinator_epoch,
        })
    }

    /// The marker's control record: its key and value, as Kafka writes them.
    pub(crate) fn record(&self) -> ([u8; 4], [u8; 6]) {
        let mut key = [0u8; 4];
        let kind = if self.commit { COMMIT_TYPE } else { ABORT_TYPE };
        key[2..].copy_from_slice(&kind.to_be_bytes());
        let mut value = [0u8; 6];
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        (key, value)
    }
}

/// Why a partition refused a producer's batch (or a marker ending its transaction).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ProducerError {
    /// An epoch older than the producer's current one: a newer instance of the producer (the
    /// same transactional id, or a bumped epoch) fenced this one.
    OldEpoch {
        /// The batch's epoch.
        epoch: i16,
        /// The producer's current epoch.
        current: i16,
    },
    /// A sequence number that does not follow the producer's last batch (a batch was lost in
    /// between, or a new epoch did not start at 0).
    OutOfOrder {
        /// The batch's first sequence number.
        sequence: i32,
        /// The sequence number that would have followed.
        expected: i32,
    },
    /// A batch outside a transaction from a producer with one open, or a marker from a
    /// coordinator older than the last one.
    InvalidTxnState(String),
    /// The first batch of a transaction at a cluster's partition, whose coordinator could
    /// not say that the transaction is open (busy, or not reached): nothing was written, and
    /// the producer sends it again.
    Unverified(String),
}

impl std::error::Error for ProducerError {}

impl std::fmt::Display for ProducerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProducerError::OldEpoch { epoch, current } => write!(f, "epoch {epoch} is older than {current}"),
            ProducerError::OutOfOrder { sequence, expected } if *expected == 0 => {
                write!(f, "a new epoch starts at sequence 0, not {sequence}")
            }
            ProducerError::OutOfOrder { sequence, expected } => {
                write!(f, "sequence {sequence} where {expected} was expected")
            }
            ProducerError::InvalidTxnState(why) => f.write_str(why),
            ProducerError::Unverified(why) => write!(f, "the transaction could not be verified: {why}"),
        }
    }
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Append it.
    Append,
    /// A retry of a batch already written: answer with its append.
    Duplicate(AppendInfo),
    /// Refuse it.
    Refuse(ProducerError),
}

/// Where [`ProducerState::plan`] notes a batch judged but not yet written.
const UNWRITTEN: AppendInfo = AppendInfo {
    base_offset: -1,
    last_offset: -1,
    log_append_time: -1,
};

/// The producers of one partition, and its transactions not yet stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerState {
    by_id: HashMap<i64, Producer>,
    /// Open transactions: first offset -> producer id.
    open: BTreeMap<i64, i64>,
    /// Transactions ended by a marker that readers may not see yet: first offset -> the
    /// marker's offset. A transaction is unstable until its marker is below the high
    /// watermark.
    ending: BTreeMap<i64, i64>,
}

/// What [`ProducerState::digest`] gives: per producer id, its epoch, last batch (first and
/// last sequence, first and last offset), coordinator epoch and open transaction.
#[cfg(test)]
pub(crate) type Digest = BTreeMap<i64, (i16, Option<(i32, i32, i64, i64)>, i32, Option<i64>)>;

/// The sequence after `s` (sequences wrap from `i32::MAX` to 0).
fn after(s: i32) -> i32 {
    if s == i32::MAX { 0 } else { s + 1 }
}

fn last_sequence(h: &BatchHeader) -> i32 {
    ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerState {
    /// Whether `h`, a transactional batch, begins a transaction here: its producer has none
    /// open in its epoch.
    #[cfg(feature = "cluster")]
    pub(crate) fn begins_transaction(&self, h: &BatchHeader) -> bool {
        h.is_transactional()
            && self
                .by_id
                .get(&h.producer_id)
                .is_none_or(|p| p.open_since.is_none() || p.epoch != h.producer_epoch)
    }

    /// Judges a producer's data batch (`producer_id >= 0`) against the state.
    pub(crate) fn check(&self, h: &BatchHeader) -> Verdict {
        let Some(p) = self.by_id.get(&h.producer_id) else {
            return Verdict::Append; // never seen here (or forgotten)
        };
        if h.producer_epoch < p.epoch {
            return Verdict::Refuse(ProducerError::OldEpoch {
                epoch: h.producer_epoch,
                current: p.epoch,
            });
        }
        if p.open_since.is_some() && !h.is_transactional() {
            return Verdict::Refuse(ProducerError::InvalidTxnState(format!(
                "producer {} has a transaction open: a batch outside it is refused",
                h.producer_id
            )));
        }
        if h.producer_epoch > p.epoch {
            return match h.base_sequence {
                0 => Verdict::Append,
                sequence => Verdict::Refuse(ProducerError::OutOfOrder {
                    sequence,
                    expected: 0,
                }),
            };
        }
        let last = last_sequence(h);
        if let Some(sent) = p
            .recent
            .iter()
            .find(|s| s.first_sequence == h.base_sequence && s.last_sequence == last)
        {
            return Verdict::Duplicate(sent.info);
        }
        let expected = p
            .recent
            .back()
            .map_or(h.base_sequence, |s| after(s.last_sequence));
        if h.base_sequence != expected {
            return Verdict::Refuse(ProducerError::OutOfOrder {
                sequence: h.base_sequence,
                expected,
            });
        }
        Verdict::Append
    }

    /// Judges a record set's batches in order, each as if the ones before it that are to be
    /// appended had been: what to do with each, or the first refusal. Changes nothing.
    /// Batches of no producer (`producer_id < 0`) are appended.
    pub(crate) fn plan(&self, headers: &[BatchHeader]) -> Result<Vec<Verdict>> {
        // The producers of this set only: a partition may remember many.
        let mut scratch = ProducerState::default();
        for h in headers.iter().filter(|h| h.producer_id >= 0) {
            if let Some(p) = self.by_id.get(&h.producer_id) {
                scratch.by_id.entry(h.producer_id).or_insert_with(|| p.clone());
            }
        }
        let mut plan = Vec::with_capacity(headers.len());
        for h in headers {
            if h.producer_id < 0 {
                plan.push(Verdict::Append);
                continue;
            }
            let verdict = scratch.check(h);
            match &verdict {
                Verdict::Refuse(why) => {
                    return Err(Error::Producer {
                        producer_id: h.producer_id,
                        error: why.clone(),
                    });
                }
                // Offsets are not known yet: a later batch of the set is judged on sequences,
                // and one repeating this batch answers with the set's first append.
                Verdict::Append => {
                    scratch.apply(h, None, UNWRITTEN);
                }
                Verdict::Duplicate(_) => {}
            }
            plan.push(verdict);
        }
        Ok(plan)
    }

    /// Judges a marker of producer `producer_id` in `epoch` from a coordinator in
    /// `coordinator_epoch`: a marker of an older producer epoch, or from an older
    /// coordinator, is refused.
    pub(crate) fn check_marker(&self, producer_id: i64, epoch: i16, marker: Marker) -> Option<ProducerError> {
        let p = self.by_id.get(&producer_id)?;
        if epoch < p.epoch {
            return Some(ProducerError::OldEpoch {
                epoch,
                current: p.epoch,
            });
        }
        (marker.coordinator_epoch < p.coordinator_epoch).then(|| {
            ProducerError::InvalidTxnState(format!(
                "a marker from coordinator epoch {} after one from {}",
                marker.coordinator_epoch, p.coordinator_epoch
            ))
        })
    }

    /// Notes a batch written at `info` (a marker if `marker` is set); returns the transaction
    /// an ABORT marker ended. Batches of no producer change nothing.
    pub(crate) fn apply(
        &mut self,
        h: &BatchHeader,
        marker: Option<Marker>,
        info: AppendInfo,
    ) -> Option<Aborted> {
        if h.producer_id < 0 || (h.is_control() && marker.is_none()) {
            return None;
        }
        if !self.by_id.contains_key(&h.producer_id) && self.by_id.len() >= MAX_PRODUCERS {
            self.make_room();
        }
        let p = self.by_id.entry(h.producer_id).or_insert(Producer {
            epoch: h.producer_epoch,
            recent: VecDeque::new(),
            coordinator_epoch: -1,
            open_since: None,
            last_timestamp: -1,
        });
        if h.producer_epoch != p.epoch {
            p.epoch = h.producer_epoch;
            p.recent.clear();
        }
        // The log's clock for a live write (a client's timestamps would decide which producers
        // are forgotten first); the batch's own for a replayed one.
        p.last_timestamp = p.last_timestamp.max(info.log_append_time);
        if let Some(marker) = marker {
            p.coordinator_epoch = marker.coordinator_epoch;
            let first = p.open_since.take()?;
            self.open.remove(&first);
            if info.last_offset >= 0 {
                self.ending.insert(first, info.last_offset);
            }
            let last_stable_offset = self
                .open
                .first_key_value()
                .map_or(info.last_offset + 1, |(&f, _)| f);
            return (!marker.commit).then_some(Aborted {
                producer_id: h.producer_id,
                first_offset: first,
                last_offset: info.last_offset,
                last_stable_offset,
            });
        }
        if p.recent.len() == REMEMBERED {
            p.recent.pop_front();
        }
        p.recent.push_back(Written {
            first_sequence: h.base_sequence,
            last_sequence: last_sequence(h),
            info,
        });
        if h.is_transactional() && p.open_since.is_none() && info.base_offset >= 0 {
            p.open_since = Some(info.base_offset);
            self.open.insert(info.base_offset, h.producer_id);
        }
        None
    }

    /// Forgets the hundredth of the producers that wrote least recently, keeping those with
    /// an open transaction.
    fn make_room(&mut self) {
        let mut ages: Vec<(i64, i64)> = self
            .by_id
            .iter()
            .filter(|(_, p)| p.open_since.is_none())
            .map(|(&id, p)| (p.last_timestamp, id))
            .collect();
        let evict = (MAX_PRODUCERS / 100).max(1).min(ages.len());
        if evict == 0 {
            return;
        }
        ages.select_nth_unstable(evict - 1);
        for &(_, id) in &ages[..evict] {
            self.by_id.remove(&id);
        }
    }

    /// Forgets producers whose last batch is older than [`FORGET_AFTER_MS`] at `now_ms` and
    /// that have no transaction open.
    pub(crate) fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(FORGET_AFTER_MS);
        self.by_id
            .retain(|_, p| p.open_since.is_some() || p.last_timestamp >= horizon);
    }

    /// The epoch a partition knows for `producer_id`, if its last batch is no older than
    /// `max_age_ms` at `now_ms`.
    pub(crate) fn known_epoch(&self, producer_id: i64, now_ms: i64, max_age_ms: i64) -> Option<i16> {
        self.by_id
            .get(&producer_id)
            .filter(|p| now_ms.saturating_sub(p.last_timestamp) < max_age_ms)
            .map(|p| p.epoch)
    }

    /// The first offset of the first transaction readers in `read_committed` may not pass
    /// yet, given the high watermark: the first open one, or one whose marker is not below
    /// `high_watermark`. `None` if every transaction is stable.
    pub(crate) fn first_unstable(&mut self, high_watermark: i64) -> Option<i64> {
        while let Some((&first, &marker)) = self.ending.first_key_value() {
            if marker >= high_watermark {
                break;
            }
            self.ending.remove(&first);
        }
        let open = self.open.first_key_value().map(|(&f, _)| f);
        let ending = self.ending.first_key_value().map(|(&f, _)| f);
        match (open, ending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether any transaction is open or not yet stable.
    pub(crate) fn has_unstable(&self) -> bool {
        !self.open.is_empty() || !self.ending.is_empty()
    }

    /// What a snapshot keeps of each producer (its epoch, last batch, coordinator epoch and
    /// open transaction): two states that agree on it judge every next batch alike.
    #[cfg(test)]
    pub(crate) fn digest(&self) -> Digest {
        self.by_id
            .iter()
            .map(|(&id, p)| {
                let last = p.recent.back().map(|w| {
                    (
                        w.first_sequence,
                        w.last_sequence,
                        w.info.base_offset,
                        w.info.last_offset,
                    )
                });
                (id, (p.epoch, last, p.coordinator_epoch, p.open_since))
            })
            .collect()
    }

    /// How many producers it remembers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The state in Kafka's producer snapshot format (version 1).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.by_id.keys().collect();
        ids.sort_unstable();
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER + ids.len() * SNAPSHOT_ENTRY);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // the CRC, below
        out.extend_from_slice(&(ids.len() as i32).to_be_bytes());
        for id in ids {
            let p = &self.by_id[id];
            let last = p.recent.back();
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&p.epoch.to_be_bytes());
            out.extend_from_slice(&last.map_or(-1, |w| w.last_sequence).to_be_bytes());
            out.extend_from_slice(&last.map_or(-1, |w| w.info.last_offset).to_be_bytes());
            let delta = last.map_or(0, |w| (w.info.last_offset - w.info.base_offset) as i32);
            out.extend_from_slice(&delta.to_be_bytes());
            out.extend_from_slice(&p.last_timestamp.to_be_bytes());
            out.extend_from_slice(&p.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&p.open_since.unwrap_or(-1).to_be_bytes());
        }
        let crc = crc32c(&out[6..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot written by [`encode`](Self::encode) (or by Kafka); `None` if it is
    /// damaged or of another version.
    pub(crate) fn decode(bytes: &[u8]) -> Option<ProducerState> {
        if bytes.len() < SNAPSHOT_HEADER || be_i16(bytes, 0) != SNAPSHOT_VERSION {
            return None;
        }
        if crc32c(&bytes[6..]) != be_i32(bytes, 2) as u32 {
            return None;
        }
        let count = usize::try_from(be_i32(bytes, 6)).ok()?;
        if bytes.len() != SNAPSHOT_HEADER + count.checked_mul(SNAPSHOT_ENTRY)? {
            return None;
        }
        let mut state = ProducerState::default();
        for e in bytes[SNAPSHOT_HEADER..].chunks_exact(SNAPSHOT_ENTRY) {
            let id = be_i64(e, 0);
            let last_sequence = be_i32(e, 10);
            let last_offset = be_i64(e, 14);
            let delta = be_i32(e, 22);
            let last_timestamp = be_i64(e, 26);
            let open_since = Some(be_i64(e, 38)).filter(|&f| f >= 0);
            let mut recent = VecDeque::new();
            if last_offset >= 0 && last_sequence >= 0 {
                let first_sequence =
                    ((last_sequence as i64 - delta as i64).rem_euclid(i32::MAX as i64 + 1)) as i32;
                recent.push_back(Written {
                    first_sequence,
                    last_sequence,
                    info: AppendInfo {
                        base_offset: last_offset - delta as i64,
                        last_offset,
                        log_append_time: last_timestamp,
                    },
                });
            }
            if let Some(first) = open_since {
                state.open.insert(first, id);
            }
            state.by_id.insert(
                id,
                Producer {
                    epoch: be_i16(e, 8),
                    recent,
                    coordinator_epoch: be_i32(e, 34),
                    open_since,
                    last_timestamp,
                },
            );
        }
        Some(state)
    }
}

/// The path of the snapshot taken at `offset` in `dir`.
pub(crate) fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!(
        "{}.{SNAPSHOT_SUFFIX}",
        crate::storage::segment::file_stem(offset)
    ))
}

/// The offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list", dir)? {
        let name = entry.ctx("list", dir)?.file_name();
        if let Some((offset, SNAPSHOT_SUFFIX)) =
            crate::storage::segment::parse_file_name(&name.to_string_lossy())
        {
            found.push(offset);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Writes `bytes` (an encoded state) as the snapshot at `offset` (written whole, synced, renamed into place;
/// the caller syncs the directory), and removes all but the newest [`SNAPSHOTS_KEPT`].
pub(crate) fn write_snapshot(fs: &dyn Fs, dir: &Path, offset: i64, bytes: &[u8]) -> Result<()> {
    let path = snapshot_path(dir, offset);
    crate::storage::meta::replace_file(fs, &path, bytes)?;
    let all = list_snapshots(dir)?;
    for &old in all.iter().rev().skip(SNAPSHOTS_KEPT) {
        remove_snapshot(fs, dir, old)?;
    }
    Ok(())
}

/// Removes the snapshot at `offset`.
pub(crate) fn remove_snapshot(fs: &dyn Fs, dir: &Path, offset: i64) -> Result<()> {
    let path = snapshot_path(dir, offset);
    match fs.remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", &path),
        _ => Ok(()),
    }
}

/// The newest sound snapshot at or below `end` in `dir`, with its offset; snapshots above
/// `end` (taken before a crash or a truncation took those offsets back) are removed, and so
/// are damaged ones. `None` if there is none.
pub(crate) fn load_snapshot(fs: &dyn Fs, dir: &Path, end: i64) -> Result<Option<(i64, ProducerState)>> {
    let removed = remove_snapshots_above(fs, dir, end)?;
    let mut all = list_snapshots(dir)?;
    let mut found = None;
    let mut damaged = false;
    while let Some(offset) = all.pop() {
        let path = snapshot_path(dir, offset);
        let bytes = std::fs::read(&path).ctx("read", &path)?;
        match ProducerState::decode(&bytes) {
            Some(state) => {
                found = Some((offset, state));
                break;
            }
            None => {
                log::warn!("ignoring the damaged producer snapshot {}", path.display());
                remove_snapshot(fs, dir, offset)?;
                damaged = true;
            }
        }
    }
    // The removals are durable before anything is written past them: a snapshot taken back
    // by a crash must not come back under offsets written since.
    if damaged && !removed {
        fs.sync_dir(dir).ctx("fsync", dir)?;
    }
    Ok(found)
}

/// Removes the snapshots above `end` and, if there were any, syncs the directory; returns
/// whether there were.
pub(crate) fn remove_snapshots_above(fs: &dyn Fs, dir: &Path, end: i64) -> Result<bool> {
    let above: Vec<i64> = list_snapshots(dir)?.into_iter().filter(|&o| o > end).collect();
    for &offset in &above {
        remove_snapshot(fs, dir, offset)?;
    }
    if !above.is_empty() {
        fs.sync_dir(dir).ctx("fsync", dir)?;
    }
    Ok(!above.is_empty())
}

/// Applies to `state` every producer's batch of `segments` from the one that holds `from` to
/// the end of what each segment holds, reading headers (and the records of markers) only.
///
/// Returns the transactions the ABORT markers among them ended.
pub(crate) fn replay(segments: &[Arc<Segment>], from: i64, state: &mut ProducerState) -> Vec<Aborted> {
    let mut aborted = Vec::new();
    let first = segments
        .partition_point(|s| s.base_offset <= from)
        .saturating_sub(1);
    for seg in &segments[first..] {
        if let Err(e) = replay_segment(seg, from, state, &mut aborted) {
            // A damaged batch (reported to whoever reads it) leaves the producers of the rest
            // of its segment unknown here; their next batches are taken as new producers'.
            log::warn!("reading the producers of {}: {e}", seg.path().display());
        }
    }
    aborted
}

/// [`replay`] of one segment.
fn replay_segment(
    seg: &Segment,
    from: i64,
    state: &mut ProducerState,
    aborted: &mut Vec<Aborted>,
) -> Result<()> {
    let limit = seg.size();
    let Some((mut pos, mut h)) = seg.find(from, limit)? else {
        return Ok(());
    };
    loop {
        if h.producer_id >= 0 {
            let marker = match h.is_control() {
                true => {
                    let bytes = seg.read(pos, &h, 0, limit, i64::MAX, Vec::new())?;
                    Batch::parse(&bytes).ok().and_then(|(b, _)| Marker::of(&b))
                }
                false => None,
            };
            let info = AppendInfo {
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                log_append_time: h.max_timestamp,
            };
            aborted.extend(state.apply(&h, marker, info));
        }
        pos += h.total_len() as u64;
        if pos >= limit {
            return Ok(());
        }
        h = seg.header_at(pos, limit)?;
    }
}

/// What [`rebuild`] found.
pub(crate) struct Rebuilt {
    pub(crate) state: ProducerState,
    /// Where the batches it applied start (the snapshot's offset).
    pub(crate) from: i64,
    /// The transactions the ABORT markers among those batches ended.
    pub(crate) aborted: Vec<Aborted>,
}

/// The producer state of a log whose segments are `segments`, ending at `end`: the newest
/// snapshot at or below `end`, and the batches after it.
pub(crate) fn rebuild(fs: &dyn Fs, dir: &Path, segments: &[Arc<Segment>], end: i64) -> Result<Rebuilt> {
    let (from, mut state) = match load_snapshot(fs, dir, end)? {
        Some(found) => found,
        None => (segments[0].base_offset, ProducerState::default()),
    };
    let from = from.max(segments[0].base_offset);
    let aborted = match from < end {
        true => replay(segments, from, &mut state),
        false => Vec::new(),
    };
    Ok(Rebuilt { state, from, aborted })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 1_000,
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn transactional(id: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            attributes: 1 << 4,
            ..header(id, epoch, seq, count)
        }
    }

    fn marker(id: i64, epoch: i16) -> BatchHeader {
        BatchHeader {
            attributes: 1 << 5 | 1 << 4,
            base_sequence: -1,
            ..header(id, epoch, -1, 1)
        }
    }

    fn at(base: i64, count: i64) -> AppendInfo {
        AppendInfo {
            base_offset: base,
            last_offset: base + count - 1,
            log_append_time: 1_000,
        }
    }

    #[test]
    fn retries_are_answered_gaps_and_old_epochs_refused() {
        let mut state = ProducerState::default();
        let first = header(7, 0, 0, 3);
        assert_eq!(state.check(&first), Verdict::Append);
        state.apply(&first, None, at(100, 3));
        // The same batch again: the first answer, nothing written.
        assert_eq!(state.check(&first), Verdict::Duplicate(at(100, 3)));
        // The next batch follows on; a gap is refused.
        assert_eq!(state.check(&header(7, 0, 3, 1)), Verdict::Append);
        assert!(matches!(
            state.check(&header(7, 0, 5, 1)),
            Verdict::Refuse(ProducerError::OutOfOrder { .. })
        ));
        // A new epoch starts at 0; then the old epoch is fenced.
        assert!(matches!(
            state.check(&header(7, 1, 3, 1)),
            Verdict::Refuse(ProducerError::OutOfOrder { .. })
        ));
        let bumped = header(7, 1, 0, 1);
        assert_eq!(state.check(&bumped), Verdict::Append);
        state.apply(&bumped, None, at(200, 1));
        assert!(matches!(
            state.check(&header(7, 0, 3, 1)),
            Verdict::Refuse(ProducerError::OldEpoch { .. })
        ));
        // Only the last five batches are remembered.
        for i in 1..=6 {
            let h = header(7, 1, i, 1);
            assert_eq!(state.check(&h), Verdict::Append, "batch {i}");
            state.apply(&h, None, at(200 + i as i64, 1));
        }
        assert_eq!(state.check(&header(7, 1, 6, 1)), Verdict::Duplicate(at(206, 1)));
        assert_ne!(state.check(&header(7, 1, 1, 1)), Verdict::Duplicate(at(201, 1)));
        // Sequences wrap.
        assert_eq!(after(i32::MAX), 0);
        assert_eq!(last_sequence(&header(1, 0, i32::MAX, 2)), 0);
    }

    #[test]
    fn a_record_set_is_planned_as_if_written_in_order() {
        let state = ProducerState::default();
        let plan = state
            .plan(&[header(1, 0, 0, 2), header(-1, -1, -1, 1), header(1, 0, 2, 1)])
            .unwrap();
        assert_eq!(plan, vec![Verdict::Append; 3]);
        assert!(state.plan(&[header(1, 0, 0, 2), header(1, 0, 5, 1)]).is_err());
        // Planning changes nothing.
        assert_eq!(state, ProducerState::default());
    }

    #[test]
    fn transactions_hold_the_last_stable_offset_until_their_marker_is_readable() {
        let mut state = ProducerState::default();
        state.apply(&transactional(1, 0, 0, 2), None, at(10, 2));
        state.apply(&transactional(2, 0, 0, 1), None, at(12, 1));
        state.apply(&transactional(1, 0, 2, 1), None, at(13, 1));
        assert_eq!(state.first_unstable(14), Some(10));
        // Outside its transaction, producer 1 is refused.
        assert!(matches!(
            state.check(&header(1, 0, 3, 1)),
            Verdict::Refuse(ProducerError::InvalidTxnState(_))
        ));
        // Producer 1 aborts: its transaction is unstable until the marker is readable.
        let abort = Marker {
            commit: false,
            coordinator_epoch: 3,
        };
        let aborted = state.apply(&marker(1, 0), Some(abort), at(14, 1));
        assert_eq!(
            aborted,
            Some(Aborted {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14,
                last_stable_offset: 12,
            })
        );
        assert_eq!(state.first_unstable(14), Some(10));
        assert_eq!(state.first_unstable(15), Some(12));
        // A marker of an older coordinator, or of an older epoch, is refused.
        let stale = Marker {
            commit: true,
            coordinator_epoch: 2,
        };
        assert!(state.check_marker(1, 0, stale).is_some());
        assert!(state.check_marker(1, 0, abort).is_none());
        // Producer 2 commits; everything is stable once its marker is readable.
        let commit = Marker {
            commit: true,
            coordinator_epoch: 3,
        };
        assert_eq!(state.apply(&marker(2, 0), Some(commit), at(15, 1)), None);
        assert_eq!(state.first_unstable(16), None);
        assert!(!state.has_unstable());
        // A marker's record reads back as the marker.
        let mut b = crate::storage::BatchBuilder::new(crate::storage::Compression::None)
            .producer(5, 0, -1)
            .transactional(true)
            .control(true);
        let (key, value) = abort.record();
        b.push(0, Some(&key), Some(&value), &[]);
        let batch = b.finish().unwrap();
        assert_eq!(Marker::of(&batch.view()), Some(abort));
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let mut state = ProducerState::default();
        state.apply(&header(1, 2, 10, 3), None, at(100, 3));
        state.apply(&transactional(2, 0, i32::MAX, 2), None, at(103, 2));
        state.apply(
            &marker(3, 4),
            Some(Marker {
                commit: true,
                coordinator_epoch: 9,
            }),
            at(105, 1),
        );
        let bytes = state.encode();
        assert_eq!(bytes.len(), SNAPSHOT_HEADER + 3 * SNAPSHOT_ENTRY);
        let back = ProducerState::decode(&bytes).unwrap();
        // The last batch of each producer survives: its retry is a duplicate, the next follows.
        assert_eq!(back.check(&header(1, 2, 10, 3)), Verdict::Duplicate(at(100, 3)));
        assert_eq!(back.check(&header(1, 2, 13, 1)), Verdict::Append);
        assert_eq!(
            back.check(&transactional(2, 0, i32::MAX, 2)),
            Verdict::Duplicate(at(103, 2))
        );
        let mut back = back;
        assert_eq!(back.first_unstable(200), Some(103));
        assert!(
            back.check_marker(
                3,
                4,
                Marker {
                    commit: true,
                    coordinator_epoch: 8
                }
            )
            .is_some()
        );
        for i in [0, 3, 20, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(ProducerState::decode(&bad), None, "byte {i}");
        }
        assert_eq!(ProducerState::decode(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn the_table_is_bounded_and_idle_producers_are_forgotten() {
        let mut state = ProducerState::default();
        state.apply(&transactional(0, 0, 0, 1), None, at(0, 1));
        for id in 1..=MAX_PRODUCERS as i64 {
            let written = AppendInfo {
                log_append_time: id,
                ..at(id, 1)
            };
            state.apply(&header(id, 0, 0, 1), None, written);
        }
        assert!(state.len() <= MAX_PRODUCERS);
        // The open transaction's producer is kept; the oldest others went.
        assert!(state.by_id.contains_key(&0));
        assert!(!state.by_id.contains_key(&1));
        assert!(state.by_id.contains_key(&(MAX_PRODUCERS as i64)));
        state.expire(FORGET_AFTER_MS + 2_000);
        assert_eq!(state.len(), 1 + MAX_PRODUCERS - 1_999);
    }

    mod in_a_log {
        use std::sync::Arc;

        use super::*;
        use crate::LogConfig;
        use crate::storage::{BatchBuilder, Compression, FaultyFs, PartitionLog, RecordBatch};

        fn batch(id: i64, epoch: i16, seq: i32, txn: bool) -> RecordBatch {
            let mut b = BatchBuilder::new(Compression::None)
                .producer(id, epoch, seq)
                .transactional(txn);
            for i in 0..3 {
                b.push(crate::storage::now_ms(), Some(b"k"), Some(&[i; 100]), &[]);
            }
            b.finish().unwrap()
        }

        /// The state a full replay of the log from its start gives.
        fn replayed(log: &PartitionLog) -> ProducerState {
            let mut state = ProducerState::default();
            replay(&log.inner.snapshot(), log.log_start_offset(), &mut state);
            state
        }

        /// The producers' digest and the aborted transactions the log holds, checked
        /// against a full replay of its batches.
        fn digest(log: &PartitionLog) -> Digest {
            let mut state = ProducerState::default();
            let aborted = replay(&log.inner.snapshot(), log.log_start_offset(), &mut state);
            let mut index = crate::storage::txnindex::AbortedIndex::default();
            for a in aborted {
                index.push(a);
            }
            assert_eq!(*log.inner.aborted.read(), index, "the aborted transactions");
            log.inner.producers.lock().digest()
        }

        fn commit(coordinator_epoch: i32) -> Marker {
            Marker {
                commit: true,
                coordinator_epoch,
            }
        }

        #[test]
        fn the_state_survives_rolls_restarts_crashes_and_truncations() {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 2_000,
                ..LogConfig::default()
            };
            let fs = Arc::new(FaultyFs::new());
            let open = |fs: Arc<dyn crate::storage::Fs>| {
                PartitionLog::builder(dir.path())
                    .config(config.clone())
                    .fs(fs)
                    .open()
                    .unwrap()
            };
            let log = open(fs.clone());
            let seq = std::cell::RefCell::new([0i32; 3]);
            let write = |log: &PartitionLog, id: usize, txn: bool| {
                let b = batch(id as i64, 0, seq.borrow()[id], txn);
                seq.borrow_mut()[id] += 3;
                log.append(b).unwrap()
            };
            for round in 0..6 {
                write(&log, 0, false);
                write(&log, 1, false);
                write(&log, 2, true);
                if round % 2 == 1 {
                    let marker = Marker {
                        commit: round != 3,
                        coordinator_epoch: round,
                    };
                    log.append_marker(2, 0, marker).unwrap();
                }
            }
            // Producer 2 leaves a transaction open; the log rolled several times.
            write(&log, 2, true);
            assert!(log.segment_count() > 3, "{} segments", log.segment_count());
            assert_eq!(digest(&log), replayed(&log).digest());
            let open_since = digest(&log)[&2].3.expect("an open transaction");
            assert_eq!(log.last_stable_offset(), open_since);
            // The transaction aborted in round 3 is found by a range that overlaps it.
            let aborted = log.aborted_transactions(0, log.log_end_offset());
            assert_eq!(aborted.len(), 1, "{aborted:?}");
            assert!(
                log.aborted_transactions(aborted[0].first_offset + 1, i64::MAX)
                    .len()
                    == 1
            );
            assert!(log.aborted_transactions(0, aborted[0].first_offset).is_empty());

            // A clean close and open: the state is the snapshot's.
            let before = digest(&log);
            log.close().unwrap();
            drop(log);
            let log = open(fs.clone());
            assert_eq!(digest(&log), before);
            assert_eq!(log.last_stable_offset(), open_since);
            // A retry of producer 0's last batch is answered, not written.
            let retry = batch(0, 0, seq.borrow()[0] - 3, false);
            let plan = log.plan_producers(&[retry.header()]).unwrap();
            assert!(matches!(plan[0], Verdict::Duplicate(_)), "{plan:?}");
            // An older coordinator's marker is refused, and changes nothing.
            let end = log.log_end_offset();
            assert!(matches!(
                log.append_marker(2, 0, commit(1)),
                Err(Error::Producer { producer_id: 2, .. })
            ));
            assert_eq!(log.log_end_offset(), end);

            // A crash after more writes: the state is rebuilt from the newest snapshot and
            // what survived after it.
            write(&log, 0, false);
            write(&log, 1, false);
            let abort = Marker {
                commit: false,
                coordinator_epoch: 7,
            };
            log.append_marker(2, 0, abort).unwrap();
            write(&log, 2, true);
            log.append_marker(2, 0, commit(7)).unwrap();
            write(&log, 1, false);
            assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 2);
            fs.crash(|_, _, _| 0).unwrap();
            drop(log);
            let fs = Arc::new(FaultyFs::new());
            let log = open(fs.clone());
            assert_eq!(digest(&log), replayed(&log).digest());
            assert_eq!(digest(&log)[&2].3, None);
            assert_eq!(log.aborted_transactions(0, i64::MAX).len(), 2);
            assert_eq!(log.last_stable_offset(), log.high_watermark());

            // A truncation into an earlier segment: the state as of the new end.
            let cut = log.log_end_offset() / 3;
            let end = log.truncate_to(cut).unwrap();
            assert_eq!(digest(&log), replayed(&log).digest());
            assert!(
                digest(&log)
                    .values()
                    .all(|p| p.1.is_none_or(|(_, _, _, last)| last < end))
            );
            // And after reopening.
            log.close().unwrap();
            drop(log);
            let log = open(fs);
            assert_eq!(digest(&log), replayed(&log).digest());
            assert!(list_snapshots(dir.path()).unwrap().len() <= SNAPSHOTS_KEPT);
        }
    }

    mod edges {
        use crate::LogConfig;
        use crate::config::Fsync;
        use crate::storage::{BatchBuilder, Compression, PartitionLog};

        fn record(log: &PartitionLog, producer: Option<i64>) -> i64 {
            let b = BatchBuilder::new(Compression::None);
            let mut b = match producer {
                Some(id) => b.producer(id, 0, -1).transactional(true),
                None => b,
            };
            b.push(1, Some(b"k"), Some(b"v"), &[]);
            log.append(b.finish().unwrap()).unwrap().base_offset
        }

        #[test]
        fn the_last_stable_offset_is_never_below_the_log_start() {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::open(dir.path(), LogConfig::default().fsync(Fsync::Never)).unwrap();
            record(&log, Some(7)); // a transaction opens at 0 and stays open
            for _ in 0..5 {
                record(&log, None);
            }
            assert_eq!(log.last_stable_offset(), 0);
            log.delete_records_before(3).unwrap();
            assert_eq!(log.last_stable_offset(), 3, "held at the log start, not below it");
        }
    }

    mod model {
        use std::collections::{BTreeMap, BTreeSet};

        use crate::LogConfig;
        use crate::config::Fsync;
        use crate::storage::producers::Marker;
        use crate::storage::{BatchBuilder, Compression, PartitionLog};

        /// What was appended, in offset order: a batch's first offset, its producer (-1 for
        /// none) and, for a marker, whether it commits.
        #[derive(Debug, Clone, Copy)]
        enum Written {
            Plain(i64),
            Transactional(i64, i64),
            Marker(i64, i64, bool),
        }

        /// The last stable offset and the offsets a read_committed reader sees below it, by
        /// Kafka's rules, from what was appended (every offset below the log end readable).
        fn expected(written: &[Written], end: i64) -> (i64, BTreeSet<i64>) {
            let mut open: BTreeMap<i64, (i64, Vec<i64>)> = BTreeMap::new();
            let mut visible = BTreeSet::new();
            for w in written {
                match *w {
                    Written::Plain(at) => {
                        visible.insert(at);
                    }
                    Written::Transactional(at, p) => open.entry(p).or_insert((at, Vec::new())).1.push(at),
                    Written::Marker(_, p, commit) => {
                        if let Some((_, batches)) = open.remove(&p)
                            && commit
                        {
                            visible.extend(batches);
                        }
                    }
                }
            }
            let lso = open.values().map(|(first, _)| *first).min().unwrap_or(end);
            visible.retain(|&at| at < lso);
            (lso, visible)
        }

        /// The offsets a read_committed read of the whole log returns as records.
        fn read_committed(log: &PartitionLog) -> BTreeSet<i64> {
            let mut seen = BTreeSet::new();
            let mut at = log.log_start_offset();
            loop {
                let fetch = log.read_committed(at, 1 << 20, false).unwrap();
                let Some(next) = fetch.next_offset() else {
                    return seen;
                };
                let mut aborted = fetch.aborted_transactions().to_vec();
                aborted.sort_by_key(|a| a.first_offset);
                let mut aborted = std::collections::VecDeque::from(aborted);
                // As a Kafka consumer drops them: each listed transaction's producer, from the
                // transaction's first offset until that producer's marker.
                let mut dropping: BTreeSet<i64> = BTreeSet::new();
                for batch in fetch.batches() {
                    let h = *batch.header();
                    while aborted.front().is_some_and(|a| a.first_offset <= h.base_offset) {
                        dropping.insert(aborted.pop_front().unwrap().producer_id);
                    }
                    if h.is_control() {
                        dropping.remove(&h.producer_id);
                        continue;
                    }
                    if h.is_transactional() && dropping.contains(&h.producer_id) {
                        continue;
                    }
                    seen.insert(h.base_offset);
                }
                at = next;
            }
        }

        #[test]
        fn the_last_stable_offset_and_read_committed_follow_a_model() {
            for seed in 1..=12u64 {
                let dir = tempfile::tempdir().unwrap();
                let config = LogConfig::default().fsync(Fsync::Never).segment_bytes(1_500);
                let open = || PartitionLog::open(dir.path(), config.clone()).unwrap();
                let mut log = open();
                let mut written: Vec<Written> = Vec::new();
                let mut sequence = [0i32; 4];
                let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut rng = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                for step in 0..160 {
                    let producer = 1 + (rng() % 3) as i64;
                    match rng() % 10 {
                        0..=2 => {
                            let mut b = BatchBuilder::new(Compression::None);
                            b.push(1, Some(b"k"), Some(b"plain"), &[]);
                            let at = log.append(b.finish().unwrap()).unwrap().base_offset;
                            written.push(Written::Plain(at));
                        }
                        3..=6 => {
                            let seq = &mut sequence[producer as usize];
                            let mut b = BatchBuilder::new(Compression::None)
                                .producer(producer, 0, *seq)
                                .transactional(true);
                            b.push(1, Some(b"k"), Some(b"in a transaction"), &[]);
                            *seq += 1;
                            let at = log.append(b.finish().unwrap()).unwrap().base_offset;
                            written.push(Written::Transactional(at, producer));
                        }
                        7 | 8 => {
                            let commit = rng() % 2 == 0;
                            let marker = Marker {
                                commit,
                                coordinator_epoch: 0,
                            };
                            let at = log.append_marker(producer, 0, marker).unwrap().base_offset;
                            written.push(Written::Marker(at, producer, commit));
                        }
                        9 if rng() % 3 == 0 => {
                            // A truncation (as a replica's): the state as of the new end.
                            let end = log.log_end_offset();
                            let cut = end - (rng() % 8) as i64;
                            if cut >= log.log_start_offset() {
                                log.truncate_to(cut).unwrap();
                                written.retain(|w| match *w {
                                    Written::Plain(at)
                                    | Written::Transactional(at, _)
                                    | Written::Marker(at, _, _) => at < cut,
                                });
                            }
                        }
                        _ => {
                            // A restart: the producer state and the aborted transactions come
                            // back from the snapshots, the index files and the batches after.
                            log.close().unwrap();
                            drop(log);
                            log = open();
                        }
                    }
                    let end = log.log_end_offset();
                    let (lso, visible) = expected(&written, end);
                    assert_eq!(log.last_stable_offset(), lso, "seed {seed} step {step}");
                    assert_eq!(read_committed(&log), visible, "seed {seed} step {step}");
                }
            }
        }
    }
}
