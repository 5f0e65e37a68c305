//! The producer: keyed records go where Kafka's Java client puts them, unkeyed ones spread
//! (sticky), explicit partitions are honoured, many threads' records share batches, and a
//! batch is appended atomically.

use std::collections::{HashMap, HashSet};

use rivulet::storage::{Compression, PartitionLog};
use rivulet::{Broker, Error, Fsync, LogConfig, Producer, ProducerRecord, TopicConfig, murmur2};

fn broker(dir: &std::path::Path, fsync: Fsync) -> Broker {
    Broker::builder(dir).fsync(fsync).open().unwrap()
}

/// A stored record: offset, key, value.
type Stored = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// Every record in a partition.
fn contents(log: &PartitionLog) -> Vec<Stored> {
    let mut reader = log.reader(0);
    let mut out = Vec::new();
    while let Some(r) = reader.next().unwrap() {
        out.push((r.offset, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
    }
    out
}

fn batches(log: &PartitionLog) -> usize {
    log.read(0, usize::MAX).unwrap().batches().count()
}

#[test]
fn keyed_records_go_to_the_java_clients_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), Fsync::Never);
    broker.create_topic("t", 7, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for i in 0..100 {
        let key = format!("customer-{i}");
        let meta = producer
            .send(ProducerRecord::new("t", b"v").key(key.as_bytes()))
            .unwrap();
        assert_eq!(
            meta.partition,
            (murmur2(key.as_bytes()) & 0x7fff_ffff) % 7,
            "{key}"
        );
        let again = producer
            .send(ProducerRecord::new("t", b"v").key(key.as_bytes()))
            .unwrap();
        assert_eq!(again.partition, meta.partition);
    }
}

#[test]
fn unkeyed_records_spread_over_partitions_and_explicit_ones_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), Fsync::Never);
    broker.create_topic("t", 4, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    let used: HashSet<u32> = (0..200)
        .map(|_| producer.send(ProducerRecord::new("t", b"v")).unwrap().partition)
        .collect();
    assert!(used.len() > 1, "all unkeyed records went to {used:?}");
    let meta = producer
        .send(ProducerRecord::new("t", b"v").key(b"k").partition(3))
        .unwrap();
    assert_eq!(meta.partition, 3);
    let err = producer
        .send(ProducerRecord::new("t", b"v").partition(4))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownPartition {
                partition: 4,
                partitions: 4,
                ..
            }
        ),
        "{err}"
    );
    let total: i64 = (0..4)
        .map(|p| broker.partition("t", p).unwrap().log_end_offset())
        .sum();
    assert_eq!(total, 201, "the refused record was not written");
}

#[test]
fn unknown_topics_are_created_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).num_partitions(3).open().unwrap();
    Producer::new(&broker)
        .send(ProducerRecord::new("fresh", b"v"))
        .unwrap();
    assert_eq!(broker.partition_count("fresh").unwrap(), 3);
    drop(broker);

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path())
        .auto_create_topics(false)
        .open()
        .unwrap();
    let err = Producer::new(&broker)
        .send(ProducerRecord::new("fresh", b"v"))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownTopic { .. }), "{err}");
    assert!(broker.list_topics().is_empty());
}

#[test]
fn concurrent_senders_share_batches_and_every_record_gets_its_own_offset() {
    let n = concurrent_senders(Fsync::Always);
    assert!(n < 16 * 100, "no batch was shared");
}

/// Senders waiting on appends to the page cache watch for them before sleeping (a different
/// path from waiting on fsyncs); each still gets its own record's offset. Whether batches are
/// shared here depends on the scheduler, so only the offsets are checked.
#[test]
fn concurrent_senders_without_fsync_each_get_their_own_offset() {
    concurrent_senders(Fsync::Never);
}

