//! Index files are derived data: a missing, garbage or stale index is rebuilt from the log on
//! open, and lookups by offset and by timestamp give the same answers as before.

mod common;

use std::path::Path;

use common::{read_all, simple_batch};
use rivulet::storage::PartitionLog;
use rivulet::{Fsync, LogConfig};

fn config() -> LogConfig {
    LogConfig::default()
        .fsync(Fsync::Never)
        .segment_bytes(4096)
        .index_interval_bytes(100)
}

fn build(dir: &Path) -> Vec<(i64, Option<i64>)> {
    let log = PartitionLog::open(dir, config()).unwrap();
    for i in 0..120 {
        log.append(simple_batch(i * 3, 3, 1_000 + i as i64 * 10)).unwrap();
    }
    assert!(log.segment_count() >= 3);
    let answers = probes(&log);
    log.close().unwrap();
    answers
}

/// Reads at a spread of offsets and timestamps.
fn probes(log: &PartitionLog) -> Vec<(i64, Option<i64>)> {
    (0..360)
        .step_by(7)
        .map(|o| {
            let first = read_all(log, o).first().map(|r| r.offset).unwrap();
            let by_ts = log.offset_for_timestamp(1_000 + o * 3).unwrap().map(|t| t.offset);
            (first, by_ts)
        })
        .collect()
}

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn deleted_garbage_and_stale_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let expected = build(dir.path());
    let index = files(dir.path(), "index");
    let timeindex = files(dir.path(), "timeindex");
    let good_first_index = std::fs::read(&index[0]).unwrap();
    assert!(!good_first_index.is_empty());

    std::fs::remove_file(&index[0]).unwrap(); // missing
    std::fs::write(&timeindex[1], vec![0xab; 36]).unwrap(); // garbage
    std::fs::write(&index[1], &good_first_index).unwrap(); // another segment's: stale

    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(probes(&log), expected);
    log.close().unwrap();
    drop(log);
    // Rebuilt on disk, not just in memory.
    assert_eq!(std::fs::read(&index[0]).unwrap(), good_first_index);
    assert_ne!(std::fs::read(&timeindex[1]).unwrap(), vec![0xab; 36]);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(probes(&log), expected);
}
