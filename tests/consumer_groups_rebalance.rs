//! Subscribed consumers in a group, driven from one thread by alternating short polls, so each
//! step of a rebalance is deterministic: joins, leaves, a consumer that stops polling, commits
//! from an old generation, pattern subscriptions, and what the rebalance listener is told.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rivulet::group::Assignor;
use rivulet::{
    Broker, Consumer, ConsumerConfig, Error, OffsetReset, Producer, ProducerRecord, RebalanceListener,
    TopicConfig, TopicPartition,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    Lost(Vec<TopicPartition>),
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
    fn revoked(&self) -> BTreeSet<TopicPartition> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .flat_map(|e| match e {
                Event::Revoked(tps) => tps.clone(),
                _ => Vec::new(),
            })
            .collect()
    }
}

impl RebalanceListener for Recorder {
    fn on_partitions_assigned(&mut self, _: &mut Consumer, tps: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Assigned(tps.to_vec()));
    }
    fn on_partitions_revoked(&mut self, _: &mut Consumer, tps: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Revoked(tps.to_vec()));
    }
    fn on_partitions_lost(&mut self, _: &mut Consumer, tps: &[TopicPartition]) {
        self.0.lock().unwrap().push(Event::Lost(tps.to_vec()));
    }
}

fn config(assignor: Assignor) -> ConsumerConfig {
    ConsumerConfig::default()
        .group_id("g")
        .auto_offset_reset(OffsetReset::Earliest)
        .partition_assignment_strategy(&[assignor])
        .metadata_max_age(Duration::from_millis(10))
}

fn member(broker: &Broker, config: ConsumerConfig, topics: &[&str]) -> (Consumer, Recorder) {
    let mut c = Consumer::new(broker, config);
    let rec = Recorder::default();
    c.set_rebalance_listener(rec.clone());
    c.subscribe(topics.iter().copied()).unwrap();
    (c, rec)
}

/// Polls every consumer in turn until the group is stable with all of them holding a share
/// that covers `partitions` exactly once. Returns the records each poll returned.
fn settle(
    broker: &Broker,
    consumers: &mut [&mut Consumer],
    partitions: usize,
) -> Vec<Vec<(TopicPartition, i64)>> {
    let mut seen = vec![Vec::new(); consumers.len()];
    for _ in 0..500 {
        for (i, c) in consumers.iter_mut().enumerate() {
            let records = c.poll(Duration::from_millis(5)).unwrap();
            seen[i].extend(
                records
                    .iter()
                    .map(|r| (TopicPartition::new(r.topic, r.partition), r.offset)),
            );
        }
        let d = broker.describe_group("g").unwrap();
        let owned: Vec<TopicPartition> = consumers.iter().flat_map(|c| c.assignment()).collect();
        let distinct: BTreeSet<&TopicPartition> = owned.iter().collect();
        let generations: BTreeSet<i32> = consumers
            .iter()
            .filter_map(|c| c.group_metadata().map(|(_, g)| g))
            .collect();
        if d.state == rivulet::group::GroupState::Stable
            && d.members.len() == consumers.len()
            && owned.len() == partitions
            && distinct.len() == partitions
            && generations == BTreeSet::from([d.generation])
        {
            return seen;
        }
    }
    panic!("the group did not settle: {:#?}", broker.describe_group("g"));
}

#[test]
fn cooperative_rebalances_move_only_what_must_move() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 6, TopicConfig::default()).unwrap();
    let (mut a, ra) = member(&broker, config(Assignor::CooperativeSticky), &["t"]);
    let (mut b, rb) = member(&broker, config(Assignor::CooperativeSticky), &["t"]);
    settle(&broker, &mut [&mut a, &mut b], 6);
    assert_eq!((a.assignment().len(), b.assignment().len()), (3, 3));
    let (a_before, b_before) = (a.assignment(), b.assignment());
    ra.take();
    rb.take();

    // A third member: each of a and b gives up exactly one partition, and nothing else.
    let (mut c, rc) = member(&broker, config(Assignor::CooperativeSticky), &["t"]);
    settle(&broker, &mut [&mut a, &mut b, &mut c], 6);
    let (ka, kb) = (a.assignment(), b.assignment());
    assert_eq!((ka.len(), kb.len(), c.assignment().len()), (2, 2, 2));
    for (before, now, rec) in [(&a_before, &ka, &ra), (&b_before, &kb, &rb)] {
        let moved: BTreeSet<TopicPartition> = before.iter().filter(|tp| !now.contains(tp)).cloned().collect();
        assert_eq!(rec.revoked(), moved, "only the partition that moved is revoked");
        assert_eq!(moved.len(), 1);
        assert!(
            now.iter().all(|tp| before.contains(tp)),
            "nothing new for the old members"
        );
    }
    let got: BTreeSet<TopicPartition> = rc
        .take()
        .into_iter()
        .flat_map(|e| match e {
            Event::Assigned(tps) => tps,
            other => panic!("c was only assigned partitions, got {other:?}"),
        })
        .collect();
    assert_eq!(got, c.assignment().into_iter().collect());

    // A member dropped without closing leaves at once; its partitions go to the others.
    drop(c);
    ra.take();
    settle(&broker, &mut [&mut a, &mut b], 6);
    assert!(ra.revoked().is_empty(), "a keeps what it had");
    assert!(ka.iter().all(|tp| a.assignment().contains(tp)));
}

