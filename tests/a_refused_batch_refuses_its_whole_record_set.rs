//! A Produce whose record set for one partition holds a batch the log refuses writes none of
//! the set, as Kafka does: a retry cannot duplicate the batches before the bad one.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse};
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, CleanupPolicy, Fsync, LogConfig, TopicConfig};
use tokio::net::TcpStream;

/// A batch of one record of `value_len` bytes (keyed or not), of producer `id` from `sequence`.
fn batch(key: Option<&[u8]>, value_len: usize, id: i64, sequence: i32) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    if id >= 0 {
        b = b.producer(id, 0, sequence);
    }
    b.push(1_000, key, Some(&vec![b'v'; value_len]), &[]);
    b.finish().unwrap().as_bytes().to_vec()
}

/// The error code of producing `batches` as one record set to `topic`'s partition 0.
async fn produce(s: &mut TcpStream, topic: &'static str, batches: &[Vec<u8>]) -> i16 {
    let set = Bytes::from(batches.concat());
    let frame = wire::request(ApiKey::Produce, 9, &wire::produce_request(topic, set));
    let reply: ProduceResponse = wire::response(ApiKey::Produce, 9, wire::exchange(s, &frame).await.unwrap());
    reply.responses[0].partition_responses[0].error_code
}

#[tokio::test]
async fn a_refused_batch_refuses_its_whole_record_set() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let small = LogConfig::default().fsync(Fsync::Never).max_message_bytes(2_000);
    broker
        .create_topic("small", 1, TopicConfig::default().with_log(small))
        .unwrap();
    let compacted = TopicConfig::default()
        .with_log(LogConfig::default().fsync(Fsync::Never))
        .cleanup_policy(CleanupPolicy::Compact);
    broker.create_topic("compacted", 1, compacted).unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let end = |topic| broker.partition(topic, 0).unwrap().log_end_offset();

    // A batch over max.message.bytes after a good one: MESSAGE_TOO_LARGE (10), nothing written.
    let set = [batch(Some(b"k"), 10, -1, -1), batch(Some(b"k"), 3_000, -1, -1)];
    assert_eq!(produce(&mut s, "small", &set).await, 10);
    assert_eq!(end("small"), 0);

    // A keyless record in a compacted topic after a keyed batch: INVALID_RECORD (87).
    let set = [batch(Some(b"k"), 10, -1, -1), batch(None, 10, -1, -1)];
    assert_eq!(produce(&mut s, "compacted", &set).await, 87);
    assert_eq!(end("compacted"), 0);

    // An idempotent producer's gap after a good batch: OUT_OF_ORDER_SEQUENCE_NUMBER (45).
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::InitProducerId, 4, &init))
        .await
        .unwrap();
    let id = wire::response::<InitProducerIdResponse>(ApiKey::InitProducerId, 4, frame)
        .producer_id
        .0;
    let set = [batch(Some(b"k"), 10, id, 0), batch(Some(b"k"), 10, id, 5)];
    assert_eq!(produce(&mut s, "t", &set).await, 45);
    assert_eq!(end("t"), 0);
    // The same producer's set in order is written whole; repeated, it is not written again.
    let set = [batch(Some(b"k"), 10, id, 0), batch(Some(b"k"), 10, id, 1)];
    assert_eq!(produce(&mut s, "t", &set).await, 0);
    assert_eq!(produce(&mut s, "t", &set).await, 0);
    assert_eq!(end("t"), 2);
}

/// A compacted topic refuses a batch with keyless records naming each of them, as Kafka does,
/// so that a client fails those records alone as invalid and can send the batch's others again.
#[tokio::test]
async fn a_compacted_topic_names_each_keyless_record_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let compacted = TopicConfig::default()
        .with_log(LogConfig::default().fsync(Fsync::Never))
        .cleanup_policy(CleanupPolicy::Compact);
    broker.create_topic("compacted", 1, compacted).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let mut b = BatchBuilder::new(Compression::Zstd);
    for i in 0..5 {
        let key = (i % 2 == 0).then_some(&b"k"[..]);
        b.push(1_000 + i, key, Some(b"v"), &[]);
    }
    let set = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    let frame = wire::request(ApiKey::Produce, 9, &wire::produce_request("compacted", set));
    let reply: ProduceResponse =
        wire::response(ApiKey::Produce, 9, wire::exchange(&mut s, &frame).await.unwrap());
    let partition = &reply.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 87);
    let named: Vec<i32> = partition.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(named, [1, 3]);
    let why = partition.record_errors[0]
        .batch_index_error_message
        .as_ref()
        .unwrap();
    assert!(why.contains("without key"), "{why}");
    assert_eq!(broker.partition("compacted", 0).unwrap().log_end_offset(), 0);
}

/// A batch of thousands of keyless records is refused naming the first thousand: the answer is
/// bounded, whatever the batch holds.
#[tokio::test]
async fn a_refusal_names_at_most_a_thousand_records() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let compacted = TopicConfig::default()
        .with_log(LogConfig::default().fsync(Fsync::Never))
        .cleanup_policy(CleanupPolicy::Compact);
    broker.create_topic("compacted", 1, compacted).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut b = BatchBuilder::new(Compression::Zstd);
    for i in 0..5_000 {
        b.push(1_000 + i, None, Some(b"v"), &[]);
    }
    let set = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    let frame = wire::request(ApiKey::Produce, 9, &wire::produce_request("compacted", set));
    let reply: ProduceResponse =
        wire::response(ApiKey::Produce, 9, wire::exchange(&mut s, &frame).await.unwrap());
    let partition = &reply.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 87);
    let named: Vec<i32> = partition.record_errors.iter().map(|e| e.batch_index).collect();
    assert_eq!(named, (0..1_000).collect::<Vec<i32>>());
}
