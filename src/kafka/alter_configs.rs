//! AlterConfigs and IncrementalAlterConfigs for topics: the new configuration is checked
//! whole and then applied to the topic's open partitions at once (`Broker::alter_topic_config`).
//!
//! AlterConfigs replaces a topic's settings: what it names is set, the rest returns to the
//! broker's defaults, as Kafka replaces a topic's dynamic configs. IncrementalAlterConfigs
//! changes only what it names: SET, DELETE (back to the default), and APPEND or SUBTRACT for
//! the one list-valued setting, `cleanup.policy`. Broker resources are not alterable here.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;

use super::acls::{Client, op, resource};
use super::{Server, broker_configs, codes};
use crate::broker::refuse_internal;
use crate::config::TopicConfig;
use crate::error::{Error, Result};

/// Kafka's resource types of a topic and of a broker.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// One change IncrementalAlterConfigs asks for (AlterConfigs asks only for sets).
#[derive(Debug)]
enum Change<'a> {
    Set(&'a str, &'a str),
    Delete(&'a str),
    Append(&'a str, &'a str),
    Subtract(&'a str, &'a str),
}

impl Change<'_> {
    fn name(&self) -> &str {
        match *self {
            Change::Set(name, _)
            | Change::Delete(name)
            | Change::Append(name, _)
            | Change::Subtract(name, _) => name,
        }
    }
}

/// The outcome for one resource: `None` for success, or an error code and its message.
type Outcome = Option<(i16, String)>;

/// Checks and (unless `validate_only`) applies `changes` to a topic's configuration, starting
/// from `base` (its current one, or the defaults for AlterConfigs).
fn alter(
    server: &Server,
    resource_type: i8,
    name: &str,
    base: impl FnOnce(&TopicConfig) -> TopicConfig,
    changes: &[Change<'_>],
    validate_only: bool,
) -> Outcome {
    if resource_type != TOPIC {
        let why = "only topic and broker configs are alterable on this broker".to_string();
        return Some((ResponseError::InvalidRequest.code(), why));
    }
    let (defaults, _) = server.broker.inner.topic_defaults();
    let altered = refuse_internal(name).and_then(|()| {
        server
            .broker
            .inner
            .alter_topic_config_with(name, validate_only, |current| {
                let mut config = base(current);
                for change in changes {
                    apply(&mut config, &defaults, change)?;
                }
                Ok(config)
            })
    });
    altered.err().map(|e| (codes::code(&e), e.to_string()))
}

/// `message.format.version`: deprecated by Kafka 3.0, which ignores it (every batch is written in
/// the v2 format) but still takes it, and removed in Kafka 4.0. It is taken, checked as a
/// Kafka version, and not kept.
pub(super) const IGNORED: &str = "message.format.version";

/// Checks a value of [`IGNORED`]: a Kafka version such as `0.10.0`, `0.10.0.0` or `2.8-IV1`.
pub(super) fn check_ignored(value: &str) -> Result<()> {
    let (version, iv) = value.split_once("-IV").unwrap_or((value, "0"));
    let parts: Vec<&str> = version.split('.').collect();
    let number = |p: &str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    if (2..=4).contains(&parts.len()) && parts.iter().all(|p| number(p)) && number(iv) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            name: IGNORED,
            value: value.to_string(),
            reason: "not a Kafka version",
        })
    }
}

/// Checks and (unless `validate_only`) applies `changes` to the broker's dynamic settings
/// (after clearing them all, with `replace`, as AlterConfigs does).
fn alter_broker(
    server: &Server,
    name: &str,
    changes: &[Change<'_>],
    replace: bool,
    validate_only: bool,
) -> Outcome {
    let invalid = |why: String| Some((ResponseError::InvalidRequest.code(), why));
    if name != server.node_id().to_string() {
        return invalid(format!(
            "this is broker {}; cluster-wide defaults are not alterable",
            server.node_id()
        ));
    }
    let changes: Result<Vec<broker_configs::Change<'_>>, String> = changes
        .iter()
        .map(|c| match *c {
            Change::Set(name, value) => Ok((name, Some(value))),
            Change::Delete(name) => Ok((name, None)),
            Change::Append(name, _) | Change::Subtract(name, _) => Err(format!(
                "{name}: APPEND and SUBTRACT apply to topic settings only"
            )),
        })
        .collect();
    let altered = changes.and_then(|changes| server.shared.settings.alter(&changes, replace, validate_only));
    altered
        .err()
        .map(|why| (ResponseError::InvalidConfig.code(), why))
}

fn apply(config: &mut TopicConfig, defaults: &TopicConfig, change: &Change<'_>) -> Result<()> {
    let list = |name: &str| -> Result<Vec<String>> {
        if name != "cleanup.policy" {
            return Err(Error::InvalidConfig {
                name: "config operation",
                value: name.to_string(),
                reason: "APPEND and SUBTRACT apply to list settings (cleanup.policy) only",
            });
        }
        let current = value_of(config, name);
        Ok(current.split(',').map(|s| s.trim().to_string()).collect())
    };
    match *change {
        Change::Set(IGNORED, value) => check_ignored(value),
        Change::Delete(IGNORED) => Ok(()),
        Change::Set(name, value) => config.set(name, value),
        // `flush.messages` and `flush.ms` are one setting here (the fsync policy): back to the
        // default's whole, not through one of its two names.
        Change::Delete("flush.messages" | "flush.ms") => {
            let fsync = defaults.log().get_fsync();
            *config = config.clone().with_log(config.log().clone().fsync(fsync));
            Ok(())
        }
        // A setting this broker does not have is absent already, as Kafka takes it.
        Change::Delete(name) if value_of(defaults, name).is_empty() => Ok(()),
        Change::Delete(name) => config.set(name, &value_of(defaults, name)),
        Change::Append(name, value) => {
            let mut values = list(name)?;
            for v in value.split(',').map(str::trim) {
                if !values.iter().any(|have| have == v) {
                    values.push(v.to_string());
                }
            }
            config.set(name, &values.join(","))
        }
        Change::Subtract(name, value) => {
            let gone: Vec<&str> = value.split(',').map(str::trim).collect();
            let values: Vec<String> = list(name)?
                .into_iter()
                .filter(|v| !gone.contains(&v.as_str()))
                .collect();
            config.set(name, &values.join(","))
        }
    }
}

/// The value of setting `name` in `config`, as DescribeConfigs lists it ("" if unknown: the
/// set that follows refuses the name).
fn value_of(config: &TopicConfig, name: &str) -> String {
    config
        .entries()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(String::new(), |(_, v)| v)
}

/// Resources named twice are refused, as Kafka refuses them.
fn duplicates<'a>(resources: impl Iterator<Item = (i8, &'a str)>) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    let mut twice = HashSet::new();
    for (kind, name) in resources {
        if !seen.insert((kind, name)) {
            twice.insert((kind, name.to_string()));
        }
    }
    twice
}

