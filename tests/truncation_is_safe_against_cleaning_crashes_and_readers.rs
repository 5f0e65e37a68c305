//! Truncation (a replica agreeing with its leader) against everything that can run beside it:
//! a compaction between copying and installing, a crash between any two of its steps, and
//! readers holding on to a segment it cuts or removes.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Rec, batch, pause_cleans_after_staging, read_all, simple_batch};
use rivulet::storage::{Compression, FaultyFs, PartitionLog};
use rivulet::{CleanupPolicy, Error, Fsync, LogConfig};

fn config() -> LogConfig {
    LogConfig::default()
        .index_interval_bytes(64)
        .segment_index_bytes(4096)
        .fsync(Fsync::Always)
}

fn open(dir: &std::path::Path, config: LogConfig, fs: &FaultyFs) -> PartitionLog {
    PartitionLog::builder(dir)
        .config(config)
        .fs(Arc::new(fs.clone()))
        .open()
        .unwrap()
}

/// Writes `sealed` segments of ten batches of three records each, so the segments start at
/// offsets 0, 30, 60 ..., then one batch into the active segment; record `n` has key
/// `k<n % keys>`. Returns every record.
fn fill(log: &PartitionLog, sealed: usize, keys: usize) -> Vec<Rec> {
    for i in 0..sealed * 10 + 1 {
        let recs: Vec<Rec> = (0..3)
            .map(|j| {
                let key = format!("k{}", (i * 3 + j) % keys);
                Rec::new(1_000, Some(key.as_bytes()), Some(format!("v{i}-{j}").as_bytes()))
            })
            .collect();
        log.append(batch(&recs, Compression::None)).unwrap();
        if i % 10 == 9 {
            log.roll().unwrap();
        }
    }
    assert_eq!(log.segment_count(), sealed + 1);
    read_all(log, 0)
}

#[test]
fn a_clean_that_a_truncation_overtakes_installs_nothing_and_later_appends_stay() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let log = open(dir.path(), config().cleanup_policy(CleanupPolicy::Compact), &fs);
    fill(&log, 3, 5);
    // The clean stops after staging its copies; meanwhile the log is cut inside its last
    // sealed segment, which makes that segment the active one, and appended to.
    let (staged, resume) = pause_cleans_after_staging(&fs);
    let cleaner = {
        let log = log.clone();
        std::thread::spawn(move || log.compact())
    };
    staged.wait();
    // Segments [0, 30) [30, 60) [60, 90) are sealed: cut inside the last of them.
    let new_end = log.truncate_to(75).unwrap();
    assert_eq!(new_end, 75);
    let appended = log.append(simple_batch(0, 2, 2_000)).unwrap();
    let before = read_all(&log, 0);
    resume.wait();
    assert!(
        cleaner.join().unwrap().unwrap().is_none(),
        "the clean must give up: its segments changed under it"
    );
    fs.before_sync(|_| {});
    assert_eq!(read_all(&log, 0), before, "the clean changed the log");
    let more = log.append(simple_batch(2, 1, 3_000)).unwrap();
    assert_eq!(
        read_all(&log, more.base_offset).len(),
        1,
        "appends after the clean read back"
    );
    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), config().cleanup_policy(CleanupPolicy::Compact)).unwrap();
    assert_eq!(log.log_end_offset(), more.last_offset + 1);
    let all = read_all(&log, 0);
    assert!(all.iter().any(|r| r.offset == appended.base_offset));
    assert_eq!(all.last().unwrap().offset, more.last_offset);
    // With nothing racing it, the clean then runs.
    assert!(log.compact().unwrap().is_some());
}

#[test]
fn a_crash_at_any_step_of_a_truncation_leaves_the_log_cut_at_or_after_the_offset() {
    let template = tempfile::tempdir().unwrap();
    let original = {
        let log = PartitionLog::open(template.path(), config()).unwrap();
        let all = fill(&log, 5, 5);
        log.close().unwrap();
        all
    };
    let cut = original[original.len() / 3].offset;
    let mut steps = 0;
    for crash_after in 0.. {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(template.path()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let fs = FaultyFs::new();
        let log = open(dir.path(), config(), &fs);
        fs.crash_after_ops(crash_after);
        let finished = log.truncate_to(cut).is_ok();
        if !finished {
            fs.crash(|_, _, _| 0).unwrap();
        }
        drop(log);
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let survived = read_all(&log, 0);
        let end = log.log_end_offset();
        assert!(end >= cut - 2, "crash after {crash_after} ops: end {end}");
        // A prefix of the original: nothing missing in the middle, nothing from past a hole.
        assert_eq!(
            survived[..],
            original[..survived.len()],
            "crash after {crash_after} ops"
        );
        assert_eq!(survived.last().map_or(0, |r| r.offset + 1), end);
        if finished {
            assert!(end <= cut, "a finished truncation is durable");
            break;
        }
        steps += 1;
    }
    assert!(
        steps >= 3,
        "the truncation took {steps} steps; the test crashed at each"
    );
}

#[test]
fn a_reader_on_a_segment_a_truncation_removed_reads_the_records_appended_since() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    fill(&log, 3, 5);
    // A reader fetching one batch at a time reads the batch at 30 and pins segment [30, 60).
    let mut reader = log.reader(30).fetch_bytes(1);
    for offset in 30..33 {
        assert_eq!(reader.next().unwrap().unwrap().offset, offset);
    }
    // The segment goes; re-appended records take its offsets again, with other timestamps.
    assert_eq!(log.truncate_to(15).unwrap(), 15);
    while log.log_end_offset() < 40 {
        log.append(simple_batch(0, 3, 5_000)).unwrap();
    }
    let next = reader.next().unwrap().unwrap();
    assert_eq!(next.offset, 33);
    assert_eq!(next.timestamp, 5_000, "a record the truncation removed came back");
}

