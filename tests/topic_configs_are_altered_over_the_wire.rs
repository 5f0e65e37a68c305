//! AlterConfigs replaces a topic's settings and IncrementalAlterConfigs changes the ones it
//! names (SET, DELETE, APPEND, SUBTRACT), as Kafka does; a change applies to the open
//! partitions at once, and a request with a bad change changes nothing.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, ApiKey, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_request,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, CleanupPolicy, Fsync, TopicConfig};
use tokio::net::TcpStream;

fn change(name: &'static str, op: i8, value: Option<&'static str>) -> AlterableConfig {
    AlterableConfig::default()
        .with_name(StrBytes::from_static_str(name))
        .with_config_operation(op)
        .with_value(value.map(StrBytes::from_static_str))
}

fn resource(kind: i8, name: &'static str, changes: Vec<AlterableConfig>) -> AlterConfigsResource {
    AlterConfigsResource::default()
        .with_resource_type(kind)
        .with_resource_name(StrBytes::from_static_str(name))
        .with_configs(changes)
}

async fn incremental(
    s: &mut TcpStream,
    resources: Vec<AlterConfigsResource>,
    validate_only: bool,
) -> Vec<i16> {
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(resources)
        .with_validate_only(validate_only);
    let frame = wire::exchange(s, &wire::request(ApiKey::IncrementalAlterConfigs, 1, &request))
        .await
        .expect("an answer");
    let reply: IncrementalAlterConfigsResponse = wire::response(ApiKey::IncrementalAlterConfigs, 1, frame);
    reply.responses.iter().map(|r| r.error_code).collect()
}

fn setting(broker: &Broker, name: &str) -> String {
    let config = broker.describe_topic("t").unwrap().config;
    config.entries().into_iter().find(|(n, _)| *n == name).unwrap().1
}

#[tokio::test]
async fn topic_configs_change_as_asked_and_apply_to_the_open_partitions() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    const APPEND: i8 = 2;
    const SUBTRACT: i8 = 3;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let default_retention = setting(&broker, "retention.ms");
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let set = vec![
        change("retention.ms", SET, Some("1000")),
        change("cleanup.policy", APPEND, Some("compact")),
    ];
    assert_eq!(incremental(&mut s, vec![resource(2, "t", set)], false).await, [0]);
    assert_eq!(setting(&broker, "retention.ms"), "1000");
    let log = broker.partition("t", 0).unwrap();
    assert_eq!(
        log.config().get_cleanup_policy(),
        CleanupPolicy::CompactDelete,
        "the open log"
    );

    let back = vec![
        change("retention.ms", DELETE, None),
        change("cleanup.policy", SUBTRACT, Some("delete")),
    ];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", back)], false).await,
        [0]
    );
    assert_eq!(setting(&broker, "retention.ms"), default_retention);
    assert_eq!(log.config().get_cleanup_policy(), CleanupPolicy::Compact);

    // Checked only; INVALID_CONFIG (40) for a bad value or APPEND to a single value (and the
    // good change beside it is not made); INVALID_REQUEST (42) for a broker resource and for
    // a topic named twice; UNKNOWN_TOPIC_OR_PARTITION (3).
    let segment = setting(&broker, "segment.bytes");
    let checked = vec![change("segment.bytes", SET, Some("1048576"))];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", checked)], true).await,
        [0]
    );
    let bad = vec![
        change("segment.bytes", SET, Some("1048576")),
        change("retention.ms", SET, Some("soon")),
    ];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", bad)], false).await,
        [40]
    );
    let appended = vec![change("retention.ms", APPEND, Some("5"))];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", appended)], false).await,
        [40]
    );
    assert_eq!(setting(&broker, "segment.bytes"), segment, "nothing changed");
    let broker_config = vec![change("log.retention.ms", SET, Some("5"))];
    assert_eq!(
        incremental(&mut s, vec![resource(4, "0", broker_config)], false).await,
        [42]
    );
    let twice = vec![resource(2, "t", vec![]), resource(2, "t", vec![])];
    assert_eq!(incremental(&mut s, twice, false).await, [42, 42]);
    assert_eq!(
        incremental(&mut s, vec![resource(2, "nope", vec![])], false).await,
        [3]
    );

    // AlterConfigs: what it names is set, every other setting returns to its default.
    let request = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("max.message.bytes"))
                    .with_value(Some(StrBytes::from_static_str("2000"))),
            ]),
    ]);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::AlterConfigs, 1, &request))
        .await
        .unwrap();
    let reply: AlterConfigsResponse = wire::response(ApiKey::AlterConfigs, 1, frame);
    assert_eq!(reply.responses[0].error_code, 0);
    assert_eq!(log.config().get_max_message_bytes(), 2000);
    assert_eq!(
        log.config().get_cleanup_policy(),
        CleanupPolicy::Delete,
        "back to the default"
    );
}
