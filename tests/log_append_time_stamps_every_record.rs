//! Under `message.timestamp.type = LogAppendTime` the log stamps each batch with the time of
//! its append, whatever the producer set, and lookups by time use that stamp.

mod common;

use common::{read_all, simple_batch};
use rivulet::storage::{PartitionLog, TimestampType};
use rivulet::{Fsync, LogConfig};

#[test]
fn log_append_time_replaces_the_producer_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .timestamp_type(TimestampType::LogAppendTime);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let first = log.append(simple_batch(0, 3, 5)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3));
    let second = log.append(simple_batch(3, 2, 5)).unwrap();
    assert!(
        first.log_append_time > 1_600_000_000_000,
        "a wall-clock time in ms"
    );
    assert!(second.log_append_time > first.log_append_time);

    let records = read_all(&log, 0);
    let stamps: Vec<i64> = records.iter().map(|r| r.timestamp).collect();
    let (a, b) = (first.log_append_time, second.log_append_time);
    assert_eq!(stamps, [a, a, a, b, b]);
    let fetch = log.read(0, 1 << 20).unwrap();
    for batch in fetch.batches() {
        assert_eq!(batch.header().timestamp_type(), TimestampType::LogAppendTime);
    }
    assert_eq!(log.offset_for_timestamp(b).unwrap().unwrap().offset, 3);
}
