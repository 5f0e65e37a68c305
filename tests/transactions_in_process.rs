//! The embedded API's transactions: a consume-transform-produce loop with
//! `TransactionalProducer` and a `read_committed` consumer copies every input record exactly
//! once, with some transactions aborted on purpose, and with the process SIGKILLed at each
//! named point of a commit (records written but nothing decided, the decision durable but no
//! marker written, one marker written but not the other) and started again.
//!
//! The child is this same test binary, started again with an environment variable set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, IsolationLevel, OffsetReset, ProducerRecord, TopicConfig,
    TopicPartition, TransactionalProducer,
};

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const GROUP: &str = "copier";
const RECORDS: usize = 200;
const CHILD_DIR: &str = "RIVULET_TXN_CHILD_DIR";
const TEST_NAME: &str = "a_copy_loop_killed_at_every_point_of_a_commit_copies_each_record_once";

fn open(dir: &std::path::Path) -> Broker {
    Broker::builder(dir).fsync(Fsync::Always).open().unwrap()
}

fn inputs() -> Vec<TopicPartition> {
    (0..2).map(|p| TopicPartition::new(INPUT, p)).collect()
}

/// Writes the input: `RECORDS` records over the input topic's two partitions.
fn prepare(broker: &Broker) {
    broker.create_topic(INPUT, 2, TopicConfig::default()).unwrap();
    broker.create_topic(OUTPUT, 2, TopicConfig::default()).unwrap();
    let producer = rivulet::Producer::new(broker);
    for i in 0..RECORDS {
        let value = format!("record-{i}");
        producer
            .send(ProducerRecord::new(INPUT, value.as_bytes()).partition((i % 2) as u32))
            .unwrap();
    }
}

/// Copies the input to the output in transactions of a few records, with the group's
/// positions committed in each, until the input is copied; every `abort_every`th transaction
/// is aborted and the consumer sent back to the group's committed offsets.
fn copy(broker: &Broker, abort_every: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // The producer first: it ends what an earlier one of its id left (aborting an open
    // transaction, finishing a decided one), so the consumer starts from stable offsets.
    let mut producer = TransactionalProducer::new(broker, "copier-1").unwrap();
    let config = ConsumerConfig::default()
        .group_id(GROUP)
        .enable_auto_commit(false)
        .auto_offset_reset(OffsetReset::Earliest)
        .isolation_level(IsolationLevel::ReadCommitted)
        .max_poll_records(7);
    let mut consumer = Consumer::new(broker, config);
    consumer.assign(&inputs()).unwrap();
    let mut transactions = 0;
    loop {
        assert!(std::time::Instant::now() < deadline, "the copy did not finish");
        let records = consumer.poll(Duration::from_millis(200)).unwrap();
        if records.is_empty() {
            let done = inputs().iter().all(|tp| {
                consumer.position(tp).unwrap()
                    >= broker.partition(INPUT, tp.partition).unwrap().high_watermark()
            });
            if done {
                return;
            }
            continue;
        }
        transactions += 1;
        let mut txn = producer.begin().unwrap();
        for r in &records {
            let out = format!("copied {}", std::str::from_utf8(r.value.unwrap()).unwrap());
            txn.send(ProducerRecord::new(OUTPUT, out.as_bytes()).partition(r.partition))
                .unwrap();
        }
        let positions: Vec<(TopicPartition, i64)> = inputs()
            .into_iter()
            .map(|tp| {
                let at = consumer.position(&tp).unwrap();
                (tp, at)
            })
            .collect();
        txn.send_offsets(GROUP, &positions).unwrap();
        if abort_every > 0 && transactions % abort_every == 0 {
            txn.abort().unwrap();
            // Back to what the group committed: the aborted records are copied again.
            let committed = consumer.committed(&inputs()).unwrap();
            for (tp, c) in inputs().iter().zip(committed) {
                consumer.seek(tp, c.map_or(0, |c| c.offset)).unwrap();
            }
            continue;
        }
        txn.commit().unwrap();
    }
}

/// What a `read_committed` reader (or a `read_uncommitted` one) finds in the output, counted.
fn output(broker: &Broker, isolation: IsolationLevel) -> BTreeMap<String, usize> {
    let config = ConsumerConfig::default()
        .auto_offset_reset(OffsetReset::Earliest)
        .isolation_level(isolation);
    let mut consumer = Consumer::new(broker, config);
    let outputs: Vec<TopicPartition> = (0..2).map(|p| TopicPartition::new(OUTPUT, p)).collect();
    consumer.assign(&outputs).unwrap();
    let mut seen = BTreeMap::new();
    loop {
        let records = consumer.poll(Duration::from_millis(200)).unwrap();
        if records.is_empty() {
            return seen;
        }
        for r in &records {
            *seen
                .entry(String::from_utf8(r.value.unwrap().to_vec()).unwrap())
                .or_default() += 1;
        }
    }
}

