//! What one broker answers from its own state, as Kafka answers it: DescribeLogDirs with the
//! partitions' real sizes, no partition reassignments, no leader election needed (unknown
//! partitions refused), replicas already in the one log directory and on the one broker, and
//! every operation authorized while no ACL says otherwise.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::alter_replica_log_dirs_request::{AlterReplicaLogDir, AlterReplicaLogDirTopic};
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Fsync, Producer, ProducerRecord, TopicConfig};
use tokio::net::TcpStream;

/// `ask!(stream, Api, version, request, Response)`: the answer to one request.
macro_rules! ask {
    ($s:ident, $api:ident, $version:expr, $request:expr, $response:ty) => {{
        let reply: $response = wire::ask(&mut $s, ApiKey::$api, $version, &$request).await;
        reply
    }};
}

fn t(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

#[tokio::test]
async fn log_dirs_reassignments_and_elections_answer_as_on_one_kafka_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 2, TopicConfig::default()).unwrap();
    let producer = Producer::new(&broker);
    for _ in 0..10 {
        producer
            .send(ProducerRecord::new("t", b"value").partition(1))
            .unwrap();
    }
    let size = broker.partition("t", 1).unwrap().size_bytes() as i64;
    assert!(size > 0);
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    // Log dirs: the data directory, partition 1's real size, the unknown partition 7 left out.
    let dirs = ask!(
        s,
        DescribeLogDirs,
        4,
        DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(t("t"))
                .with_partitions(vec![1, 1, 7]),
        ])),
        DescribeLogDirsResponse
    );
    assert_eq!(dirs.results.len(), 1);
    let result = &dirs.results[0];
    assert_eq!(result.log_dir.as_str(), dir.path().display().to_string());
    let partitions: Vec<(i32, i64)> = result.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    assert_eq!(partitions, [(1, size)]);
    // Every partition when none is named.
    let all = ask!(
        s,
        DescribeLogDirs,
        1,
        DescribeLogDirsRequest::default().with_topics(None),
        DescribeLogDirsResponse
    );
    assert_eq!(all.results[0].topics[0].partitions.len(), 2);

    let reassignments = ask!(
        s,
        ListPartitionReassignments,
        0,
        ListPartitionReassignmentsRequest::default().with_topics(None),
        ListPartitionReassignmentsResponse
    );
    assert_eq!((reassignments.error_code, reassignments.topics.len()), (0, 0));

    // ELECTION_NOT_NEEDED (84): each partition's one replica leads it;
    // UNKNOWN_TOPIC_OR_PARTITION (3) for partition 9.
    let elected = ask!(
        s,
        ElectLeaders,
        2,
        ElectLeadersRequest::default().with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(t("t"))
                .with_partitions(vec![0, 1, 9]),
        ])),
        ElectLeadersResponse
    );
    let results: Vec<(i32, i16)> = elected.replica_election_results[0]
        .partition_result
        .iter()
        .map(|p| (p.partition_id, p.error_code))
        .collect();
    assert_eq!(results, [(0, 84), (1, 84), (9, 3)]);
    // Asked for every partition: none needs an election, so none is listed.
    let all = ask!(
        s,
        ElectLeaders,
        2,
        ElectLeadersRequest::default().with_topic_partitions(None),
        ElectLeadersResponse
    );
    assert_eq!((all.error_code, all.replica_election_results.len()), (0, 0));
}

