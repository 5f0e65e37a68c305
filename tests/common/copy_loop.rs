//! A consume-transform-produce loop through librdkafka (the `rdkafka` crate), for the tests
//! that copy topic `in` to `out` in transactions while brokers are killed: a
//! `read_committed` consumer in group `copy`, a transactional producer (`copy-tx`), and the
//! output as each isolation level reads it. Included with
//! `#[path = "common/copy_loop.rs"] mod copy_loop;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The example broker beside the test binary (built with `--features kafka,cluster`).
pub fn broker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("broker");
    assert!(
        path.exists(),
        "{} is missing: build it with --features kafka,cluster",
        path.display()
    );
    path
}

pub fn input(tp: i64) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("in", 0, Offset::Offset(tp)).unwrap();
    tpl
}

/// A consumer of the input in the copy's group, and a transactional producer (whose
/// initialization aborts what an earlier one left open).
pub fn copier(client: &impl Fn() -> ClientConfig) -> (BaseConsumer, BaseProducer) {
    let producer: BaseProducer = client()
        .set("transactional.id", "copy-tx")
        .set("linger.ms", "1")
        .create()
        .unwrap();
    producer.init_transactions(TIMEOUT).unwrap();
    let consumer: BaseConsumer = client()
        .set("group.id", "copy")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.assign(&input(0)).unwrap();
    // Resume where the last committed transaction left the group.
    let committed = consumer.committed(TIMEOUT).unwrap();
    if let Offset::Offset(at) = committed.find_partition("in", 0).unwrap().offset() {
        consumer.seek("in", 0, Offset::Offset(at), TIMEOUT).unwrap();
    }
    (consumer, producer)
}

/// Copies up to `n` records in one transaction; `None` if a broker went away meanwhile.
/// With `abort`, the transaction is aborted and the consumer sent back.
pub fn one_transaction(
    consumer: &BaseConsumer,
    producer: &BaseProducer,
    n: usize,
    abort: bool,
) -> Option<usize> {
    let mut copied = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while copied.len() < n && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => copied.push((m.offset(), m.payload().unwrap().to_vec())),
            Some(Err(_)) => return None,
            None => {}
        }
    }
    if copied.is_empty() {
        return Some(0);
    }
    producer.begin_transaction().ok()?;
    for (_, v) in &copied {
        let value = [b"copied ".as_slice(), v].concat();
        producer
            .send(BaseRecord::<(), [u8]>::to("out").payload(&value).partition(0))
            .ok()?;
    }
    producer.flush(TIMEOUT).ok()?;
    let next = copied.last().unwrap().0 + 1;
    let metadata = consumer.group_metadata()?;
    producer
        .send_offsets_to_transaction(&input(next), &metadata, TIMEOUT)
        .ok()?;
    if abort {
        producer.abort_transaction(TIMEOUT).ok()?;
        consumer
            .seek("in", 0, Offset::Offset(copied[0].0), TIMEOUT)
            .ok()?;
        return Some(0);
    }
    producer.commit_transaction(TIMEOUT).ok()?;
    Some(copied.len())
}

/// The values a reader of the output in `isolation` finds, counted.
pub fn output(client: &impl Fn() -> ClientConfig, isolation: &str) -> BTreeMap<Vec<u8>, usize> {
    let consumer: BaseConsumer = client()
        .set("group.id", format!("check-{isolation}"))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("out", 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let (_, high) = consumer.fetch_watermarks("out", 0, TIMEOUT).unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            *seen.entry(m.payload().unwrap().to_vec()).or_default() += 1;
        }
        let position = consumer.position().unwrap();
        if let Offset::Offset(at) = position.find_partition("out", 0).unwrap().offset()
            && at >= high
        {
            break;
        }
    }
    seen
}
