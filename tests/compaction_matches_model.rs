//! Compaction against a model: after a clean each key's latest record survives, survivors keep
//! their offsets and order, tombstones go only once older than `delete.retention.ms`, records
//! without a key go (as in Kafka; appends of them are refused, so they date from before the
//! log compacted), and the active segment is untouched. A crash injected at every step of
//! a clean leaves either the old log or the cleaned one, never a mix, and the log opens.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Rec, batch, now_ms, read_all};
use rivulet::storage::{Compression, FaultyFs, PartitionLog};
use rivulet::{CleanupPolicy, Fsync, LogConfig};

const HOUR_MS: i64 = 3_600_000;

fn config() -> LogConfig {
    LogConfig::default()
        .cleanup_policy(CleanupPolicy::Compact)
        .delete_retention(Duration::from_secs(3600))
        .segment_bytes(700)
        .index_interval_bytes(64)
        .segment_index_bytes(4096)
        .fsync(Fsync::Always)
}

/// The records a test writes: keys from a small set, some values null (tombstones), some
/// keyless, old and recent timestamps; batches of one to three records, some compressed.
fn workload(seed: u64, now: i64) -> Vec<Vec<Rec>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut batches = Vec::new();
    for i in 0..60 {
        let n = 1 + next() % 3;
        let mut recs = Vec::new();
        for j in 0..n {
            let ts = if next() % 2 == 0 { now - 2 * HOUR_MS } else { now };
            let key = (next() % 8 != 0).then(|| format!("k{}", next() % 6).into_bytes());
            let value = (next() % 5 != 0).then(|| format!("v{i}-{j}").into_bytes());
            recs.push(Rec::new(ts, key.as_deref(), value.as_deref()));
        }
        batches.push(recs);
    }
    batches
}

fn codec(i: usize) -> Compression {
    if i % 4 == 3 && cfg!(feature = "lz4") {
        Compression::Lz4
    } else {
        Compression::None
    }
}

/// Writes the workload, rolls so all but the last batch are sealed, writes the last one into
/// the active segment. Returns every record with its offset.
///
/// The log is written under `cleanup.policy=delete`, as a topic later switched to compact
/// would have been (a compacting log refuses keyless records), then given back its config.
fn fill(log: &PartitionLog, batches: &[Vec<Rec>]) -> (Vec<Rec>, i64) {
    let config = log.config();
    log.set_config(config.clone().cleanup_policy(CleanupPolicy::Delete))
        .unwrap();
    let (last, sealed) = batches.split_last().unwrap();
    for (i, b) in sealed.iter().enumerate() {
        log.append(batch(b, codec(i))).unwrap();
    }
    log.roll().unwrap();
    let active_base = log.log_end_offset();
    log.append(batch(last, Compression::None)).unwrap();
    log.set_config(config).unwrap();
    (read_all(log, 0), active_base)
}

/// What the log must hold after its first clean.
fn model(all: &[Rec], active_base: i64) -> Vec<Rec> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for r in all.iter().filter(|r| r.offset < active_base) {
        if let Some(k) = &r.key {
            latest.insert(k, r.offset);
        }
    }
    all.iter()
        .filter(|r| {
            r.offset >= active_base
                || match &r.key {
                    None => false,
                    // A first clean keeps tombstones, whatever their age (see below).
                    Some(k) => latest[&k[..]] == r.offset,
                }
        })
        .cloned()
        .collect()
}

#[test]
fn a_clean_keeps_what_the_model_keeps() {
    for seed in 1..=20u64 {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let now = now_ms();
        let (all, active_base) = fill(&log, &workload(seed, now));
        assert!(log.segment_count() > 3, "the workload spans several segments");
        let end = log.log_end_offset();
        let stats = log.compact().unwrap().expect("there was something to clean");
        let expected = model(&all, active_base);
        assert_eq!(read_all(&log, 0), expected, "seed {seed}");
        assert_eq!(
            stats.records_removed as usize,
            all.len() - expected.len(),
            "seed {seed}"
        );
        assert!(stats.bytes_after <= stats.bytes_before);
        // Offsets and the log's bounds do not move; appends carry on after the end.
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, end));
        // Reading from any offset gives the survivors from there on (gaps are stepped over).
        for from in [1, active_base / 2, active_base - 1, active_base] {
            let tail: Vec<Rec> = expected.iter().filter(|r| r.offset >= from).cloned().collect();
            assert_eq!(read_all(&log, from), tail, "seed {seed}, from {from}");
        }
        // A second clean changes nothing, and the cleaned log reopens as it was.
        log.compact().unwrap();
        assert_eq!(read_all(&log, 0), expected);
        log.close().unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(read_all(&log, 0), expected);
        assert_eq!(log.log_end_offset(), end);
    }
}

