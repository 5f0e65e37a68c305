//! Retention deletes whole sealed segments, oldest first, by age (`retention.ms`, judged by a
//! segment's largest timestamp) and by size (`retention.bytes`); the active segment is never
//! deleted; a reader in the middle of a deleted segment finishes it.

mod common;

use std::time::{Duration, Instant};

use common::{read_all, simple_batch};
use rivulet::storage::PartitionLog;
use rivulet::{Error, Fsync, LogConfig};

fn log_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
        .count()
}

/// Four segments of 10 records; segment i has timestamps 1000 * (i + 1).
fn four_segments(config: LogConfig) -> (tempfile::TempDir, PartitionLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config).unwrap();
    for seg in 0..4 {
        for b in 0..5 {
            log.append(simple_batch(seg * 10 + b * 2, 2, 1000 * (seg as i64 + 1)))
                .unwrap();
        }
        log.roll().unwrap();
    }
    // The roll after the last batch leaves an empty active segment: 5 in all.
    assert_eq!(log.segment_count(), 5);
    (dir, log)
}

#[test]
fn retention_ms_deletes_segments_whose_newest_record_is_too_old() {
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .retention_ms(Some(Duration::from_millis(1500)));
    let (dir, log) = four_segments(config);
    // At 3600 the cutoff is 2100: segments with largest timestamps 1000 and 2000 go.
    assert_eq!(log.enforce_retention(3600).unwrap(), 2);
    assert_eq!(log.log_start_offset(), 20);
    assert_eq!(log_files(dir.path()), 3);
    assert!(matches!(
        log.read(19, 1000),
        Err(Error::OffsetOutOfRange { log_start: 20, .. })
    ));
    assert_eq!(read_all(&log, 20).len(), 20);
    // Far in the future everything sealed goes, never the active segment.
    assert_eq!(log.enforce_retention(1 << 50).unwrap(), 2);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), 40);
    assert_eq!(log.log_end_offset(), 40);
    // The log start survives a reopen.
    let config = log.config().clone();
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.log_start_offset(), 40);
}

#[test]
fn retention_bytes_keeps_at_least_the_limit() {
    let (dir, log) = four_segments(LogConfig::default().fsync(Fsync::Never).retention_ms(None));
    let mut sizes: Vec<(String, u64)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| (e.file_name().into_string().unwrap(), e.metadata().unwrap().len()))
        .collect();
    sizes.sort();
    // Keeping the last two sealed segments alone would fall one byte short of the limit.
    let limit = sizes[2].1 + sizes[3].1 + 1;
    let config = log.config().clone().retention_bytes(Some(limit));
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.enforce_retention(0).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 10);
    assert!(log.size_bytes() >= limit);
    assert_eq!(log.enforce_retention(0).unwrap(), 0);
}

#[test]
fn a_reader_behind_retention_is_told_its_offset_is_out_of_range() {
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .retention_ms(Some(Duration::from_millis(1)));
    let (_dir, log) = four_segments(config);
    // One batch per fetch, so the reader goes back to the segment for each one.
    let mut reader = log.reader(0).fetch_bytes(1);
    for offset in 0..2 {
        assert_eq!(reader.next().unwrap().unwrap().offset, offset);
    }
    log.enforce_retention(2500).unwrap(); // deletes the first two segments
    assert_eq!(log.log_start_offset(), 20);
    // As Kafka answers OFFSET_OUT_OF_RANGE: the reader is told, not handed records of a
    // deleted segment nor silently moved on.
    assert!(matches!(
        reader.next(),
        Err(Error::OffsetOutOfRange {
            offset: 2,
            log_start: 20,
            ..
        })
    ));
    reader.seek(log.log_start_offset());
    assert_eq!(reader.next().unwrap().unwrap().offset, 20);
}

#[test]
fn the_background_thread_applies_retention_and_interval_flushes() {
    let config = LogConfig::default()
        .fsync(Fsync::Interval(Duration::from_millis(20)))
        .retention_ms(Some(Duration::from_millis(1)))
        .retention_check_interval(Duration::from_millis(10));
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config).unwrap();
    log.append(simple_batch(0, 2, 1)).unwrap();
    // Not yet flushed: invisible to readers until the interval fsync runs.
    assert!(
        log.wait_for(1, Duration::from_secs(10)),
        "the interval flush never came"
    );
    assert_eq!(log.high_watermark(), 2);
    log.roll().unwrap();
    log.append(simple_batch(2, 1, 2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.log_start_offset() != 2 {
        assert!(Instant::now() < deadline, "retention never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn a_changed_config_applies_to_the_open_log() {
    let (_dir, log) = four_segments(LogConfig::default().fsync(Fsync::Never).retention_ms(None));
    assert_eq!(log.enforce_retention(1 << 50).unwrap(), 0, "retention is off");
    log.set_config(log.config().retention_ms(Some(Duration::from_millis(1500))))
        .unwrap();
    assert_eq!(log.enforce_retention(3600).unwrap(), 2);
    // Bad values are refused and change nothing.
    assert!(log.set_config(log.config().segment_bytes(1)).is_err());
    assert_eq!(log.config().get_segment_bytes(), 1 << 30);
}
