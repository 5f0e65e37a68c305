//! A topic's replication factor: a broker alone holds one copy and refuses more, as a
//! one-broker Kafka does; a cluster holds as many copies as asked (the default when none is
//! asked), on the nodes a client assigns if it assigns them, and refuses what its nodes
//! cannot meet. Asked in process or over the wire, with changes refused whole.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

#[cfg(feature = "cluster")]
#[path = "common/three_nodes.rs"]
mod three_nodes;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Error, Fsync, TopicConfig};
use tokio::net::TcpStream;

/// A CreateTopics of one topic; returns (error code, partitions, replication factor).
async fn create(
    s: &mut TcpStream,
    name: &'static str,
    partitions: i32,
    replication_factor: i16,
    assignments: &[&[i32]],
    validate_only: bool,
) -> (i16, i32, i16) {
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
        .with_assignments(
            assignments
                .iter()
                .enumerate()
                .map(|(p, nodes)| {
                    CreatableReplicaAssignment::default()
                        .with_partition_index(p as i32)
                        .with_broker_ids(nodes.iter().map(|&n| BrokerId(n)).collect())
                })
                .collect(),
        );
    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(30_000)
        .with_validate_only(validate_only);
    let reply: CreateTopicsResponse = wire::ask(s, ApiKey::CreateTopics, 7, &request).await;
    let t = &reply.topics[0];
    (t.error_code, t.num_partitions, t.replication_factor)
}

#[tokio::test]
async fn a_broker_alone_holds_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let refused = broker.create_topic("t", 1, TopicConfig::default().replication_factor(2));
    assert!(
        matches!(
            refused,
            Err(Error::InvalidReplicationFactor {
                requested: 2,
                available: 1
            })
        ),
        "{refused:?}"
    );
    assert!(broker.list_topics().is_empty(), "nothing was created");
    broker
        .create_topic("one", 1, TopicConfig::default().replication_factor(1))
        .unwrap();
    // Taken at creation, not kept as a setting of the topic's logs.
    let described = broker.describe_topic("one").unwrap().config;
    assert_eq!(described.get_replication_factor(), None);
    assert_eq!(described, TopicConfig::default());
    // A default that a broker alone cannot meet is refused when it opens.
    let other = tempfile::tempdir().unwrap();
    let refused = Broker::builder(other.path())
        .default_topic_config(TopicConfig::default().replication_factor(3))
        .open();
    assert!(
        matches!(refused, Err(Error::InvalidReplicationFactor { .. })),
        "{refused:?}"
    );

    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let invalid = ResponseError::InvalidReplicationFactor.code();
    assert_eq!(create(&mut s, "a", 1, 3, &[], false).await.0, invalid);
    assert_eq!(
        create(&mut s, "a", 1, 3, &[], true).await.0,
        invalid,
        "validation alone too"
    );
    assert_eq!(create(&mut s, "a", 1, 0, &[], false).await.0, invalid);
    assert_eq!(create(&mut s, "a", 2, 1, &[], false).await, (0, 2, 1));
    assert_eq!(create(&mut s, "b", 2, -1, &[], false).await, (0, 2, 1));
    let bad_assignment = ResponseError::InvalidReplicaAssignment.code();
    assert_eq!(
        create(&mut s, "c", -1, -1, &[&[0, 1]], false).await.0,
        bad_assignment
    );
    assert_eq!(create(&mut s, "c", -1, -1, &[&[0], &[0]], false).await, (0, 2, 1));
    assert_eq!(broker.list_topics(), ["a", "b", "c", "one"]);
}

#[cfg(feature = "cluster")]
mod cluster {
    use std::time::Duration;

    use rivulet::cluster::Cluster;

    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

    use super::*;

