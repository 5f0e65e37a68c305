//! Three cluster nodes in one process, on loopback: topics made on one node exist on all,
//! records produced at any node are acknowledged once a majority holds them and are read at
//! every node, a stopped leader is replaced without losing an acknowledged record, and a
//! restarted node catches up.
#![cfg(feature = "cluster")]

#[path = "common/three_nodes.rs"]
mod three_nodes;

use three_nodes::{eventually, eventually_some, found, free_addrs, read_all};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rivulet::cluster::{Cluster, ClusterBuilder};
use rivulet::{Consumer, ConsumerConfig, OffsetReset, Producer, ProducerRecord, TopicConfig, TopicPartition};

const READY: Duration = Duration::from_secs(30);

#[test]
fn three_nodes_replicate_topics_and_records_through_a_failover_and_a_restart() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs = free_addrs(3);
    let voters: Vec<(u64, SocketAddr)> = (1..=3).zip(addrs).collect();
    let mut nodes: Vec<Option<Cluster>> = (0..3)
        .map(|i| Some(found(i as u64 + 1, dirs[i].path(), &voters)))
        .collect();
    for n in nodes.iter().flatten() {
        n.wait_ready(READY).expect("the node is ready");
    }
    let node = |nodes: &Vec<Option<Cluster>>, i: usize| nodes[i].clone().expect("a running node");
    assert_eq!(node(&nodes, 0).nodes().len(), 3, "every node registered");

    // A topic made at node 1 exists at every node, each partition on all three.
    node(&nodes, 0)
        .broker()
        .create_topic("orders", 3, TopicConfig::default())
        .unwrap();
    for i in 0..3 {
        let n = node(&nodes, i);
        eventually("the topic everywhere", || {
            n.broker().list_topics().contains(&"orders".to_string())
        });
        n.wait_ready(READY).unwrap();
    }
    let state = node(&nodes, 0).replica_state("orders", 0).unwrap();
    assert_eq!(state.replicas.len(), 3);
    // Transactions: the node that leads the state topic's partition coordinates them; an
    // in-process transactional producer at any node reaches it. A transaction committed at a
    // node that neither coordinates transactions nor groups writes its records and its
    // group's offsets; one aborted writes neither.
    let coordinator = eventually_some("a transaction coordinator", || {
        let s = node(&nodes, 0).replica_state("__transaction_state", 0).ok()?;
        s.leader.map(|l| l as usize - 1)
    });
    let groups_at = node(&nodes, 0)
        .replica_state("__consumer_offsets", 0)
        .unwrap()
        .leader
        .map(|l| l as usize - 1);
    let other = (0..3)
        .find(|&i| i != coordinator && Some(i) != groups_at)
        .unwrap_or((coordinator + 1) % 3);
    let mut tx = eventually_some("the coordinator ready", || {
        rivulet::TransactionalProducer::new(node(&nodes, other).broker(), "tx").ok()
    });
    let mut t = tx.begin().unwrap();
    let sent = t
        .send(ProducerRecord::new("orders", b"in a transaction").partition(0))
        .unwrap();
    t.send_offsets("tx-group", &[(TopicPartition::new("orders", 1), 7)])
        .unwrap();
    t.commit().unwrap();
    let mut t = tx.begin().unwrap();
    let aborted = t
        .send(ProducerRecord::new("orders", b"aborted").partition(0))
        .unwrap();
    t.send_offsets("tx-group", &[(TopicPartition::new("orders", 1), 9)])
        .unwrap();
    t.abort().unwrap();
    let in_group = |n: &Cluster| {
        Consumer::new(n.broker(), ConsumerConfig::default().group_id("tx-group"))
            .committed(&[TopicPartition::new("orders", 1)])
            .ok()
            .and_then(|c| c[0].as_ref().map(|o| o.offset))
    };
    for i in 0..3 {
        assert_eq!(
            in_group(&node(&nodes, i)),
            Some(7),
            "node {}: the committed offsets",
            i + 1
        );
    }
    // A new producer of the id at another node fences the first one.
    let mut fencer = rivulet::TransactionalProducer::new(node(&nodes, coordinator).broker(), "tx").unwrap();
    let mut stale = tx.begin().unwrap();
    let fenced = stale.send(ProducerRecord::new("orders", b"fenced").partition(0));
    assert!(fenced.is_err(), "a fenced producer's send: {fenced:?}");
    drop(stale);
    let mut t = fencer.begin().unwrap();
    t.send(ProducerRecord::new("orders", b"by the new producer").partition(0))
        .unwrap();
    t.abort().unwrap();
    let committed_reader = ConsumerConfig::default()
        .isolation_level(rivulet::IsolationLevel::ReadCommitted)
        .auto_offset_reset(OffsetReset::Earliest);
    let mut reader = Consumer::new(node(&nodes, other).broker(), committed_reader);
    reader.assign(&[TopicPartition::new("orders", 0)]).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains(&b"in a transaction".to_vec()) && Instant::now() < deadline {
        for r in reader.poll(Duration::from_millis(200)).unwrap().iter() {
            seen.push(r.value.unwrap_or_default().to_vec());
        }
    }
    assert!(
        seen.contains(&b"in a transaction".to_vec()),
        "a committed transaction's record is read at another node"
    );
    drop(reader);

    // A partition held by one node alone is read committed at the others too: committed
    // records, not aborted ones nor an open transaction's, where read_uncommitted sees all.
    node(&nodes, 0)
        .broker()
        .create_topic("solo", 1, TopicConfig::default().replication_factor(1))
        .unwrap();
    let holder = eventually_some("the topic's replica", || {
        let s = node(&nodes, 0).replica_state("solo", 0).ok()?;
        Some(s.replicas[0] as usize - 1)
    });
    let elsewhere = (holder + 1) % 3;
    eventually("the topic at every node", || {
        (0..3).all(|i| {
            node(&nodes, i)
                .broker()
                .list_topics()
                .contains(&"solo".to_string())
        })
    });
    for (value, commit) in [(&b"a"[..], true), (b"b", false), (b"c", true)] {
        let mut t = fencer.begin().unwrap();
        t.send(ProducerRecord::new("solo", value)).unwrap();
        match commit {
            true => t.commit().unwrap(),
            false => t.abort().unwrap(),
        }
    }
    let mut open = fencer.begin().unwrap();
    open.send(ProducerRecord::new("solo", b"open")).unwrap();
    let read = |isolation: rivulet::IsolationLevel, want: usize| {
        let config = ConsumerConfig::default()
            .isolation_level(isolation)
            .auto_offset_reset(OffsetReset::Earliest);
        let mut reader = Consumer::new(node(&nodes, elsewhere).broker(), config);
        reader.assign(&[TopicPartition::new("solo", 0)]).unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for r in reader.poll(Duration::from_millis(100)).unwrap().iter() {
                seen.push(r.value.unwrap_or_default().to_vec());
            }
            if seen.len() >= want {
                // Whatever else would come comes within a few more polls.
                for _ in 0..5 {
                    for r in reader.poll(Duration::from_millis(100)).unwrap().iter() {
                        seen.push(r.value.unwrap_or_default().to_vec());
                    }
                }
                break;
            }
        }
        seen
    };
    let to_vecs = |v: &[&[u8]]| v.iter().map(|b| b.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        read(rivulet::IsolationLevel::ReadCommitted, 2),
        to_vecs(&[b"a", b"c"]),
        "read committed at node {} (the partition is at node {})",
        elsewhere + 1,
        holder + 1
    );
    assert_eq!(
        read(rivulet::IsolationLevel::ReadUncommitted, 4),
        to_vecs(&[b"a", b"b", b"c", b"open"])
    );
    open.abort().unwrap();

    // A producer's batch that would begin a transaction its coordinator does not have open
    // (a late batch after its abort, at a partition it had not written) is refused by the
    // partition's leader, and leaves no transaction open there.
    let (producer_id, epoch) = fencer.producer_id_and_epoch();
    let late = |p: u32| {
        let mut b = rivulet::storage::BatchBuilder::new(rivulet::storage::Compression::None)
            .producer(producer_id, epoch, 0)
            .transactional(true);
        b.push(0, Some(b"k"), Some(b"late"), &[]);
        let log = node(&nodes, elsewhere).broker().partition("orders", p).unwrap();
        (log.append(b.finish().unwrap()), log)
    };
    let (refused, log) = late(2);
    assert!(
        matches!(refused, Err(rivulet::Error::Producer { .. })),
        "a batch outside an open transaction: {refused:?}"
    );
    assert_eq!(
        log.last_stable_offset(),
        log.high_watermark(),
        "no transaction left open"
    );
    assert!(state.leader.is_some() && state.epoch >= 1, "{state:?}");

    // Records produced at node 2 are acknowledged and read at node 3.
    let mut acked = BTreeMap::new();
    acked.insert((sent.partition, sent.offset), b"in a transaction".to_vec());
    // Read uncommitted, the aborted record is there too (its markers are not records).
    acked.insert((aborted.partition, aborted.offset), b"aborted".to_vec());
    acked.insert(
        (aborted.partition, aborted.offset + 2),
        b"by the new producer".to_vec(),
    );
    let producer = Producer::new(node(&nodes, 1).broker());
    for i in 0..60 {
        let value = format!("order-{i}");
        let m = producer
            .send(ProducerRecord::new("orders", value.as_bytes()).key(format!("k{i}").as_bytes()))
            .expect("an acknowledged record");
        acked.insert((m.partition, m.offset), value.into_bytes());
    }
    let third = node(&nodes, 2);
    eventually("node 3 reads every record", || {
        read_all(&third, "orders", 3) == acked
    });

    // The leader of partition 0 stops; the others carry on and lose nothing.
    let leader = state.leader.unwrap() as usize - 1;
    nodes[leader].take().unwrap().shutdown().expect("the node stops");
    let survivor = (0..3).find(|&i| i != leader).unwrap();
    // Once the survivors have a leader of their own. (A batch forwarded to the old leader as
    // it stopped may fail with an unknown outcome, as it must: it may have been taken.)
    eventually("a new leader", || {
        node(&nodes, survivor)
            .replica_state("orders", 0)
            .is_ok_and(|s| s.leader.is_some_and(|l| l as usize - 1 != leader))
    });
    let producer = Producer::new(node(&nodes, survivor).broker());
    for i in 60..90 {
        let value = format!("order-{i}");
        let m = producer
            .send(ProducerRecord::new("orders", value.as_bytes()).key(format!("k{i}").as_bytes()))
            .expect("an acknowledged record after the failover");
        acked.insert((m.partition, m.offset), value.into_bytes());
    }
    for i in (0..3).filter(|&i| i != leader) {
        let n = node(&nodes, i);
        eventually("a survivor reads every record", || {
            read_all(&n, "orders", 3) == acked
        });
    }

    // The stopped node comes back with its directory and catches up.
    let back = found(leader as u64 + 1, dirs[leader].path(), &voters);
    back.wait_ready(READY).unwrap();
    eventually("the restarted node reads every record", || {
        read_all(&back, "orders", 3) == acked
    });
    nodes[leader] = Some(back);

    // A data directory refuses another node id, and another voters list.
    let other = ClusterBuilder::new(9, dirs[0].path())
        .voters([(9, voters[0].1)])
        .start();
    assert!(other.is_err(), "a directory of node 1 started as node 9");

    for n in nodes.into_iter().flatten() {
        n.shutdown().unwrap();
    }
}