#[test]
fn eager_rebalances_revoke_everything_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 4, TopicConfig::default()).unwrap();
    let (mut a, ra) = member(&broker, config(Assignor::Range), &["t"]);
    settle(&broker, &mut [&mut a], 4);
    assert_eq!(
        ra.take(),
        vec![Event::Assigned(
            (0..4).map(|p| TopicPartition::new("t", p)).collect()
        )]
    );
    let (mut b, _rb) = member(&broker, config(Assignor::Range), &["t"]);
    settle(&broker, &mut [&mut a, &mut b], 4);
    let events = ra.take();
    assert_eq!(
        events[0],
        Event::Revoked((0..4).map(|p| TopicPartition::new("t", p)).collect())
    );
    assert_eq!(events[1], Event::Assigned(a.assignment()));
    assert_eq!(
        a.assignment(),
        [TopicPartition::new("t", 0), TopicPartition::new("t", 1)]
    );
}

#[test]
fn every_record_goes_to_one_member_and_a_stalled_member_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 4, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for i in 0..400u32 {
        producer
            .send(ProducerRecord::new("t", &i.to_be_bytes()).partition(i % 4))
            .unwrap();
    }
    let stalls = config(Assignor::CooperativeSticky).max_poll_interval(Duration::from_millis(300));
    let (mut a, _ra) = member(&broker, config(Assignor::CooperativeSticky), &["t"]);
    let (mut b, rb) = member(&broker, stalls, &["t"]);
    let seen = settle(&broker, &mut [&mut a, &mut b], 4);
    let b_had = b.assignment();
    assert_eq!(b_had.len(), 2);
    // Drain: each partition's records come from its one owner, in order, once.
    let mut by_a = seen[0].clone();
    let mut by_b = seen[1].clone();
    for _ in 0..50 {
        by_a.extend(
            a.poll(Duration::from_millis(1))
                .unwrap()
                .iter()
                .map(|r| (TopicPartition::new(r.topic, r.partition), r.offset)),
        );
        by_b.extend(
            b.poll(Duration::from_millis(1))
                .unwrap()
                .iter()
                .map(|r| (TopicPartition::new(r.topic, r.partition), r.offset)),
        );
    }
    assert_eq!(by_a.len() + by_b.len(), 400);
    let a_parts: BTreeSet<_> = by_a.iter().map(|(tp, _)| tp.clone()).collect();
    let b_parts: BTreeSet<_> = by_b.iter().map(|(tp, _)| tp.clone()).collect();
    assert!(a_parts.is_disjoint(&b_parts));
    b.commit().unwrap();
    let committed_by_b = broker.group_offsets("g").unwrap();

    // b stops polling. After its max.poll.interval a rebalance gives a everything.
    rb.take();
    for _ in 0..300 {
        a.poll(Duration::from_millis(10)).unwrap();
        if a.assignment().len() == 4 {
            break;
        }
    }
    assert_eq!(a.assignment().len(), 4, "the stalled member's partitions moved");
    // b's commit is now refused and changes nothing.
    let refused = b.commit_offsets(&[(b_had[0].clone(), 0, "")]);
    assert!(matches!(refused, Err(Error::UnknownMember { .. })), "{refused:?}");
    assert_eq!(broker.group_offsets("g").unwrap(), committed_by_b);
    // When b polls again it learns it lost its partitions, and rejoins.
    b.poll(Duration::from_millis(1)).unwrap();
    assert_eq!(rb.take()[0], Event::Lost(b_had.clone()));
    settle(&broker, &mut [&mut a, &mut b], 4);
}

