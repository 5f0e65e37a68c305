//! What one broker answers from its own state, as Kafka answers it: log directories with the
//! partitions' real sizes (a replica "moved" to the directory it is in stays there), no
//! partition reassignments under way (one to the broker's own replica is done at once), no
//! election needed (every partition's only replica leads it). Each needs the cluster
//! permission Kafka asks for (DESCRIBE to look, ALTER to change).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, AlterReplicaLogDirsRequest,
    AlterReplicaLogDirsResponse, BrokerId, DescribeLogDirsRequest, DescribeLogDirsResponse,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Server;
use super::acls::{Client, op};

/// The operations Kafka's authorized-operations fields list for a topic, a group and the
/// cluster (every operation the resource type supports).
pub(super) const TOPIC_OPERATIONS: &[i8] = &[
    op::READ,
    op::WRITE,
    op::CREATE,
    op::DELETE,
    op::ALTER,
    op::DESCRIBE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
];
/// See [`TOPIC_OPERATIONS`].
pub(super) const GROUP_OPERATIONS: &[i8] = &[op::READ, op::DESCRIBE, op::DELETE];
/// See [`TOPIC_OPERATIONS`].
pub(super) const CLUSTER_OPERATIONS: &[i8] = &[
    op::CREATE,
    op::CLUSTER_ACTION,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
    op::IDEMPOTENT_WRITE,
    op::ALTER,
    op::DESCRIBE,
];
/// The authorized-operations field of a client that did not ask for it.
pub(super) const NOT_ASKED: i32 = i32::MIN;

/// The partitions a request names (`None`: every partition of every topic), each with whether
/// it exists, in order, a partition named twice once.
fn named(
    server: &Server,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
) -> BTreeMap<TopicName, BTreeMap<i32, bool>> {
    let count = |topic: &str| {
        server
            .broker
            .inner
            .topic(topic)
            .map_or(0, |t| t.partitions.read().len() as i32)
    };
    let mut out: BTreeMap<TopicName, BTreeMap<i32, bool>> = BTreeMap::new();
    match wanted {
        None => {
            for name in server.broker.list_topics() {
                let partitions = (0..count(&name)).map(|p| (p, true)).collect();
                out.insert(TopicName(StrBytes::from(name)), partitions);
            }
        }
        Some(topics) => {
            for (topic, partitions) in topics {
                let n = count(&topic.0);
                let entry = out.entry(topic).or_default();
                entry.extend(partitions.into_iter().map(|p| (p, (0..n).contains(&p))));
            }
        }
    }
    out
}

/// DescribeLogDirs: the one data directory, with the size of each partition asked for that
/// exists (all of them if the request names none).
pub(super) fn describe_log_dirs(
    server: &Server,
    client: &Client,
    request: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    if !client.may_on_cluster(server, op::DESCRIBE) {
        // Before v3 there is no error field: no directories, then.
        let error = if version >= 3 {
            ResponseError::ClusterAuthorizationFailed.code()
        } else {
            0
        };
        return DescribeLogDirsResponse::default().with_error_code(error);
    }
    let wanted = request
        .topics
        .map(|topics| topics.into_iter().map(|t| (t.topic, t.partitions)).collect());
    let topics = named(server, wanted)
        .into_iter()
        .filter_map(|(name, partitions)| {
            let partitions: Vec<DescribeLogDirsPartition> = partitions
                .into_iter()
                .filter(|&(_, exists)| exists)
                .filter_map(|(p, _)| {
                    let log = server.log(&name.0, p).ok()?;
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(p)
                            .with_partition_size(log.size_bytes() as i64)
                            .with_offset_lag(0),
                    )
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                DescribeLogDirsTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
        })
        .collect();
    let dir = server.broker.dir().display().to_string();
    DescribeLogDirsResponse::default().with_results(vec![
        DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from(dir))
            .with_topics(topics)
            .with_total_bytes(-1)
            .with_usable_bytes(-1),
    ])
}

/// ListPartitionReassignments: none is ever under way on one broker.
pub(super) fn list_partition_reassignments(
    server: &Server,
    client: &Client,
    _request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    if !client.may_on_cluster(server, op::DESCRIBE) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    ListPartitionReassignmentsResponse::default()
}

