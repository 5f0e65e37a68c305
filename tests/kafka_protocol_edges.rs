//! The Kafka front end spoken to by hand (requests encoded with the `kafka-protocol` crate):
//! idempotent producers' retries and gaps, old and unknown versions, unknown API keys and
//! oversized or malformed frames. A bad request closes its own connection only.
#![cfg(feature = "kafka")]

use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(dir: &std::path::Path) -> (SocketAddr, Broker, tokio::sync::oneshot::Sender<()>) {
    start_with(dir, rivulet::kafka::ServerConfig::default()).await
}

async fn start_with(
    dir: &std::path::Path,
    config: rivulet::kafka::ServerConfig,
) -> (SocketAddr, Broker, tokio::sync::oneshot::Sender<()>) {
    let broker = Broker::builder(dir).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rivulet::kafka::serve_with(
        listener,
        broker.clone(),
        config,
        async {
            stopped.await.ok();
        },
    ));
    (addr, broker, stop)
}

/// Sends one frame; the response frame, or `None` if the server closed the connection.
async fn exchange(stream: &mut TcpStream, frame: &[u8]) -> Option<Bytes> {
    stream.write_u32(frame.len() as u32).await.ok()?;
    stream.write_all(frame).await.ok()?;
    let len = stream.read_u32().await.ok()?;
    let mut buf = vec![0; len as usize];
    stream.read_exact(&mut buf).await.ok()?;
    Some(Bytes::from(buf))
}

fn request<T: Encodable>(api: ApiKey, version: i16, body: &T) -> BytesMut {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("edges")))
        .encode(&mut out, api.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    out
}

fn response<T: Decodable>(api: ApiKey, version: i16, mut frame: Bytes) -> T {
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    T::decode(&mut frame, version).unwrap()
}

fn produce_request(id: i64, epoch: i16, sequence: i32, records: usize) -> ProduceRequest {
    let mut b = BatchBuilder::new(Compression::None).producer(id, epoch, sequence);
    for i in 0..records {
        b.push(1_000, Some(format!("k{i}").as_bytes()), Some(b"v"), &[]);
    }
    let batch = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch)),
                ]),
        ])
}

/// (error code, base offset) of the one partition of a produce.
async fn produce(stream: &mut TcpStream, request: &ProduceRequest) -> (i16, i64) {
    const V: i16 = 9;
    let frame = exchange(stream, &self::request(ApiKey::Produce, V, request))
        .await
        .unwrap();
    let reply: ProduceResponse = response(ApiKey::Produce, V, frame);
    let p = &reply.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn idempotent_retries_are_written_once_and_gaps_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, broker, _stop) = start(dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let init = |id: i64, epoch: i16| {
        request(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(id.into())
                .with_producer_epoch(epoch),
        )
    };
    let reply: InitProducerIdResponse = response(
        ApiKey::InitProducerId,
        4,
        exchange(&mut s, &init(-1, -1)).await.unwrap(),
    );
    assert_eq!((reply.error_code, reply.producer_epoch), (0, 0));
    let id = reply.producer_id.0;
    assert!(id >= 0);

    let first = produce_request(id, 0, 0, 3);
    assert_eq!(produce(&mut s, &first).await, (0, 0));
    // A retry of the same batch: the same answer, nothing written again.
    assert_eq!(produce(&mut s, &first).await, (0, 0));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 3);
    assert_eq!(produce(&mut s, &produce_request(id, 0, 3, 2)).await, (0, 3));
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER (45), nothing written.
    assert_eq!(produce(&mut s, &produce_request(id, 0, 9, 1)).await, (45, -1));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 5);

    // The producer bumps its epoch; the old epoch is fenced: INVALID_PRODUCER_EPOCH (47).
    let reply: InitProducerIdResponse = response(
        ApiKey::InitProducerId,
        4,
        exchange(&mut s, &init(id, 0)).await.unwrap(),
    );
    assert_eq!((reply.producer_id.0, reply.producer_epoch), (id, 1));
    assert_eq!(produce(&mut s, &produce_request(id, 1, 0, 1)).await, (0, 5));
    assert_eq!(produce(&mut s, &produce_request(id, 0, 5, 1)).await, (47, -1));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 6);
}

