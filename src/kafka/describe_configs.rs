//! DescribeConfigs as Kafka answers it: a topic's settings, each with its source (the topic's
//! own, or the broker's default), type and, when asked for, synonyms (the topic's setting and
//! the broker-level setting it falls back to); and the broker's own settings, the defaults
//! its topics take, read-only here.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::acls::{Client, op, resource};
use super::{Server, codes};

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// Kafka's config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DYNAMIC_BROKER_CONFIG: i8 = 2;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// Kafka's config types.
const STRING: i8 = 2;
const INT: i8 = 3;
const LONG: i8 = 5;
const DOUBLE: i8 = 6;
const LIST: i8 = 7;

/// Each topic setting's type and the broker setting it falls back to, as Kafka names them.
fn about(topic_setting: &str) -> (i8, &'static str) {
    match topic_setting {
        "cleanup.policy" => (LIST, "log.cleanup.policy"),
        "compression.type" => (STRING, "compression.type"),
        "delete.retention.ms" => (LONG, "log.cleaner.delete.retention.ms"),
        "flush.messages" => (LONG, "log.flush.interval.messages"),
        "flush.ms" => (LONG, "log.flush.interval.ms"),
        "index.interval.bytes" => (INT, "log.index.interval.bytes"),
        "max.message.bytes" => (INT, "message.max.bytes"),
        "message.timestamp.type" => (STRING, "log.message.timestamp.type"),
        "min.cleanable.dirty.ratio" => (DOUBLE, "log.cleaner.min.cleanable.ratio"),
        "retention.bytes" => (LONG, "log.retention.bytes"),
        "retention.ms" => (LONG, "log.retention.ms"),
        "segment.bytes" => (INT, "log.segment.bytes"),
        "segment.index.bytes" => (INT, "log.index.size.max.bytes"),
        "segment.ms" => (LONG, "log.roll.ms"),
        _ => (STRING, ""),
    }
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from(s.into())
}