/// AlterReplicaLogDirs: the broker has one log directory, so a partition asked to move to it
/// is already there (NONE, nothing done); another directory is LOG_DIR_NOT_FOUND, and a
/// partition the broker does not have REPLICA_NOT_AVAILABLE, as Kafka answers them.
pub(super) fn alter_replica_log_dirs(
    server: &Server,
    client: &Client,
    request: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let allowed = client.may_on_cluster(server, op::ALTER);
    let ours = server.broker.dir();
    let mut results: BTreeMap<TopicName, BTreeMap<i32, i16>> = BTreeMap::new();
    for dir in request.dirs {
        let known = std::path::Path::new(dir.path.as_str()) == ours;
        let wanted = dir.topics.into_iter().map(|t| (t.name, t.partitions)).collect();
        for (topic, partitions) in named(server, Some(wanted)) {
            let entry = results.entry(topic).or_default();
            for (p, exists) in partitions {
                let error = match (known, exists) {
                    _ if !allowed => ResponseError::ClusterAuthorizationFailed.code(),
                    (false, _) => ResponseError::LogDirNotFound.code(),
                    (true, false) => ResponseError::ReplicaNotAvailable.code(),
                    (true, true) => 0,
                };
                entry.insert(p, error);
            }
        }
    }
    let results = results
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, error)| {
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(error)
                })
                .collect();
            AlterReplicaLogDirTopicResult::default()
                .with_topic_name(topic)
                .with_partitions(partitions)
        })
        .collect();
    AlterReplicaLogDirsResponse::default().with_results(results)
}

/// AlterPartitionReassignments: a partition's only replica is on this broker, so a
/// reassignment to exactly that replica is complete at once (NONE); any other replica list is
/// INVALID_REPLICA_ASSIGNMENT (no other broker is live), a cancellation (no replicas)
/// NO_REASSIGNMENT_IN_PROGRESS, and an unknown partition UNKNOWN_TOPIC_OR_PARTITION.
pub(super) fn alter_partition_reassignments(
    server: &Server,
    client: &Client,
    request: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    if !client.may_on_cluster(server, op::ALTER) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let responses = request
        .topics
        .into_iter()
        .map(|topic| {
            let count = server
                .broker
                .inner
                .topic(&topic.name)
                .map_or(0, |t| t.partitions.read().len() as i32);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let (error, message) = if !(0..count).contains(&p.partition_index) {
                        (Some(ResponseError::UnknownTopicOrPartition), None)
                    } else {
                        match p.replicas.as_deref() {
                            None => (Some(ResponseError::NoReassignmentInProgress), None),
                            Some([BrokerId(id)]) if *id == server.node_id() => (None, None),
                            Some([]) => (
                                Some(ResponseError::InvalidReplicaAssignment),
                                Some("the replica list cannot be empty"),
                            ),
                            Some(_) => (
                                Some(ResponseError::InvalidReplicaAssignment),
                                Some("this cluster has one broker: a partition's only replica is broker 0"),
                            ),
                        }
                    };
                    ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                        .with_error_message(message.map(StrBytes::from_static_str))
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

/// ElectLeaders: every partition's one replica already leads it, so no election is needed:
/// each partition named is ELECTION_NOT_NEEDED (an unknown one UNKNOWN_TOPIC_OR_PARTITION),
/// and a request for all partitions lists none, as Kafka answers when nothing needs electing.
pub(super) fn elect_leaders(
    server: &Server,
    client: &Client,
    request: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    // Refused, each partition named says so (v0 has no other error field).
    let allowed = client.may_on_cluster(server, op::ALTER);
    let Some(topics) = request.topic_partitions else {
        let error = if allowed || version == 0 {
            0
        } else {
            ResponseError::ClusterAuthorizationFailed.code()
        };
        return ElectLeadersResponse::default().with_error_code(error);
    };
    let wanted = topics.into_iter().map(|t| (t.topic, t.partitions)).collect();
    let results = named(server, Some(wanted))
        .into_iter()
        .map(|(topic, partitions)| {
            let partition_result = partitions
                .into_iter()
                .map(|(p, exists)| {
                    let error = if !allowed {
                        ResponseError::ClusterAuthorizationFailed
                    } else if exists {
                        ResponseError::ElectionNotNeeded
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    };
                    PartitionResult::default()
                        .with_partition_id(p)
                        .with_error_code(error.code())
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(topic)
                .with_partition_result(partition_result)
        })
        .collect();
    // Refused, the request says so too where it can (v1+), as Kafka does.
    let error = if allowed || version == 0 {
        0
    } else {
        ResponseError::ClusterAuthorizationFailed.code()
    };
    ElectLeadersResponse::default()
        .with_error_code(error)
        .with_replica_election_results(results)
}