    /// The nodes that hold partition `p` of `topic`, once the nodes holding it agree (30 s at
    /// most).
    fn holders(nodes: &[Cluster], topic: &str, p: u32) -> Vec<u64> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut found: Vec<Vec<u64>> = nodes
                .iter()
                .filter_map(|n| n.replica_state(topic, p).ok().map(|s| s.replicas))
                .collect();
            found.dedup();
            if let [holders] = found.as_slice()
                && !holders.is_empty()
            {
                let mut holders = holders.clone();
                holders.sort_unstable();
                return holders;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the holders of {topic}-{p}: {found:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CreatePartitions raising `topic` to `count` partitions placed as `assignments` say;
    /// returns the error code.
    async fn grow(
        s: &mut TcpStream,
        topic: &'static str,
        count: i32,
        assignments: &[&[i32]],
        validate_only: bool,
    ) -> i16 {
        let request = CreatePartitionsRequest::default()
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str(topic)))
                    .with_count(count)
                    .with_assignments(Some(
                        assignments
                            .iter()
                            .map(|a| {
                                CreatePartitionsAssignment::default()
                                    .with_broker_ids(a.iter().map(|&b| BrokerId(b)).collect())
                            })
                            .collect(),
                    )),
            ])
            .with_timeout_ms(30_000)
            .with_validate_only(validate_only);
        let grown: CreatePartitionsResponse = wire::ask(s, ApiKey::CreatePartitions, 3, &request).await;
        grown.results[0].error_code
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_holds_as_many_copies_as_asked_where_asked() {
        let (nodes, dirs) = tokio::task::spawn_blocking(move || {
            let (nodes, dirs) = three_nodes::start();
            // In process: two copies of each partition, also of those added later.
            let broker = nodes[0].broker();
            broker
                .create_topic("two", 2, TopicConfig::default().replication_factor(2))
                .unwrap();
            broker.add_partitions("two", 3).unwrap();
            let refused = broker.create_topic("four", 1, TopicConfig::default().replication_factor(4));
            assert!(
                matches!(
                    refused,
                    Err(Error::InvalidReplicationFactor {
                        requested: 4,
                        available: 3
                    })
                ),
                "{refused:?}"
            );
            assert!(!broker.list_topics().contains(&"four".to_string()));
            (nodes, dirs)
        })
        .await
        .unwrap();
        let two = nodes.clone();
        for p in 0..3 {
            let two = two.clone();
            let held = tokio::task::spawn_blocking(move || holders(&two, "two", p))
                .await
                .unwrap();
            assert_eq!(held.len(), 2, "partition {p}: {held:?}");
        }

        let (addr, _stop) = wire::serve(nodes[1].broker(), Default::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(create(&mut s, "three", 2, 3, &[], false).await, (0, 2, 3));
        assert_eq!(create(&mut s, "default", 1, -1, &[], false).await, (0, 1, 3));
        let invalid = ResponseError::InvalidReplicationFactor.code();
        assert_eq!(create(&mut s, "x", 1, 4, &[], true).await.0, invalid);
        assert_eq!(create(&mut s, "x", 1, 4, &[], false).await.0, invalid);
        assert_eq!(
            create(&mut s, "y", 1, 2, &[], true).await,
            (0, 1, 2),
            "validation alone"
        );
        let bad = ResponseError::InvalidReplicaAssignment.code();
        assert_eq!(
            create(&mut s, "x", -1, -1, &[&[1, 9]], false).await.0,
            bad,
            "an unknown node"
        );
        assert_eq!(
            create(&mut s, "x", -1, -1, &[&[1, 1]], false).await.0,
            bad,
            "a node twice"
        );
        assert_eq!(
            create(&mut s, "x", -1, -1, &[&[1, 2], &[3]], false).await.0,
            bad,
            "unequal lists"
        );
        assert_eq!(
            create(&mut s, "z", -1, -1, &[&[1, 2], &[3, 1]], true).await,
            (0, 2, 2),
            "validation alone reports the assignment's replication factor"
        );
        assert_eq!(
            create(&mut s, "placed", -1, -1, &[&[1, 2], &[3, 1]], false).await,
            (0, 2, 2)
        );
        // New partitions go where assignments say, as many replicas as the topic's others.
        assert_eq!(
            grow(&mut s, "placed", 3, &[&[2]], false).await,
            bad,
            "too few replicas"
        );
        assert_eq!(
            grow(&mut s, "placed", 3, &[&[2, 9]], false).await,
            bad,
            "an unknown node"
        );
        assert_eq!(
            grow(&mut s, "placed", 3, &[&[2, 3], &[1, 2]], false).await,
            bad,
            "more assignments than new partitions"
        );
        assert_eq!(
            grow(&mut s, "placed", 3, &[&[2, 3]], true).await,
            0,
            "validation alone"
        );
        // (Asked of the node that answered: the others apply the topic's creation in their
        // own time.)
        assert_eq!(nodes[1].broker().partition_count("placed").unwrap(), 2);
        assert_eq!(grow(&mut s, "placed", 3, &[&[2, 3]], false).await, 0);
        let topics = nodes[2].broker().list_topics();
        assert!(
            !["x", "y", "z"].iter().any(|t| topics.contains(&t.to_string())),
            "{topics:?}"
        );
        let placed = nodes.clone();
        let (p0, p1) = tokio::task::spawn_blocking(move || {
            (holders(&placed, "placed", 0), holders(&placed, "placed", 1))
        })
        .await
        .unwrap();
        assert_eq!((p0, p1), (vec![1, 2], vec![1, 3]));
        let placed = nodes.clone();
        let p2 = tokio::task::spawn_blocking(move || holders(&placed, "placed", 2))
            .await
            .unwrap();
        assert_eq!(p2, vec![2, 3]);
        // Node 3 holds no replica of partition 0, and still names its leader (as the leader
        // tells it), so Kafka clients asking it are sent there.
        let third = nodes[2].clone();
        let state = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(state) = third.replica_state("placed", 0)
                    && state.leader.is_some()
                {
                    return state;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "node 3 never heard of the leader"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .unwrap();
        assert!(matches!(state.leader, Some(1 | 2)), "{state:?}");
        assert_eq!(state.replicas.len(), 2);
        // An in-process producer at node 3 appends to it all the same: through its leader.
        let (third, first) = (nodes[2].clone(), nodes[0].clone());
        tokio::task::spawn_blocking(move || {
            let producer = rivulet::Producer::new(third.broker());
            let records = [rivulet::ProducerRecord::new("placed", b"from node 3")];
            let sent = producer.send_batch("placed", Some(0), &records).unwrap();
            let log = first.broker().partition("placed", 0).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while log.high_watermark() <= sent[0].offset {
                assert!(
                    std::time::Instant::now() < deadline,
                    "node 1 never saw the record"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let fetch = log.read(sent[0].offset, 1 << 20).unwrap();
            let batch = fetch.batches().next().expect("the batch");
            let records = batch.records().unwrap();
            let record = records.iter().next().unwrap().unwrap();
            assert_eq!(record.value, Some(&b"from node 3"[..]));
        })
        .await
        .unwrap();
        for n in nodes {
            tokio::task::spawn_blocking(move || n.shutdown().unwrap())
                .await
                .unwrap();
        }
        drop(dirs);
    }
}