/// 16 threads send 100 records each to one partition; checks that every record is stored at
/// the offset its sender was told. Returns the number of batches.
fn concurrent_senders(fsync: Fsync) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), fsync);
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    const THREADS: usize = 16;
    const EACH: usize = 100;
    let sent: Vec<(i64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let producer = producer.clone();
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let value = format!("t{t}-{i}");
                            let meta = producer.send(ProducerRecord::new("t", value.as_bytes())).unwrap();
                            (meta.offset, value)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let log = broker.partition("t", 0).unwrap();
    let stored: HashMap<i64, Vec<u8>> = contents(&log)
        .into_iter()
        .map(|(o, _, v)| (o, v.unwrap()))
        .collect();
    assert_eq!(stored.len(), THREADS * EACH);
    for (offset, value) in &sent {
        assert_eq!(
            stored.get(offset).map(Vec::as_slice),
            Some(value.as_bytes()),
            "offset {offset}"
        );
    }
    let n = batches(&log);
    eprintln!("{} records in {n} batches ({fsync:?})", THREADS * EACH);
    n
}

#[test]
fn a_batch_is_appended_atomically_with_consecutive_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), Fsync::Never);
    broker.create_topic("t", 2, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    let records: Vec<_> = (0..5u8)
        .map(|i| ProducerRecord::new("t", b"v").key(b"same").timestamp(i as i64))
        .collect();
    let metas = producer.send_batch("t", None, &records).unwrap();
    let p = metas[0].partition;
    assert_eq!(p, (murmur2(b"same") & 0x7fff_ffff) % 2);
    assert_eq!(
        metas.iter().map(|m| m.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(batches(&broker.partition("t", p).unwrap()), 1);
    // Too large as a whole: nothing of it is written.
    let big = vec![0u8; 700_000];
    let records = [ProducerRecord::new("t", &big), ProducerRecord::new("t", &big)];
    assert!(matches!(
        producer.send_batch("t", Some(p), &records),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(broker.partition("t", p).unwrap().log_end_offset(), 5);
}

#[test]
fn the_topic_compression_and_timestamp_type_apply() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), Fsync::Never);
    let mut config = TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never));
    config.set("compression.type", "zstd").unwrap();
    config.set("message.timestamp.type", "LogAppendTime").unwrap();
    broker.create_topic("t", 1, config).unwrap();
    let meta = Producer::new(&broker)
        .send(ProducerRecord::new("t", b"payload").timestamp(5))
        .unwrap();
    assert!(
        meta.timestamp > 1_600_000_000_000,
        "log append time, not the create time"
    );
    let log = broker.partition("t", 0).unwrap();
    let fetch = log.read(0, 1 << 20).unwrap();
    let batch = fetch.batches().next().unwrap();
    assert_eq!(batch.header().compression().unwrap(), Compression::Zstd);
    assert_eq!(contents(&log)[0].2.as_deref(), Some(&b"payload"[..]));
}

#[test]
fn a_compacted_topic_refuses_keyless_records_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path(), Fsync::Never);
    let mut config = TopicConfig::default();
    config.set("cleanup.policy", "compact").unwrap();
    broker.create_topic("c", 1, config).unwrap();
    let producer = Producer::new(&broker);
    // Many threads share batches; a keyless record fails alone, not the batch it would join.
    std::thread::scope(|s| {
        for t in 0..4 {
            let producer = &producer;
            s.spawn(move || {
                for i in 0..50 {
                    let key = format!("{t}-{i}");
                    producer
                        .send(ProducerRecord::new("c", b"v").key(key.as_bytes()))
                        .unwrap();
                    let err = producer.send(ProducerRecord::new("c", b"no key")).unwrap_err();
                    assert!(matches!(err, Error::KeyRequired { .. }), "{err}");
                }
            });
        }
    });
    let batch = [
        ProducerRecord::new("c", b"v").key(b"a"),
        ProducerRecord::new("c", b"v"),
    ];
    let err = producer.send_batch("c", None, &batch).unwrap_err();
    assert!(matches!(err, Error::KeyRequired { index: 1 }), "{err}");
    let log = broker.partition("c", 0).unwrap();
    assert_eq!(contents(&log).len(), 200, "every keyed record, nothing else");
    assert!(contents(&log).iter().all(|r| r.1.is_some()));
}
