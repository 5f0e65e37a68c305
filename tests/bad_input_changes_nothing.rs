//! Bad input gets a clear error and changes nothing.

mod common;

use common::{Rec, batch, read_all, simple_batch};
use rivulet::storage::{BatchBuilder, Compression, PartitionLog, RecordBatch};
use rivulet::{
    BatchError, Broker, Consumer, ConsumerConfig, Error, Fsync, LogConfig, Producer, ProducerRecord,
    TopicConfig, TopicPartition,
};

fn config() -> LogConfig {
    LogConfig::default().fsync(Fsync::Never)
}

#[test]
fn an_oversized_batch_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config().max_message_bytes(1024)).unwrap();
    log.append(simple_batch(0, 2, 1)).unwrap();
    let big = batch(&[Rec::new(1, None, Some(&[7u8; 2000]))], Compression::None);
    let err = log.append(big).unwrap_err();
    assert!(matches!(err, Error::BatchTooLarge { max: 1024, .. }), "{err}");
    assert!(err.to_string().contains("max.message.bytes"), "{err}");
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn a_batch_of_kafkas_default_max_message_bytes_is_accepted_and_one_byte_more_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.config().get_max_message_bytes(), 1_048_588);
    // One record whose value is sized so the batch is `len` bytes.
    let sized = |len: usize| {
        let mut value = len;
        for _ in 0..4 {
            let b = batch(&[Rec::new(1, None, Some(&vec![7u8; value]))], Compression::None);
            if b.len() == len {
                return b;
            }
            value = value + len - b.len();
        }
        panic!("no value length makes a batch of {len} bytes");
    };
    let err = log.append(sized(1_048_589)).unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { max: 1_048_588, .. }),
        "{err}"
    );
    assert_eq!(log.log_end_offset(), 0);
    log.append(sized(1_048_588)).unwrap();
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn empty_and_malformed_batches_are_refused() {
    assert_eq!(
        BatchBuilder::new(Compression::None).finish().unwrap_err(),
        BatchError::Empty
    );
    // A well-formed header with no records, as a client could send it.
    let mut bytes = simple_batch(0, 1, 1).into_bytes();
    bytes.truncate(61);
    bytes[8..12].copy_from_slice(&49i32.to_be_bytes());
    bytes[57..61].copy_from_slice(&0i32.to_be_bytes());
    let crc = rivulet::storage::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        RecordBatch::from_bytes(bytes).unwrap_err(),
        BatchError::Empty | BatchError::BadRecordCount { .. }
    ));
    // A flipped bit anywhere in the checked part.
    let mut bytes = simple_batch(0, 3, 1).into_bytes();
    bytes[40] ^= 4;
    assert!(matches!(
        RecordBatch::from_bytes(bytes).unwrap_err(),
        BatchError::CrcMismatch { .. }
    ));
    assert!(matches!(
        RecordBatch::from_bytes(vec![0; 10]).unwrap_err(),
        BatchError::Incomplete { .. }
    ));
}

#[test]
fn offsets_out_of_range_are_errors_and_the_end_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    log.append(simple_batch(0, 5, 1)).unwrap();
    assert!(matches!(
        log.read(-1, 100),
        Err(Error::OffsetOutOfRange {
            offset: -1,
            log_start: 0,
            log_end: 5
        })
    ));
    assert!(matches!(
        log.read(6, 100),
        Err(Error::OffsetOutOfRange { offset: 6, .. })
    ));
    assert!(log.read(5, 100).unwrap().is_empty());
    assert!(matches!(
        log.delete_records_before(6),
        Err(Error::OffsetOutOfRange { .. })
    ));
    log.delete_records_before(2).unwrap();
    assert!(matches!(
        log.read(1, 100),
        Err(Error::OffsetOutOfRange {
            offset: 1,
            log_start: 2,
            ..
        })
    ));
    assert!(matches!(log.truncate_to(1), Err(Error::OffsetOutOfRange { .. })));
    let offsets: Vec<i64> = read_all(&log, 2).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [2, 3, 4]);
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn a_directory_that_is_not_a_log_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = PartitionLog::open(dir.path(), config()).unwrap_err();
    assert!(matches!(err, Error::NotALog { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"], "nothing was written");

    let file = dir.path().join("notes.txt");
    assert!(matches!(
        PartitionLog::open(&file, config()),
        Err(Error::NotALog { .. })
    ));
}

#[test]
fn a_newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    PartitionLog::open(dir.path(), config()).unwrap().close().unwrap();
    // log.meta with format version 99: magic, length 2, CRC, postcard (99, 0).
    let payload = [99u8, 0];
    let mut meta = b"RVMT".to_vec();
    meta.extend_from_slice(&2u32.to_be_bytes());
    meta.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    meta.extend_from_slice(&payload);
    std::fs::write(dir.path().join("log.meta"), meta).unwrap();
    let err = PartitionLog::open(dir.path(), config()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedFormat {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let err = PartitionLog::open(dir.path(), config()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    // Closing releases the lock even while a reader keeps the old handle alive.
    let reader = log.reader(0);
    log.close().unwrap();
    PartitionLog::open(dir.path(), config()).unwrap();
    drop(reader);
}

#[test]
fn an_invalid_config_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let err = PartitionLog::open(&path, config().segment_bytes(3)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                name: "segment.bytes",
                ..
            }
        ),
        "{err}"
    );
    assert!(!path.exists());
}

#[test]
fn appends_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    log.append(simple_batch(0, 1, 1)).unwrap();
    log.close().unwrap();
    assert!(matches!(log.append(simple_batch(1, 1, 1)), Err(Error::Closed)));
    assert_eq!(read_all(&log, 0).len(), 1, "reads still work");
}

