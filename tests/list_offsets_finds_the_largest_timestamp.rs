//! ListOffsets v7 with timestamp -3 (MAX_TIMESTAMP, KIP-734) answers the first record with the
//! largest timestamp, as Kafka does; other lookups keep their meaning.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

async fn lookup(s: &mut TcpStream, topic: &'static str, timestamp: i64) -> (i16, i64, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(topic)))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let frame = wire::exchange(s, &wire::request(ApiKey::ListOffsets, 7, &request))
        .await
        .expect("an answer");
    let reply: ListOffsetsResponse = wire::response(ApiKey::ListOffsets, 7, frame);
    let p = &reply.topics[0].partitions[0];
    (p.error_code, p.offset, p.timestamp)
}

#[tokio::test]
async fn max_timestamp_finds_the_first_record_with_the_largest_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    broker.create_topic("empty", 1, TopicConfig::default()).unwrap();
    let log = broker.partition("t", 0).unwrap();
    // Two batches; the largest timestamp, 50, first at offset 1 (its batch's second record).
    for timestamps in [[10, 50, 30], [50, 20, 40]] {
        let mut b = BatchBuilder::new(Compression::None);
        for ts in timestamps {
            b.push(ts, None, Some(b"v"), &[]);
        }
        log.append(b.finish().unwrap()).unwrap();
    }
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(lookup(&mut s, "t", -3).await, (0, 1, 50));
    assert_eq!(lookup(&mut s, "empty", -3).await, (0, -1, -1));
    // The others as before: earliest, latest, and by timestamp.
    assert_eq!(lookup(&mut s, "t", -2).await, (0, 0, -1));
    assert_eq!(lookup(&mut s, "t", -1).await, (0, 6, -1));
    assert_eq!(lookup(&mut s, "t", 35).await, (0, 1, 50));
}
