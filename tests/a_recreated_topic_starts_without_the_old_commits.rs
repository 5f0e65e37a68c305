//! Deleting a topic deletes every group's committed offsets of it, as Kafka does: a topic
//! created again under the name is consumed from its start, lag is measured against the new
//! log, and other topics' commits stay, across a restart too.

use std::time::{Duration, Instant};

use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, OffsetReset, Producer, ProducerRecord, TopicConfig,
    TopicPartition,
};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn produce(broker: &Broker, topic: &str, n: u8) -> Result {
    let producer = Producer::new(broker);
    for i in 0..n {
        producer.send(ProducerRecord::new(topic, &[i]))?;
    }
    Ok(())
}

fn commit(broker: &Broker, group: &str, topic: &str, offset: i64) -> Result {
    let mut c = Consumer::new(broker, ConsumerConfig::default().group_id(group));
    let tp = TopicPartition::new(topic, 0);
    c.assign(std::slice::from_ref(&tp))?;
    c.commit_offsets(&[(tp, offset, "")])?;
    Ok(())
}

#[test]
fn a_recreated_topic_is_consumed_from_its_start() -> Result {
    let dir = tempfile::tempdir()?;
    {
        let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
        broker.create_topic("t", 1, TopicConfig::default())?;
        broker.create_topic("u", 1, TopicConfig::default())?;
        produce(&broker, "t", 10)?;
        produce(&broker, "u", 5)?;
        commit(&broker, "g", "t", 10)?;
        commit(&broker, "h", "t", 5)?;
        commit(&broker, "h", "u", 3)?;

        broker.delete_topic("t")?;
        assert!(broker.group_offsets("g")?.is_empty());
        let h = broker.group_offsets("h")?;
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].partition.topic.as_str(), h[0].committed.offset), ("u", 3));

        broker.create_topic("t", 1, TopicConfig::default())?;
        produce(&broker, "t", 3)?;
        let config = ConsumerConfig::default()
            .group_id("g")
            .auto_offset_reset(OffsetReset::Earliest);
        let mut c = Consumer::new(&broker, config);
        c.subscribe(["t"])?;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < 3 && Instant::now() < deadline {
            seen.extend(c.poll(Duration::from_millis(100))?.iter().map(|r| r.offset));
        }
        assert_eq!(seen, [0, 1, 2], "records 0-2 of the new topic are consumed");
        c.close()?;
        let g = broker.group_offsets("g")?;
        assert_eq!((g[0].committed.offset, g[0].lag), (3, 0));
        broker.close()?;
    }
    let broker = Broker::open(dir.path())?;
    let g = broker.group_offsets("g")?;
    assert_eq!((g.len(), g[0].committed.offset), (1, 3));
    let h = broker.group_offsets("h")?;
    assert_eq!((h.len(), h[0].partition.topic.as_str()), (1, "u"));
    Ok(())
}

#[test]
fn a_consumer_still_holding_a_deleted_topic_does_not_commit_it() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("t", 1, TopicConfig::default())?;
    produce(&broker, "t", 10)?;
    let tp = TopicPartition::new("t", 0);
    let mut c = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    c.assign(std::slice::from_ref(&tp))?;
    c.seek(&tp, 10)?;
    broker.delete_topic("t")?;
    broker.create_topic("t", 1, TopicConfig::default())?;
    c.commit()?;
    assert!(
        broker.group_offsets("g")?.is_empty(),
        "the old log's position was not committed"
    );
    Ok(())
}

#[test]
fn a_deletion_whose_commit_tombstones_fail_keeps_the_topic_for_a_retry() -> Result {
    let dir = tempfile::tempdir()?;
    let fs = rivulet::storage::FaultyFs::new();
    let broker = Broker::builder(dir.path())
        .fs(std::sync::Arc::new(fs.clone()))
        .open()?;
    broker.create_topic("t", 1, TopicConfig::default())?;
    produce(&broker, "t", 10)?;
    commit(&broker, "g", "t", 10)?;
    // The sync of the tombstones fails: the topic must not be gone with its commits left.
    fs.fail_sync_after(0);
    assert!(broker.delete_topic("t").is_err());
    fs.clear_faults();
    drop(broker);
    let broker = Broker::open(dir.path())?;
    assert!(
        broker.list_topics().contains(&"t".to_string()),
        "the topic went, its commits stayed"
    );
    broker.delete_topic("t")?;
    broker.create_topic("t", 1, TopicConfig::default())?;
    assert!(
        broker.group_offsets("g")?.is_empty(),
        "the recreated topic inherited commits"
    );
    Ok(())
}
