//! A data directory opened read-only beside its writer (here in the same process; the
//! process test is `readers_follow_a_writer_process`): topics, records as they are appended
//! and synced, committed offsets and lag, and nothing written.

mod common;

use std::time::Duration;

use common::snapshot;

use rivulet::{
    Broker, Consumer, ConsumerConfig, Error, Fsync, LogConfig, Producer, ProducerRecord, StartAt,
    TopicConfig, TopicPartition,
};

const WAIT: Duration = Duration::from_secs(10);

fn values(records: &[rivulet::OwnedRecord]) -> Vec<(u32, i64, Vec<u8>)> {
    records
        .iter()
        .map(|r| (r.partition, r.offset, r.value.clone().unwrap_or_default()))
        .collect()
}

/// Polls until `n` records came, or the wait is over.
fn poll_n(follower: &mut rivulet::Follower, n: usize) -> Vec<rivulet::OwnedRecord> {
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        got.extend(follower.poll(Duration::from_millis(500)).unwrap());
    }
    got
}

#[test]
fn a_follower_sees_appends_as_they_are_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Broker::open(dir.path()).unwrap();
    let synced = TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Always));
    writer.create_topic("meters", 2, synced.clone()).unwrap();
    let producer = Producer::new(&writer);
    producer
        .send(ProducerRecord::new("meters", b"before").partition(0))
        .unwrap();

    let reader = Broker::open_read_only(dir.path()).unwrap();
    assert!(reader.writer_running().unwrap());
    assert_eq!(reader.list_topics().unwrap(), ["meters"]);
    assert_eq!(reader.partition_count("meters").unwrap(), 2);
    let described = reader.describe_topic("meters").unwrap();
    assert_eq!(described.partitions[0].high_watermark, 1);
    assert_eq!(described.config, synced);

    let mut from_start = reader.follower().unwrap();
    from_start.assign_topic("meters", StartAt::Earliest).unwrap();
    let mut from_now = reader.follower().unwrap();
    from_now.assign_topic("meters", StartAt::Latest).unwrap();
    assert_eq!(values(&poll_n(&mut from_start, 1)), [(0, 0, b"before".to_vec())]);
    assert!(from_now.poll(Duration::from_millis(200)).unwrap().is_empty());

    // Appends from another thread wake the waiting follower.
    let sender = {
        let producer = producer.clone();
        std::thread::spawn(move || {
            for i in 0..100u32 {
                let value = format!("v{i}");
                let record = ProducerRecord::new("meters", value.as_bytes()).partition(i % 2);
                producer.send(record).unwrap();
            }
        })
    };
    let got = poll_n(&mut from_now, 100);
    sender.join().unwrap();
    assert_eq!(got.len(), 100, "every appended record came");
    for p in 0..2u32 {
        let offsets: Vec<i64> = got
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        let first = if p == 0 { 1 } else { 0 };
        assert_eq!(
            offsets,
            (first..first + 50).collect::<Vec<_>>(),
            "partition {p} in order"
        );
    }
    assert_eq!(got[0].topic, "meters");
    assert_eq!(from_now.position("meters", 0), Some(51));
    assert_eq!(poll_n(&mut from_start, 100).len(), 100);

    // Seeking back, and a start by time.
    from_start.seek("meters", 1, 49).unwrap();
    assert_eq!(values(&poll_n(&mut from_start, 1)), [(1, 49, b"v99".to_vec())]);
    let stamp = got[10].timestamp;
    let found = reader
        .offset_for_timestamp("meters", got[10].partition, stamp)
        .unwrap()
        .unwrap();
    assert!(found.offset <= got[10].offset && found.timestamp >= stamp);
    let mut by_time = reader.follower().unwrap();
    by_time.assign("meters", 0, StartAt::Timestamp(i64::MAX)).unwrap();
    assert_eq!(
        by_time.position("meters", 0),
        Some(51),
        "no record that late: the end"
    );

    // Committed offsets and lag.
    let mut consumer = Consumer::new(&writer, ConsumerConfig::default().group_id("billing"));
    let tp = TopicPartition::new("meters", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.commit_offsets(&[(tp.clone(), 40, "")]).unwrap();
    assert_eq!(reader.list_groups().unwrap(), ["billing"]);
    let lag = reader.group_offsets("billing").unwrap();
    assert_eq!(
        (lag[0].committed.offset, lag[0].high_watermark, lag[0].lag),
        (40, 51, 11)
    );
    consumer.commit_offsets(&[(tp, 45, "")]).unwrap();
    // A write shows once the writer published it: at once, or in its lookout's next round.
    let deadline = std::time::Instant::now() + WAIT;
    while reader.group_offsets("billing").unwrap()[0].lag != 6 {
        assert!(std::time::Instant::now() < deadline, "a later commit is read");
        std::thread::sleep(Duration::from_millis(1));
    }
    consumer.close().unwrap();

    // A follower asked for what it does not follow, or for what does not exist.
    assert!(matches!(
        from_start.seek("other", 0, 0),
        Err(Error::NotAssigned { .. })
    ));
    assert!(matches!(
        from_start.assign("meters", 7, StartAt::Earliest),
        Err(Error::UnknownPartition { partitions: 2, .. })
    ));
    assert!(matches!(
        reader.describe_topic("nope"),
        Err(Error::UnknownTopic { .. })
    ));

    // The writer closes; the reader reads on, everything on disk.
    writer.close().unwrap();
    drop(writer);
    assert!(!reader.writer_running().unwrap());
    assert_eq!(
        reader.describe_topic("meters").unwrap().partitions[1].high_watermark,
        50
    );
    let mut after = reader.follower().unwrap();
    after.assign_topic("meters", StartAt::Earliest).unwrap();
    assert_eq!(poll_n(&mut after, 101).len(), 101);

    // A writer opens the directory while the reader holds it, and the reader follows it.
    let writer = Broker::open(dir.path()).unwrap();
    Producer::new(&writer)
        .send(ProducerRecord::new("meters", b"again").partition(1))
        .unwrap();
    assert_eq!(values(&poll_n(&mut after, 1)), [(1, 50, b"again".to_vec())]);
    writer.close().unwrap();
}

