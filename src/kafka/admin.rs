//! Topic and cluster admin: CreateTopics, CreatePartitions, DeleteTopics, DeleteRecords,
//! DescribeCluster and InitProducerId, each with the permission Kafka asks for.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteRecordsRequest, DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, InitProducerIdRequest, InitProducerIdResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::acls::{CLUSTER_NAME, Client, op, resource};
use super::{Server, codes};
use crate::broker::{MAX_PARTITIONS, refuse_internal};
use crate::config::TopicConfig;
use crate::error::Result;

/// The most replicas a partition's assignment may name: a cluster's node ids are 0 to 1023.
const MAX_REPLICAS: usize = 1024;

/// Creates each topic with its partition count (-1: the broker's default, or as many as its
/// replica assignments name), replication factor (-1: the default; a broker alone holds one
/// copy) or replica assignments, and configs. With `validate_only`, only checks. Needs CREATE
/// on the cluster or the topic.
pub(super) fn create_topics(
    server: &Server,
    client: &Client,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let broker = &server.broker;
    let on_cluster = client.may_on_cluster(server, op::CREATE);
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let reply = CreatableTopicResult::default().with_name(t.name.clone());
            if !on_cluster && !client.may(server, op::CREATE, resource::TOPIC, &t.name) {
                return reply.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            let (defaults, default_partitions) = broker.inner.topic_defaults();
            if t.replication_factor == 0 || t.replication_factor < -1 {
                return reply
                    .with_error_code(ResponseError::InvalidReplicationFactor.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "the replication factor is at least 1, or -1 for the default",
                    )));
            }
            let assigned = if t.assignments.is_empty() {
                None
            } else {
                // Manual assignments give the partition count, as in Kafka, which then wants
                // no count or replication factor beside them.
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return reply
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_static_str(
                            "with replica assignments, the partition count and replication factor are -1",
                        )));
                }
                let mut assignments: Vec<_> = t.assignments.iter().collect();
                assignments.sort_by_key(|a| a.partition_index);
                let numbered = assignments
                    .iter()
                    .enumerate()
                    .all(|(i, a)| a.partition_index == i as i32);
                // Bounded before anything is copied: no partition has more replicas than a
                // cluster can have nodes, no topic more partitions than a topic may have.
                let sized = assignments.len() <= MAX_PARTITIONS as usize
                    && assignments.iter().all(|a| a.broker_ids.len() <= MAX_REPLICAS);
                let replicas: Option<Vec<Vec<u64>>> = if sized {
                    assignments
                        .iter()
                        .map(|a| a.broker_ids.iter().map(|b| u64::try_from(b.0).ok()).collect())
                        .collect()
                } else {
                    None
                };
                match replicas {
                    Some(replicas) if numbered => Some(replicas),
                    _ => {
                        return reply
                            .with_error_code(ResponseError::InvalidReplicaAssignment.code())
                            .with_error_message(Some(StrBytes::from_static_str(
                                "partitions 0, 1, ... must each be assigned to brokers",
                            )));
                    }
                }
            };
            let partitions = match &assigned {
                Some(replicas) => replicas.len() as i32,
                None if t.num_partitions == -1 => default_partitions as i32,
                None => t.num_partitions,
            };
            let asked = match &assigned {
                Some(replicas) => replicas.first().map_or(-1, |r| r.len() as i16),
                None => t.replication_factor,
            };
            let created = topic_config(defaults, &t.configs).and_then(|mut config| {
                if let Ok(n) = u16::try_from(t.replication_factor) {
                    config = config.replication_factor(n);
                }
                let partitions = u32::try_from(partitions).unwrap_or(0);
                match assigned {
                    Some(replicas) => {
                        broker
                            .inner
                            .create_topic_assigned(&t.name.0, replicas, config, request.validate_only)
                    }
                    None if request.validate_only => {
                        broker.inner.check_new_topic(&t.name.0, partitions, &config)
                    }
                    None => broker.create_topic(&t.name.0, partitions, config),
                }
            });
            let replication = server.replication_factor(&t.name.0, asked);
            match created {
                Ok(()) => reply
                    .with_num_partitions(partitions)
                    .with_replication_factor(replication),
                Err(e) => reply
                    .with_error_code(codes::code(&e))
                    .with_error_message(Some(StrBytes::from(e.to_string()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// Raises topics' partition counts (Kafka's CreatePartitions): each entry gives a topic's new
/// total. Replica assignments, if given, name the nodes of a cluster that hold each new
/// partition (as many as hold the topic's others), or put each on a broker alone. A topic
/// named twice is refused (INVALID_REQUEST), as Kafka refuses it. With `validate_only`, only
/// checks. Needs ALTER on the topic.
pub(super) fn create_partitions(
    server: &Server,
    client: &Client,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = &server.broker;
    let mut named: HashMap<TopicName, usize> = HashMap::new();
    for t in &request.topics {
        *named.entry(t.name.clone()).or_default() += 1;
    }
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let reply = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let refuse = |code: i16, why: String| {
                reply
                    .clone()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from(why)))
            };
            if named[&t.name] > 1 {
                return refuse(
                    ResponseError::InvalidRequest.code(),
                    "the topic is named twice".into(),
                );
            }
            if !client.may(server, op::ALTER, resource::TOPIC, &t.name) {
                return refuse(
                    ResponseError::TopicAuthorizationFailed.code(),
                    "the client may not alter the topic".into(),
                );
            }
            let total = u32::try_from(t.count).unwrap_or(0);
            #[cfg(feature = "cluster")]
            if let Some(assignments) = t.assignments.as_ref().filter(|_| server.in_cluster()) {
                // Bounded before copying: no more lists than new partitions may exist, none
                // longer than a partition's replicas may be.
                let sized = assignments.len() <= MAX_PARTITIONS as usize
                    && assignments.iter().all(|a| a.broker_ids.len() <= MAX_REPLICAS);
                if !sized {
                    return refuse(
                        ResponseError::InvalidReplicaAssignment.code(),
                        "more assignments or replicas than a topic can have".into(),
                    );
                }
                let replicas = assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0 as u64).collect())
                    .collect();
                return match broker.inner.add_partitions_assigned(
                    &t.name.0,
                    total,
                    replicas,
                    request.validate_only,
                ) {
                    Ok(()) => reply,
                    Err(e) => refuse(codes::code(&e), e.to_string()),
                };
            }
            if let Some(assignments) = &t.assignments {
                let current = match broker.inner.topic(&t.name.0) {
                    Ok(topic) => topic.partitions.read().len(),
                    Err(e) => return refuse(codes::code(&e), e.to_string()),
                };
                let alone =
                    |a: &kafka_protocol::messages::create_partitions_request::CreatePartitionsAssignment| {
                        a.broker_ids == [BrokerId(server.node_id())]
                    };
                if assignments.len() != (total as usize).saturating_sub(current)
                    || !assignments.iter().all(alone)
                {
                    return refuse(
                        ResponseError::InvalidReplicaAssignment.code(),
                        format!(
                            "each new partition must be assigned to broker {} alone",
                            server.node_id()
                        ),
                    );
                }
            }
            let outcome = if request.validate_only {
                broker.inner.check_add_partitions(&t.name.0, total).map(drop)
            } else {
                broker.add_partitions(&t.name.0, total)
            };
            match outcome {
                Ok(()) => reply,
                Err(e) => refuse(codes::code(&e), e.to_string()),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// The topic config a CreateTopics entry asks for: the broker's defaults, then each entry.
fn topic_config(
    mut config: TopicConfig,
    configs: &[kafka_protocol::messages::create_topics_request::CreatableTopicConfig],
) -> Result<TopicConfig> {
    for entry in configs {
        match &entry.value {
            Some(value) if entry.name.as_str() == super::alter_configs::IGNORED => {
                super::alter_configs::check_ignored(value)?;
            }
            Some(value) => config.set(&entry.name, value)?,
            None => {}
        }
    }
    Ok(config)
}

/// Deletes topics by name (topic ids, v6, are not known here: `UNKNOWN_TOPIC_ID`). Needs
/// DELETE on the topic.
pub(super) fn delete_topics(
    server: &Server,
    client: &Client,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let names: Vec<Option<TopicName>> = if version >= 6 {
        request.topics.into_iter().map(|t| t.name).collect()
    } else {
        request.topic_names.into_iter().map(Some).collect()
    };
    let responses = names
        .into_iter()
        .map(|name| {
            let Some(name) = name else {
                return DeletableTopicResult::default().with_error_code(ResponseError::UnknownTopicId.code());
            };
            let reply = DeletableTopicResult::default().with_name(Some(name.clone()));
            if !client.may(server, op::DELETE, resource::TOPIC, &name) {
                return reply.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            match refuse_internal(&name.0).and_then(|()| server.broker.delete_topic(&name.0)) {
                Ok(()) => reply,
                Err(e) => reply
                    .with_error_code(codes::code(&e))
                    .with_error_message(Some(StrBytes::from(e.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Moves each partition's log start offset up to the offset given (-1: the high watermark).
/// Needs DELETE on the topic.
pub(super) fn delete_records(
    server: &Server,
    client: &Client,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let allowed = client.may(server, op::DELETE, resource::TOPIC, &t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let reply =
                        DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    if !allowed {
                        return reply
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                            .with_low_watermark(-1);
                    }
                    let done = refuse_internal(&t.name.0)
                        .and_then(|()| server.log(&t.name.0, p.partition_index))
                        .and_then(|log| {
                            let to = if p.offset == -1 {
                                log.high_watermark()
                            } else {
                                p.offset
                            };
                            log.delete_records_before(to)
                        });
                    match done {
                        Ok(start) => reply.with_low_watermark(start),
                        Err(e) => reply.with_error_code(codes::code(&e)).with_low_watermark(-1),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// The one broker, which is also the controller. Answered to every client, as Kafka does;
/// the cluster's authorized operations say what this one may do.
pub(super) fn describe_cluster(
    server: &Server,
    client: &Client,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let operations = if request.include_cluster_authorized_operations {
        server.operations(
            client,
            resource::CLUSTER,
            CLUSTER_NAME,
            super::single_node::CLUSTER_OPERATIONS,
        )
    } else {
        super::single_node::NOT_ASKED
    };
    DescribeClusterResponse::default()
        .with_cluster_authorized_operations(operations)
        .with_endpoint_type(1)
        .with_cluster_id(StrBytes::from(server.config.cluster_id.clone()))
        .with_controller_id(BrokerId(server.controller_id()))
        .with_brokers(
            server
                .brokers()
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(StrBytes::from(host))
                        .with_port(i32::from(port))
                })
                .collect(),
        )
}

/// InitProducerId for an idempotent producer: needs IDEMPOTENT_WRITE on the cluster or, as
/// since Kafka 3.0, WRITE on some topic.
pub(super) fn init_producer_id(
    server: &Server,
    client: &Client,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let allowed = client.may_on_cluster(server, op::IDEMPOTENT_WRITE)
        || !server.config.acls
        || server
            .shared
            .acls
            .allows_some(&client.host, op::WRITE, resource::TOPIC);
    if !allowed {
        return InitProducerIdResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1);
    }
    server
        .producers
        .init(request, || server.broker.inner.new_producer_id())
}
