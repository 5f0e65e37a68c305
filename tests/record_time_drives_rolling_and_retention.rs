//! Rolling (`segment.ms`) and time retention go by the records' own timestamps, as Kafka's do:
//! a segment's age survives restarts, and records without a usable timestamp are neither
//! accepted from the producer nor deleted at once.

mod common;

use std::time::Duration;

use common::{now_ms, simple_batch};
use rivulet::storage::PartitionLog;
use rivulet::{Broker, Error, Fsync, LogConfig, Producer, ProducerRecord, TopicConfig};

const HOUR_MS: i64 = 3_600_000;

#[test]
fn a_low_volume_log_restarted_often_still_rolls_by_segment_ms() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .segment_ms(Some(Duration::from_secs(3600)));
    let start = 1_700_000_000_000;
    // One record per restart, each half an hour after the last: the first segment is an hour
    // old at the third record, whatever the wall clock of each process says.
    for i in 0..4 {
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        log.append(simple_batch(i, 1, start + i as i64 * HOUR_MS / 2))
            .unwrap();
        log.close().unwrap();
    }
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.segment_count(), 2, "the segment never rolled");
    assert_eq!(log.log_end_offset(), 4);
}

#[test]
fn negative_timestamps_are_refused_by_the_producer_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    let refused = producer.send(ProducerRecord::new("t", b"v").partition(0).timestamp(-5));
    assert!(matches!(refused, Err(Error::InvalidTimestamp { timestamp: -5 })));
    let batch = [
        ProducerRecord::new("t", b"a").timestamp(10),
        ProducerRecord::new("t", b"b").timestamp(-1),
    ];
    assert!(matches!(
        producer.send_batch("t", Some(0), &batch),
        Err(Error::InvalidTimestamp { timestamp: -1 })
    ));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 0);
    producer
        .send(ProducerRecord::new("t", b"v").partition(0).timestamp(0))
        .unwrap();
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 1);
}

#[test]
fn a_segment_without_timestamps_is_judged_by_its_file_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig::default()
        .fsync(Fsync::Never)
        .retention_ms(Some(Duration::from_secs(3600)));
    let log = PartitionLog::open(dir.path(), config).unwrap();
    // As a Kafka client may send them: no timestamp (-1) on any record.
    log.append(simple_batch(0, 3, -1)).unwrap();
    log.roll().unwrap();
    log.append(simple_batch(3, 1, now_ms())).unwrap();
    // Written just now: not older than an hour.
    assert_eq!(log.enforce_retention(now_ms()).unwrap(), 0);
    assert_eq!(log.log_start_offset(), 0);
    // Two hours on, it is.
    assert_eq!(log.enforce_retention(now_ms() + 2 * HOUR_MS).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 3);
}
