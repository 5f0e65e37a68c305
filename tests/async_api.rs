//! The asynchronous face under a multi-threaded tokio runtime: `Producer::send_async` from
//! many tasks (acknowledged once durable, never holding a runtime worker while the disk
//! syncs, waiting for room when a partition's buffer is full), and `AsyncConsumer` as a
//! stream in a group, whose unyielded records are never committed and whose dropped polls
//! lose nothing.
#![cfg(feature = "tokio")]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::{Condvar, Mutex};
use rivulet::storage::FaultyFs;
use rivulet::{
    AsyncConsumer, Broker, Consumer, ConsumerConfig, Fsync, LogConfig, OffsetReset, Producer, ProducerRecord,
    TopicConfig, TopicPartition,
};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Once closed, holds every sync of a file under a `gated` topic's directory until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
    /// Syncs that waited at the gate.
    waited: Mutex<u32>,
}

impl Gate {
    fn hold(&self, path: &Path) {
        if !path.to_string_lossy().contains("gated-") {
            return;
        }
        let mut open = self.open.lock();
        if !*open {
            *self.waited.lock() += 1;
            self.changed.notify_all();
        }
        while !*open {
            self.changed.wait(&mut open);
        }
    }

    fn open(&self) {
        *self.open.lock() = true;
        self.changed.notify_all();
    }

    fn close(&self) {
        *self.open.lock() = false;
    }

    /// Waits until a sync is held at the gate.
    fn wait_for_a_held_sync(&self) {
        let mut open = self.open.lock();
        let deadline = std::time::Instant::now() + TIMEOUT;
        while *self.waited.lock() == 0 {
            assert!(std::time::Instant::now() < deadline, "no sync reached the gate");
            self.changed.wait_for(&mut open, Duration::from_millis(10));
        }
    }
}