#[tokio::test]
async fn replicas_stay_in_the_one_log_dir_and_on_the_one_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 2, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let in_dir = |path: String, partitions: Vec<i32>| {
        AlterReplicaLogDir::default()
            .with_path(StrBytes::from(path))
            .with_topics(vec![
                AlterReplicaLogDirTopic::default()
                    .with_name(t("t"))
                    .with_partitions(partitions),
            ])
    };

    // The data directory: partition 0 is there already (NONE), partition 5 is no replica here
    // (REPLICA_NOT_AVAILABLE, 9); another directory is LOG_DIR_NOT_FOUND (57).
    let moved = ask!(
        s,
        AlterReplicaLogDirs,
        2,
        AlterReplicaLogDirsRequest::default().with_dirs(vec![
            in_dir(dir.path().display().to_string(), vec![0, 5]),
            in_dir("/elsewhere".to_string(), vec![1]),
        ]),
        AlterReplicaLogDirsResponse
    );
    let results: Vec<(i32, i16)> = moved.results[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(results, [(0, 0), (1, 57), (5, 9)]);
    assert_eq!(broker.partition("t", 0).unwrap().size_bytes(), 0);

    // To broker 0 alone: done at once. To another broker or none: INVALID_REPLICA_ASSIGNMENT
    // (39). A cancellation: NO_REASSIGNMENT_IN_PROGRESS (85). Partition 4: unknown (3).
    let reassign = |index: i32, replicas: Option<Vec<i32>>| {
        ReassignablePartition::default()
            .with_partition_index(index)
            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))
    };
    let reassigned = ask!(
        s,
        AlterPartitionReassignments,
        0,
        AlterPartitionReassignmentsRequest::default().with_topics(vec![
            ReassignableTopic::default()
                .with_name(t("t"))
                .with_partitions(vec![
                    reassign(0, Some(vec![0])),
                    reassign(1, Some(vec![0, 1])),
                    reassign(1, Some(vec![])),
                    reassign(0, None),
                    reassign(4, Some(vec![0])),
                ]),
        ]),
        AlterPartitionReassignmentsResponse
    );
    assert_eq!(reassigned.error_code, 0);
    let results: Vec<(i32, i16)> = reassigned.responses[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.error_code))
        .collect();
    assert_eq!(results, [(0, 0), (1, 39), (1, 39), (0, 85), (4, 3)]);
    // Nothing is under way afterwards.
    let listed = ask!(
        s,
        ListPartitionReassignments,
        0,
        ListPartitionReassignmentsRequest::default().with_topics(None),
        ListPartitionReassignmentsResponse
    );
    assert!(listed.topics.is_empty());
}

/// Asked what it may do, a client is told every operation of the resource type, as Kafka answers
/// without an authorizer; not asked, the field is left at Kafka's "not asked" value.
#[tokio::test]
async fn authorized_operations_are_every_operation_when_asked() {
    const NOT_ASKED: i32 = i32::MIN;
    // Bits of Kafka's ACL operation codes: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7,
    // DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
    let bits = |ops: &[u32]| ops.iter().map(|op| 1i32 << op).sum::<i32>();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    for asked in [true, false] {
        let metadata = ask!(
            s,
            Metadata,
            10,
            MetadataRequest::default()
                .with_topics(None)
                .with_include_topic_authorized_operations(asked)
                .with_include_cluster_authorized_operations(asked),
            MetadataResponse
        );
        let cluster = ask!(
            s,
            DescribeCluster,
            1,
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(asked),
            DescribeClusterResponse
        );
        let groups = ask!(
            s,
            DescribeGroups,
            5,
            DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_static_str("g"))])
                .with_include_authorized_operations(asked),
            DescribeGroupsResponse
        );
        let (topic, clusters, group) = if asked {
            (
                bits(&[3, 4, 5, 6, 7, 8, 10, 11]),
                bits(&[5, 7, 8, 9, 10, 11, 12]),
                bits(&[3, 6, 8]),
            )
        } else {
            (NOT_ASKED, NOT_ASKED, NOT_ASKED)
        };
        assert_eq!(metadata.topics[0].topic_authorized_operations, topic);
        assert_eq!(metadata.cluster_authorized_operations, clusters);
        assert_eq!(cluster.cluster_authorized_operations, clusters);
        assert_eq!(groups.groups[0].authorized_operations, group);
    }
}
