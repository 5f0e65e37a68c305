//! A commit is acknowledged only if a reopened broker reads it back: commit metadata over
//! Kafka's `offset.metadata.max.bytes` (4,096) and group ids over 32,767 bytes (the most the
//! offset-commit key's i16 length holds) are refused before anything is written, in process
//! and over the wire, and earlier commits stay.

use rivulet::group::{MAX_GROUP_ID_BYTES, MAX_OFFSET_METADATA_BYTES};
use rivulet::{Broker, Consumer, ConsumerConfig, Error, Fsync, TopicConfig, TopicPartition};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn consumer(broker: &Broker, group: &str) -> Result<Consumer> {
    let mut c = Consumer::new(broker, ConsumerConfig::default().group_id(group));
    c.assign(&[TopicPartition::new("t", 0)])?;
    Ok(c)
}

#[test]
fn metadata_over_the_limit_is_refused_and_the_last_commit_survives_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tp = TopicPartition::new("t", 0);
    {
        let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
        broker.create_topic("t", 1, TopicConfig::default())?;
        let mut c = consumer(&broker, "g")?;
        let at_limit = "m".repeat(MAX_OFFSET_METADATA_BYTES);
        c.commit_offsets(&[(tp.clone(), 1, &at_limit)])?;
        for len in [MAX_OFFSET_METADATA_BYTES + 1, 40_000] {
            let over = "m".repeat(len);
            let refused = c.commit_offsets(&[(tp.clone(), 2, &over)]);
            assert!(
                matches!(refused, Err(Error::OffsetMetadataTooLarge { len: l, max: 4096, .. }) if l == len),
                "{refused:?}"
            );
        }
        assert_eq!(
            c.committed(std::slice::from_ref(&tp))?[0]
                .as_ref()
                .unwrap()
                .offset,
            1
        );
        drop(c);
        broker.close()?;
    }
    let broker = Broker::open(dir.path())?;
    let c = consumer(&broker, "g")?;
    let committed = c.committed(std::slice::from_ref(&tp))?[0]
        .clone()
        .expect("stored");
    assert_eq!(
        (committed.offset, committed.metadata.len()),
        (1, MAX_OFFSET_METADATA_BYTES)
    );
    Ok(())
}

#[test]
fn a_group_id_over_the_limit_is_refused_and_one_at_the_limit_survives_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tp = TopicPartition::new("t", 0);
    let longest = "g".repeat(MAX_GROUP_ID_BYTES);
    {
        let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
        broker.create_topic("t", 1, TopicConfig::default())?;
        consumer(&broker, &longest)?.commit_offsets(&[(tp.clone(), 3, "")])?;
        let too_long = "g".repeat(40_000);
        let refused = consumer(&broker, &too_long)?.commit_offsets(&[(tp.clone(), 5, "")]);
        assert!(
            matches!(refused, Err(Error::InvalidGroupId { len: 40_000, .. })),
            "{refused:?}"
        );
        let mut subscriber = Consumer::new(&broker, ConsumerConfig::default().group_id(too_long.as_str()));
        assert!(matches!(
            subscriber.subscribe(["t"]),
            Err(Error::InvalidGroupId { .. })
        ));
        assert!(matches!(
            broker.reset_group_offsets(&too_long, &[(tp.clone(), 5)]),
            Err(Error::InvalidGroupId { .. })
        ));
        assert_eq!(
            broker.list_groups()?.len(),
            1,
            "only the group at the limit has offsets"
        );
        broker.close()?;
    }
    let broker = Broker::open(dir.path())?;
    assert_eq!(broker.group_offsets(&longest)?[0].committed.offset, 3);
    Ok(())
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn over_the_wire_only_the_partition_with_oversized_metadata_is_refused() -> Result<()> {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir()?;
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open()?;
    broker.create_topic("t", 2, TopicConfig::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(rivulet::kafka::serve(listener, broker.clone(), async {
        stopped.await.ok();
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let commit = |group: String, metadata: [String; 2]| {
        let partitions = metadata
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                OffsetCommitRequestPartition::default()
                    .with_partition_index(i as i32)
                    .with_committed_offset(9)
                    .with_committed_metadata(Some(StrBytes::from(m)))
            })
            .collect();
        let body = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(partitions),
            ]);
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::OffsetCommit as i16)
            .with_request_api_version(8)
            .with_correlation_id(1)
            .encode(&mut frame, ApiKey::OffsetCommit.request_header_version(8))
            .unwrap();
        body.encode(&mut frame, 8).unwrap();
        frame
    };
    let mut exchange = async |frame: BytesMut| -> Vec<i16> {
        stream.write_u32(frame.len() as u32).await.unwrap();
        stream.write_all(&frame).await.unwrap();
        let len = stream.read_u32().await.unwrap();
        let mut buf = vec![0; len as usize];
        stream.read_exact(&mut buf).await.unwrap();
        let mut buf = Bytes::from(buf);
        ResponseHeader::decode(&mut buf, ApiKey::OffsetCommit.response_header_version(8)).unwrap();
        let reply = OffsetCommitResponse::decode(&mut buf, 8).unwrap();
        reply.topics[0].partitions.iter().map(|p| p.error_code).collect()
    };
    let big = "m".repeat(MAX_OFFSET_METADATA_BYTES + 1);
    // OFFSET_METADATA_TOO_LARGE (12) for partition 1; partition 0 is committed.
    let codes = exchange(commit("g".into(), ["ok".into(), big.clone()])).await;
    assert_eq!(codes, [0, 12]);
    let stored = broker.group_offsets("g")?;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].partition.partition, stored[0].committed.offset),
        (0, 9)
    );
    // INVALID_GROUP_ID (24) for a group id the key cannot hold: nothing stored.
    let codes = exchange(commit("g".repeat(40_000), ["ok".into(), "ok".into()])).await;
    assert_eq!(codes, [24, 24]);
    assert_eq!(broker.list_groups()?.len(), 1);
    Ok(())
}
