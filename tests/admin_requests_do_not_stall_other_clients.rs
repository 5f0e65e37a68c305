//! CreateTopics, DeleteTopics and Metadata's auto-creation wait for the disk (as DeleteRecords
//! does); they run off the async workers, so other clients are answered meanwhile, even on a
//! single-threaded runtime.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, DeleteTopicsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, TopicConfig};
use tokio::net::TcpStream;

/// Partitions enough that creating or deleting them takes a few hundred milliseconds.
const PARTITIONS: u32 = 300;

fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

/// Sends `slow` on one connection and, while it is answered, pings on another: (how long the
/// slow request took, the longest a ping waited).
async fn ping_during(addr: std::net::SocketAddr, slow: BytesMut) -> (Duration, Duration) {
    let mut busy = TcpStream::connect(addr).await.unwrap();
    let mut other = TcpStream::connect(addr).await.unwrap();
    let ping = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(wire::exchange(&mut other, &ping).await.is_some());
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        assert!(wire::exchange(&mut busy, &slow).await.is_some());
        started.elapsed()
    });
    let mut longest = Duration::ZERO;
    while !slow.is_finished() {
        let sent = Instant::now();
        assert!(wire::exchange(&mut other, &ping).await.is_some());
        longest = longest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (slow.await.unwrap(), longest)
}

#[tokio::test]
async fn admin_requests_run_while_other_clients_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path())
        .num_partitions(PARTITIONS)
        .open()
        .unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;

    let create = CreateTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name("created"))
                .with_num_partitions(PARTITIONS as i32)
                .with_replication_factor(1),
        ]);
    let auto = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("auto"))),
        ]));
    let delete = DeleteTopicsRequest::default()
        .with_timeout_ms(60_000)
        .with_topic_names(vec![name("created"), name("auto")]);
    for (what, request) in [
        ("CreateTopics", wire::request(ApiKey::CreateTopics, 7, &create)),
        (
            "Metadata creating a topic",
            wire::request(ApiKey::Metadata, 9, &auto),
        ),
        ("DeleteTopics", wire::request(ApiKey::DeleteTopics, 5, &delete)),
    ] {
        let (took, longest_ping) = ping_during(addr, request).await;
        assert!(took > Duration::from_millis(50), "{what} took only {took:?}");
        assert!(
            longest_ping < took / 2,
            "{what} took {took:?} and a ping waited {longest_ping:?}"
        );
    }
    assert!(broker.list_topics().is_empty());
    broker.create_topic("kept", 1, TopicConfig::default()).unwrap();
}