#[tokio::test]
async fn bad_requests_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, broker, _stop) = start(dir.path()).await;
    let mut good = TcpStream::connect(addr).await.unwrap();

    // An ApiVersions version not served: a v0 reply with UNSUPPORTED_VERSION (35) and the
    // table, so the client can choose.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(99);
    frame.put_i32(7);
    frame.put_i16(-1);
    let mut reply = exchange(&mut good, &frame).await.unwrap();
    assert_eq!(reply.get_i32(), 7);
    assert_eq!(reply.get_i16(), 35);
    assert_eq!(reply.get_i32() as usize, rivulet::kafka::API_VERSIONS.len());

    // Produce v2 (message sets before RecordBatch v2): UNSUPPORTED_VERSION per partition.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Produce as i16);
    frame.put_i16(2);
    frame.put_i32(7);
    frame.put_i16(-1); // no client id
    frame.put_i16(1); // acks
    frame.put_i32(1000); // timeout
    frame.put_i32(1); // one topic
    frame.put_i16(1);
    frame.put_slice(b"t");
    frame.put_i32(1); // one partition
    frame.put_i32(0);
    frame.put_i32(3);
    frame.put_slice(b"old");
    let mut reply = exchange(&mut good, &frame).await.unwrap();
    assert_eq!(reply.get_i32(), 7);
    assert_eq!(reply.get_i32(), 1);
    assert_eq!(reply.get_i16(), 1);
    assert_eq!(&reply.split_to(1)[..], b"t");
    assert_eq!(reply.get_i32(), 1);
    assert_eq!(reply.get_i32(), 0);
    assert_eq!(reply.get_i16(), 35);

    // Each of these closes its own connection.
    let mut unknown_key = BytesMut::new();
    unknown_key.put_i16(999);
    unknown_key.put_i16(0);
    unknown_key.put_i32(7);
    unknown_key.put_i16(-1);
    let mut truncated = request(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default());
    truncated.truncate(truncated.len() - 3);
    for (what, frame) in [
        ("an unknown API key", unknown_key.to_vec()),
        ("a truncated body", truncated.to_vec()),
        ("a frame shorter than a header", vec![0, 3]),
    ] {
        let mut bad = TcpStream::connect(addr).await.unwrap();
        assert!(
            exchange(&mut bad, &frame).await.is_none(),
            "{what}: the connection closes"
        );
    }
    // A length past the limit closes the connection before anything is read.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_u32(u32::MAX).await.unwrap();
    assert!(
        bad.read_u8().await.is_err(),
        "an oversized frame closes the connection"
    );

    // The good connection still works.
    let (code, offset) = produce(&mut good, &produce_request(-1, -1, -1, 2)).await;
    assert_eq!((code, offset), (0, 0));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once_within_a_limit_then_a_normal_client() {
    const LIMIT: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let config = rivulet::kafka::ServerConfig::default().max_connections(LIMIT);
    let (addr, broker, _stop) = start_with(dir.path(), config).await;

    // LIMIT connections at once, each producing 20 batches of 2 records.
    let clients: Vec<_> = (0..LIMIT)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for _ in 0..20 {
                    assert_eq!(produce(&mut s, &produce_request(-1, -1, -1, 2)).await.0, 0);
                }
                s
            })
        })
        .collect();
    let mut open = Vec::new();
    for c in clients {
        open.push(c.await.unwrap());
    }
    assert_eq!(
        broker.partition("t", 0).unwrap().log_end_offset(),
        (LIMIT * 20 * 2) as i64
    );

    // With LIMIT connections open, one more is closed at once.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let ping = request(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default().with_transactional_id(None),
    );
    assert!(exchange(&mut extra, &ping).await.is_none(), "over the limit");

    // Garbage on a few of them closes those; the freed places serve new clients.
    for s in open.iter_mut().take(10) {
        s.write_all(&[0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9])
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if let Some(frame) = exchange(&mut s, &ping).await {
            let reply: InitProducerIdResponse = response(ApiKey::InitProducerId, 4, frame);
            assert_eq!(reply.error_code, 0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The connections left alone still work.
    assert_eq!(produce(&mut open[50], &produce_request(-1, -1, -1, 1)).await.0, 0);
}

#[tokio::test]
async fn delete_records_moves_the_log_start_and_describe_cluster_names_this_broker() {
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    use kafka_protocol::messages::{
        DeleteRecordsRequest, DeleteRecordsResponse, DescribeClusterRequest, DescribeClusterResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let (addr, broker, _stop) = start(dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert_eq!(produce(&mut s, &produce_request(-1, -1, -1, 5)).await, (0, 0));

    let delete = |offset: i64| {
        DeleteRecordsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(offset),
                    ]),
            ])
    };
    for (offset, code, low) in [(3, 0, 3), (99, 1, -1), (-1, 0, 5)] {
        let frame = exchange(&mut s, &request(ApiKey::DeleteRecords, 2, &delete(offset)))
            .await
            .unwrap();
        let reply: DeleteRecordsResponse = response(ApiKey::DeleteRecords, 2, frame);
        let p = &reply.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.low_watermark),
            (code, low),
            "delete before {offset}"
        );
    }
    assert_eq!(broker.partition("t", 0).unwrap().log_start_offset(), 5);

    let frame = exchange(
        &mut s,
        &request(ApiKey::DescribeCluster, 1, &DescribeClusterRequest::default()),
    )
    .await
    .unwrap();
    let reply: DescribeClusterResponse = response(ApiKey::DescribeCluster, 1, frame);
    assert_eq!(reply.brokers.len(), 1);
    assert_eq!(reply.brokers[0].port, i32::from(addr.port()));
    assert_eq!(reply.controller_id.0, reply.brokers[0].broker_id.0);
}

