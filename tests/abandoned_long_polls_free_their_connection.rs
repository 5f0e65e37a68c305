//! A client that leaves during a long-polling Fetch frees its connection slot at once, however
//! long the Fetch asked to wait.
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
    let mut leaver = TcpStream::connect(addr).await.unwrap();
    wire::send(&mut leaver, &wire::request(ApiKey::Fetch, 11, &forever))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(leaver);

    // The one slot serves a new client soon after.
    let versions = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if wire::exchange(&mut s, &versions).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot is still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
