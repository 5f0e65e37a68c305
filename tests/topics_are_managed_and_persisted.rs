//! Topic admin on a broker: create, list, describe, add partitions, alter config, delete; all of
//! it persisted and recovered on reopen. Bad requests are clear errors that change nothing.

use std::time::Duration;

use rivulet::{Broker, Error, Fsync, LogConfig, TopicConfig};

fn config() -> TopicConfig {
    TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never))
}

#[test]
fn topics_survive_a_reopen_with_their_partitions_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("orders", 3, config()).unwrap();
    broker.create_topic("audit.log_v2", 1, config()).unwrap();
    broker.add_partitions("orders", 5).unwrap();
    broker
        .alter_topic_config_entries(
            "orders",
            &[("retention.ms", "60000"), ("compression.type", "zstd")],
        )
        .unwrap();
    broker
        .partition("orders", 4)
        .unwrap()
        .append(one_batch())
        .unwrap();
    assert_eq!(broker.list_topics(), ["audit.log_v2", "orders"]);
    broker.close().unwrap();
    drop(broker);

    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.list_topics(), ["audit.log_v2", "orders"]);
    let d = broker.describe_topic("orders").unwrap();
    assert_eq!(d.partitions.len(), 5);
    assert_eq!(d.partitions[4].log_end_offset, 1);
    assert_eq!(d.partitions[4].high_watermark, 1);
    assert!(
        d.config
            .entries()
            .contains(&("retention.ms", "60000".to_string()))
    );
    assert!(
        d.config
            .entries()
            .contains(&("compression.type", "zstd".to_string()))
    );
    // The partition logs themselves run with the altered config.
    assert_eq!(
        broker.partition("orders", 0).unwrap().config(),
        d.config.log().clone()
    );
    assert_eq!(
        d.config.log().clone().retention_ms(Some(Duration::from_secs(60))),
        d.config.log().clone()
    );

    broker.delete_topic("orders").unwrap();
    assert_eq!(broker.list_topics(), ["audit.log_v2"]);
    assert!(!dir.path().join("orders-0").exists());
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.list_topics(), ["audit.log_v2"]);
}

fn one_batch() -> rivulet::storage::RecordBatch {
    let mut b = rivulet::storage::BatchBuilder::new(rivulet::storage::Compression::None);
    b.push(1, None, Some(b"x"), &[]);
    b.finish().unwrap()
}

#[test]
fn bad_topic_requests_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 2, config()).unwrap();
    for name in ["", ".", "..", "has space", "ünïcode", &"x".repeat(250), "a/b"] {
        let err = broker.create_topic(name, 1, config()).unwrap_err();
        assert!(matches!(err, Error::InvalidTopicName { .. }), "{name:?}: {err}");
    }
    broker.create_topic(&"x".repeat(249), 1, config()).unwrap();
    assert!(matches!(
        broker.create_topic("t", 1, config()),
        Err(Error::TopicExists { .. })
    ));
    assert!(matches!(
        broker.create_topic("u", 0, config()),
        Err(Error::InvalidPartitions { count: 0, .. })
    ));
    assert!(matches!(
        broker.create_topic("u", 10_001, config()),
        Err(Error::InvalidPartitions { .. })
    ));
    assert!(matches!(
        broker.delete_topic("nope"),
        Err(Error::UnknownTopic { .. })
    ));
    assert!(matches!(
        broker.describe_topic("nope"),
        Err(Error::UnknownTopic { .. })
    ));
    assert!(matches!(
        broker.add_partitions("t", 2),
        Err(Error::InvalidPartitions { .. })
    ));
    assert!(matches!(
        broker.partition("t", 2),
        Err(Error::UnknownPartition {
            partition: 2,
            partitions: 2,
            ..
        })
    ));
    let before = broker.describe_topic("t").unwrap();
    let err = broker
        .alter_topic_config_entries("t", &[("retention.ms", "1000"), ("segment.bytes", "1")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                name: "segment.bytes",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(broker.describe_topic("t").unwrap(), before, "all or nothing");
    assert_eq!(broker.list_topics().len(), 2);
    assert!(!dir.path().join("u-0").exists());
}

#[test]
fn a_second_broker_on_the_same_directory_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    assert!(matches!(Broker::open(dir.path()), Err(Error::Locked { .. })));
    broker.close().unwrap();
    Broker::open(dir.path()).unwrap();
}

#[test]
fn a_foreign_directory_is_refused_and_leftover_partitions_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README"), b"not a broker").unwrap();
    assert!(matches!(Broker::open(dir.path()), Err(Error::NotALog { .. })));
    assert!(!dir.path().join(".lock").exists());

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("kept", 1, config()).unwrap();
    broker.close().unwrap();
    drop(broker);
    // What a crash in the middle of creating topic "ghost" leaves: a partition log that the
    // registry does not name.
    rivulet::storage::PartitionLog::open(dir.path().join("ghost-0"), LogConfig::default())
        .unwrap()
        .close()
        .unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    assert!(!dir.path().join("ghost-0").exists());
    assert!(dir.path().join("kept-0").exists());
    assert_eq!(broker.list_topics(), ["kept"]);
}

#[test]
fn partitions_added_while_the_registry_cannot_be_written_never_appear() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    // The registry is written to `topics.tmp` and renamed: a directory there fails the write.
    std::fs::create_dir(dir.path().join("topics.tmp")).unwrap();
    assert!(broker.add_partitions("t", 3).is_err());
    assert_eq!(broker.describe_topic("t").unwrap().partitions.len(), 1);
    assert!(
        broker.partition("t", 1).is_err(),
        "a partition no registry names was writable"
    );
    assert!(!dir.path().join("t-1").exists() && !dir.path().join("t-2").exists());
    std::fs::remove_dir(dir.path().join("topics.tmp")).unwrap();
    broker.add_partitions("t", 3).unwrap();
    broker.close().unwrap();
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.describe_topic("t").unwrap().partitions.len(), 3);
}