#[tokio::test]
async fn a_produce_with_acks_0_is_written_and_gets_no_response() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, broker, _stop) = start(dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let silent = produce_request(-1, -1, -1, 4).with_acks(0);
    let frame = request(ApiKey::Produce, 9, &silent);
    s.write_u32(frame.len() as u32).await.unwrap();
    s.write_all(&frame).await.unwrap();
    // The next response on the connection answers the next request, not the silent one.
    assert_eq!(produce(&mut s, &produce_request(-1, -1, -1, 1)).await, (0, 4));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 5);
}

#[tokio::test]
async fn transactional_requests_follow_kafkas_rules() {
    use kafka_protocol::messages::{
        EndTxnRequest, EndTxnResponse, FindCoordinatorRequest, FindCoordinatorResponse, TransactionalId,
    };
    let dir = tempfile::tempdir().unwrap();
    let (addr, broker, _stop) = start(dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let init = |timeout: i32| {
        InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("txn"))))
            .with_transaction_timeout_ms(timeout)
    };
    // A timeout past transaction.max.timeout.ms: INVALID_TRANSACTION_TIMEOUT (50).
    let frame = exchange(&mut s, &request(ApiKey::InitProducerId, 4, &init(900_001)))
        .await
        .unwrap();
    let reply: InitProducerIdResponse = response(ApiKey::InitProducerId, 4, frame);
    assert_eq!((reply.error_code, reply.producer_id.0), (50, -1));
    // A transactional id gets a producer id at epoch 0, then the next epoch.
    let frame = exchange(&mut s, &request(ApiKey::InitProducerId, 4, &init(60_000)))
        .await
        .unwrap();
    let reply: InitProducerIdResponse = response(ApiKey::InitProducerId, 4, frame);
    assert_eq!(reply.error_code, 0);
    assert_eq!(reply.producer_epoch, 0);
    let id = reply.producer_id.0;
    let frame = exchange(&mut s, &request(ApiKey::InitProducerId, 4, &init(60_000)))
        .await
        .unwrap();
    let reply: InitProducerIdResponse = response(ApiKey::InitProducerId, 4, frame);
    assert_eq!(
        (reply.error_code, reply.producer_id.0, reply.producer_epoch),
        (0, id, 1)
    );

    // Its batch to a partition it did not add to a transaction: INVALID_TXN_STATE (48),
    // nothing written.
    let mut b = BatchBuilder::new(Compression::None)
        .producer(id, 1, 0)
        .transactional(true);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let mut request = produce_request(id, 1, 0, 1);
    request.topic_data[0].partition_data[0].records =
        Some(Bytes::from(b.finish().unwrap().as_bytes().to_vec()));
    assert_eq!(produce(&mut s, &request).await, (48, -1));
    assert_eq!(broker.partition("t", 0).unwrap().log_end_offset(), 0);
    // Ending a transaction it never began: INVALID_TXN_STATE; with the old epoch:
    // INVALID_PRODUCER_EPOCH (47) before EndTxn v2, PRODUCER_FENCED (90) from it.
    for (version, epoch, code) in [(1, 1, 48), (1, 0, 47), (3, 0, 90)] {
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("txn")))
            .with_producer_id(id.into())
            .with_producer_epoch(epoch)
            .with_committed(true);
        let frame = exchange(&mut s, &crate::request(ApiKey::EndTxn, version, &end))
            .await
            .unwrap();
        let reply: EndTxnResponse = response(ApiKey::EndTxn, version, frame);
        assert_eq!(reply.error_code, code, "v{version}, epoch {epoch}");
    }

    // The transaction coordinator is this broker.
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str("txn"))
        .with_key_type(1);
    let frame = exchange(&mut s, &crate::request(ApiKey::FindCoordinator, 3, &find))
        .await
        .unwrap();
    let reply: FindCoordinatorResponse = response(ApiKey::FindCoordinator, 3, frame);
    assert_eq!((reply.error_code, reply.port), (0, i32::from(addr.port())));
}

