//! Clusters of more than three nodes, in one process on loopback: of four founders, three
//! vote in the controller's group and one follows it as a learner; a node started with seeds
//! joins a running cluster, learns its topics, reads and writes the partitions it holds no
//! replica of at their leaders, holds replicas of topics made after it, and restarts without
//! its seeds. A join that would reuse a taken node id is refused and writes
//! nothing.
#![cfg(feature = "cluster")]

#[path = "common/three_nodes.rs"]
mod three_nodes;

use three_nodes::{eventually, found, free_addrs, read_all};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rivulet::cluster::{Cluster, ClusterBuilder, Timing};
use rivulet::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig, TopicPartition};

const READY: Duration = Duration::from_secs(60);

/// Faster timing than the default, as every node of a cluster may be given.
fn brisk() -> Timing {
    Timing {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
    }
}

fn join(
    id: u64,
    dir: &std::path::Path,
    listen: SocketAddr,
    seeds: &[SocketAddr],
) -> rivulet::Result<Cluster> {
    ClusterBuilder::new(id, dir)
        .peer_listen(listen)
        .seeds(seeds.iter().copied())
        .start()
}

/// Sends `n` records to `topic` at `node`; returns them by (partition, offset).
fn produce(node: &Cluster, topic: &str, first: usize, n: usize) -> BTreeMap<(u32, i64), Vec<u8>> {
    let producer = Producer::new(node.broker());
    let mut acked = BTreeMap::new();
    for i in first..first + n {
        let value = format!("{topic}-{i}");
        let m = producer
            .send(ProducerRecord::new(topic, value.as_bytes()).key(format!("k{i}").as_bytes()))
            .expect("an acknowledged record");
        acked.insert((m.partition, m.offset), value.into_bytes());
    }
    acked
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

#[test]
fn of_four_founders_three_vote_for_the_controller_and_one_follows() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let voters: Vec<(u64, SocketAddr)> = (1..=4).zip(free_addrs(4)).collect();
    let nodes: Vec<Cluster> = (0..4)
        .map(|i| {
            ClusterBuilder::new(i as u64 + 1, dirs[i].path())
                .voters(voters.iter().copied())
                .timing(brisk())
                .start()
                .expect("the node starts")
        })
        .collect();
    for n in &nodes {
        n.wait_ready(READY).expect("the node is ready");
    }
    for n in &nodes {
        eventually(
            &format!("every node follows the controller ({:?})", n.controller_quorum()),
            || {
                let q = n.controller_quorum();
                sorted(q.voters.clone()) == [1, 2, 3] && q.learners == [4]
            },
        );
        let leader = n.controller_quorum().leader.expect("a controller");
        assert!(
            (1..=3).contains(&leader),
            "a voter leads the controller, not {leader}"
        );
        eventually("every node registered", || n.nodes().len() == 4);
    }

    // A learner's topic change goes through the controller; every node applies it.
    nodes[3]
        .broker()
        .create_topic("wide", 2, TopicConfig::default().replication_factor(4))
        .unwrap();
    for n in &nodes {
        eventually("the topic everywhere", || {
            n.broker().list_topics().contains(&"wide".to_string())
        });
        n.wait_ready(READY).unwrap();
    }
    assert_eq!(nodes[0].replica_state("wide", 0).unwrap().replicas.len(), 4);
    let acked = produce(&nodes[2], "wide", 0, 40);
    for n in &nodes {
        eventually("every node reads every record", || {
            read_all(n, "wide", 2) == acked
        });
    }
    for n in nodes {
        n.shutdown().unwrap();
    }
}

