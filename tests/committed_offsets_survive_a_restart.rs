//! Committed offsets are stored in `__consumer_offsets`: a consumer of the same group resumes
//! exactly where the group committed, across a broker restart; auto-commit gives at-least-once
//! delivery; groups' offsets can be listed, reset and deleted.

use std::collections::BTreeSet;
use std::time::Duration;

use rivulet::{
    Broker, Consumer, ConsumerConfig, Error, Fsync, OffsetReset, Producer, ProducerRecord, TopicConfig,
    TopicPartition,
};

fn fill(dir: &std::path::Path) {
    let broker = Broker::builder(dir).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 2, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for i in 0..100u32 {
        producer
            .send(ProducerRecord::new("t", format!("{i}").as_bytes()).partition(i % 2))
            .unwrap();
    }
    broker.close().unwrap();
}

fn consumer(broker: &Broker, config: ConsumerConfig) -> Consumer {
    let mut c = Consumer::new(
        broker,
        config
            .auto_offset_reset(OffsetReset::Earliest)
            .max_poll_records(20),
    );
    c.assign(&[TopicPartition::new("t", 0), TopicPartition::new("t", 1)])
        .unwrap();
    c
}

fn values(c: &mut Consumer) -> Vec<u32> {
    c.poll(Duration::from_millis(100))
        .unwrap()
        .iter()
        .map(|r| std::str::from_utf8(r.value.unwrap()).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_restarted_consumer_resumes_exactly_where_its_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let mut seen = Vec::new();
    {
        let broker = Broker::open(dir.path()).unwrap();
        let mut c = consumer(
            &broker,
            ConsumerConfig::default().group_id("g").enable_auto_commit(false),
        );
        seen.extend(values(&mut c));
        seen.extend(values(&mut c));
        c.commit().unwrap();
        drop(c);
        broker.close().unwrap();
    }
    let broker = Broker::open(dir.path()).unwrap();
    let mut c = consumer(
        &broker,
        ConsumerConfig::default().group_id("g").enable_auto_commit(false),
    );
    loop {
        let v = values(&mut c);
        if v.is_empty() {
            break;
        }
        seen.extend(v);
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..100).collect::<Vec<_>>(),
        "no record skipped, none twice"
    );
    let committed = c.committed(&[TopicPartition::new("t", 0)]).unwrap();
    assert!(committed[0].as_ref().is_some_and(|o| o.offset > 0));
}

#[test]
fn auto_commit_delivers_at_least_once_even_when_a_consumer_vanishes() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let broker = Broker::open(dir.path()).unwrap();
    let config = ConsumerConfig::default()
        .group_id("g")
        .auto_commit_interval(Duration::ZERO);
    let mut first = Vec::new();
    let mut c = consumer(&broker, config.clone());
    first.extend(values(&mut c)); // 20
    first.extend(values(&mut c)); // 20 more; the first 20 were committed at this poll's start
    // The consumer disappears without running its drop (no final commit).
    std::mem::forget(c);
    let mut c = consumer(&broker, config);
    let mut second = Vec::new();
    loop {
        let v = values(&mut c);
        if v.is_empty() {
            break;
        }
        second.extend(v);
    }
    let all: BTreeSet<u32> = first.iter().chain(&second).copied().collect();
    assert_eq!(all, (0..100).collect(), "nothing lost");
    let redelivered = first.iter().filter(|v| second.contains(v)).count();
    assert_eq!(redelivered, 20, "what was returned but not committed comes again");
}