/// Checks the output holds every input record exactly once and the group's offsets are at
/// the input's end.
fn check(broker: &Broker) {
    let seen = output(broker, IsolationLevel::ReadCommitted);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "copied more than once: {twice:?}");
    assert_eq!(seen.len(), RECORDS, "every input record copied");
    for i in 0..RECORDS {
        assert!(
            seen.contains_key(&format!("copied record-{i}")),
            "record {i} is missing"
        );
    }
    let mut consumer = Consumer::new(broker, ConsumerConfig::default().group_id(GROUP));
    consumer.assign(&inputs()).unwrap();
    let committed = consumer.committed(&inputs()).unwrap();
    assert_eq!(
        committed
            .iter()
            .map(|c| c.as_ref().map(|c| c.offset))
            .collect::<Vec<_>>(),
        vec![Some(RECORDS as i64 / 2); 2]
    );
}

#[test]
fn a_copy_loop_with_aborted_transactions_copies_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    prepare(&broker);
    copy(&broker, 3);
    check(&broker);
    // A read_uncommitted reader sees the aborted copies too.
    let everything = output(&broker, IsolationLevel::ReadUncommitted);
    assert!(
        everything.values().any(|&n| n > 1),
        "the aborted copies are in the log"
    );
    assert_eq!(everything.len(), RECORDS);
}

#[test]
#[cfg(feature = "failpoints")]
fn a_copy_loop_killed_at_every_point_of_a_commit_copies_each_record_once() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let broker = open(std::path::Path::new(&dir));
        copy(&broker, 0);
        broker.close().unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        prepare(&broker);
        broker.close().unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    // Each point twice (the loop's transactions hold several partitions: the input's offsets
    // and the output's), then a run to the end.
    for point in ["before-prepare", "after-prepare", "between-markers"]
        .iter()
        .flat_map(|p| [*p, *p])
    {
        let mut child = Command::new(&exe)
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .env("RIVULET_PAUSE_AT", point)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The child's output is read on a thread of its own, so a child that never gets there
        // fails the test instead of hanging it.
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let wanted = format!("rivulet: paused at {point}");
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if line.contains(&wanted) {
                    let _ = tx.send(());
                    return;
                }
            }
        });
        let paused = rx.recv_timeout(Duration::from_secs(120)).is_ok();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(paused, "the child reached {point}");
    }
    let mut last = Command::new(&exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = last.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            last.kill().unwrap();
            panic!("the last run did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let broker = open(dir.path());
    check(&broker);
}

/// A member the group no longer counts (its partitions went to another member in a
/// rebalance it missed) cannot commit positions in a transaction: the zombie is fenced.
#[test]
fn offsets_sent_for_a_consumer_the_group_dropped_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    prepare(&broker);
    let config = || {
        ConsumerConfig::default()
            .group_id("fenced")
            .enable_auto_commit(false)
            .auto_offset_reset(OffsetReset::Earliest)
            .isolation_level(IsolationLevel::ReadCommitted)
            .max_poll_interval(Duration::from_secs(3))
    };
    // The producer (and the coordinator, with its topic) first: the first member's session
    // must not run out while they start.
    let mut producer = TransactionalProducer::new(&broker, "zombie").unwrap();
    let mut stalled = Consumer::new(&broker, config());
    stalled.subscribe([INPUT]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stalled.assignment().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the first member joins");
        stalled.poll(Duration::from_millis(100)).unwrap();
    }
    // Its own membership is good now (a poll just before renews its session).
    stalled.poll(Duration::ZERO).unwrap();
    let mut txn = producer.begin().unwrap();
    txn.send_offsets_for(&stalled, &[(TopicPartition::new(INPUT, 0), 1)])
        .unwrap();
    txn.commit().unwrap();

    // Another member joins while the first stops polling: past its max.poll.interval (3 s),
    // the group goes on without it.
    let mut taker = Consumer::new(&broker, config());
    taker.subscribe([INPUT]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while taker.assignment().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second member takes every partition"
        );
        taker.poll(Duration::from_millis(100)).unwrap();
    }
    let mut txn = producer.begin().unwrap();
    let refused = txn.send_offsets_for(&stalled, &[(TopicPartition::new(INPUT, 0), 2)]);
    assert!(
        matches!(
            refused,
            Err(rivulet::Error::UnknownMember { .. } | rivulet::Error::IllegalGeneration { .. })
        ),
        "{refused:?}"
    );
    txn.abort().unwrap();
    let committed = taker.committed(&[TopicPartition::new(INPUT, 0)]).unwrap();
    assert_eq!(
        committed[0].as_ref().map(|o| o.offset),
        Some(1),
        "the zombie's commit is not there"
    );
}
