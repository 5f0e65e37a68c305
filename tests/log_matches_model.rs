//! Random operation sequences against a model (a list of batches): append, read, read by
//! timestamp, roll, flush, retention, delete-records, truncation, compaction (alone, or with a
//! truncation and an append landing between its copying and its installing), clean reopen,
//! and crash (keeping only what was synced, optionally with a torn partial tail).
//!
//! After every step the log must equal the model. After a crash the log must hold the model's
//! durable prefix plus possibly some later acknowledged batches, whole, and nothing else.
//! Compacted runs (`cleanup.policy=compact,delete`, every record keyed) check that a clean
//! keeps each key's latest record below where it cleaned, and that a clean a truncation
//! overtook installs nothing.
//!
//! Half the runs let small appends go through the map of the segment's tail (as on the real
//! file system), so crashes also cut into the blocks reserved ahead of them.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Rec, batch, pause_cleans_after_staging, read_all};
use proptest::prelude::*;
use rivulet::storage::{Compression, FaultyFs, PartitionLog};
use rivulet::{CleanupPolicy, Fsync, LogConfig};

const RETENTION_MS: i64 = 1_000;

#[derive(Debug, Clone)]
enum Op {
    /// Records given as (timestamp step, key, value length); with a codec.
    Append(Vec<(i64, Option<u8>, Option<u16>)>, Compression),
    Read(u8),
    ReadByTimestamp(i64),
    Roll,
    Flush,
    /// Retention judged this many ms after the newest timestamp.
    Retention(i64),
    DeleteBefore(u8),
    Truncate(u8),
    /// A clean; with `Some`, while it is between copying and installing, a truncation at the
    /// picked offset and an append of that many records (1-3, none if 0) land.
    Compact(Option<(u8, u8)>),
    Reopen,
    /// Crash keeping this fraction (0-255 of 256) of each file's unsynced bytes.
    Crash(u8),
}

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        4 => Just(Compression::None),
        1 => Just(Compression::Gzip),
        1 => Just(Compression::Snappy),
        1 => Just(Compression::Lz4),
        1 => Just(Compression::Zstd),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        -5i64..50,
        proptest::option::of(0u8..8),
        proptest::option::weighted(0.9, 0u16..300),
    );
    prop_oneof![
        12 => (proptest::collection::vec(record, 1..12), codec()).prop_map(|(r, c)| Op::Append(r, c)),
        3 => any::<u8>().prop_map(Op::Read),
        2 => (-100i64..3000).prop_map(Op::ReadByTimestamp),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => (0i64..3000).prop_map(Op::Retention),
        1 => any::<u8>().prop_map(Op::DeleteBefore),
        1 => any::<u8>().prop_map(Op::Truncate),
        2 => proptest::option::of((any::<u8>(), 0u8..4)).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
        2 => any::<u8>().prop_map(Op::Crash),
    ]
}

fn policy() -> impl Strategy<Value = Fsync> {
    prop_oneof![
        Just(Fsync::Always),
        Just(Fsync::Never),
        // Long enough that only explicit flushes, rolls and reopens sync.
        Just(Fsync::Interval(Duration::from_secs(3600))),
    ]
}

/// An acknowledged batch: its offsets, and the records a clean has left of it (none: the
/// batch is gone from the log).
#[derive(Debug, Clone)]
struct MBatch {
    base: i64,
    last: i64,
    recs: Vec<Rec>,
}

struct Model {
    /// Acknowledged batches, in order.
    batches: Vec<MBatch>,
    /// Batches known to be on disk.
    durable: usize,
    /// The high watermark the log must report.
    hw: i64,
    log_start: i64,
    next_offset: i64,
    clock: i64,
}

impl Model {
    fn records(&self) -> impl Iterator<Item = &Rec> {
        self.batches.iter().flat_map(|b| &b.recs)
    }

