//! Segments roll when the next batch would pass `segment.bytes`, when the active segment is
//! older than `segment.ms`, and when an index is full; a batch larger than `segment.bytes`
//! gets a segment of its own. Every roll keeps all records readable across reopen.

mod common;

use std::time::Duration;

use common::{read_all, simple_batch};
use rivulet::storage::PartitionLog;
use rivulet::{Fsync, LogConfig};

fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|s| s.parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

fn check_reopen(dir: &std::path::Path, config: LogConfig, records: usize) {
    let log = PartitionLog::open(dir, config).unwrap();
    let offsets: Vec<i64> = read_all(&log, 0).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..records as i64).collect::<Vec<_>>());
}

#[test]
fn a_segment_rolls_before_a_batch_would_pass_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let one = simple_batch(0, 2, 1).len() as u64;
    // Room for exactly three such batches in a segment.
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .segment_bytes(one * 3 + one / 2);
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for i in 0..7 {
        log.append(simple_batch(i * 2, 2, 1)).unwrap();
    }
    assert_eq!(segment_bases(dir.path()), [0, 6, 12]);
    // A batch bigger than segment.bytes still goes in, alone.
    log.append(simple_batch(14, 40, 1)).unwrap();
    log.append(simple_batch(54, 2, 1)).unwrap();
    assert_eq!(segment_bases(dir.path()), [0, 6, 12, 14, 54]);
    drop(log);
    check_reopen(dir.path(), config, 56);
}

#[test]
fn a_segment_rolls_once_older_than_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .segment_ms(Some(Duration::ZERO));
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for i in 0..3 {
        log.append(simple_batch(i, 1, 1)).unwrap();
    }
    assert_eq!(segment_bases(dir.path()), [0, 1, 2]);
    drop(log);

    // With time-based rolling off, everything stays in one segment.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default().fsync(Fsync::Never).segment_ms(None);
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for i in 0..3 {
        log.append(simple_batch(i, 1, 1)).unwrap();
    }
    assert_eq!(segment_bases(dir.path()), [0]);
    drop(log);
    check_reopen(dir.path(), config, 3);
}

#[test]
fn a_segment_rolls_when_its_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    // Indexing every batch; 24 bytes hold three offset entries and two time entries.
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .index_interval_bytes(0)
        .segment_index_bytes(24);
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for i in 0..12 {
        // Growing timestamps, so every indexed batch adds a time entry too.
        log.append(simple_batch(i, 1, 1000 + i as i64)).unwrap();
    }
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 4, "{bases:?}");
    for seg in &bases {
        let index = std::fs::metadata(dir.path().join(format!("{seg:020}.timeindex"))).unwrap();
        assert!(index.len() <= 24);
    }
    drop(log);
    check_reopen(dir.path(), config.clone(), 12);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.offset_for_timestamp(1007).unwrap().unwrap().offset, 7);
}
