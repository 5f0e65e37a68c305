//! A broker directory written by the first broker build (registry version 1, before topics
//! had compaction settings) opens with its topics, configs and records, and is upgraded in
//! place on the next change. `tests/fixtures/broker_v1` was made by that build: topic
//! `orders` (3 partitions; retention.ms 3600000, segment.bytes 1048576, compression.type lz4,
//! flush.ms 250) holding `order-0` to `order-9` round-robin, and topic `events` (defaults).

use std::path::Path;
use std::time::Duration;

use rivulet::{Broker, CleanupPolicy, Consumer, ConsumerConfig, OffsetReset, TopicConfig, TopicPartition};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn check(broker: &Broker) {
    let topics = broker.list_topics();
    assert!(topics.contains(&"events".to_string()) && topics.contains(&"orders".to_string()));
    let orders = broker.describe_topic("orders").unwrap();
    assert_eq!(orders.partitions.len(), 3);
    let entries = orders.config.entries();
    for (k, v) in [
        ("retention.ms", "3600000"),
        ("segment.bytes", "1048576"),
        ("compression.type", "lz4"),
        ("flush.ms", "250"),
        ("cleanup.policy", "delete"),
    ] {
        assert!(entries.contains(&(k, v.to_string())), "{k}: {entries:?}");
    }
    assert_eq!(orders.config.log().get_cleanup_policy(), CleanupPolicy::Delete);
    let mut c = Consumer::new(
        broker,
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest),
    );
    c.assign(
        &(0..3)
            .map(|p| TopicPartition::new("orders", p))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut values = Vec::new();
    for _ in 0..10 {
        let records = c.poll(Duration::from_millis(10)).unwrap();
        values.extend(
            records
                .iter()
                .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
        );
    }
    values.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("order-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
}

#[test]
fn a_version_1_broker_directory_opens_and_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new("tests/fixtures/broker_v1"), dir.path());
    {
        let broker = Broker::open(dir.path()).unwrap();
        check(&broker);
        // A change rewrites the registry in the current version.
        broker
            .create_topic(
                "compacted",
                1,
                TopicConfig::default().cleanup_policy(CleanupPolicy::Compact),
            )
            .unwrap();
        broker.close().unwrap();
    }
    let broker = Broker::open(dir.path()).unwrap();
    check(&broker);
    assert_eq!(
        broker
            .describe_topic("compacted")
            .unwrap()
            .config
            .log()
            .get_cleanup_policy(),
        CleanupPolicy::Compact
    );
}