    /// What a reader from the log start must see.
    fn visible(&self) -> Vec<Rec> {
        self.records()
            .filter(|r| r.offset >= self.log_start && r.offset < self.hw)
            .cloned()
            .collect()
    }

    /// Everything acknowledged is now on disk and visible.
    fn sync_all(&mut self) {
        self.durable = self.batches.len();
        self.hw = self.next_offset;
    }

    /// Whether a log cut at `end` holds whole batches: no batch still in the log straddles it.
    fn is_batch_boundary(&self, end: i64) -> bool {
        !self
            .batches
            .iter()
            .any(|b| !b.recs.is_empty() && b.base < end && end <= b.last)
    }

    /// Batches that end before `end`, and the log end `end`.
    fn cut_at(&mut self, end: i64) {
        self.batches.retain(|b| b.last < end);
        self.durable = self.durable.min(self.batches.len());
        self.next_offset = end;
        self.hw = self.hw.min(end);
        self.log_start = self.log_start.min(end);
    }

    /// Keeps, below `cleaned_to`, each key's latest record (tombstones included: the tests'
    /// `delete.retention.ms` outlasts them).
    fn compact(&mut self, cleaned_to: i64) {
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        for r in self.records().filter(|r| r.offset < cleaned_to) {
            latest.insert(r.key.clone().expect("compacted runs key every record"), r.offset);
        }
        for b in &mut self.batches {
            b.recs
                .retain(|r| r.offset >= cleaned_to || latest[r.key.as_ref().unwrap()] == r.offset);
        }
    }

    fn offset_at(&self, pick: u8) -> i64 {
        let span = (self.next_offset - self.log_start).max(0);
        self.log_start + (span * pick as i64) / 255
    }
}

fn config(policy: Fsync, compacted: bool) -> LogConfig {
    let cleanup = if compacted {
        CleanupPolicy::CompactDelete
    } else {
        CleanupPolicy::Delete
    };
    LogConfig::default()
        .cleanup_policy(cleanup)
        .delete_retention(Duration::from_secs(100 * 365 * 24 * 3600))
        .segment_bytes(2048)
        .index_interval_bytes(128)
        .segment_index_bytes(96)
        .retention_ms(Some(Duration::from_millis(RETENTION_MS as u64)))
        .fsync(policy)
}

fn open(dir: &std::path::Path, policy: Fsync, mapped: bool, compacted: bool) -> (PartitionLog, FaultyFs) {
    let fs = FaultyFs::new();
    if mapped {
        fs.map_appends();
    }
    let log = PartitionLog::builder(dir)
        .config(config(policy, compacted))
        .fs(Arc::new(fs.clone()))
        .open()
        .unwrap();
    (log, fs)
}

fn check(log: &PartitionLog, model: &mut Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_end_offset(), model.next_offset);
    prop_assert_eq!(log.log_start_offset(), model.log_start);
    let hw = log.high_watermark();
    if hw != model.hw {
        // Under an interval policy a roll syncs the old segment and may raise the high
        // watermark at a moment the model does not predict: to the end of a whole batch.
        prop_assert!(
            hw > model.hw && hw <= model.next_offset,
            "high watermark {} vs model {}",
            hw,
            model.hw
        );
        prop_assert!(
            model.is_batch_boundary(hw),
            "high watermark {} inside a batch",
            hw
        );
        let synced = model.batches.iter().take_while(|b| b.last < hw).count();
        model.hw = hw;
        model.durable = model.durable.max(synced);
    }
    prop_assert_eq!(read_all(log, model.log_start), model.visible());
    Ok(())
}