/// A broker with topic `t` holding five records, and a consumer of group `g` assigned `t-0`
/// at offset 2 with a commit at 2.
fn consumer_at_two(dir: &std::path::Path) -> Result<(Broker, Consumer), Box<dyn std::error::Error>> {
    let broker = Broker::builder(dir).fsync(Fsync::Never).open()?;
    broker.create_topic("t", 1, TopicConfig::default())?;
    let producer = Producer::new(&broker);
    for i in 0..5i64 {
        producer.send(ProducerRecord::new("t", b"v").timestamp(1_000 + i))?;
    }
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp))?;
    consumer.seek(&tp, 2)?;
    consumer.commit()?;
    Ok((broker, consumer))
}

#[test]
fn negative_offsets_and_timestamps_are_refused_by_the_consumer() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (broker, mut consumer) = consumer_at_two(dir.path())?;
    let tp = TopicPartition::new("t", 0);
    let negative = |r: rivulet::Result<_>, name: &str| matches!(r, Err(Error::InvalidArgument { name: n, .. }) if n == name);
    assert!(negative(consumer.seek(&tp, -7), "offset"));
    assert_eq!(consumer.position(&tp)?, 2);
    assert!(negative(
        consumer.commit_offsets(&[(tp.clone(), -3, "")]),
        "offset"
    ));
    assert_eq!(broker.group_offsets("g")?[0].committed.offset, 2);
    assert!(negative(
        consumer.offsets_for_times(&[(tp.clone(), -1)]).map(drop),
        "timestamp"
    ));
    assert_eq!(
        consumer.offsets_for_times(&[(tp, 1_003)])?[0].map(|t| t.offset),
        Some(3)
    );
    Ok(())
}

#[test]
fn a_subscription_to_a_name_no_topic_can_have_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    for bad in ["", "no spaces", ".."] {
        let refused = consumer.subscribe([bad]);
        assert!(
            matches!(refused, Err(Error::InvalidTopicName { .. })),
            "{bad:?}: {refused:?}"
        );
        assert!(consumer.subscription().is_empty());
    }
    let refused = consumer.subscribe(["fine", ""]);
    assert!(matches!(refused, Err(Error::InvalidTopicName { .. })));
    assert!(consumer.subscription().is_empty(), "nothing of it was taken");
    Ok(())
}

#[test]
fn subscribing_without_a_group_id_says_a_group_id_is_needed() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default());
    let err = consumer.subscribe(["t"]).unwrap_err();
    assert!(matches!(err, Error::NoGroup));
    assert!(err.to_string().contains("subscribing"), "{err}");
    assert!(!err.to_string().contains("to commit offsets for"), "{err}");
    Ok(())
}

#[test]
fn the_offsets_topic_cannot_be_created_by_hand() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    let refused = broker.create_topic(rivulet::group::OFFSETS_TOPIC, 3, TopicConfig::default());
    assert!(
        matches!(refused, Err(Error::InvalidTopicName { .. })),
        "{refused:?}"
    );
    assert!(broker.list_topics().is_empty());
    // The broker still makes it, with its own config, when offsets are first committed.
    broker.create_topic("t", 1, TopicConfig::default())?;
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp))?;
    consumer.commit_offsets(&[(tp, 0, "")])?;
    assert_eq!(broker.partition_count(rivulet::group::OFFSETS_TOPIC)?, 1);
    Ok(())
}

#[test]
fn a_compressed_batch_no_reader_could_decompress_is_refused_before_it_is_written() {
    use rivulet::storage::MAX_DECOMPRESSED_BYTES;
    use rivulet::{Broker, CompressionType, Producer, ProducerRecord, TopicConfig};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let config = TopicConfig::default()
        .with_log(config())
        .compression(CompressionType::Codec(Compression::Zstd));
    broker.create_topic("t", 1, config).unwrap();
    // Zeros compress to a few KB, well under max.message.bytes, but no reader would inflate
    // them: readers stop at MAX_DECOMPRESSED_BYTES.
    let huge = vec![0u8; MAX_DECOMPRESSED_BYTES + 1];
    let producer = Producer::new(&broker);
    let err = producer
        .send(ProducerRecord::new("t", &huge).partition(0))
        .unwrap_err();
    assert!(err.to_string().contains("uncompressed"), "{err}");
    let log = broker.partition("t", 0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    producer
        .send(ProducerRecord::new("t", b"small").partition(0))
        .unwrap();
    assert_eq!(read_all(&log, 0).len(), 1, "the log reads on");
}

#[test]
fn a_batch_claiming_the_cleaners_delete_horizon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    // A tombstone whose batch says its delete horizon passed at the epoch: a clean would drop
    // it at once, before consumers had `delete.retention.ms` to see it.
    let mut bytes = batch(&[Rec::new(1_000, Some(b"k"), None)], Compression::None).into_bytes();
    bytes[22] |= 0x40; // attributes, low byte: bit 6
    bytes[27..35].copy_from_slice(&0i64.to_be_bytes()); // base timestamp: the horizon
    let crc = rivulet::storage::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let forged = RecordBatch::from_bytes(bytes).unwrap();
    assert_eq!(forged.header().delete_horizon(), Some(0));
    assert!(matches!(
        log.append(forged),
        Err(Error::InvalidBatch(BatchError::DeleteHorizonSet))
    ));
    assert_eq!(log.log_end_offset(), 0);
}