#[test]
fn a_tombstone_stays_delete_retention_after_the_first_clean_that_saw_it() {
    // An hour of delete retention; the tombstone's own timestamp is two hours old, which once
    // removed it at the first clean (consumers got no time to see the delete).
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let old = now_ms() - 2 * HOUR_MS;
    let write = |log: &PartitionLog| {
        log.append(batch(
            &[Rec::new(old, Some(b"k"), Some(b"v1"))],
            Compression::None,
        ))
        .unwrap();
        log.append(batch(&[Rec::new(old, Some(b"k"), None)], Compression::None))
            .unwrap();
        log.roll().unwrap();
        log.append(batch(
            &[Rec::new(old, Some(b"other"), Some(b"x"))],
            Compression::None,
        ))
        .unwrap();
    };
    write(&log);
    for clean in 0..2 {
        log.compact().unwrap();
        let left = read_all(&log, 0);
        assert_eq!(left.len(), 2, "clean {clean}: the tombstone stays: {left:?}");
        assert_eq!((left[0].offset, left[0].value.as_deref()), (1, None));
        assert_eq!(left[0].timestamp, old, "the record keeps its own timestamp");
    }
    // With no delete retention, the first clean marks the tombstone with the horizon "now",
    // and a later clean removes it.
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config().delete_retention(Duration::ZERO)).unwrap();
    write(&log);
    log.compact().unwrap();
    assert_eq!(read_all(&log, 0).len(), 2, "the first clean keeps the tombstone");
    std::thread::sleep(Duration::from_millis(2));
    log.compact().unwrap();
    let left = read_all(&log, 0);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].key.as_deref(), Some(&b"other"[..]));
}

/// A log on a fault-injecting file system, filled with `batches` and synced (written without
/// a sync per append, which is faster), with its records before and after a clean.
fn faulty_filled(batches: &[Vec<Rec>]) -> (tempfile::TempDir, FaultyFs, PartitionLog, Vec<Rec>, Vec<Rec>) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let log = PartitionLog::builder(dir.path())
        .config(config().fsync(Fsync::Never))
        .fs(std::sync::Arc::new(fs.clone()))
        .open()
        .unwrap();
    let (before, active_base) = fill(&log, batches);
    log.flush().unwrap();
    let after = model(&before, active_base);
    (dir, fs, log, before, after)
}

#[test]
fn a_crash_at_any_step_of_a_clean_leaves_the_old_or_the_new_log() {
    let now = now_ms();
    let batches = workload(7, now);
    for n in 0..2_000u64 {
        let (dir, fs, log, before, after) = faulty_filled(&batches);
        fs.crash_after_ops(n);
        let result = log.compact();
        if result.is_ok() {
            assert_eq!(read_all(&log, 0), after);
            assert!(n > 10, "the clean should have had many steps to crash at");
            return;
        }
        fs.crash(|_, _, _| 0).unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let got = read_all(&log, 0);
        assert!(
            got == before || got == after,
            "crash after {n} operations left a mix:\n{got:?}"
        );
        assert!(
            !dir.path().join("cleaning").exists(),
            "the staging directory is cleared"
        );
        // The next clean finishes the job.
        log.compact().unwrap();
        assert_eq!(read_all(&log, 0), after, "after a crash at step {n}");
    }
    panic!("the clean never finished");
}

#[test]
fn a_log_that_does_not_compact_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config().cleanup_policy(CleanupPolicy::Delete)).unwrap();
    let now = now_ms();
    let (all, _) = fill(&log, &workload(3, now));
    assert_eq!(log.compact().unwrap(), None);
    assert_eq!(read_all(&log, 0), all);
}

#[test]
fn a_compacting_log_refuses_a_batch_with_a_keyless_record_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let now = now_ms();
    log.append(batch(&[Rec::new(now, Some(b"k"), Some(b"v"))], Compression::None))
        .unwrap();
    for codec in [Compression::None, codec(3)] {
        let mixed = batch(
            &[
                Rec::new(now, Some(b"k"), Some(b"v2")),
                Rec::new(now, None, Some(b"no key")),
            ],
            codec,
        );
        let err = log.append(mixed).unwrap_err();
        assert!(
            matches!(err, rivulet::Error::KeyRequired { index: 1 }),
            "{codec:?}: {err}"
        );
    }
    assert_eq!(log.log_end_offset(), 1, "nothing was written");
    assert_eq!(read_all(&log, 0).len(), 1);
}

#[test]
fn a_clean_that_fails_after_committing_poisons_the_log_until_reopened() {
    let now = now_ms();
    let batches = workload(11, now);
    let mut poisoned = 0;
    for n in 0..200u64 {
        let (dir, fs, log, _, after) = faulty_filled(&batches);
        fs.fail_sync_after(n);
        if log.compact().is_ok() {
            assert!(poisoned > 0, "no sync of the install failed");
            return;
        }
        fs.clear_faults();
        if dir.path().join("clean.commit").exists() {
            // The files on disk may be the cleaned ones, the segments in memory the old
            // ones: nothing may change the log until a reopen finishes the install.
            assert!(
                matches!(
                    log.append(batch(&[Rec::new(now, Some(b"k"), Some(b"v"))], Compression::None)),
                    Err(rivulet::Error::Poisoned { .. })
                ),
                "sync {n} failed after the commit and the log still takes appends"
            );
            assert!(log.truncate_to(1).is_err());
            poisoned += 1;
            drop(log);
            let log = PartitionLog::open(dir.path(), config()).unwrap();
            assert_eq!(read_all(&log, 0), after, "sync {n}");
        }
    }
    panic!("the clean never finished");
}