fn run(policy: Fsync, mapped: bool, compacted: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, mut fs) = open(dir.path(), policy, mapped, compacted);
    let mut model = Model {
        batches: Vec::new(),
        durable: 0,
        hw: 0,
        log_start: 0,
        next_offset: 0,
        clock: 1_000,
    };
    for op in ops {
        match op {
            Op::Append(spec, codec) => {
                let mut recs = Vec::new();
                for (step, key, len) in spec {
                    model.clock += step;
                    // A compacted log refuses keyless records.
                    let key = if compacted { Some(key.unwrap_or(0)) } else { key };
                    let key = key.map(|k| vec![b'k', k]);
                    let value = len.map(|n| vec![(n % 251) as u8; n as usize]);
                    let mut r = Rec::new(model.clock, key.as_deref(), value.as_deref());
                    if len.is_some_and(|n| n % 3 == 0) {
                        r.headers.push((b"h".to_vec(), Some(vec![1, 2])));
                    }
                    recs.push(r);
                }
                let info = log.append(batch(&recs, codec)).unwrap();
                prop_assert_eq!(info.base_offset, model.next_offset);
                for (i, r) in recs.iter_mut().enumerate() {
                    r.offset = info.base_offset + i as i64;
                }
                model.next_offset = info.last_offset + 1;
                model.batches.push(MBatch {
                    base: info.base_offset,
                    last: info.last_offset,
                    recs,
                });
                match policy {
                    Fsync::Always => model.sync_all(),
                    Fsync::Never => model.hw = model.next_offset,
                    Fsync::Interval(_) => {}
                }
            }
            Op::Read(pick) => {
                let from = model.offset_at(pick);
                let want: Vec<Rec> = model.visible().into_iter().filter(|r| r.offset >= from).collect();
                prop_assert_eq!(read_all(&log, from), want);
            }
            Op::ReadByTimestamp(ts) => {
                let visible = model.visible();
                let want = visible
                    .iter()
                    .find(|r| r.timestamp >= ts)
                    .map(|r| (r.offset, r.timestamp));
                let got = log
                    .offset_for_timestamp(ts)
                    .unwrap()
                    .map(|t| (t.offset, t.timestamp));
                prop_assert_eq!(got, want);
            }
            Op::Roll => {
                log.roll().unwrap();
                model.sync_all();
            }
            Op::Flush => {
                log.flush().unwrap();
                model.sync_all();
            }
            Op::Retention(after) => {
                let now = model.clock + after;
                log.enforce_retention(now).unwrap();
                let start = log.log_start_offset();
                prop_assert!(start >= model.log_start);
                // Only records older than the retention period may go.
                for r in model
                    .records()
                    .filter(|r| r.offset < start && r.offset >= model.log_start)
                {
                    prop_assert!(r.timestamp < now - RETENTION_MS, "{:?} deleted at {}", r, now);
                }
                model.log_start = start;
            }
            Op::DeleteBefore(pick) => {
                let hw = log.high_watermark();
                let offset = model.offset_at(pick).min(hw);
                prop_assert_eq!(
                    log.delete_records_before(offset).unwrap(),
                    offset.max(model.log_start)
                );
                model.log_start = model.log_start.max(offset);
            }
            Op::Truncate(pick) => {
                let offset = model.offset_at(pick);
                let new_end = log.truncate_to(offset).unwrap();
                check_truncation(&model, offset, new_end)?;
                if offset < model.next_offset {
                    // A truncation syncs what it keeps.
                    model.cut_at(new_end);
                    model.sync_all();
                }
            }
            Op::Compact(racing) => {
                let Some((pick, appended)) = racing else {
                    if let Some(stats) = log.compact().unwrap() {
                        model.compact(stats.cleaned_to);
                    }
                    check(&log, &mut model)?;
                    continue;
                };
                // The clean stops after staging its copies, until the main thread has cut the
                // log and appended to it.
                let (staged, resume) = pause_cleans_after_staging(&fs);
                let cleaner = {
                    let log = log.clone();
                    std::thread::spawn(move || log.compact())
                };
                // A clean with nothing to do never stages: it is back before the barrier.
                let staging = loop {
                    if cleaner.is_finished() {
                        break false;
                    }
                    if dir.path().join("cleaning").exists() {
                        break true;
                    }
                    std::thread::yield_now();
                };
                let offset = model.offset_at(pick);
                let truncated = staging && offset < model.next_offset;
                if staging {
                    staged.wait();
                    let new_end = log.truncate_to(offset).unwrap();
                    check_truncation(&model, offset, new_end)?;
                    if truncated {
                        model.cut_at(new_end);
                        model.sync_all();
                    }
                    if appended > 0 {
                        let recs: Vec<Rec> = (0..appended)
                            .map(|i| Rec::new(model.clock, Some(&[b'k', i][..]), Some(b"raced")))
                            .collect();
                        let info = log.append(batch(&recs, Compression::None)).unwrap();
                        prop_assert_eq!(info.base_offset, model.next_offset);
                        let recs = recs
                            .into_iter()
                            .enumerate()
                            .map(|(i, r)| Rec {
                                offset: info.base_offset + i as i64,
                                ..r
                            })
                            .collect();
                        model.batches.push(MBatch {
                            base: info.base_offset,
                            last: info.last_offset,
                            recs,
                        });
                        model.next_offset = info.last_offset + 1;
                        match policy {
                            Fsync::Always => model.sync_all(),
                            Fsync::Never => model.hw = model.next_offset,
                            Fsync::Interval(_) => {}
                        }
                    }
                    resume.wait();
                }
                let outcome = cleaner.join().unwrap().unwrap();
                fs.before_sync(|_| {});
                match outcome {
                    Some(_) if truncated => {
                        prop_assert!(false, "a clean installed after a truncation overtook it")
                    }
                    Some(stats) => model.compact(stats.cleaned_to),
                    None => {}
                }
            }
            Op::Reopen => {
                log.close().unwrap();
                drop(log);
                (log, fs) = open(dir.path(), policy, mapped, compacted);
                model.sync_all();
            }
            Op::Crash(keep) => {
                fs.crash(|_, synced, written| (written - synced) * keep as u64 / 256)
                    .unwrap();
                drop(log);
                (log, fs) = open(dir.path(), policy, mapped, compacted);
                // Everything durable survives; later batches may survive, whole and in order.
                let end = log.log_end_offset();
                let kept = model.batches.iter().take_while(|b| b.last < end).count();
                prop_assert!(
                    kept >= model.durable,
                    "lost durable batches: {} < {}",
                    kept,
                    model.durable
                );
                prop_assert!(
                    model.is_batch_boundary(end),
                    "the log end {} is inside a batch",
                    end
                );
                prop_assert!(
                    model.batches[kept..]
                        .iter()
                        .all(|b| b.recs.is_empty() || b.base >= end),
                    "a batch past the end {} survived",
                    end
                );
                model.cut_at(end);
                model.sync_all();
            }
        }
        check(&log, &mut model)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        policy in policy(),
        mapped in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(policy, mapped, false, ops)?;
    }

    #[test]
    fn compacted_log_matches_model(
        policy in policy(),
        mapped in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        run(policy, mapped, true, ops)?;
    }
}

/// A truncation at `offset` must leave the log ending at the batch boundary where the cut
/// went: after every batch still in the log below `offset`, before every one that holds or
/// follows it; where `offset` is at or past the end, nothing changes.
fn check_truncation(model: &Model, offset: i64, new_end: i64) -> Result<(), TestCaseError> {
    if offset >= model.next_offset {
        prop_assert_eq!(new_end, model.next_offset);
        return Ok(());
    }
    let present = || model.batches.iter().filter(|b| !b.recs.is_empty());
    let after_kept = present()
        .filter(|b| b.last < offset)
        .map(|b| b.last + 1)
        .max()
        .unwrap_or(0);
    let first_cut = present()
        .find(|b| b.last >= offset)
        .map_or(offset, |b| b.base.min(offset));
    prop_assert!(
        after_kept <= new_end && new_end <= first_cut,
        "truncation at {} ended the log at {}, not in [{}, {}]",
        offset,
        new_end,
        after_kept,
        first_cut
    );
    Ok(())
}