#[test]
fn a_node_joins_through_a_seed_and_restarts_without_it() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs = free_addrs(5);
    let voters: Vec<(u64, SocketAddr)> = (1..=3).zip(addrs.iter().copied()).collect();
    let nodes: Vec<Cluster> = (0..3)
        .map(|i| found(i as u64 + 1, dirs[i].path(), &voters))
        .collect();
    for n in &nodes {
        n.wait_ready(READY).expect("the node is ready");
    }
    nodes[0]
        .broker()
        .create_topic("before", 2, TopicConfig::default())
        .unwrap();
    let mut before = produce(&nodes[0], "before", 0, 20);

    // Bad starts change nothing.
    let fresh = tempfile::tempdir().unwrap();
    let refused = |r: rivulet::Result<Cluster>| r.expect_err("refused").to_string();
    let both = ClusterBuilder::new(9, fresh.path())
        .voters(voters.iter().copied())
        .seeds([addrs[0]])
        .start();
    assert!(refused(both).contains("not both"));
    let slow_heartbeat = Timing {
        heartbeat: Duration::from_secs(1),
        ..Timing::default()
    };
    let bad_timing = ClusterBuilder::new(9, fresh.path())
        .voters([(9, addrs[4])])
        .timing(slow_heartbeat)
        .start();
    assert!(refused(bad_timing).contains("longer than the heartbeat"));
    let no_listen = ClusterBuilder::new(9, fresh.path()).seeds([addrs[0]]).start();
    assert!(refused(no_listen).contains("peer listen address"));
    let founder = refused(join(2, fresh.path(), addrs[4], &[addrs[1]]));
    assert!(founder.contains("founding voter"), "{founder}");
    assert!(
        std::fs::read_dir(fresh.path()).unwrap().next().is_none(),
        "a refused join writes nothing"
    );

    // Node 4 joins through node 2: it learns the nodes and topics and follows the controller.
    let fourth = join(4, dirs[3].path(), addrs[3], &[addrs[1]]).expect("node 4 joins");
    fourth.wait_ready(READY).expect("node 4 is ready");
    for n in nodes.iter().chain([&fourth]) {
        eventually("every node knows node 4", || n.nodes().iter().any(|i| i.id == 4));
    }
    eventually("node 4 follows the controller", || {
        fourth.controller_quorum().learners == [4]
    });
    eventually("node 4 has the topics", || {
        fourth.broker().list_topics().contains(&"before".to_string())
    });
    // It holds no replica of the topic made before it: its appends go to the leaders.
    eventually("node 4 hears who leads", || {
        fourth.replica_state("before", 0).is_ok()
    });
    assert!(!fourth.replica_state("before", 0).unwrap().replicas.contains(&4));
    before.extend(produce(&fourth, "before", 20, 10));
    eventually("node 1 reads node 4's records", || {
        read_all(&nodes[0], "before", 2) == before
    });
    // And its consumers read the partitions at their leaders.
    eventually("node 4 reads every record", || {
        read_all(&fourth, "before", 2) == before
    });
    let mut latest = Consumer::new(
        fourth.broker(),
        ConsumerConfig::default().auto_offset_reset(OffsetReset::Latest),
    );
    let p0 = TopicPartition::new("before", 0);
    latest.assign(std::slice::from_ref(&p0)).unwrap();
    let end = before
        .keys()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| o + 1)
        .max()
        .unwrap_or(0);
    assert_eq!(
        latest.position(&p0).unwrap(),
        end,
        "the end, as the leader has it"
    );
    latest.seek_to_beginning(std::slice::from_ref(&p0)).unwrap();
    assert_eq!(latest.position(&p0).unwrap(), 0);

    // Another node may not take node 4's id.
    let taken = refused(join(4, fresh.path(), addrs[4], &[addrs[0]]));
    assert!(taken.contains("taken"), "{taken}");

    // A topic made now can be held by node 4 too.
    fourth
        .broker()
        .create_topic("after", 2, TopicConfig::default().replication_factor(4))
        .unwrap();
    for n in nodes.iter().chain([&fourth]) {
        eventually("the topic everywhere", || {
            n.broker().list_topics().contains(&"after".to_string())
        });
        n.wait_ready(READY).unwrap();
    }
    assert_eq!(
        sorted(fourth.replica_state("after", 1).unwrap().replicas),
        [1, 2, 3, 4]
    );
    let mut after = produce(&fourth, "after", 0, 30);
    eventually("node 4 reads its replicas", || {
        read_all(&fourth, "after", 2) == after
    });

    // Node 4 restarts from its data directory alone (its seeds are not asked: one that is
    // gone does not matter); not as a founder, and a founder does not restart as a joiner.
    fourth.shutdown().unwrap();
    after.extend(produce(&nodes[2], "after", 30, 30));
    let as_founder = ClusterBuilder::new(4, dirs[3].path())
        .voters(voters.iter().copied())
        .start();
    assert!(refused(as_founder).contains("joined its cluster"));
    let founder_dir = tempfile::tempdir().unwrap();
    found(9, founder_dir.path(), &[(9, addrs[4])]).shutdown().unwrap();
    let founder_joins = refused(join(9, founder_dir.path(), addrs[4], &[addrs[0]]));
    assert!(founder_joins.contains("founding voter"), "{founder_joins}");
    let fourth = ClusterBuilder::new(4, dirs[3].path())
        .start()
        .expect("node 4 restarts");
    fourth.wait_ready(READY).expect("node 4 is ready again");
    eventually("node 4 catches up", || read_all(&fourth, "after", 2) == after);
    fourth.shutdown().unwrap();
    let unreachable = free_addrs(1);
    let fourth = join(4, dirs[3].path(), addrs[3], &unreachable).expect("node 4 restarts");
    fourth.wait_ready(READY).expect("node 4 is ready again");
    for n in nodes.into_iter().chain([fourth]) {
        n.shutdown().unwrap();
    }
}
