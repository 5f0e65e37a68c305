//! Idempotent batches are accepted only from producer ids the broker issued and has not
//! expired (`UNKNOWN_PRODUCER_ID` otherwise, nothing written); InitProducerId naming an id it
//! never issued gets a new one.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse};
use rivulet::kafka::ServerConfig;
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

const UNKNOWN_PRODUCER_ID: i16 = 59;

async fn init(s: &mut TcpStream, id: i64, epoch: i16) -> (i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(id.into())
        .with_producer_epoch(epoch);
    let frame = wire::exchange(s, &wire::request(ApiKey::InitProducerId, 4, &request))
        .await
        .unwrap();
    let reply: InitProducerIdResponse = wire::response(ApiKey::InitProducerId, 4, frame);
    assert_eq!(reply.error_code, 0);
    (reply.producer_id.0, reply.producer_epoch)
}

/// The error code of one batch of producer `id` (epoch 0) at `sequence`.
async fn produce(s: &mut TcpStream, id: i64, sequence: i32) -> i16 {
    let mut b = BatchBuilder::new(Compression::None).producer(id, 0, sequence);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let batch = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    let frame = wire::request(ApiKey::Produce, 9, &wire::produce_request("t", batch));
    let reply: ProduceResponse = wire::response(ApiKey::Produce, 9, wire::exchange(s, &frame).await.unwrap());
    reply.responses[0].partition_responses[0].error_code
}

#[tokio::test]
async fn only_issued_unexpired_producer_ids_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let config = ServerConfig::default().producer_id_expiration(Duration::from_millis(500));
    let (addr, _stop) = wire::serve(&broker, config).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let end = || broker.partition("t", 0).unwrap().log_end_offset();

    // An id the client made up.
    assert_eq!(produce(&mut s, 12_345, 0).await, UNKNOWN_PRODUCER_ID);
    assert_eq!(end(), 0);
    // Naming it in InitProducerId does not adopt it.
    let (id, epoch) = init(&mut s, 12_345, 0).await;
    assert_ne!(id, 12_345);
    assert_eq!(epoch, 0);
    // The issued id produces; its current epoch can be bumped, as before.
    assert_eq!(produce(&mut s, id, 0).await, 0);
    assert_eq!(init(&mut s, id, 0).await, (id, 1));
    assert_eq!(end(), 1);

    // Unused past producer.id.expiration.ms, the id is forgotten.
    let (idle, _) = init(&mut s, -1, -1).await;
    assert_eq!(produce(&mut s, idle, 0).await, 0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(produce(&mut s, idle, 1).await, UNKNOWN_PRODUCER_ID);
    assert_eq!(end(), 2);
}
