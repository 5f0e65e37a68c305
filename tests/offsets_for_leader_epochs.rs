//! OffsetForLeaderEpoch answers as Kafka's leader does: the largest leader epoch at most the
//! one asked for and the offset where the next begins, so that a consumer can tell whether
//! the log it read was truncated. A broker alone never truncates: every epoch ends at its log
//! end. A cluster's epochs are its Raft terms, and after a failover the old leader's epoch
//! ends where the new one began.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

#[cfg(feature = "cluster")]
#[path = "common/three_nodes.rs"]
mod three_nodes;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Fsync, Producer, ProducerRecord, TopicConfig};
use tokio::net::TcpStream;

/// Asks `topic`-0 for the end of `epoch`, naming `current` as the leader's epoch; returns
/// (error code, epoch, end offset).
async fn epoch_end(s: &mut TcpStream, topic: &'static str, current: i32, epoch: i32) -> (i16, i32, i64) {
    let request = OffsetForLeaderEpochRequest::default().with_topics(vec![
        OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(topic)))
            .with_partitions(vec![
                OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch),
            ]),
    ]);
    let reply: OffsetForLeaderEpochResponse = wire::ask(s, ApiKey::OffsetForLeaderEpoch, 4, &request).await;
    let p = &reply.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

#[tokio::test]
async fn a_broker_alone_ends_every_epoch_at_its_log_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for i in 0..5 {
        producer
            .send(ProducerRecord::new("t", format!("v{i}").as_bytes()))
            .unwrap();
    }
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(epoch_end(&mut s, "t", 0, 0).await, (0, 0, 5));
    assert_eq!(
        epoch_end(&mut s, "t", -1, 0).await,
        (0, 0, 5),
        "no current epoch named"
    );
    // Batches a lone broker stores keep the epochs their producers gave them, and its log is
    // never truncated: any epoch a consumer read ends at the log end.
    assert_eq!(epoch_end(&mut s, "t", 0, 7).await, (0, 7, 5));
    assert_eq!(epoch_end(&mut s, "t", 0, -1).await, (0, -1, -1));
    let unknown = ResponseError::UnknownLeaderEpoch.code();
    assert_eq!(epoch_end(&mut s, "t", 1, 0).await, (unknown, -1, -1));
    let missing = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(epoch_end(&mut s, "nope", 0, 0).await, (missing, -1, -1));
}

#[cfg(feature = "cluster")]
mod cluster {
    use std::time::{Duration, Instant};

    use rivulet::cluster::Cluster;

    use super::*;

    fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = check() {
                return t;
            }
            assert!(Instant::now() < deadline, "{what}: not within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The leader of `t`-0 among `nodes`, once they agree on one, and its epoch.
    fn leader(nodes: &[&Cluster]) -> (usize, u64) {
        eventually("a leader agreed on", || {
            let states: Vec<_> = nodes.iter().map(|n| n.replica_state("t", 0).ok()).collect();
            let first = states.first()?.clone()?;
            let id = first.leader?;
            if states.iter().all(|s| {
                s.as_ref()
                    .is_some_and(|s| s.leader == Some(id) && s.epoch == first.epoch)
            }) {
                return Some((nodes.iter().position(|n| n.node_id() == id)?, first.epoch));
            }
            None
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_failover_the_old_epoch_ends_where_the_new_one_began() {
        let (nodes, _dirs) = tokio::task::spawn_blocking(move || {
            let (nodes, dirs) = three_nodes::start();
            nodes[0]
                .broker()
                .create_topic("t", 1, TopicConfig::default())
                .unwrap();
            (nodes, dirs)
        })
        .await
        .unwrap();
        let all: Vec<&Cluster> = nodes.iter().collect();
        let (old, first_epoch) = leader(&all);
        let mut servers = Vec::new();
        for n in &nodes {
            servers.push(wire::serve(n.broker(), Default::default()).await);
        }
        // Five records in the first leader's epoch.
        let broker = nodes[old].broker().clone();
        let before = tokio::task::spawn_blocking(move || {
            let producer = Producer::new(&broker);
            (0..5)
                .map(|i| {
                    producer
                        .send(ProducerRecord::new("t", format!("a{i}").as_bytes()))
                        .unwrap()
                        .offset
                })
                .max()
        })
        .await
        .unwrap()
        .unwrap();

        let mut s = TcpStream::connect(servers[old].0).await.unwrap();
        let current = first_epoch as i32;
        let (code, epoch, end) = epoch_end(&mut s, "t", current, current).await;
        assert_eq!((code, epoch), (0, current));
        assert!(
            end > before,
            "the current epoch ends at the log end ({end}), past offset {before}"
        );
        let follower = (old + 1) % 3;
        let mut f = TcpStream::connect(servers[follower].0).await.unwrap();
        let not_leader = ResponseError::NotLeaderOrFollower.code();
        assert_eq!(epoch_end(&mut f, "t", current, current).await.0, not_leader);

        // The leader stops; another takes over and takes three records.
        let stopping = nodes[old].clone();
        tokio::task::spawn_blocking(move || stopping.shutdown().unwrap())
            .await
            .unwrap();
        let survivors: Vec<&Cluster> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != old)
            .map(|(_, n)| n)
            .collect();
        let (new, new_epoch) = leader(&survivors);
        assert!(new_epoch > first_epoch);
        let broker = survivors[new].broker().clone();
        let after = tokio::task::spawn_blocking(move || {
            let producer = Producer::new(&broker);
            (0..3)
                .map(|i| {
                    producer
                        .send(ProducerRecord::new("t", format!("b{i}").as_bytes()))
                        .unwrap()
                        .offset
                })
                .min()
        })
        .await
        .unwrap()
        .unwrap();
        let index = nodes
            .iter()
            .position(|n| n.node_id() == survivors[new].node_id())
            .unwrap();
        let mut s = TcpStream::connect(servers[index].0).await.unwrap();
        let current = new_epoch as i32;
        let (code, epoch, end) = epoch_end(&mut s, "t", current, first_epoch as i32).await;
        assert_eq!(
            (code, epoch),
            (0, first_epoch as i32),
            "the first epoch, which holds entries"
        );
        assert!(
            end > before && end < after,
            "the first epoch ends ({end}) after its records (up to {before}) and before the new leader's ({after} on)"
        );
        let fenced = ResponseError::FencedLeaderEpoch.code();
        assert_eq!(
            epoch_end(&mut s, "t", first_epoch as i32, first_epoch as i32)
                .await
                .0,
            fenced
        );
        assert_eq!(epoch_end(&mut s, "t", current, current + 1).await, (0, -1, -1));
        for n in survivors {
            let n = n.clone();
            tokio::task::spawn_blocking(move || n.shutdown().unwrap())
                .await
                .unwrap();
        }
    }
}
