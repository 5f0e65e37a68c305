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
    // The broker's log settings are fixed while it runs: INVALID_CONFIG.
    let broker_config = vec![change("log.retention.ms", SET, Some("5"))];
    assert_eq!(
        incremental(&mut s, vec![resource(4, "0", broker_config)], false).await,
        [40]
    );
    let twice = vec![resource(2, "t", vec![]), resource(2, "t", vec![])];
    assert_eq!(incremental(&mut s, twice, false).await, [42, 42]);
    assert_eq!(
        incremental(&mut s, vec![resource(2, "nope", vec![])], false).await,
        [3]
    );
    // DELETE of a setting this broker does not have: absent already, as Kafka takes it.
    let absent = vec![change("min.insync.replicas", DELETE, None)];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", absent)], false).await,
        [0]
    );
    // INVALID_REQUEST (42): a SET without a value, a setting named twice.
    let no_value = vec![change("retention.ms", SET, None)];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", no_value)], false).await,
        [42]
    );
    let named_twice = vec![
        change("retention.ms", SET, Some("5")),
        change("retention.ms", DELETE, None),
    ];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", named_twice)], false).await,
        [42]
    );
    // flush.ms and flush.messages are one fsync policy: DELETE of either restores the
    // default's whole (here fsync never, for the broker's default).
    let interval = vec![change("flush.ms", SET, Some("250"))];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", interval)], false).await,
        [0]
    );
    assert_eq!(
        log.config().get_fsync(),
        Fsync::Interval(std::time::Duration::from_millis(250))
    );
    let default_flush = vec![change("flush.messages", DELETE, None)];
    assert_eq!(
        incremental(&mut s, vec![resource(2, "t", default_flush)], false).await,
        [0]
    );
    assert_eq!(log.config().get_fsync(), Fsync::Never);

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

#[tokio::test]
async fn describe_configs_reports_sources_types_synonyms_and_the_brokers_settings() {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path())
        .fsync(Fsync::Never)
        .num_partitions(3)
        .open()
        .unwrap();
    let mut config = TopicConfig::default();
    config.set("retention.ms", "1000").unwrap();
    broker.create_topic("t", 1, config).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let resource = |kind: i8, name: &'static str, keys: &[&'static str]| {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_configuration_keys(Some(keys.iter().map(|k| StrBytes::from_static_str(k)).collect()))
    };
    let request = DescribeConfigsRequest::default()
        .with_include_synonyms(true)
        .with_resources(vec![
            resource(2, "t", &["retention.ms", "segment.bytes"]),
            resource(4, "0", &["num.partitions", "log.retention.ms"]),
        ]);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::DescribeConfigs, 4, &request))
        .await
        .expect("an answer");
    let reply: DescribeConfigsResponse = wire::response(ApiKey::DescribeConfigs, 4, frame);
    /// Name, value, source, type, read-only, and synonyms (name, source).
    type Entry = (String, String, i8, i8, bool, Vec<(String, i8)>);
    let entries = |i: usize| -> Vec<Entry> {
        reply.results[i]
            .configs
            .iter()
            .map(|c| {
                let synonyms = c
                    .synonyms
                    .iter()
                    .map(|s| (s.name.to_string(), s.source))
                    .collect();
                (
                    c.name.to_string(),
                    c.value.as_deref().unwrap_or("").to_string(),
                    c.config_source,
                    c.config_type,
                    c.read_only,
                    synonyms,
                )
            })
            .collect()
    };
    let week = (7 * 24 * 3600 * 1000u64).to_string();
    // The topic's own setting (DYNAMIC_TOPIC_CONFIG, 1) over the broker's default
    // (DEFAULT_CONFIG, 5); types LONG (5) and INT (3).
    assert_eq!(
        entries(0),
        [
            (
                "retention.ms".into(),
                "1000".into(),
                1,
                5,
                false,
                vec![("retention.ms".into(), 1), ("log.retention.ms".into(), 5)]
            ),
            (
                "segment.bytes".into(),
                (1u64 << 30).to_string(),
                5,
                3,
                false,
                vec![("log.segment.bytes".into(), 5)]
            ),
        ]
    );
    // The broker's settings: read-only here, STATIC_BROKER_CONFIG (4).
    assert_eq!(
        entries(1),
        [
            ("log.retention.ms".into(), week, 4, 5, true, vec![]),
            ("num.partitions".into(), "3".into(), 4, 3, true, vec![]),
        ]
    );
}

/// `message.format.version`, which Kafka 3 takes and ignores (every batch is v2), is taken
/// when it names a Kafka version and changes nothing; anything else is refused.
#[tokio::test]
async fn the_ignored_message_format_version_is_taken_and_checked() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let before = broker.describe_topic("t").unwrap().config.entries();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let version = |v: &'static str| resource(2, "t", vec![change("message.format.version", SET, Some(v))]);
    for good in ["0.10.0.0", "0.10.0", "2.8-IV1", "3.0"] {
        assert_eq!(
            incremental(&mut s, vec![version(good)], false).await,
            [0],
            "{good}"
        );
    }
    let deleted = resource(2, "t", vec![change("message.format.version", DELETE, None)]);
    assert_eq!(incremental(&mut s, vec![deleted], false).await, [0]);
    for bad in ["", "ten", "1", "0.10.0.0.0", "0.10-IV", "0..1"] {
        // INVALID_CONFIG (40).
        assert_eq!(
            incremental(&mut s, vec![version(bad)], false).await,
            [40],
            "{bad:?}"
        );
    }
    assert_eq!(broker.describe_topic("t").unwrap().config.entries(), before);
}