/// The partitions each consumer holds, if together they hold every partition of a topic of
/// `partitions` partitions, each once, and each consumer some.
fn settled(consumers: &[Consumer], partitions: u32) -> Option<BTreeMap<u32, usize>> {
    let mut owners = BTreeMap::new();
    for (i, c) in consumers.iter().enumerate() {
        let held = c.assignment();
        if held.is_empty() {
            return None;
        }
        for tp in held {
            if owners.insert(tp.partition, i).is_some() {
                return None;
            }
        }
    }
    (owners.len() == partitions as usize).then_some(owners)
}

/// Polls every consumer in turn until they share the topic's partitions; returns the owner
/// of each partition.
fn share(consumers: &mut [Consumer], partitions: u32) -> BTreeMap<u32, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for c in consumers.iter_mut() {
            c.poll(Duration::from_millis(50)).unwrap();
        }
        if let Some(owners) = settled(consumers, partitions) {
            return owners;
        }
        assert!(
            Instant::now() < deadline,
            "the consumers did not share the partitions"
        );
    }
}

#[test]
fn consumers_at_every_node_share_one_group_and_its_commits() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let voters: Vec<(u64, SocketAddr)> = (1..=3).zip(free_addrs(3)).collect();
    let nodes: Vec<Cluster> = (0..3)
        .map(|i| found(i as u64 + 1, dirs[i].path(), &voters))
        .collect();
    for n in &nodes {
        n.wait_ready(READY).expect("the node is ready");
    }
    nodes[0]
        .broker()
        .create_topic("jobs", 6, TopicConfig::default())
        .unwrap();
    for n in &nodes {
        eventually("the topic everywhere", || {
            n.broker().list_topics().contains(&"jobs".to_string())
        });
        n.wait_ready(READY).unwrap();
    }
    let producer = Producer::new(nodes[0].broker());
    let mut sent = BTreeMap::new();
    for i in 0..60 {
        let value = format!("job-{i}");
        let m = producer
            .send(ProducerRecord::new("jobs", value.as_bytes()).key(format!("k{i}").as_bytes()))
            .unwrap();
        sent.insert((m.partition, m.offset), value.into_bytes());
    }

    // One member at each node: whichever node coordinates groups, they form one group.
    let config = ConsumerConfig::default()
        .group_id("workers")
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false);
    let mut consumers: Vec<Consumer> = nodes
        .iter()
        .map(|n| Consumer::new(n.broker(), config.clone()))
        .collect();
    for c in &mut consumers {
        c.subscribe(["jobs"]).unwrap();
    }
    let owners = share(&mut consumers, 6);

    // Each reads its own partitions from the start, and commits.
    let mut read = BTreeMap::new();
    for (i, c) in consumers.iter_mut().enumerate() {
        let held = c.assignment();
        c.seek_to_beginning(&held).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let records = c.poll(Duration::from_millis(100)).unwrap();
            for r in records.iter() {
                assert_eq!(
                    owners[&r.partition], i,
                    "a record of a partition another member holds"
                );
                read.insert((r.partition, r.offset), r.value.unwrap_or_default().to_vec());
            }
            let wanted = sent.keys().filter(|(p, _)| owners[p] == i).count();
            if read.keys().filter(|(p, _)| owners[p] == i).count() == wanted {
                break;
            }
            assert!(Instant::now() < deadline, "member {i} did not read its records");
        }
        c.commit().unwrap();
    }
    assert_eq!(read, sent);

    // The group's commits are the same seen from any node.
    let ends: Vec<Option<i64>> = (0..6)
        .map(|p| sent.keys().filter(|(q, _)| *q == p).map(|(_, o)| o + 1).max())
        .collect();
    let tps: Vec<TopicPartition> = (0..6).map(|p| TopicPartition::new("jobs", p)).collect();
    for n in &nodes {
        let looker = Consumer::new(n.broker(), config.clone());
        let committed: Vec<Option<i64>> = looker
            .committed(&tps)
            .unwrap()
            .into_iter()
            .map(|c| c.map(|c| c.offset))
            .collect();
        assert_eq!(committed, ends, "node {} sees the group's commits", n.node_id());
    }

    // The node that coordinates groups stops (its member leaves first): another takes over,
    // the two other members share every partition again, and the commits are kept.
    let coordinator = nodes[0]
        .replica_state("__consumer_offsets", 0)
        .unwrap()
        .leader
        .expect("a coordinator") as usize
        - 1;
    let mut nodes: Vec<Option<Cluster>> = nodes.into_iter().map(Some).collect();
    consumers.remove(coordinator).close().unwrap();
    nodes[coordinator].take().unwrap().shutdown().unwrap();
    share(&mut consumers, 6);
    for (n, c) in nodes.iter().flatten().zip(&consumers) {
        let committed: Vec<Option<i64>> = c
            .committed(&tps)
            .unwrap()
            .into_iter()
            .map(|c| c.map(|c| c.offset))
            .collect();
        assert_eq!(
            committed,
            ends,
            "node {} sees the commits after the failover",
            n.node_id()
        );
    }
    drop(consumers);
    for n in nodes.into_iter().flatten() {
        n.shutdown().unwrap();
    }
}
