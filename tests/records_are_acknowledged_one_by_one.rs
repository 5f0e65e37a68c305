//! Per-record acknowledgement and wakeups of the blocking consumer: with
//! `enable.auto.offset.store` off, commits (explicit, automatic, at close) carry the offsets
//! stored with `store_offset`, not the positions `poll` reached; `commit_record` commits one
//! record's partition; stored offsets of partitions given up are forgotten; a `Wakeup` from
//! another thread ends a poll waiting for records or for a rebalance.

use std::sync::mpsc;
use std::time::Duration;

use rivulet::{
    Broker, Consumer, ConsumerConfig, Error, OffsetReset, Producer, ProducerRecord, TopicConfig,
    TopicPartition,
};

const TIMEOUT: Duration = Duration::from_secs(30);

fn broker_with(topic: &str, partitions: u32, records: u8) -> (tempfile::TempDir, Broker) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic(topic, partitions, TopicConfig::default())
        .unwrap();
    let producer = Producer::new(&broker);
    for p in 0..partitions {
        for i in 0..records {
            producer
                .send(ProducerRecord::new(topic, &[i]).partition(p))
                .unwrap();
        }
    }
    (dir, broker)
}

fn committed(broker: &Broker, group: &str, tp: &TopicPartition) -> Option<i64> {
    broker
        .group_offsets(group)
        .unwrap()
        .into_iter()
        .find(|o| o.partition == *tp)
        .map(|o| o.committed.offset)
}

fn manual_store(group: &str) -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_offset_store(false)
}

#[test]
fn commits_carry_the_stored_offsets_not_the_positions() {
    let (_dir, broker) = broker_with("jobs", 1, 10);
    let tp = TopicPartition::new("jobs", 0);
    let mut consumer = Consumer::new(
        &broker,
        manual_store("workers").auto_commit_interval(Duration::ZERO),
    );
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let records = consumer.poll(TIMEOUT).unwrap();
    assert_eq!(records.len(), 10);
    // Nothing acknowledged: a commit commits nothing.
    consumer.commit().unwrap();
    assert_eq!(committed(&broker, "workers", &tp), None);
    for r in records.iter().take(4) {
        consumer.store_offset(&r).unwrap();
    }
    // Auto-commit (due at every poll here) carries the stored offset.
    assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());
    assert_eq!(committed(&broker, "workers", &tp), Some(4));
    let sixth = records.iter().nth(5).unwrap().detach();
    consumer.store_offset(&sixth).unwrap();
    drop(records);
    // So does the close.
    drop(consumer);
    assert_eq!(committed(&broker, "workers", &tp), Some(6));

    // A new consumer of the group resumes at the first record not acknowledged.
    let mut consumer = Consumer::new(&broker, manual_store("workers"));
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let first = consumer.poll(TIMEOUT).unwrap().iter().next().unwrap().offset;
    assert_eq!(first, 6);
}

#[test]
fn a_record_of_a_partition_given_up_is_refused_and_its_stored_offset_forgotten() {
    let (_dir, broker) = broker_with("jobs", 2, 3);
    let (p0, p1) = (TopicPartition::new("jobs", 0), TopicPartition::new("jobs", 1));
    let mut consumer = Consumer::new(&broker, manual_store("workers").enable_auto_commit(false));
    consumer.assign(&[p0.clone(), p1.clone()]).unwrap();
    let records: Vec<_> = consumer
        .poll(TIMEOUT)
        .unwrap()
        .iter()
        .map(|r| r.detach())
        .collect();
    assert_eq!(records.len(), 6);
    let of = |tp: &TopicPartition| records.iter().find(|r| r.partition == tp.partition).unwrap();
    consumer.store_offset(of(&p0)).unwrap();
    consumer.store_offset(of(&p1)).unwrap();
    // p1 is given up: its stored offset goes, and a record of it is refused.
    consumer.assign(std::slice::from_ref(&p0)).unwrap();
    assert!(matches!(
        consumer.store_offset(of(&p1)),
        Err(Error::IllegalState(_))
    ));
    // Taken again, it starts from scratch: nothing stored before counts.
    consumer.assign(&[p0.clone(), p1.clone()]).unwrap();
    consumer.commit().unwrap();
    assert_eq!(committed(&broker, "workers", &p0), Some(1));
    assert_eq!(committed(&broker, "workers", &p1), None);
}

#[test]
fn commit_record_commits_that_partition_past_the_record() {
    let (_dir, broker) = broker_with("jobs", 2, 5);
    let group = "one-by-one";
    let config = ConsumerConfig::default()
        .group_id(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false);
    let mut consumer = Consumer::new(&broker, config);
    consumer
        .assign(&[TopicPartition::new("jobs", 0), TopicPartition::new("jobs", 1)])
        .unwrap();
    let records: Vec<_> = consumer
        .poll(TIMEOUT)
        .unwrap()
        .iter()
        .map(|r| r.detach())
        .collect();
    let third_of_p1 = records.iter().filter(|r| r.partition == 1).nth(2).unwrap();
    consumer.commit_record(third_of_p1).unwrap();
    assert_eq!(
        committed(&broker, group, &TopicPartition::new("jobs", 1)),
        Some(3)
    );
    assert_eq!(committed(&broker, group, &TopicPartition::new("jobs", 0)), None);
}

