//! A static member (`group.instance.id`) that restarts takes its old place without a
//! rebalance, as in Kafka, whether it led the group or not and whatever its assignor: the
//! generation stays, it gets its partitions back, and the other member keeps consuming.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rivulet::group::Assignor;
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, RebalanceListener, TopicConfig, TopicPartition};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// Counts the partitions revoked from its consumer.
struct Revocations(Arc<Mutex<usize>>);

impl RebalanceListener for Revocations {
    fn on_partitions_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        *self.0.lock().unwrap() += partitions.len();
    }
}

fn member(broker: &Broker, instance: &str, assignor: Assignor) -> Result<Consumer> {
    let config = ConsumerConfig::default()
        .group_id("g")
        .group_instance_id(instance)
        .partition_assignment_strategy(&[assignor])
        .metadata_max_age(Duration::from_millis(50));
    let mut c = Consumer::new(broker, config);
    c.subscribe(["t"])?;
    Ok(c)
}

/// Polls every consumer until each has `each` partitions.
fn settle(consumers: &mut [&mut Consumer], each: usize) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for c in consumers.iter_mut() {
            c.poll(Duration::from_millis(10))?;
        }
        if consumers.iter().all(|c| c.assignment().len() == each) {
            // A cooperative round that gave partitions up is followed by one more.
            for c in consumers.iter_mut() {
                c.poll(Duration::from_millis(10))?;
            }
            if consumers.iter().all(|c| c.assignment().len() == each) {
                return Ok(());
            }
        }
        assert!(Instant::now() < deadline, "never settled");
    }
}

/// Restarts `restarted` of the two static members `a` and `b` and checks nothing moved.
fn restart_without_rebalance(assignor: Assignor, restart_leader: bool) -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("t", 4, TopicConfig::default())?;
    let mut a = member(&broker, "a", assignor)?;
    a.poll(Duration::from_millis(100))?; // a joins first and leads
    let mut b = member(&broker, "b", assignor)?;
    let revoked = Arc::new(Mutex::new(0));
    settle(&mut [&mut a, &mut b], 2)?;
    // Partitions added: both members join again listing the partitions they own, which is
    // the metadata the coordinator keeps for them.
    broker.add_partitions("t", 6)?;
    settle(&mut [&mut a, &mut b], 3)?;
    let before = broker.describe_group("g")?;
    let leader_instance = before
        .members
        .iter()
        .find(|m| m.member_id == before.leader)
        .and_then(|m| m.group_instance_id.clone());
    assert_eq!(leader_instance.as_deref(), Some("a"));

    let (gone, mut stays) = if restart_leader { (a, b) } else { (b, a) };
    let owned = gone.assignment();
    let kept = stays.assignment();
    stays.set_rebalance_listener(Revocations(revoked.clone()));
    drop(gone); // a static member does not leave
    let mut back = member(&broker, if restart_leader { "a" } else { "b" }, assignor)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.assignment().is_empty() {
        back.poll(Duration::from_millis(10))?;
        stays.poll(Duration::from_millis(10))?;
        assert!(Instant::now() < deadline, "the restarted member got nothing");
    }
    for _ in 0..5 {
        back.poll(Duration::from_millis(10))?;
        stays.poll(Duration::from_millis(10))?;
    }
    let after = broker.describe_group("g")?;
    assert_eq!(after.generation, before.generation, "no rebalance");
    assert_eq!(back.assignment(), owned, "the same partitions came back");
    assert_eq!(stays.assignment(), kept);
    assert_eq!(*revoked.lock().unwrap(), 0, "the other member gave nothing up");
    Ok(())
}

#[test]
fn a_restarted_static_leader_under_range_does_not_rebalance() -> Result {
    restart_without_rebalance(Assignor::Range, true)
}

#[test]
fn a_restarted_static_follower_under_cooperative_sticky_does_not_rebalance() -> Result {
    restart_without_rebalance(Assignor::CooperativeSticky, false)
}

#[test]
fn a_restarted_static_leader_under_cooperative_sticky_does_not_rebalance() -> Result {
    restart_without_rebalance(Assignor::CooperativeSticky, true)
}
