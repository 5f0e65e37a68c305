//! A Kafka connection that sends nothing for `connections.max.idle.ms` is closed, between
//! requests or halfway through one, and its slot serves the next client.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use rivulet::Broker;
use rivulet::kafka::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `s` within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, s.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn idle_connections_are_closed_and_free_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let idle = Duration::from_millis(300);
    let config = ServerConfig::default()
        .max_connections(2)
        .connections_max_idle(idle);
    let (addr, _stop) = wire::serve(&broker, config).await;
    let versions = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());

    // One client answered, then silent; another stops halfway through a request.
    let mut quiet = TcpStream::connect(addr).await.unwrap();
    assert!(wire::exchange(&mut quiet, &versions).await.is_some());
    let mut halfway = TcpStream::connect(addr).await.unwrap();
    halfway.write_u32(versions.len() as u32).await.unwrap();
    halfway.write_all(&versions[..4]).await.unwrap();

    let started = Instant::now();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(10)).await,
        "the quiet one"
    );
    assert!(
        closed_within(&mut halfway, Duration::from_secs(10)).await,
        "the halfway one"
    );
    assert!(started.elapsed() >= idle - Duration::from_millis(50));

    // Both slots are free again.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(wire::exchange(&mut s, &versions).await.is_some());
        held.push(s);
    }
}

#[tokio::test(start_paused = true)]
async fn by_default_a_connection_idle_for_10_minutes_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(dir.path()).unwrap();
    let (addr, _stop) = wire::serve(&broker, ServerConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let versions = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert!(wire::exchange(&mut s, &versions).await.is_some());
    let started = tokio::time::Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3600)).await);
    let after = started.elapsed();
    assert!(
        (Duration::from_secs(599)..Duration::from_secs(601)).contains(&after),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_responses_is_closed_and_frees_its_slot() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use rivulet::storage::{BatchBuilder, Compression};
    use rivulet::{Fsync, TopicConfig};

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let log = broker.partition("t", 0).unwrap();
    for _ in 0..16 {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(1, None, Some(&vec![1u8; 512 << 10]), &[]);
        log.append(b.finish().unwrap()).unwrap();
    }
    let idle = Duration::from_millis(300);
    let config = ServerConfig::default()
        .max_connections(1)
        .connections_max_idle(idle);
    let (addr, _stop) = wire::serve(&broker, config).await;

    // Asks for 8 MiB again and again and reads none of it, until the server stops taking
    // requests (its writes to the full socket wait).
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(64 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(64 << 20)]),
        ]);
    let fetch = wire::request(ApiKey::Fetch, 11, &fetch);
    let mut deaf = TcpStream::connect(addr).await.unwrap();
    for _ in 0..8 {
        let sent = tokio::time::timeout(Duration::from_secs(2), wire::send(&mut deaf, &fetch)).await;
        if !matches!(sent, Ok(Some(()))) {
            break;
        }
    }

    // The one slot serves a new client soon after.
    let versions = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if wire::exchange(&mut s, &versions).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the slot is still held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(deaf);
}
