//! A Produce with acks 0 gets no response, so a refusal closes its connection, as Kafka does:
//! the client notices and refreshes its metadata instead of losing records silently.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn silent_produce(topic: &'static str) -> bytes::BytesMut {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let batch = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    wire::request(
        ApiKey::Produce,
        9,
        &wire::produce_request(topic, batch).with_acks(0),
    )
}

#[tokio::test]
async fn a_refused_produce_with_acks_0_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let versions = wire::request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());

    // Accepted: no response, and the connection serves the next request.
    let mut s = TcpStream::connect(addr).await.unwrap();
    wire::send(&mut s, &silent_produce("t")).await.unwrap();
    assert!(wire::exchange(&mut s, &versions).await.is_some());
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 1);

    // Refused (an unknown topic): the connection is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    wire::send(&mut s, &silent_produce("nope")).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
}
