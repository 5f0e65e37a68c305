//! `group.initial.rebalance.delay.ms`: the first member of an empty group is not answered at
//! once; the group waits for others (each newcomer extending the wait, up to the rebalance
//! timeout), so members started together share the first generation instead of rebalancing
//! once per member.

use std::time::{Duration, Instant};

use rivulet::group::{GroupCoordinator, JoinGroup, Joined, Pending};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const DELAY: Duration = Duration::from_millis(400);

fn join() -> JoinGroup {
    JoinGroup {
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        session_timeout: Duration::from_secs(10),
        rebalance_timeout: Duration::from_secs(10),
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Vec::new())],
        notify: None,
    }
}

/// Ticks the coordinator, as a front end does, until the reply comes.
fn wait(
    c: &GroupCoordinator,
    pending: &Pending<rivulet::Result<Joined>>,
) -> rivulet::Result<(Joined, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        c.tick();
        if let Some(reply) = pending.wait_until(Instant::now() + Duration::from_millis(10)) {
            return reply.map(|j| (j, Instant::now()));
        }
        assert!(Instant::now() < deadline, "no reply");
    }
}

#[test]
fn the_first_member_waits_and_each_newcomer_extends_the_wait() -> Result {
    let c = GroupCoordinator::new().with_initial_rebalance_delay(DELAY);
    let start = Instant::now();
    let first = c.join_group("g", join());
    std::thread::sleep(DELAY * 3 / 4);
    let second = c.join_group("g", join());
    let (a, a_at) = wait(&c, &first)?;
    let (b, _) = wait(&c, &second)?;
    assert_eq!((a.generation, b.generation), (1, 1), "one generation for both");
    assert_eq!(a.members.len().max(b.members.len()), 2);
    // The second join extended the wait by a whole delay past the first one's end.
    assert!(a_at - start >= DELAY * 3 / 2, "answered after {:?}", a_at - start);
    Ok(())
}

#[test]
fn without_a_delay_the_first_member_is_answered_at_once() -> Result {
    let c = GroupCoordinator::new();
    let start = Instant::now();
    let (joined, at) = wait(&c, &c.join_group("g", join()))?;
    assert_eq!(joined.generation, 1);
    assert!(at - start < DELAY / 2, "answered after {:?}", at - start);
    Ok(())
}

#[test]
fn two_consumers_started_together_rebalance_once() -> Result {
    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path())
        .fsync(Fsync::Never)
        .group_initial_rebalance_delay(DELAY)
        .open()?;
    broker.create_topic("t", 4, TopicConfig::default())?;
    let config = ConsumerConfig::default().group_id("g");
    let mut a = Consumer::new(&broker, config.clone());
    let mut b = Consumer::new(&broker, config);
    a.subscribe(["t"])?;
    b.subscribe(["t"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.assignment().len() + b.assignment().len() < 4
        || a.assignment().is_empty()
        || b.assignment().is_empty()
    {
        a.poll(Duration::from_millis(20))?;
        b.poll(Duration::from_millis(20))?;
        assert!(Instant::now() < deadline, "no assignment");
    }
    assert_eq!(a.group_metadata().map(|m| m.1), Some(1));
    assert_eq!(b.group_metadata().map(|m| m.1), Some(1));
    assert_eq!(broker.describe_group("g")?.generation, 1);
    Ok(())
}
