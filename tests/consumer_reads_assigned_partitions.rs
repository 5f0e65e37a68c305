//! A consumer with assigned partitions: offset reset policies, max.poll.records, fairness
//! between partitions, seeking, pausing, lookups by time, long polling, and compressed
//! batches with headers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rivulet::{
    Broker, Consumer, ConsumerConfig, Error, Fsync, OffsetReset, Producer, ProducerRecord, TopicConfig,
    TopicPartition,
};

fn setup(partitions: u32, per_partition: usize) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker
        .create_topic("t", partitions, TopicConfig::default())
        .unwrap();
    let producer = Producer::new(&broker);
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("p{p}-{i}");
            producer
                .send(
                    ProducerRecord::new("t", value.as_bytes())
                        .partition(p)
                        .timestamp(1000 + i as i64),
                )
                .unwrap();
        }
    }
    (dir, broker)
}

fn tps(n: u32) -> Vec<TopicPartition> {
    (0..n).map(|p| TopicPartition::new("t", p)).collect()
}

fn earliest() -> ConsumerConfig {
    ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest)
}

/// Polls until nothing more comes; returns (partition, offset, value) in delivery order.
fn drain(consumer: &mut Consumer) -> Vec<(u32, i64, String)> {
    let mut out = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(50)).unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records.iter() {
            out.push((
                r.partition,
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
}

#[test]
fn every_record_arrives_once_in_order_within_its_partition() {
    let (_dir, broker) = setup(3, 40);
    let mut consumer = Consumer::new(&broker, earliest().max_poll_records(7));
    consumer.assign(&tps(3)).unwrap();
    let first = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(first.len(), 7, "max.poll.records");
    let mut got: Vec<_> = first
        .iter()
        .map(|r| {
            (
                r.partition,
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    got.extend(drain(&mut consumer));
    assert_eq!(got.len(), 120);
    let mut by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for (p, o, v) in &got {
        assert_eq!(v, &format!("p{p}-{o}"));
        by_partition.entry(*p).or_default().push(*o);
    }
    for offsets in by_partition.values() {
        assert_eq!(offsets, &(0..40).collect::<Vec<_>>());
    }
    for tp in tps(3) {
        assert_eq!(consumer.position(&tp).unwrap(), 40);
    }
}

#[test]
fn partitions_are_served_in_turn() {
    let (_dir, broker) = setup(3, 100);
    let mut consumer = Consumer::new(&broker, earliest().max_poll_records(10));
    consumer.assign(&tps(3)).unwrap();
    let served: std::collections::HashSet<u32> = (0..3)
        .flat_map(|_| {
            consumer
                .poll(Duration::from_secs(1))
                .unwrap()
                .iter()
                .map(|r| r.partition)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(served.len(), 3, "a partition starved: {served:?}");
}

#[test]
fn reset_policies_decide_where_a_new_partition_starts() {
    let (_dir, broker) = setup(1, 5);
    let tp = TopicPartition::new("t", 0);
    let mut latest = Consumer::new(&broker, ConsumerConfig::default());
    latest.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(latest.position(&tp).unwrap(), 5);
    assert!(latest.poll(Duration::from_millis(10)).unwrap().is_empty());

    let mut none = Consumer::new(
        &broker,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::None),
    );
    none.assign(std::slice::from_ref(&tp)).unwrap();
    assert!(matches!(none.poll(Duration::ZERO), Err(Error::NoOffset { .. })));
    none.seek(&tp, 3).unwrap();
    assert_eq!(drain(&mut none).len(), 2);
    // Past the end: out of range, which `none` reports and the others reset.
    none.seek(&tp, 99).unwrap();
    assert!(matches!(
        none.poll(Duration::ZERO),
        Err(Error::OffsetOutOfRange { offset: 99, .. })
    ));
    let mut early = Consumer::new(&broker, earliest());
    early.assign(std::slice::from_ref(&tp)).unwrap();
    early.seek(&tp, 99).unwrap();
    assert_eq!(drain(&mut early).len(), 5, "reset to the earliest offset");
}

#[test]
fn seek_pause_and_lookups_by_time() {
    let (_dir, broker) = setup(2, 10);
    let mut consumer = Consumer::new(&broker, earliest());
    consumer.assign(&tps(2)).unwrap();
    let (a, b) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    consumer.seek(&a, 8).unwrap();
    consumer.seek_to_end(std::slice::from_ref(&b)).unwrap();
    assert_eq!(
        drain(&mut consumer)
            .iter()
            .map(|r| (r.0, r.1))
            .collect::<Vec<_>>(),
        [(0, 8), (0, 9)]
    );
    consumer.seek_to_beginning(&tps(2)).unwrap();
    consumer.pause(std::slice::from_ref(&a)).unwrap();
    assert_eq!(consumer.paused(), std::slice::from_ref(&a));
    assert!(drain(&mut consumer).iter().all(|r| r.0 == 1));
    consumer.resume(std::slice::from_ref(&a)).unwrap();
    assert_eq!(drain(&mut consumer).len(), 10);

    let found = consumer
        .offsets_for_times(&[(a.clone(), 1004), (b.clone(), 5000)])
        .unwrap();
    assert_eq!(found[0].map(|t| t.offset), Some(4));
    assert_eq!(found[1], None);

    let other = TopicPartition::new("t", 7);
    assert!(matches!(consumer.seek(&other, 0), Err(Error::NotAssigned { .. })));
    assert!(matches!(
        consumer.assign(&[other]),
        Err(Error::UnknownPartition { .. })
    ));
    assert_eq!(consumer.assignment(), tps(2), "a failed assign changes nothing");
}

#[test]
fn a_long_poll_wakes_when_any_assigned_partition_gets_a_record() {
    let (_dir, broker) = setup(3, 0);
    let mut consumer = Consumer::new(&broker, earliest());
    consumer.assign(&tps(3)).unwrap();
    let producer = Producer::new(&broker);
    let started = Instant::now();
    let records = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            producer
                .send(ProducerRecord::new("t", b"late").partition(2))
                .unwrap();
        });
        consumer.poll(Duration::from_secs(30)).unwrap()
    });
    assert_eq!(records.len(), 1);
    assert_eq!(records.iter().next().unwrap().partition, 2);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "woken by the record, not the timeout"
    );
}

#[test]
fn compressed_records_with_headers_are_delivered_whole() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let mut config = TopicConfig::default();
    config.set("compression.type", "lz4").unwrap();
    broker.create_topic("t", 1, config).unwrap();
    let producer = Producer::new(&broker);
    let records: Vec<_> = (0..50)
        .map(|_| {
            ProducerRecord::new("t", b"body-body-body")
                .key(b"k")
                .header("trace", b"abc")
        })
        .collect();
    producer.send_batch("t", Some(0), &records).unwrap();
    producer.send_batch("t", Some(0), &records).unwrap();
    let mut consumer = Consumer::new(&broker, earliest().max_poll_records(70));
    consumer.assign(&tps(1)).unwrap();
    let first = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(first.len(), 70);
    assert_eq!(first.iter().len(), 70, "the iterator knows its length");
    for (i, r) in (&first).into_iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!((r.key, r.value), (Some(&b"k"[..]), Some(&b"body-body-body"[..])));
        let headers: Vec<_> = r.headers().map(|h| (h.key, h.value)).collect();
        assert_eq!(headers, [(&b"trace"[..], Some(&b"abc"[..]))]);
    }
    assert_eq!(drain(&mut consumer).len(), 30);
}

