//! The eager `sticky` assignor is sticky between in-process consumers: they revoke everything
//! before joining, so, as Kafka's `StickyAssignor` members do, they send their previous
//! assignment and its generation as user data, and only the partitions balance requires move.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rivulet::group::Assignor;
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig, TopicPartition};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn member(broker: &Broker) -> Result<Consumer> {
    let config = ConsumerConfig::default()
        .group_id("g")
        .partition_assignment_strategy(&[Assignor::Sticky]);
    let mut c = Consumer::new(broker, config);
    c.subscribe(["t"])?;
    Ok(c)
}

/// Polls until every consumer has `each` partitions; then who owns what.
fn settle(consumers: &mut [Consumer], each: usize) -> Result<BTreeMap<TopicPartition, usize>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !consumers.iter().all(|c| c.assignment().len() == each) {
        for c in consumers.iter_mut() {
            c.poll(Duration::from_millis(10))?;
        }
        assert!(Instant::now() < deadline, "never settled");
    }
    Ok(consumers
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.assignment().into_iter().map(move |tp| (tp, i)))
        .collect())
}

#[test]
fn a_third_member_takes_two_partitions_and_nothing_else_moves() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("t", 6, TopicConfig::default())?;
    let mut consumers = vec![member(&broker)?, member(&broker)?];
    let before = settle(&mut consumers, 3)?;
    consumers.push(member(&broker)?);
    let after = settle(&mut consumers, 2)?;
    let moved = after.iter().filter(|(tp, owner)| before[*tp] != **owner).count();
    assert_eq!(moved, 2, "before {before:?}, after {after:?}");
    Ok(())
}

#[test]
fn when_a_member_leaves_only_its_partitions_move() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("t", 6, TopicConfig::default())?;
    let mut consumers = vec![member(&broker)?, member(&broker)?, member(&broker)?];
    let before = settle(&mut consumers, 2)?;
    consumers.remove(1).close()?;
    let after = settle(&mut consumers, 3)?;
    // Consumers 0 and 2 are now 0 and 1.
    for (tp, owner) in &before {
        match owner {
            0 => assert_eq!(after[tp], 0, "{tp} moved from the first member"),
            2 => assert_eq!(after[tp], 1, "{tp} moved from the last member"),
            _ => {}
        }
    }
    Ok(())
}