#[test]
fn a_wakeup_ends_a_poll_waiting_for_records() {
    let (_dir, broker) = broker_with("quiet", 1, 0);
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default());
    consumer.assign(&[TopicPartition::new("quiet", 0)]).unwrap();
    // Raised before the poll: the next poll ends at once, and only that one.
    consumer.wakeup_handle().wakeup();
    assert!(matches!(
        consumer.poll(Duration::from_secs(3600)),
        Err(Error::Wakeup)
    ));
    assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());

    assert_a_wakeup_ends_its_poll(consumer, Duration::from_millis(50));
}

#[test]
fn a_wakeup_ends_a_poll_waiting_for_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    // A new group waits a minute for more members before its first rebalance.
    let broker = Broker::builder(dir.path())
        .group_initial_rebalance_delay(Duration::from_secs(60))
        .open()
        .unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let mut consumer = Consumer::new(&broker, ConsumerConfig::default().group_id("slow-start"));
    consumer.subscribe(["t"]).unwrap();
    assert_a_wakeup_ends_its_poll(consumer, Duration::from_millis(100));
}

/// Polls `consumer` for an hour on a thread, raises its wakeup after `after`, and asserts
/// the poll ends with `Error::Wakeup` (within `TIMEOUT`).
fn assert_a_wakeup_ends_its_poll(mut consumer: Consumer, after: Duration) {
    let wakeup = consumer.wakeup_handle();
    let (done, ended) = mpsc::channel();
    let poller = std::thread::spawn(move || {
        let result = consumer.poll(Duration::from_secs(3600));
        done.send(matches!(result, Err(Error::Wakeup))).unwrap();
    });
    std::thread::sleep(after);
    wakeup.wakeup();
    assert!(
        ended.recv_timeout(TIMEOUT).expect("the poll ended"),
        "ended by the wakeup"
    );
    poller.join().unwrap();
}

#[test]
fn a_rebalance_commits_the_stored_offsets_of_what_it_takes_away() {
    let (_dir, broker) = broker_with("jobs", 2, 5);
    let mut first = Consumer::new(&broker, manual_store("shared"));
    first.subscribe(["jobs"]).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut records = Vec::new();
    while records.len() < 10 {
        assert!(std::time::Instant::now() < deadline);
        records.extend(
            first
                .poll(Duration::from_millis(50))
                .unwrap()
                .iter()
                .map(|r| r.detach()),
        );
    }
    // Only the first record of each partition is acknowledged.
    for p in 0..2 {
        let r = records.iter().find(|r| r.partition == p).unwrap();
        first.store_offset(r).unwrap();
    }
    // A second member joins: the first gives a partition up, committing what it stored for
    // it (1), not its position (5).
    let mut second = Consumer::new(&broker, manual_store("shared"));
    second.subscribe(["jobs"]).unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while second.assignment().is_empty() || first.assignment().len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the group did not rebalance"
        );
        first.poll(Duration::from_millis(10)).unwrap();
        second.poll(Duration::from_millis(10)).unwrap();
    }
    let moved = &second.assignment()[0];
    assert_eq!(committed(&broker, "shared", moved), Some(1));
}

#[test]
fn consumer_settings_by_kafka_names_behave_as_the_setters() {
    let (_dir, broker) = broker_with("jobs", 1, 3);
    let mut config = ConsumerConfig::default();
    for (name, value) in [
        ("group.id", "by-name"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.offset.store", "false"),
        ("enable.auto.commit", "false"),
        ("max.poll.records", "2"),
        ("isolation.level", "read_committed"),
        ("partition.assignment.strategy", "cooperative-sticky"),
    ] {
        config.set(name, value).unwrap();
    }
    // Bad input is refused and changes nothing.
    let before = format!("{config:?}");
    assert!(config.set("max.poll.records", "0").is_err());
    assert!(config.set("auto.offset.reset", "smallest").is_err());
    assert!(config.set("bootstrap.servers", "localhost:9092").is_err());
    assert_eq!(format!("{config:?}"), before);

    let tp = TopicPartition::new("jobs", 0);
    let mut consumer = Consumer::new(&broker, config);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let records: Vec<_> = consumer
        .poll(TIMEOUT)
        .unwrap()
        .iter()
        .map(|r| r.detach())
        .collect();
    assert_eq!(records.len(), 2, "max.poll.records");
    consumer.store_offset(&records[0]).unwrap();
    consumer.commit().unwrap();
    assert_eq!(
        committed(&broker, "by-name", &tp),
        Some(1),
        "enable.auto.offset.store=false"
    );
}