#[test]
fn a_reader_inside_a_segment_delete_records_passed_gets_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    for i in 0..100 {
        log.append(simple_batch(i, 1, 1_000)).unwrap();
    }
    let mut reader = log.reader(0).fetch_bytes(1);
    assert_eq!(reader.next().unwrap().unwrap().offset, 0);
    // The log start moves into the segment the reader is reading: the records below it were
    // deleted on purpose and must not be handed out.
    log.delete_records_before(50).unwrap();
    assert!(matches!(
        reader.next(),
        Err(Error::OffsetOutOfRange {
            offset: 1,
            log_start: 50,
            ..
        })
    ));
    assert!(matches!(
        log.read(1, 1 << 20),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, 50).first().unwrap().offset, 50);
}

#[test]
fn a_compacted_segment_made_active_by_a_truncation_keeps_its_records_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let compact = config().cleanup_policy(CleanupPolicy::Compact);
    let fs = FaultyFs::new();
    let log = open(dir.path(), compact.clone(), &fs);
    // Every key twice: the clean keeps offsets 45-89, leaving [0, 30) empty and a gap at the
    // start of [30, 60).
    fill(&log, 3, 45);
    log.compact().unwrap().expect("cleaned");
    let cleaned = read_all(&log, 0);
    assert_eq!(cleaned.first().unwrap().offset, 45, "the clean left a gap");
    // Cut inside the cleaned segment [30, 60), which becomes the active one.
    let cut = 56;
    let end = log.truncate_to(cut).unwrap();
    let kept: Vec<Rec> = cleaned.iter().filter(|r| r.offset < end).cloned().collect();
    assert_eq!(read_all(&log, 0), kept);
    fs.crash(|_, _, _| 0).unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), compact).unwrap();
    assert_eq!(
        read_all(&log, 0),
        kept,
        "recovery cut the cleaned segment at its first gap"
    );
    assert_eq!(log.log_end_offset(), end);
    log.append(simple_batch(0, 1, 1_000)).unwrap();
    std::thread::sleep(Duration::from_millis(1));
    assert_eq!(read_all(&log, 0).len(), kept.len() + 1);
}

#[test]
fn a_durable_append_waiting_for_its_sync_survives_a_truncation_above_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultyFs::new();
    let log = open(dir.path(), config(), &fs);
    log.append(simple_batch(0, 10, 1_000)).unwrap();
    // The next sync of the segment stops until the truncation below is done.
    let syncing = Arc::new(Barrier::new(2));
    let truncated = Arc::new(Barrier::new(2));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (s, t, a) = (syncing.clone(), truncated.clone(), armed.clone());
    fs.before_sync(move |path| {
        if path.extension().is_some_and(|e| e == "log") && a.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            s.wait();
            t.wait();
        }
    });
    std::thread::scope(|scope| {
        // A's batch, 10-19: A syncs for it and is stopped in that sync.
        let a = scope.spawn(|| log.append(simple_batch(10, 10, 1_000)));
        syncing.wait();
        // B's batch, 20-29, waits for A's sync.
        let b = scope.spawn(|| log.append(simple_batch(20, 10, 1_000)));
        while log.log_end_offset() < 30 {
            std::thread::yield_now();
        }
        // The cut goes between them: A's batch stays, B's goes.
        assert_eq!(log.truncate_to(25).unwrap(), 20);
        truncated.wait();
        let a = a.join().unwrap();
        assert!(a.is_ok(), "A's batch survived, yet its append failed: {a:?}");
        assert!(matches!(b.join().unwrap(), Err(Error::Truncated { .. })));
    });
    // What the truncation kept is durable and visible at once.
    assert_eq!(log.high_watermark(), 20);
    assert_eq!(read_all(&log, 0).len(), 20);
}
