//! A client that leaves during a long-polling Fetch, or a JoinGroup waiting for a rebalance,
//! frees its connection slot at once, however long the request asked to wait.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rivulet::kafka::ServerConfig;
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

/// Sends `request` on a connection to a server with one connection slot, leaves while it is
/// being answered, and checks that the slot then serves a new client soon after.
async fn leave_during(addr: std::net::SocketAddr, request: &[u8]) {
    let mut leaver = TcpStream::connect(addr).await.unwrap();
    wire::send(&mut leaver, request).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(leaver);
    let versions = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if wire::exchange(&mut s, &versions).await.is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the slot is still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_long_poll_of_a_departed_client_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, ServerConfig::default().max_connections(1)).await;

    // Waits "forever" for a byte that never comes, then leaves.
    let forever = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(i32::MAX)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1 << 20)]),
        ]);
    leave_during(addr, &wire::request(ApiKey::Fetch, 11, &forever)).await;
}

#[tokio::test]
async fn a_join_waiting_for_a_rebalance_of_a_departed_client_frees_its_slot() {
    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{GroupId, JoinGroupRequest};
    let dir = tempfile::tempdir().unwrap();
    // The first join of an empty group waits this long for others, up to the join's
    // rebalance timeout (30 minutes, the most a member may ask for).
    let broker = Broker::builder(dir.path())
        .fsync(Fsync::Never)
        .group_initial_rebalance_delay(Duration::from_secs(3600))
        .open()
        .unwrap();
    let (addr, _stop) = wire::serve(&broker, ServerConfig::default().max_connections(1)).await;
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30 * 60 * 1000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(&[
                    0, 1, 0, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0,
                ])),
        ]);
    leave_during(addr, &wire::request(ApiKey::JoinGroup, 3, &join)).await;
}