#[test]
fn a_reader_writes_nothing_and_refuses_what_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let writer = Broker::open(dir.path()).unwrap();
        writer.create_topic("t", 1, TopicConfig::default()).unwrap();
        Producer::new(&writer)
            .send(ProducerRecord::new("t", b"x"))
            .unwrap();
        writer.close().unwrap();
    }
    let before = snapshot(dir.path());
    let reader = Broker::open_read_only(dir.path()).unwrap();
    let mut follower = reader.follower().unwrap();
    follower.assign_topic("t", StartAt::Earliest).unwrap();
    assert_eq!(poll_n(&mut follower, 1).len(), 1);
    assert!(reader.group_offsets("g").unwrap().is_empty());
    reader.describe_topic("t").unwrap();
    assert_eq!(snapshot(dir.path()), before, "the reader changed no file");

    // Not a data directory: a clear error, and nothing made.
    let empty = tempfile::tempdir().unwrap();
    let err = Broker::open_read_only(empty.path()).unwrap_err();
    assert!(matches!(err, Error::NotALog { .. }), "{err}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    let missing = empty.path().join("missing");
    assert!(matches!(
        Broker::open_read_only(&missing),
        Err(Error::NotALog { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn deleted_records_topics_and_a_closing_writer() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Broker::open(dir.path()).unwrap();
    writer.create_topic("t", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&writer);
    for i in 0..10 {
        producer
            .send(ProducerRecord::new("t", format!("old-{i}").as_bytes()))
            .unwrap();
    }
    let reader = Broker::open_read_only(dir.path()).unwrap();

    // Records below the log start (DeleteRecords) are not read.
    writer
        .partition("t", 0)
        .unwrap()
        .delete_records_before(5)
        .unwrap();
    let mut f = reader.follower().unwrap();
    f.assign("t", 0, StartAt::Offset(2)).unwrap();
    let got = poll_n(&mut f, 5);
    assert_eq!(got.first().map(|r| r.offset), Some(5), "read from the log start");
    assert_eq!(got.len(), 5);
    assert_eq!(
        reader.describe_topic("t").unwrap().partitions[0].log_start_offset,
        5
    );

    // The topic deleted and made again: the follower never returns the old topic's records.
    writer.delete_topic("t").unwrap();
    writer.create_topic("t", 1, TopicConfig::default()).unwrap();
    for i in 0..12 {
        producer
            .send(ProducerRecord::new("t", format!("new-{i}").as_bytes()))
            .unwrap();
    }
    // It stood at offset 10: the new topic's records from there on.
    let later = poll_n(&mut f, 2);
    assert_eq!(
        values(&later),
        [(0, 10, b"new-10".to_vec()), (0, 11, b"new-11".to_vec())]
    );
    f.seek("t", 0, 0).unwrap();
    let mut all = later;
    all.extend(poll_n(&mut f, 12));
    assert!(
        all.iter()
            .any(|r| r.offset == 0 && r.value.as_deref() == Some(&b"new-0"[..]))
    );

    // What the writer acknowledged just before it closed is read.
    let mut tail = reader.follower().unwrap();
    tail.assign("t", 0, StartAt::Latest).unwrap();
    for i in 0..3 {
        producer
            .send(ProducerRecord::new("t", format!("last-{i}").as_bytes()))
            .unwrap();
    }
    writer.close().unwrap();
    let last = poll_n(&mut tail, 3);
    assert_eq!(
        last.iter().map(|r| r.value.clone().unwrap()).collect::<Vec<_>>(),
        [b"last-0".to_vec(), b"last-1".to_vec(), b"last-2".to_vec()]
    );
}