#[test]
fn a_pattern_subscription_picks_up_new_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker
        .create_topic("orders-eu", 1, TopicConfig::default())
        .unwrap();
    broker
        .create_topic("payments", 1, TopicConfig::default())
        .unwrap();
    let mut c = Consumer::new(&broker, config(Assignor::CooperativeSticky));
    assert!(matches!(
        c.subscribe_pattern("orders-("),
        Err(Error::InvalidConfig { .. })
    ));
    c.subscribe_pattern("orders-.*").unwrap();
    settle(&broker, &mut [&mut c], 1);
    assert_eq!(c.assignment(), [TopicPartition::new("orders-eu", 0)]);
    broker
        .create_topic("orders-us", 2, TopicConfig::default())
        .unwrap();
    settle(&broker, &mut [&mut c], 3);
    assert_eq!(
        c.subscription(),
        BTreeSet::from(["orders-eu".to_string(), "orders-us".to_string()])
    );
    // Partitions added to a subscribed topic are picked up too.
    broker.add_partitions("orders-us", 3).unwrap();
    settle(&broker, &mut [&mut c], 4);
}

#[test]
fn subscribe_and_assign_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let mut c = Consumer::new(&broker, ConsumerConfig::default());
    assert!(matches!(c.subscribe(["t"]), Err(Error::NoGroup)));
    let mut c = Consumer::new(&broker, config(Assignor::Range));
    c.assign(&[TopicPartition::new("t", 0)]).unwrap();
    assert!(matches!(c.subscribe(["t"]), Err(Error::IllegalState(_))));
    c.assign(&[]).unwrap();
    c.subscribe(["t"]).unwrap();
    assert!(matches!(
        c.assign(&[TopicPartition::new("t", 0)]),
        Err(Error::IllegalState(_))
    ));
    c.unsubscribe().unwrap();
    c.assign(&[TopicPartition::new("t", 0)]).unwrap();
}

#[test]
fn a_restarted_group_resumes_from_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut consumed = Vec::new();
    {
        let broker = Broker::open(dir.path()).unwrap();
        broker.create_topic("t", 2, TopicConfig::default()).unwrap();
        let producer = Producer::new(&broker);
        for i in 0..100u32 {
            producer
                .send(ProducerRecord::new("t", &i.to_be_bytes()).partition(i % 2))
                .unwrap();
        }
        let mut c = Consumer::new(&broker, config(Assignor::CooperativeSticky).max_poll_records(30));
        c.subscribe(["t"]).unwrap();
        while consumed.len() < 60 {
            let records = c.poll(Duration::from_millis(50)).unwrap();
            consumed.extend(
                records
                    .iter()
                    .map(|r| u32::from_be_bytes(r.value.unwrap().try_into().unwrap())),
            );
        }
        c.close().unwrap(); // commits with auto-commit on
        broker.close().unwrap();
    }
    let broker = Broker::open(dir.path()).unwrap();
    let mut c = Consumer::new(&broker, config(Assignor::CooperativeSticky));
    c.subscribe(["t"]).unwrap();
    for _ in 0..100 {
        let records = c.poll(Duration::from_millis(20)).unwrap();
        consumed.extend(
            records
                .iter()
                .map(|r| u32::from_be_bytes(r.value.unwrap().try_into().unwrap())),
        );
        if consumed.len() >= 100 {
            break;
        }
    }
    consumed.sort();
    assert_eq!(consumed, (0..100).collect::<Vec<_>>(), "none skipped, none twice");
}

#[test]
fn a_member_blocked_in_poll_joins_a_rebalance_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    broker.create_topic("t", 2, TopicConfig::default()).unwrap();
    let (mut a, _ra) = member(&broker, config(Assignor::CooperativeSticky), &["t"]);
    settle(&broker, &mut [&mut a], 2);
    // a waits in a long poll on an empty topic. b's join needs a to join too; the coordinator
    // wakes a, so the group settles long before a's poll would time out by itself.
    let waiting = std::thread::spawn(move || {
        let records = a.poll(Duration::from_secs(30)).unwrap();
        (a, records.len())
    });
    // Let a reach its wait (had it not, it would see the rebalance on entering poll anyway).
    std::thread::sleep(Duration::from_millis(200));
    let (mut b, _rb) = member(&broker, config(Assignor::CooperativeSticky), &["t"]);
    let mut b_got = 0;
    for _ in 0..500 {
        b.poll(Duration::from_millis(5)).unwrap();
        b_got = b.assignment().len();
        if b_got == 1 {
            break;
        }
    }
    assert_eq!(b_got, 1, "b got a partition while a was still inside one poll");
    // A record on each partition ends a's poll.
    let producer = Producer::new(&broker);
    for p in 0..2 {
        producer
            .send(ProducerRecord::new("t", b"x").partition(p))
            .unwrap();
    }
    let (a, n) = waiting.join().unwrap();
    assert_eq!(n, 1, "a returns the record of the partition it kept");
    assert_eq!(a.assignment().len(), 1);
}