#[test]
fn buffered_fetches_follow_seeks_new_records_and_held_results() {
    // One fetch holds all 10 records; polls of 3 return them from the consumer's buffer.
    let (_dir, broker) = setup(1, 10);
    let mut consumer = Consumer::new(&broker, earliest().max_poll_records(3));
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let values = |records: &rivulet::ConsumerRecords| -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
            .collect()
    };
    let first = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(values(&first), ["p0-0", "p0-1", "p0-2"]);

    // A seek drops the buffered rest: the next poll starts where the seek said.
    consumer.seek(&tp, 8).unwrap();
    let second = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(values(&second), ["p0-8", "p0-9"]);

    // Records produced after the fetch are read by the next one.
    Producer::new(&broker)
        .send(ProducerRecord::new("t", b"late").partition(0))
        .unwrap();
    let third = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(values(&third), ["late"]);

    consumer.seek(&tp, 1).unwrap();
    let fourth = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(values(&fourth), ["p0-1", "p0-2", "p0-3"]);
    // Results still held are untouched by the fetches that followed them (the consumer
    // reuses a fetch buffer only once nothing borrows from it).
    assert_eq!(values(&first), ["p0-0", "p0-1", "p0-2"]);
    assert_eq!(values(&second), ["p0-8", "p0-9"]);
    assert_eq!(values(&third), ["late"]);
    assert_eq!(consumer.position(&tp).unwrap(), 4);
}
