//! `max.poll.interval.ms` is the time between calls to `poll`, as in Kafka: a consumer
//! blocked in a `poll` longer than the interval, on an idle topic, is polling all along and
//! keeps its membership and partitions. One that stops calling `poll` still loses them.

use std::time::{Duration, Instant};

use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const INTERVAL: Duration = Duration::from_millis(300);

fn joined(broker: &Broker) -> Result<Consumer> {
    let config = ConsumerConfig::default()
        .group_id("g")
        .max_poll_interval(INTERVAL);
    let mut c = Consumer::new(broker, config);
    c.subscribe(["idle"])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.assignment().len() < 2 {
        c.poll(Duration::from_millis(20))?;
        assert!(Instant::now() < deadline, "never assigned");
    }
    Ok(c)
}

#[test]
fn a_poll_longer_than_the_interval_keeps_the_partitions() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("idle", 2, TopicConfig::default())?;
    let mut c = joined(&broker)?;
    let generation = c.group_metadata().expect("joined").1;
    for _ in 0..2 {
        assert!(c.poll(INTERVAL * 4)?.is_empty());
        // Another member's request expires what is due in the group.
        broker.coordinator().tick();
    }
    c.poll(Duration::from_millis(10))?;
    assert_eq!(c.group_metadata().expect("still a member").1, generation);
    assert_eq!(c.assignment().len(), 2);
    assert_eq!(broker.describe_group("g")?.members.len(), 1);
    Ok(())
}

#[test]
fn a_consumer_that_stops_polling_still_loses_its_membership() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("idle", 2, TopicConfig::default())?;
    let c = joined(&broker)?;
    std::thread::sleep(INTERVAL * 2);
    broker.coordinator().tick();
    assert!(broker.describe_group("g")?.members.is_empty());
    drop(c);
    Ok(())
}
