//! An idempotent producer's retry that reaches the broker after a restart is answered with
//! the offset its batch got the first time, not written again: each partition's producer
//! state is kept in snapshot files beside its segments and rebuilt from the batches after the
//! newest one. Its next batch follows on, and a gap is still refused.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse};
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// A batch of producer `id` at `sequence` with two records.
fn batch(id: i64, sequence: i32) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None).producer(id, 0, sequence);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    b.push(now, Some(b"k"), Some(b"one"), &[]);
    b.push(now, Some(b"k"), Some(b"two"), &[]);
    Bytes::from(b.finish().unwrap().as_bytes().to_vec())
}

/// The error code and base offset of a produce of `records`.
async fn produce(s: &mut TcpStream, records: Bytes) -> (i16, i64) {
    let reply: ProduceResponse = wire::ask(s, ApiKey::Produce, 9, &wire::produce_request("t", records)).await;
    let p = &reply.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn an_idempotent_retry_after_a_restart_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let reply: InitProducerIdResponse = wire::ask(&mut s, ApiKey::InitProducerId, 4, &init).await;
    let id = reply.producer_id.0;
    for sequence in [0, 2, 4] {
        assert_eq!(produce(&mut s, batch(id, sequence)).await, (0, sequence as i64));
    }
    // Some segments: the state comes from a snapshot and the batches after it.
    broker.partition("t", 0).unwrap().roll().unwrap();
    assert_eq!(produce(&mut s, batch(id, 6)).await, (0, 6));

    // The broker restarts.
    drop(s);
    drop(stop);
    let broker = wire::reopen(broker, dir.path()).await;
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let end = || broker.partition("t", 0).unwrap().log_end_offset();
    assert_eq!(end(), 8);

    // The last batch retried: its first answer, nothing written. The next batch follows on
    // under the same id; a gap is refused.
    assert_eq!(produce(&mut s, batch(id, 6)).await, (0, 6));
    assert_eq!(end(), 8);
    assert_eq!(produce(&mut s, batch(id, 8)).await, (0, 8));
    assert_eq!(
        produce(&mut s, batch(id, 20)).await.0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    // A retry of a batch before the last, in the segment after the snapshot: answered too.
    assert_eq!(produce(&mut s, batch(id, 6)).await, (0, 6));
    assert_eq!(end(), 10);
}

/// A batch whose append failed (its fsync failed, poisoning the log) is not acknowledged by
/// its retry: the retry finds the batch in the log, but the log never made it durable.
#[tokio::test]
async fn a_retry_of_a_batch_whose_fsync_failed_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let fs = std::sync::Arc::new(rivulet::storage::FaultyFs::new());
    let broker = Broker::builder(dir.path())
        .fsync(Fsync::Always)
        .fs(fs.clone())
        .open()
        .unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let reply: InitProducerIdResponse = wire::ask(&mut s, ApiKey::InitProducerId, 4, &init).await;
    let id = reply.producer_id.0;
    assert_eq!(produce(&mut s, batch(id, 0)).await, (0, 0));
    fs.fail_sync_after(0);
    let (code, _) = produce(&mut s, batch(id, 2)).await;
    assert_ne!(code, 0, "the failed append is not acknowledged");
    let (code, _) = produce(&mut s, batch(id, 2)).await;
    assert_ne!(code, 0, "nor is its retry");
}
