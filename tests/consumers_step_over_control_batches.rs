//! Control batches (transaction markers, and the entries a replicated log keeps for itself)
//! take offsets but are not records: a consumer steps over them, as Kafka's consumers do, and
//! its position moves past them even when nothing else follows. Kafka clients may not write
//! them: a produced control batch is refused with INVALID_RECORD and nothing is written.

use std::time::Duration;

use rivulet::storage::{BatchBuilder, Compression, RecordBatch};
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, OffsetReset, TopicConfig, TopicPartition};

fn batch(values: &[&str], control: bool, codec: Compression) -> RecordBatch {
    let mut b = BatchBuilder::new(codec).control(control);
    for v in values {
        b.push(1_000, Some(b"k"), Some(v.as_bytes()), &[]);
    }
    b.finish().unwrap()
}

#[test]
fn a_consumer_steps_over_control_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let log = broker.partition("t", 0).unwrap();
    log.append(batch(&["a", "b"], false, Compression::None)).unwrap();
    log.append(batch(&["marker"], true, Compression::None)).unwrap();
    log.append(batch(&["c", "d"], false, Compression::Lz4)).unwrap();
    log.append(batch(&["m1", "m2"], true, Compression::Zstd)).unwrap();
    assert_eq!(log.log_end_offset(), 7);

    let tp = TopicPartition::new("t", 0);
    let config = ConsumerConfig::default().auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = Consumer::new(&broker, config);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        let records = consumer.poll(Duration::from_millis(50)).unwrap();
        got.extend(
            records
                .iter()
                .map(|r| (r.offset, String::from_utf8(r.value.unwrap().to_vec()).unwrap())),
        );
        if consumer.position(&tp).unwrap() == 7 {
            break;
        }
    }
    let expected: Vec<(i64, String)> = [(0, "a"), (1, "b"), (3, "c"), (4, "d")]
        .iter()
        .map(|&(o, v)| (o, v.to_string()))
        .collect();
    assert_eq!(got, expected);
    // Past the trailing control batch, with nothing more to give.
    assert_eq!(consumer.position(&tp).unwrap(), 7);
    assert!(consumer.poll(Duration::from_millis(20)).unwrap().is_empty());

    // Starting inside a control batch, the next record is the next data batch's.
    consumer.seek(&tp, 2).unwrap();
    let records = consumer.poll(Duration::from_millis(200)).unwrap();
    assert_eq!(records.iter().next().map(|r| r.offset), Some(3));
}

#[cfg(feature = "kafka")]
#[path = "common/wire.rs"]
mod wire;

#[cfg(feature = "kafka")]
#[tokio::test]
async fn kafka_clients_may_not_write_control_batches() {
    use kafka_protocol::messages::{ApiKey, ProduceResponse};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let set = bytes::Bytes::from(batch(&["marker"], true, Compression::None).as_bytes().to_vec());
    let frame = wire::request(ApiKey::Produce, 9, &wire::produce_request("t", set));
    let reply: ProduceResponse =
        wire::response(ApiKey::Produce, 9, wire::exchange(&mut s, &frame).await.unwrap());
    // INVALID_RECORD (87).
    assert_eq!(reply.responses[0].partition_responses[0].error_code, 87);
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 0);
}
