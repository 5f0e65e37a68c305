//! The broker's dynamic settings, as Kafka's per-broker dynamic configs: `advertised.listeners`
//! changes the address clients are told at once and survives a restart; the settings of the
//! security mechanisms not served are kept without effect; any other setting is fixed.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use wire::ask;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Fsync};
use tokio::net::TcpStream;

const BROKER: i8 = 4;
const SET: i8 = 0;
const DELETE: i8 = 1;

fn text(t: &'static str) -> StrBytes {
    StrBytes::from_static_str(t)
}

async fn alter(
    s: &mut TcpStream,
    broker: &'static str,
    changes: &[(&'static str, i8, Option<&'static str>)],
) -> i16 {
    let configs = changes
        .iter()
        .map(|&(name, op, value)| {
            AlterableConfig::default()
                .with_name(text(name))
                .with_config_operation(op)
                .with_value(value.map(text))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(text(broker))
            .with_configs(configs),
    ]);
    let reply: IncrementalAlterConfigsResponse = ask(s, ApiKey::IncrementalAlterConfigs, 1, &request).await;
    reply.responses[0].error_code
}

async fn advertised(s: &mut TcpStream) -> (String, i32) {
    let reply: MetadataResponse = ask(
        s,
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )
    .await;
    (reply.brokers[0].host.to_string(), reply.brokers[0].port)
}

/// advertised.listeners as DescribeConfigs gives it: value, source, read-only.
async fn described(s: &mut TcpStream) -> (String, i8, bool) {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(text("0"))
            .with_configuration_keys(Some(vec![text("advertised.listeners")])),
    ]);
    let reply: DescribeConfigsResponse = ask(s, ApiKey::DescribeConfigs, 4, &request).await;
    let entry = &reply.results[0].configs[0];
    (
        entry.value.as_ref().unwrap().to_string(),
        entry.config_source,
        entry.read_only,
    )
}

#[tokio::test]
async fn advertised_listeners_change_at_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let (addr, stop) = wire::serve(&broker, Default::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    let here = ("127.0.0.1".to_string(), i32::from(addr.port()));
    assert_eq!(advertised(c).await, here);
    // Not configured: the default (the listener's address), alterable. DEFAULT_CONFIG is 5.
    let default = (format!("PLAINTEXT://127.0.0.1:{}", addr.port()), 5, false);
    assert_eq!(described(c).await, default);

    // A fixed setting, a second broker, or a malformed listener: refused, nothing changed.
    // INVALID_CONFIG (40), INVALID_REQUEST (42).
    let moved = (
        "advertised.listeners",
        SET,
        Some("PLAINTEXT://kafka.example:19092"),
    );
    assert_eq!(
        alter(c, "0", &[moved, ("log.retention.ms", SET, Some("1"))]).await,
        40
    );
    assert_eq!(alter(c, "1", &[moved]).await, 42);
    assert_eq!(
        alter(c, "0", &[("advertised.listeners", SET, Some("kafka.example"))]).await,
        40
    );
    assert_eq!(advertised(c).await, here);

    let relogin = ("sasl.kerberos.min.time.before.relogin", SET, Some("58000"));
    assert_eq!(alter(c, "0", &[moved, relogin]).await, 0);
    assert_eq!(advertised(c).await, ("kafka.example".to_string(), 19092));
    // DYNAMIC_BROKER_CONFIG is 2.
    assert_eq!(
        described(c).await,
        ("PLAINTEXT://kafka.example:19092".to_string(), 2, false)
    );

    // Kept across a restart: the broker reopened from its directory.
    drop(stop);
    let broker = wire::reopen(broker, dir.path()).await;
    let (addr, stop) = wire::serve(&broker, Default::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let c = &mut c;
    assert_eq!(advertised(c).await, ("kafka.example".to_string(), 19092));
    // Deleted: back to the configured address.
    assert_eq!(alter(c, "0", &[("advertised.listeners", DELETE, None)]).await, 0);
    assert_eq!(
        advertised(c).await,
        ("127.0.0.1".to_string(), i32::from(addr.port()))
    );
    drop(stop);
}
