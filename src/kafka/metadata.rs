//! Metadata: one broker (this one) leads every partition. Topics asked for by name are
//! created if the broker auto-creates topics and the client allows it.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::acls::{CLUSTER_NAME, Client, op, resource};
use super::single_node::{CLUSTER_OPERATIONS, NOT_ASKED, TOPIC_OPERATIONS};
use super::{Server, codes};

/// Whether answering `request` may create a topic (which waits for the disk): it names a
/// topic that does not exist, and auto-creation is allowed.
pub(super) fn may_create(server: &Server, request: &MetadataRequest, version: i16) -> bool {
    let create = version < 4 || request.allow_auto_topic_creation;
    create
        && request.topics.as_ref().is_some_and(|topics| {
            topics
                .iter()
                .filter_map(|t| t.name.as_ref())
                .any(|name| server.broker.inner.topic(name).is_err())
        })
}

/// Topics the client may not DESCRIBE are answered TOPIC_AUTHORIZATION_FAILED when named and
/// left out of a listing of all; one is auto-created only if the client may CREATE it (on the
/// cluster or the topic), as Kafka does.
pub(super) fn metadata(
    server: &Server,
    client: &Client,
    request: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let inner = &server.broker.inner;
    let topic_operations = |name: &str| {
        if request.include_topic_authorized_operations {
            server.operations(client, resource::TOPIC, name, TOPIC_OPERATIONS)
        } else {
            NOT_ASKED
        }
    };
    let cluster_operations = if request.include_cluster_authorized_operations {
        server.operations(client, resource::CLUSTER, CLUSTER_NAME, CLUSTER_OPERATIONS)
    } else {
        NOT_ASKED
    };
    let may_create_any = client.may_on_cluster(server, op::CREATE);
    // Before v4 a request could not say; Kafka created topics then.
    let create = version < 4 || request.allow_auto_topic_creation;
    let topics: Vec<(String, bool)> = match request.topics {
        // Each name is answered once however often it is asked for, as Kafka does: the
        // response is bounded by the topics that exist plus the names in the request.
        Some(t) if !(t.is_empty() && version == 0) => {
            let mut seen = HashSet::new();
            t.into_iter()
                .filter_map(|t| t.name)
                .filter(|n| seen.insert(n.0.clone()))
                .map(|n| (n.0.to_string(), create))
                .collect()
        }
        // Null (or, in v0, empty) asks for every topic, none of them created; those the client
        // may not describe are left out.
        _ => server
            .broker
            .list_topics()
            .into_iter()
            .filter(|t| client.may(server, op::DESCRIBE, resource::TOPIC, t))
            .map(|t| (t, false))
            .collect(),
    };
    let topics = topics
        .into_iter()
        .map(|(name, create)| {
            let reply = MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from(name.clone()))))
                .with_is_internal(crate::broker::is_internal(&name));
            if !client.may(server, op::DESCRIBE, resource::TOPIC, &name) {
                return reply.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            if create
                && inner.auto_creates()
                && !may_create_any
                && !client.may(server, op::CREATE, resource::TOPIC, &name)
                && inner.topic(&name).is_err()
            {
                return reply.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            let found = if create {
                crate::broker::validate_topic_name(&name).and_then(|()| inner.topic_or_create(&name))
            } else {
                inner.topic(&name)
            };
            match found {
                Ok(topic) => {
                    let partitions = topic.partitions.read().len() as i32;
                    reply
                        .with_partitions((0..partitions).map(|p| partition(server, &name, p)).collect())
                        .with_topic_authorized_operations(topic_operations(&name))
                }
                Err(e) => reply.with_error_code(codes::code(&e)),
            }
        })
        .collect();
    let brokers = server
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(StrBytes::from(host))
                .with_port(i32::from(port))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from(server.config.cluster_id.clone())))
        .with_controller_id(BrokerId(server.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_operations)
}

/// A partition's leader, epoch and replicas; LEADER_NOT_AVAILABLE while it has no leader.
fn partition(server: &Server, topic: &str, index: i32) -> MetadataResponsePartition {
    let view = server.placement(topic, index);
    let ids = |ids: Vec<i32>| ids.into_iter().map(BrokerId).collect();
    let reply = MetadataResponsePartition::default()
        .with_partition_index(index)
        .with_leader_id(BrokerId(view.leader.unwrap_or(-1)))
        .with_leader_epoch(view.epoch)
        .with_replica_nodes(ids(view.replicas))
        .with_isr_nodes(ids(view.in_sync));
    match view.leader {
        Some(_) => reply,
        None => reply.with_error_code(ResponseError::LeaderNotAvailable.code()),
    }
}
