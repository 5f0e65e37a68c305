//! A topic whose `compression.type` names a codec stores produced batches with that codec,
//! compressing them again when the producer used another (as Kafka does); `producer` keeps the
//! producer's codec. Records, offsets and producer fields are kept.
#![cfg(feature = "kafka")]

mod common;
#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use rivulet::storage::{BatchBuilder, BatchHeader, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

#[tokio::test]
async fn topic_compression_type_recompresses_produced_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let cases: [(&'static str, &str, Compression, Compression); 4] = [
        ("to-gzip", "gzip", Compression::None, Compression::Gzip),
        ("zstd-to-lz4", "lz4", Compression::Zstd, Compression::Lz4),
        ("to-none", "uncompressed", Compression::Snappy, Compression::None),
        ("kept", "producer", Compression::Zstd, Compression::Zstd),
    ];
    for (topic, compression, produced, stored) in cases {
        let mut config = TopicConfig::default();
        config.set("compression.type", compression).unwrap();
        broker.create_topic(topic, 1, config).unwrap();

        let mut b = BatchBuilder::new(produced).producer(-1, -1, -1);
        let values: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("value-{i}").repeat(20).into_bytes())
            .collect();
        for (i, v) in values.iter().enumerate() {
            b.push(
                1_000 + i as i64,
                Some(format!("k{i}").as_bytes()),
                Some(v),
                &[rivulet::Header::new("h", b"x")],
            );
        }
        let batch = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
        let frame = wire::request(ApiKey::Produce, 9, &wire::produce_request(topic, batch));
        let reply: ProduceResponse =
            wire::response(ApiKey::Produce, 9, wire::exchange(&mut s, &frame).await.unwrap());
        assert_eq!(reply.responses[0].partition_responses[0].error_code, 0, "{topic}");

        let log = broker.partition(topic, 0).unwrap();
        let fetched = log.read(0, 1 << 20).unwrap();
        let header = BatchHeader::decode(fetched.as_bytes());
        assert_eq!(header.compression().unwrap(), stored, "{topic}");
        assert_eq!(header.record_count, 20, "{topic}");
        let records = common::read_all(&log, 0);
        assert_eq!(records.len(), 20);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            assert_eq!(r.timestamp, 1_000 + i as i64);
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(r.value.as_deref(), Some(&values[i][..]));
            assert_eq!(r.headers, [(b"h".to_vec(), Some(b"x".to_vec()))]);
        }
    }
}
