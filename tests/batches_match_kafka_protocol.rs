//! Cross-check of the batch format against an independent implementation, the
//! `kafka-protocol` crate: batches we encode decode there field by field, and batches it
//! encodes decode here field by field, with every codec.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KCompression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType as KTimestampType,
};
use proptest::prelude::*;
use rivulet::storage::{Batch, BatchBuilder, Compression, RecordBatch, TimestampType};

#[derive(Debug, Clone)]
struct Spec {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Unique keys: the other crate keeps headers in a map.
    headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone)]
struct BatchSpec {
    records: Vec<Spec>,
    codec: Compression,
    producer: Option<(i64, i16, i32)>,
    transactional: bool,
    base_offset: i64,
    leader_epoch: i32,
}

fn bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.85, proptest::collection::vec(any::<u8>(), 0..max))
}

fn spec() -> impl Strategy<Value = Spec> {
    let headers = proptest::collection::btree_map("[a-z]{1,6}", bytes(16), 0..4)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>());
    (0i64..2_000_000_000_000, bytes(40), bytes(300), headers).prop_map(|(timestamp, key, value, headers)| {
        Spec {
            timestamp,
            key,
            value,
            headers,
        }
    })
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    let codec = prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ];
    let producer = proptest::option::of((0i64..1 << 40, 0i16..100, 0i32..1_000_000));
    (
        proptest::collection::vec(spec(), 1..20),
        codec,
        producer,
        any::<bool>(),
        0i64..1 << 50,
        0i32..1000,
    )
        .prop_map(
            |(records, codec, producer, transactional, base_offset, leader_epoch)| BatchSpec {
                records,
                codec,
                producer,
                transactional,
                base_offset,
                leader_epoch,
            },
        )
}

fn theirs(c: Compression) -> KCompression {
    match c {
        Compression::None => KCompression::None,
        Compression::Gzip => KCompression::Gzip,
        Compression::Snappy => KCompression::Snappy,
        Compression::Lz4 => KCompression::Lz4,
        Compression::Zstd => KCompression::Zstd,
    }
}

/// Our encoding of the batch, with offsets and epoch patched as the log would.
fn ours(spec: &BatchSpec) -> Vec<u8> {
    let mut b = BatchBuilder::new(spec.codec).transactional(spec.transactional);
    if let Some((id, epoch, seq)) = spec.producer {
        b = b.producer(id, epoch, seq);
    }
    for r in &spec.records {
        let headers: Vec<rivulet::Header<'_>> = r
            .headers
            .iter()
            .map(|(k, v)| rivulet::Header {
                key: k.as_bytes(),
                value: v.as_deref(),
            })
            .collect();
        b.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    let mut batch = b.finish().unwrap();
    batch.set_partition_leader_epoch(spec.leader_epoch);
    // The base offset is patched the same way the log patches it: bytes 0-7.
    let mut bytes = batch.into_bytes();
    bytes[..8].copy_from_slice(&spec.base_offset.to_be_bytes());
    bytes
}

fn their_records(spec: &BatchSpec) -> Vec<KRecord> {
    let (producer_id, producer_epoch, base_sequence) = spec.producer.unwrap_or((-1, -1, -1));
    spec.records
        .iter()
        .enumerate()
        .map(|(i, r)| KRecord {
            transactional: spec.transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: spec.leader_epoch,
            producer_id,
            producer_epoch,
            timestamp_type: KTimestampType::Creation,
            offset: spec.base_offset + i as i64,
            // The other crate derives each record's sequence as base + delta, even for -1.
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn our_batches_decode_there_field_by_field(spec in batch_spec()) {
        let mut buf = Bytes::from(ours(&spec));
        let set = RecordBatchDecoder::decode(&mut buf).unwrap();
        prop_assert_eq!(set.version, 2);
        prop_assert_eq!(set.compression, theirs(spec.codec));
        let want = their_records(&spec);
        prop_assert_eq!(set.records.len(), want.len());
        for (got, want) in set.records.iter().zip(&want) {
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn their_batches_decode_here_field_by_field(spec in batch_spec()) {
        let records = their_records(&spec);
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: theirs(spec.codec) };
        RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        let bytes = buf.to_vec();

        let (batch, rest) = Batch::parse(&bytes).unwrap();
        prop_assert!(rest.is_empty());
        let h = batch.header();
        prop_assert_eq!(h.base_offset, spec.base_offset);
        prop_assert_eq!(h.partition_leader_epoch, spec.leader_epoch);
        prop_assert_eq!(h.record_count as usize, spec.records.len());
        prop_assert_eq!(h.compression().unwrap(), spec.codec);
        prop_assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        prop_assert_eq!(h.is_transactional(), spec.transactional);
        prop_assert_eq!(h.max_timestamp, spec.records.iter().map(|r| r.timestamp).max().unwrap());
        let (pid, pepoch, pseq) = spec.producer.unwrap_or((-1, -1, -1));
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (pid, pepoch, pseq));
        let decoded = batch.records().unwrap();
        for (i, (got, want)) in decoded.iter().zip(&spec.records).enumerate() {
            let got = got.unwrap();
            prop_assert_eq!(got.offset, spec.base_offset + i as i64);
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(got.key, want.key.as_deref());
            prop_assert_eq!(got.value, want.value.as_deref());
            let headers: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                got.headers().map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec))).collect();
            let want_headers: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                want.headers.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.clone())).collect();
            prop_assert_eq!(headers, want_headers);
        }
        prop_assert_eq!(decoded.iter().count(), spec.records.len());
        // And it is a batch the log accepts from the wire as it is.
        RecordBatch::from_bytes(bytes).unwrap();
    }
}
