//! Exactly once against at least once, in this process: a copy loop consuming one topic and
//! producing what it read to another, its consumer's positions committed every 100 ms, both
//! topics syncing every batch (`Fsync::Always`). At least once: each poll's records sent as a
//! batch (acknowledged once synced), then the positions committed as a plain commit every
//! 100 ms. Exactly once: a `read_committed` consumer and a `TransactionalProducer`, each poll's
//! records sent in the open transaction (not synced one by one), and every 100 ms the
//! positions sent with it and the transaction committed. Also: what one commit costs, in
//! fsyncs and time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rivulet::storage::FaultyFs;
use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, IsolationLevel, OffsetReset, Producer, ProducerRecord,
    TopicConfig, TopicPartition, TransactionalProducer,
};

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const GROUP: &str = "copier";
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// A broker in a new directory under `root` holding `records` records of `value_len` bytes in
/// the input topic.
fn prepared(root: &Path, records: usize, value_len: usize) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let broker = Broker::builder(dir.path()).fsync(Fsync::Always).open().unwrap();
    broker.create_topic(INPUT, 1, TopicConfig::default()).unwrap();
    broker.create_topic(OUTPUT, 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    let value = vec![0x5a_u8; value_len];
    let chunk: Vec<ProducerRecord<'_>> = (0..1000).map(|_| ProducerRecord::new(INPUT, &value)).collect();
    for start in (0..records).step_by(1000) {
        let n = (records - start).min(1000);
        producer.send_batch(INPUT, Some(0), &chunk[..n]).unwrap();
    }
    (dir, broker)
}

fn consumer(broker: &Broker, isolation: IsolationLevel) -> Consumer {
    let config = ConsumerConfig::default()
        .group_id(GROUP)
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .isolation_level(isolation)
        .max_poll_records(1000);
    let mut c = Consumer::new(broker, config);
    c.assign(&[TopicPartition::new(INPUT, 0)]).unwrap();
    c
}

/// Records a second through the at-least-once loop.
pub fn at_least_once(root: &Path, records: usize, value_len: usize) -> f64 {
    let (_dir, broker) = prepared(root, records, value_len);
    let mut c = consumer(&broker, IsolationLevel::ReadUncommitted);
    let producer = Producer::new(&broker);
    let start = Instant::now();
    let mut copied = 0;
    let mut committed = Instant::now();
    while copied < records {
        let polled = c.poll(Duration::from_millis(100)).unwrap();
        let out: Vec<ProducerRecord<'_>> = polled
            .iter()
            .map(|r| ProducerRecord::new(OUTPUT, r.value.unwrap_or_default()))
            .collect();
        if !out.is_empty() {
            producer.send_batch(OUTPUT, Some(0), &out).unwrap();
            copied += out.len();
        }
        if committed.elapsed() >= COMMIT_EVERY || copied >= records {
            c.commit().unwrap();
            committed = Instant::now();
        }
    }
    records as f64 / start.elapsed().as_secs_f64()
}

/// Records a second through the exactly-once loop.
pub fn exactly_once(root: &Path, records: usize, value_len: usize) -> f64 {
    let (_dir, broker) = prepared(root, records, value_len);
    let mut producer = TransactionalProducer::new(&broker, "copier-1").unwrap();
    let mut c = consumer(&broker, IsolationLevel::ReadCommitted);
    let input = TopicPartition::new(INPUT, 0);
    let start = Instant::now();
    let mut copied = 0;
    while copied < records {
        let mut txn = producer.begin().unwrap();
        let began = Instant::now();
        while began.elapsed() < COMMIT_EVERY && copied < records {
            let polled = c.poll(Duration::from_millis(100)).unwrap();
            let out: Vec<ProducerRecord<'_>> = polled
                .iter()
                .map(|r| ProducerRecord::new(OUTPUT, r.value.unwrap_or_default()))
                .collect();
            if !out.is_empty() {
                txn.send_batch(OUTPUT, Some(0), &out).unwrap();
                copied += out.len();
            }
        }
        let at = c.position(&input).unwrap();
        txn.send_offsets(GROUP, &[(input.clone(), at)]).unwrap();
        txn.commit().unwrap();
    }
    records as f64 / start.elapsed().as_secs_f64()
}

/// One commit of a transaction of one record and the consumer's position: the median time
/// of `commit` in microseconds over `commits` transactions, and the fsyncs each took (counted
/// by the file-system seam, when `count` is set: its bookkeeping slows the commits a little,
/// so times come from a run without it).
pub fn commit_cost(root: &Path, commits: usize, count: bool) -> (f64, f64) {
    let dir = tempfile::tempdir_in(root).expect("a scratch directory");
    let fs = Arc::new(FaultyFs::new());
    let builder = Broker::builder(dir.path()).fsync(Fsync::Always);
    let builder = if count { builder.fs(fs.clone()) } else { builder };
    let broker = builder.open().unwrap();
    broker.create_topic(OUTPUT, 1, TopicConfig::default()).unwrap();
    broker.create_topic(INPUT, 1, TopicConfig::default()).unwrap();
    let mut producer = TransactionalProducer::new(&broker, "committer").unwrap();
    let input = TopicPartition::new(INPUT, 0);
    let mut times = Vec::with_capacity(commits);
    let mut syncs = 0;
    for i in 0..commits {
        let mut txn = producer.begin().unwrap();
        txn.send(ProducerRecord::new(OUTPUT, b"result").partition(0))
            .unwrap();
        txn.send_offsets(GROUP, &[(input.clone(), i as i64 + 1)]).unwrap();
        let before = fs.syncs();
        let t = Instant::now();
        txn.commit().unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        syncs += fs.syncs() - before;
    }
    (crate::measure::median(&times), syncs as f64 / commits as f64)
}
