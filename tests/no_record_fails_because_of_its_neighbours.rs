//! The producer fills a shared batch by the records' uncompressed size, but the log judges the
//! compressed batch: a codec's framing can take a full batch of incompressible values past
//! `max.message.bytes`. As Kafka's producer does, a refused batch is split and its halves
//! sent again, so no record fails because of the records it shared a batch with.

use std::collections::HashSet;

use rivulet::storage::Compression;
use rivulet::{
    Broker, CompressionType, Consumer, ConsumerConfig, Fsync, LogConfig, Producer, ProducerRecord,
    TopicConfig, TopicPartition,
};

const THREADS: usize = 8;
const SENDS: usize = 40;
const VALUE: usize = 16 << 10;
const MAX_MESSAGE_BYTES: usize = 64 << 10;

/// Bytes no codec can shrink (xorshift).
fn incompressible(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..VALUE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn full_batches_of_incompressible_records_are_split_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let log = LogConfig::default()
        .fsync(Fsync::Always)
        .max_message_bytes(MAX_MESSAGE_BYTES);
    let config = TopicConfig::default()
        .with_log(log)
        .compression(CompressionType::Codec(Compression::Snappy));
    broker.create_topic("jobs", 1, config).unwrap();
    let producer = Producer::new(&broker);
    let sent: Vec<(i64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let producer = producer.clone();
                s.spawn(move || {
                    (0..SENDS)
                        .map(|i| {
                            let seed = (t * SENDS + i) as u64;
                            let value = incompressible(seed);
                            let record = ProducerRecord::new("jobs", &value).partition(0);
                            match producer.send(record) {
                                Ok(meta) => (meta.offset, seed),
                                Err(e) => panic!("send {seed} failed: {e}"),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sent.len(), THREADS * SENDS);
    let offsets: HashSet<i64> = sent.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets.len(), sent.len(), "two records were given one offset");
    // Every record is stored once, at the offset its sender was told.
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default());
    consumer.assign(&[TopicPartition::new("jobs", 0)]).unwrap();
    consumer.seek(&TopicPartition::new("jobs", 0), 0).unwrap();
    let mut stored = Vec::new();
    while stored.len() < sent.len() {
        let records = consumer.poll(std::time::Duration::from_secs(5)).unwrap();
        assert!(!records.is_empty(), "only {} records stored", stored.len());
        stored.extend(records.iter().map(|r| (r.offset, r.value.unwrap().to_vec())));
    }
    assert_eq!(stored.len(), sent.len());
    for (offset, seed) in sent {
        let value = &stored.iter().find(|(o, _)| *o == offset).unwrap().1;
        assert!(
            *value == incompressible(seed),
            "offset {offset} holds another record"
        );
    }
}
