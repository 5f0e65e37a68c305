//! A consumer dropped while its thread panics does not auto-commit: the records its last
//! `poll` returned were probably not all processed, and committing them would lose them.
//! Dropped normally, it still commits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet::{
    Broker, Consumer, ConsumerConfig, Fsync, OffsetReset, Producer, ProducerRecord, RebalanceListener,
    TopicConfig, TopicPartition,
};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn broker_with_jobs(dir: &std::path::Path) -> Result<Broker> {
    let broker = Broker::builder(dir).fsync(Fsync::Never).open()?;
    broker.create_topic("jobs", 1, TopicConfig::default())?;
    let producer = Producer::new(&broker);
    for i in 0..10u8 {
        producer.send(ProducerRecord::new("jobs", &[i]))?;
    }
    Ok(broker)
}

fn config() -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id("workers")
        .auto_offset_reset(OffsetReset::Earliest)
}

/// Polls the ten jobs and panics on job 3, dropping the consumer while unwinding.
fn work_and_panic(mut consumer: Consumer) {
    let outcome = catch_unwind(AssertUnwindSafe(move || {
        let mut polled = 0;
        while polled < 10 {
            let records = consumer.poll(Duration::from_secs(1)).expect("poll");
            for r in &records {
                assert_ne!(r.value, Some(&[3u8][..]), "job 3 fails");
                polled += 1;
            }
        }
    }));
    assert!(outcome.is_err(), "the worker panicked");
}

fn committed(broker: &Broker) -> Result<Option<i64>> {
    Ok(broker
        .group_offsets("workers")?
        .first()
        .map(|o| o.committed.offset))
}

#[test]
fn an_assigned_consumer_dropped_in_a_panic_commits_nothing() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = broker_with_jobs(dir.path())?;
    let mut consumer = Consumer::new(&broker, config());
    consumer.assign(&[TopicPartition::new("jobs", 0)])?;
    work_and_panic(consumer);
    assert_eq!(committed(&broker)?, None, "no job was committed as done");
    Ok(())
}

/// Records the listener calls it gets, by name.
struct Told(Arc<Mutex<Vec<&'static str>>>);

impl RebalanceListener for Told {
    fn on_partitions_revoked(&mut self, _: &mut Consumer, _: &[TopicPartition]) {
        self.0.lock().unwrap().push("revoked");
    }
    fn on_partitions_lost(&mut self, _: &mut Consumer, _: &[TopicPartition]) {
        self.0.lock().unwrap().push("lost");
    }
}

#[test]
fn a_subscribed_consumer_dropped_in_a_panic_commits_nothing_and_leaves() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = broker_with_jobs(dir.path())?;
    let told = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = Consumer::new(&broker, config());
    consumer.set_rebalance_listener(Told(told.clone()));
    consumer.subscribe(["jobs"])?;
    work_and_panic(consumer);
    assert_eq!(committed(&broker)?, None, "no job was committed as done");
    assert_eq!(*told.lock().unwrap(), ["lost"]);
    assert!(
        broker.describe_group("workers")?.members.is_empty(),
        "it left the group"
    );
    Ok(())
}

#[test]
fn a_consumer_dropped_normally_still_commits() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = broker_with_jobs(dir.path())?;
    let mut consumer = Consumer::new(&broker, config());
    consumer.subscribe(["jobs"])?;
    let mut polled = 0;
    while polled < 10 {
        polled += consumer.poll(Duration::from_secs(1))?.len();
    }
    drop(consumer);
    assert_eq!(committed(&broker)?, Some(10));
    Ok(())
}