/// Answers each resource once (see [`once_each`]). Needs DESCRIBE_CONFIGS on the topic, or on
/// the cluster for a broker's settings.
pub(super) fn describe_configs(
    server: &Server,
    client: &Client,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let synonyms = request.include_synonyms;
    let (defaults, partitions) = server.broker.inner.topic_defaults();
    let default_of: HashMap<&str, String> = defaults.entries().into_iter().collect();
    let results = once_each(request.resources)
        .into_iter()
        .map(|r| {
            let reply = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| &**k == name))
            };
            let allowed = match r.resource_type {
                TOPIC => client.may(server, op::DESCRIBE_CONFIGS, resource::TOPIC, &r.resource_name),
                _ => client.may_on_cluster(server, op::DESCRIBE_CONFIGS),
            };
            match r.resource_type {
                TOPIC if !allowed => reply.with_error_code(ResponseError::TopicAuthorizationFailed.code()),
                BROKER if !allowed => reply.with_error_code(ResponseError::ClusterAuthorizationFailed.code()),
                TOPIC => match server.broker.describe_topic(&r.resource_name) {
                    Ok(topic) => {
                        let configs = topic
                            .config
                            .entries()
                            .into_iter()
                            .filter(|(name, _)| wanted(name))
                            .map(|(name, value)| {
                                let (kind, broker_name) = about(name);
                                let default = default_of.get(name).cloned().unwrap_or_default();
                                let own = value != default;
                                let source = if own { DYNAMIC_TOPIC_CONFIG } else { DEFAULT_CONFIG };
                                let mut entry = DescribeConfigsResourceResult::default()
                                    .with_name(StrBytes::from_static_str(name))
                                    .with_value(Some(text(value.clone())))
                                    .with_config_source(source)
                                    .with_config_type(kind);
                                if synonyms {
                                    let mut list = Vec::new();
                                    if own {
                                        list.push(
                                            DescribeConfigsSynonym::default()
                                                .with_name(StrBytes::from_static_str(name))
                                                .with_value(Some(text(value)))
                                                .with_source(DYNAMIC_TOPIC_CONFIG),
                                        );
                                    }
                                    list.push(
                                        DescribeConfigsSynonym::default()
                                            .with_name(StrBytes::from_static_str(broker_name))
                                            .with_value(Some(text(default)))
                                            .with_source(DEFAULT_CONFIG),
                                    );
                                    entry = entry.with_synonyms(list);
                                }
                                entry
                            })
                            .collect();
                        reply.with_configs(configs)
                    }
                    Err(e) => reply
                        .with_error_code(codes::code(&e))
                        .with_error_message(Some(text(e.to_string()))),
                },
                BROKER => {
                    let mut settings: Vec<(&str, String, i8)> = default_of
                        .iter()
                        .map(|(name, value)| {
                            let (kind, broker_name) = about(name);
                            (broker_name, value.clone(), kind)
                        })
                        .filter(|(name, _, _)| !name.is_empty())
                        .collect();
                    settings.push(("num.partitions", partitions.to_string(), INT));
                    settings.push(("broker.id", server.node_id().to_string(), INT));
                    settings.sort_unstable();
                    let fixed = settings.into_iter().map(|(name, value, kind)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(name))
                            .with_value(Some(text(value)))
                            .with_read_only(true)
                            .with_config_source(STATIC_BROKER_CONFIG)
                            .with_config_type(kind)
                    });
                    let mut configs: Vec<DescribeConfigsResourceResult> =
                        fixed.chain(dynamic_settings(server, synonyms)).collect();
                    configs.retain(|c| wanted(&c.name));
                    configs.sort_by(|a, b| a.name.cmp(&b.name));
                    reply.with_configs(configs)
                }
                other => reply
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(text(format!("resource type {other} is not served")))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The broker's alterable settings: `advertised.listeners` (from the server's configuration,
/// or its default, the listener's address, unless altered) and the dynamic ones kept.
fn dynamic_settings(server: &Server, synonyms: bool) -> Vec<DescribeConfigsResourceResult> {
    let kept = server.shared.settings.settings();
    let (host, port) = server.advertised();
    let advertised = format!("PLAINTEXT://{host}:{port}");
    let configured = if server.config.advertised.is_some() {
        STATIC_BROKER_CONFIG
    } else {
        DEFAULT_CONFIG
    };
    let entry = |name: &str, value: String, source: i8, kind: i8| {
        let mut entry = DescribeConfigsResourceResult::default()
            .with_name(text(name))
            .with_value(Some(text(value.clone())))
            .with_read_only(false)
            .with_config_source(source)
            .with_config_type(kind);
        if synonyms {
            entry = entry.with_synonyms(vec![
                DescribeConfigsSynonym::default()
                    .with_name(text(name))
                    .with_value(Some(text(value)))
                    .with_source(source),
            ]);
        }
        entry
    };
    let mut out = vec![];
    if !kept.contains_key(super::broker_configs::ADVERTISED_LISTENERS) {
        out.push(entry(
            super::broker_configs::ADVERTISED_LISTENERS,
            advertised,
            configured,
            LIST,
        ));
    }
    for (name, value) in kept.iter() {
        let (name, value) = (name.clone(), value.clone());
        let kind = if name == super::broker_configs::ADVERTISED_LISTENERS {
            LIST
        } else {
            STRING
        };
        out.push(entry(&name, value, DYNAMIC_BROKER_CONFIG, kind));
    }
    out
}

/// Each resource once, as Kafka answers it, asking for the keys of all its mentions (all keys
/// if one mention asks for all): a resource named many times costs one answer, so a response
/// is bounded by the topics that exist plus the names in the request.
fn once_each(resources: Vec<DescribeConfigsResource>) -> Vec<DescribeConfigsResource> {
    let mut out: Vec<DescribeConfigsResource> = Vec::new();
    let mut at: HashMap<(i8, StrBytes), usize> = HashMap::new();
    for r in resources {
        match at.entry((r.resource_type, r.resource_name.clone())) {
            Entry::Occupied(e) => {
                let kept = &mut out[*e.get()].configuration_keys;
                match (kept.as_mut(), r.configuration_keys) {
                    (Some(keys), Some(more)) => keys.extend(more),
                    _ => *kept = None,
                }
            }
            Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(r);
            }
        }
    }
    out
}
