//! CreateTopics and DeleteTopics.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Server, codes};
use crate::broker::refuse_internal;
use crate::config::TopicConfig;
use crate::error::Result;

/// Creates each topic with its partition count (-1: the broker's default) and configs. A
/// replication factor above 1 cannot be met by one broker. With `validate_only`, only checks.
pub(super) fn create_topics(server: &Server, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = &server.broker;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let reply = CreatableTopicResult::default().with_name(t.name.clone());
            let (defaults, default_partitions) = broker.inner.topic_defaults();
            let partitions = if t.num_partitions == -1 {
                default_partitions as i32
            } else {
                t.num_partitions
            };
            if t.replication_factor > 1 {
                return reply
                    .with_error_code(ResponseError::InvalidReplicationFactor.code())
                    .with_error_message(Some(StrBytes::from_static_str("this broker has one node")));
            }
            let created = topic_config(defaults, &t.configs).and_then(|config| {
                let partitions = u32::try_from(partitions).unwrap_or(0);
                if request.validate_only {
                    broker.inner.check_new_topic(&t.name.0, partitions, &config)
                } else {
                    broker.create_topic(&t.name.0, partitions, config)
                }
            });
            match created {
                Ok(()) => reply.with_num_partitions(partitions).with_replication_factor(1),
                Err(e) => reply
                    .with_error_code(codes::code(&e))
                    .with_error_message(Some(StrBytes::from(e.to_string()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The topic config a CreateTopics entry asks for: the broker's defaults, then each entry.
fn topic_config(
    mut config: TopicConfig,
    configs: &[kafka_protocol::messages::create_topics_request::CreatableTopicConfig],
) -> Result<TopicConfig> {
    for entry in configs {
        if let Some(value) = &entry.value {
            config.set(&entry.name, value)?;
        }
    }
    Ok(config)
}

/// Deletes topics by name (topic ids, v6, are not known here: `UNKNOWN_TOPIC_ID`).
pub(super) fn delete_topics(
    server: &Server,
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