fn named_twice() -> Outcome {
    Some((
        ResponseError::InvalidRequest.code(),
        "the resource is named twice".to_string(),
    ))
}

/// The refusal of a client that may not ALTER_CONFIGS the resource (the topic, or the cluster
/// for a broker's settings).
fn denied(server: &Server, client: &Client, resource_type: i8, name: &str) -> Outcome {
    let (allowed, code) = if resource_type == TOPIC {
        (
            client.may(server, op::ALTER_CONFIGS, resource::TOPIC, name),
            ResponseError::TopicAuthorizationFailed,
        )
    } else {
        (
            client.may_on_cluster(server, op::ALTER_CONFIGS),
            ResponseError::ClusterAuthorizationFailed,
        )
    };
    (!allowed).then(|| (code.code(), "the client may not alter these settings".to_string()))
}

/// The outcome for one resource of either request: refused if named twice or not the
/// client's to alter, or if its changes did not decode; else the changes applied to a topic
/// or to the broker. With `replace` (AlterConfigs), what is not named returns to its default:
/// a topic starts from the broker's defaults, the broker's dynamic settings from none.
fn outcome(
    server: &Server,
    client: &Client,
    twice: &HashSet<(i8, String)>,
    (resource_type, name): (i8, &str),
    changes: Result<Vec<Change<'_>>, String>,
    replace: bool,
    validate_only: bool,
) -> Outcome {
    if twice.contains(&(resource_type, name.to_string())) {
        return named_twice();
    }
    if let Some(refusal) = denied(server, client, resource_type, name) {
        return Some(refusal);
    }
    let changes = match changes {
        Ok(changes) => changes,
        Err(why) => return Some((ResponseError::InvalidRequest.code(), why)),
    };
    let mut names = HashSet::new();
    if !changes.iter().all(|c| names.insert(c.name())) {
        let why = "a setting is named twice".to_string();
        return Some((ResponseError::InvalidRequest.code(), why));
    }
    if resource_type == BROKER {
        return alter_broker(server, name, &changes, replace, validate_only);
    }
    let base = |current: &TopicConfig| {
        if replace {
            server.broker.inner.topic_defaults().0
        } else {
            current.clone()
        }
    };
    alter(server, resource_type, name, base, &changes, validate_only)
}

fn message(outcome: Outcome) -> (i16, Option<StrBytes>) {
    outcome.map_or((0, None), |(c, m)| (c, Some(StrBytes::from(m))))
}

/// AlterConfigs: each topic gets the settings named, the rest the broker's defaults.
pub(super) fn alter_configs(
    server: &Server,
    client: &Client,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let twice = duplicates(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let responses = request
        .resources
        .iter()
        .map(|r| {
            let changes = r
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => Ok(Change::Set(c.name.as_str(), v.as_str())),
                    None => Ok(Change::Delete(c.name.as_str())),
                })
                .collect();
            let resource = (r.resource_type, r.resource_name.as_str());
            let (code, message) = message(outcome(
                server,
                client,
                &twice,
                resource,
                changes,
                true,
                request.validate_only,
            ));
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs: each topic's named settings change, the rest stay.
pub(super) fn incremental_alter_configs(
    server: &Server,
    client: &Client,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let twice = duplicates(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let responses = request
        .resources
        .iter()
        .map(|r| {
            let changes: Result<Vec<Change<'_>>, String> = r
                .configs
                .iter()
                .map(|c| {
                    let name = c.name.as_str();
                    let value = c.value.as_deref();
                    match (c.config_operation, value) {
                        (1, _) => Ok(Change::Delete(name)),
                        (0, Some(value)) => Ok(Change::Set(name, value)),
                        (2, Some(value)) => Ok(Change::Append(name, value)),
                        (3, Some(value)) => Ok(Change::Subtract(name, value)),
                        (0..=3, None) => Err(format!("no value to set {name} to")),
                        (op, _) => Err(format!("unknown config operation {op}")),
                    }
                })
                .collect();
            let resource = (r.resource_type, r.resource_name.as_str());
            let (code, message) = message(outcome(
                server,
                client,
                &twice,
                resource,
                changes,
                false,
                request.validate_only,
            ));
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
