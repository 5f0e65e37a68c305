//! A produced batch is checked against `max.message.bytes` before it is decompressed, and is
//! decompressed only up to `PRODUCE_DECOMPRESSION_RATIO` times that size: a small compressed
//! batch cannot make the broker inflate 128 MiB.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use rivulet::storage::{BatchBuilder, Compression, compute_crc};
use rivulet::{Broker, Fsync, LogConfig, TopicConfig};
use tokio::net::TcpStream;

/// (error code, error message) of producing `batch` to `topic`'s partition 0.
async fn produce(s: &mut TcpStream, topic: &'static str, batch: Vec<u8>) -> (i16, String) {
    let frame = wire::request(
        ApiKey::Produce,
        9,
        &wire::produce_request(topic, Bytes::from(batch)),
    );
    let reply: ProduceResponse = wire::response(ApiKey::Produce, 9, wire::exchange(s, &frame).await.unwrap());
    let p = &reply.responses[0].partition_responses[0];
    (p.error_code, p.error_message.as_deref().unwrap_or("").to_string())
}

#[tokio::test]
async fn a_small_zstd_batch_inflating_to_40_mib_is_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    // 40 MiB of zeros: a few KiB compressed, within max.message.bytes (1 MiB), but past 32
    // times it once decompressed.
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.push(1, Some(b"k"), Some(&vec![0u8; 40 << 20]), &[]);
    let bomb = b.finish().unwrap().as_bytes().to_vec();
    assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
    let (code, message) = produce(&mut s, "t", bomb).await;
    assert_eq!(code, 87, "INVALID_RECORD: {message}");
    assert!(message.contains("limit"), "{message}");
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 0);

    // A batch within the limit is written.
    let mut b = BatchBuilder::new(Compression::Zstd);
    b.push(1, Some(b"k"), Some(&vec![0u8; 4 << 20]), &[]);
    assert_eq!(
        produce(&mut s, "t", b.finish().unwrap().as_bytes().to_vec())
            .await
            .0,
        0
    );
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 1);
}

#[tokio::test]
async fn a_batch_over_max_message_bytes_is_refused_before_it_is_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let log = LogConfig::default().fsync(Fsync::Never).max_message_bytes(1_000);
    broker
        .create_topic("small", 1, TopicConfig::default().with_log(log))
        .unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    // A batch of 2,000 bytes marked zstd whose body is not zstd (its CRC is right): refused
    // as too large (MESSAGE_TOO_LARGE, 10), which only a check before decompressing can say.
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1, Some(b"k"), Some(&[7u8; 2_000]), &[]);
    let mut batch = b.finish().unwrap().as_bytes().to_vec();
    batch[21..23].copy_from_slice(&4i16.to_be_bytes()); // attributes: zstd
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let (code, message) = produce(&mut s, "small", batch).await;
    assert_eq!(code, 10, "{message}");
}