fn gated_broker(dir: &Path) -> (Broker, Arc<Gate>) {
    let fs = FaultyFs::new();
    let gate = Arc::new(Gate::default());
    gate.open();
    let g = gate.clone();
    fs.before_sync(move |path| g.hold(path));
    let broker = Broker::builder(dir).fs(Arc::new(fs)).open().unwrap();
    (broker, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_from_many_tasks_are_acknowledged_with_distinct_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("events", 3, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..50 {
                let value = format!("{task}-{i}");
                let key = format!("k{}", i % 7);
                let meta = producer
                    .send_async(ProducerRecord::new("events", value.as_bytes()).key(key.as_bytes()))
                    .await
                    .unwrap();
                sent.push((meta.partition, meta.offset, value));
            }
            sent
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    assert_eq!(sent.len(), 800);
    let places: BTreeSet<(u32, i64)> = sent.iter().map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(places.len(), 800, "every record has its own offset");
    // Each record is where its acknowledgement says.
    for partition in 0..3 {
        let log = broker.partition("events", partition).unwrap();
        let mut reader = log.reader(0);
        let mut n = 0;
        while let Some(r) = reader.next().unwrap() {
            let expected = sent
                .iter()
                .find(|(p, o, _)| *p == partition && *o == r.offset)
                .unwrap();
            assert_eq!(r.value, Some(expected.2.as_bytes()));
            n += 1;
        }
        assert_eq!(n, places.iter().filter(|(p, _)| *p == partition).count());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_send_waiting_for_the_disk_holds_no_runtime_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, gate) = gated_broker(dir.path());
    broker.create_topic("gated", 1, TopicConfig::default()).unwrap();
    gate.close();
    let producer = Producer::new(&broker);
    let send = producer.send_async(ProducerRecord::new("gated", b"durable"));
    let waiting = tokio::spawn(send);
    // The one runtime thread goes on running tasks while the append waits at the gate.
    let ticker = tokio::spawn(async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    tokio::task::spawn_blocking({
        let gate = gate.clone();
        move || gate.wait_for_a_held_sync()
    })
    .await
    .unwrap();
    ticker.await.unwrap();
    assert!(
        !waiting.is_finished(),
        "acknowledged before its fdatasync returned"
    );
    gate.open();
    let meta = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((meta.partition, meta.offset), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_sends_wait_for_room_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, gate) = gated_broker(dir.path());
    let config = TopicConfig::default().with_log(LogConfig::default().max_message_bytes(1 << 20));
    broker.create_topic("gated-big", 1, config).unwrap();
    gate.close();
    let producer = Producer::new(&broker);
    let value = vec![7u8; 600 << 10];
    // Each record fills a batch; with the first append held at the gate, 32 MiB of sealed
    // batches fill the buffer and later sends wait.
    let sends: Vec<_> = (0..70)
        .map(|_| producer.send_async(ProducerRecord::new("gated-big", &value)))
        .collect();
    let all = tokio::spawn(futures_util::future::join_all(sends));
    tokio::task::spawn_blocking({
        let gate = gate.clone();
        move || gate.wait_for_a_held_sync()
    })
    .await
    .unwrap();
    assert!(!all.is_finished());
    gate.open();
    let results = tokio::time::timeout(TIMEOUT, all).await.unwrap().unwrap();
    let offsets: Vec<i64> = results.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets, (0..70).collect::<Vec<i64>>(), "in order, none lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_a_group_commits_only_what_it_yielded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic(
            "orders",
            1,
            TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never)),
        )
        .unwrap();
    let producer = Producer::new(&broker);
    for i in 0..10u8 {
        producer
            .send_async(ProducerRecord::new("orders", &[i]))
            .await
            .unwrap();
    }
    let config = || {
        ConsumerConfig::default()
            .group_id("billing")
            .auto_offset_reset(OffsetReset::Earliest)
    };
    let mut consumer = AsyncConsumer::new(Consumer::new(&broker, config()));
    consumer.run(|c| c.subscribe(["orders"])).await.unwrap();
    for i in 0..3u8 {
        let record = tokio::time::timeout(TIMEOUT, consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((record.offset, record.value), (i as i64, Some(vec![i])));
    }
    // All ten were fetched; three were handed out.
    consumer.commit().await.unwrap();
    let tp = TopicPartition::new("orders", 0);
    let committed = consumer.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(committed[0].as_ref().unwrap().offset, 3);
    // Closing (with auto-commit) does not pass the unyielded records either.
    consumer.close().await;
    let mut consumer = AsyncConsumer::new(Consumer::new(&broker, config()));
    consumer.run(|c| c.subscribe(["orders"])).await.unwrap();
    let record = tokio::time::timeout(TIMEOUT, consumer.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.offset, 3,
        "the next member resumes at the first record not yielded"
    );

    // into_inner hands back a consumer that reads the unyielded records again.
    let mut blocking = consumer.into_inner().await;
    let records = tokio::task::spawn_blocking(move || {
        let r = blocking.poll(TIMEOUT).unwrap();
        r.iter().map(|r| r.offset).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(records, (4..10).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_poll_loses_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let config = ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = AsyncConsumer::new(Consumer::new(&broker, config));
    consumer
        .run(|c| c.assign(&[TopicPartition::new("t", 0)]))
        .await
        .unwrap();
    let producer = Producer::new(&broker);
    let mut delivered = Vec::new();
    for round in 0..200u32 {
        // Polls given up at varied moments, while records arrive.
        let value = round.to_be_bytes();
        let send = producer.send_async(ProducerRecord::new("t", &value));
        let give_up = Duration::from_micros(20 * u64::from(round % 11));
        if let Ok(records) = tokio::time::timeout(give_up, consumer.poll(TIMEOUT)).await {
            delivered.extend(records.unwrap().iter().map(|r| r.offset));
        }
        send.await.unwrap();
    }
    loop {
        let records = tokio::time::timeout(TIMEOUT, consumer.poll(Duration::from_millis(50)))
            .await
            .unwrap()
            .unwrap();
        if records.is_empty() {
            break;
        }
        delivered.extend(records.iter().map(|r| r.offset));
    }
    // Whatever the dropped polls fetched came back from later ones: each record once.
    assert_eq!(delivered, (0..200).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_async_consumer_closes_in_the_background_and_commits_what_it_yielded() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for i in 0..5u8 {
        producer.send_async(ProducerRecord::new("t", &[i])).await.unwrap();
    }
    let config = ConsumerConfig::default()
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest);
    let tp = TopicPartition::new("t", 0);
    let mut consumer = AsyncConsumer::new(Consumer::new(&broker, config));
    let assigned = tp.clone();
    consumer.run(move |c| c.assign(&[assigned])).await.unwrap();
    for _ in 0..2 {
        tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .unwrap()
            .unwrap();
    }
    drop(consumer);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let committed = broker.group_offsets("g").ok().and_then(|o| {
            o.into_iter()
                .find(|o| o.partition == tp)
                .map(|o| o.committed.offset)
        });
        if let Some(offset) = committed {
            assert_eq!(
                offset, 2,
                "the close commits past the records yielded, no further"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped consumer never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