#[tokio::test]
async fn a_commit_naming_an_unknown_partition_stores_the_known_ones() {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, OffsetCommitRequest, OffsetCommitResponse};
    let dir = tempfile::tempdir().unwrap();
    let (addr, broker, _stop) = start(dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let commit = |partitions: &[i32]| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(7)
                            })
                            .collect(),
                    ),
            ])
    };
    let codes = |frame| -> Vec<i16> {
        let reply: OffsetCommitResponse = response(ApiKey::OffsetCommit, 8, frame);
        reply.topics[0].partitions.iter().map(|p| p.error_code).collect()
    };
    // Partition 5 does not exist: UNKNOWN_TOPIC_OR_PARTITION (3) for it, as in Kafka; the
    // known partition is committed.
    let frame = exchange(&mut s, &request(ApiKey::OffsetCommit, 8, &commit(&[0, 5])))
        .await
        .unwrap();
    assert_eq!(codes(frame), [0, 3]);
    assert_eq!(broker.group_offsets("g").unwrap().len(), 1);
    let frame = exchange(&mut s, &request(ApiKey::OffsetCommit, 8, &commit(&[0])))
        .await
        .unwrap();
    assert_eq!(codes(frame), [0]);
    assert_eq!(broker.group_offsets("g").unwrap()[0].committed.offset, 7);
}

#[tokio::test]
async fn bytes_after_a_request_body_are_ignored_as_kafka_ignores_them() {
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    let dir = tempfile::tempdir().unwrap();
    let (addr, _broker, _stop) = start(dir.path()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // librdkafka 2.14 ends its "all topics" Metadata request with 3 such bytes.
    for version in [4, 9, 12] {
        let all = MetadataRequest::default().with_topics(None);
        let mut frame = request(ApiKey::Metadata, version, &all);
        frame.put_slice(&[0, 0, 0]);
        let reply = exchange(&mut s, &frame)
            .await
            .expect("an answer, not a closed connection");
        let reply: MetadataResponse = response(ApiKey::Metadata, version, reply);
        assert_eq!(reply.brokers.len(), 1, "v{version}");
    }
}