#[test]
fn group_offsets_are_listed_reset_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let broker = Broker::open(dir.path()).unwrap();
    let mut c = Consumer::new(&broker, ConsumerConfig::default().group_id("billing"));
    let (p0, p1) = (TopicPartition::new("t", 0), TopicPartition::new("t", 1));
    c.assign(&[p0.clone(), p1.clone()]).unwrap();
    c.commit_offsets(&[(p0.clone(), 10, "checkpoint A"), (p1.clone(), 50, "")])
        .unwrap();
    assert_eq!(
        broker.list_groups().unwrap(),
        [("billing".to_string(), rivulet::group::GroupState::Empty)]
    );
    let offsets = broker.group_offsets("billing").unwrap();
    assert_eq!(offsets.len(), 2);
    assert_eq!((offsets[0].committed.offset, offsets[0].lag), (10, 40));
    assert_eq!(offsets[0].committed.metadata, "checkpoint A");
    assert_eq!((offsets[1].committed.offset, offsets[1].lag), (50, 0));

    broker.reset_group_offsets("billing", &[(p0.clone(), 0)]).unwrap();
    assert_eq!(broker.group_offsets("billing").unwrap()[0].committed.offset, 0);
    assert!(matches!(
        broker.reset_group_offsets("billing", &[(TopicPartition::new("t", 9), 0)]),
        Err(Error::UnknownPartition { .. })
    ));
    broker.delete_group("billing").unwrap();
    assert!(broker.list_groups().unwrap().is_empty());
    drop(c);
    // Deletion survives a restart (the drop above committed nothing: positions were never set).
    broker.close().unwrap();
    drop(broker);
    let broker = Broker::open(dir.path()).unwrap();
    assert!(broker.list_groups().unwrap().is_empty());

    let mut no_group = Consumer::new(&broker, ConsumerConfig::default());
    assert!(matches!(no_group.commit(), Err(Error::NoGroup)));
}

#[test]
fn the_offsets_topic_cannot_be_written_or_deleted_by_users() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .reset_group_offsets("g", &[(TopicPartition::new("t", 0), 3)])
        .unwrap();
    let producer = Producer::new(&broker);
    let err = producer
        .send(ProducerRecord::new("__consumer_offsets", b"junk"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTopicName { .. }), "{err}");
    assert!(
        producer
            .send_batch(
                "__consumer_offsets",
                Some(0),
                &[ProducerRecord::new("x", b"junk")]
            )
            .is_err()
    );
    assert!(matches!(
        broker.delete_topic("__consumer_offsets"),
        Err(Error::InvalidTopicName { .. })
    ));
    assert_eq!(broker.group_offsets("g").unwrap()[0].committed.offset, 3);
}

#[test]
fn an_unreadable_record_in_the_offsets_topic_is_skipped_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    {
        let broker = Broker::open(dir.path()).unwrap();
        broker
            .reset_group_offsets("g", &[(TopicPartition::new("t", 0), 7)])
            .unwrap();
        // Low-level access bypasses the producer's guard: junk the store cannot parse.
        let mut junk = rivulet::storage::BatchBuilder::new(rivulet::storage::Compression::None);
        junk.push(1, Some(b"not a key"), Some(b"not a value"), &[]);
        broker
            .partition("__consumer_offsets", 0)
            .unwrap()
            .append(junk.finish().unwrap())
            .unwrap();
        broker.close().unwrap();
    }
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(broker.group_offsets("g").unwrap()[0].committed.offset, 7);
}

#[test]
fn the_offsets_topic_is_compacted_and_still_recovers_every_group() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());
    let tp0 = TopicPartition::new("t", 0);
    {
        let broker = Broker::open(dir.path()).unwrap();
        assert_eq!(
            broker
                .describe_topic(rivulet::group::OFFSETS_TOPIC)
                .ok()
                .map(|d| d.config.log().get_cleanup_policy()),
            None,
            "the offsets topic is made on first use"
        );
        for round in 0..50 {
            broker
                .reset_group_offsets("kept", &[(tp0.clone(), round)])
                .unwrap();
            broker
                .reset_group_offsets("dropped", &[(tp0.clone(), round)])
                .unwrap();
        }
        broker.delete_group("dropped").unwrap();
        let offsets = broker.partition(rivulet::group::OFFSETS_TOPIC, 0).unwrap();
        assert_eq!(
            offsets.config().get_cleanup_policy(),
            rivulet::CleanupPolicy::Compact
        );
        let before = offsets.size_bytes();
        offsets.roll().unwrap();
        let stats = offsets.compact().unwrap().expect("the commits were cleaned");
        // 100 commits and a tombstone: the latest of "kept" and the (recent) tombstone stay.
        assert_eq!(stats.records_kept, 2, "{stats:?}");
        assert!(offsets.size_bytes() < before / 10);
        broker.close().unwrap();
    }
    let broker = Broker::open(dir.path()).unwrap();
    let kept = broker.group_offsets("kept").unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].committed.offset, 49);
    assert!(broker.group_offsets("dropped").unwrap().is_empty());
    assert_eq!(
        broker.list_groups().unwrap(),
        [("kept".to_string(), rivulet::group::GroupState::Empty)]
    );
}
