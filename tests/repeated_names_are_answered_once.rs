//! A small request cannot make the Kafka front end build a large response: names asked for
//! more than once are answered once (as Kafka does), and a Fetch carries at most
//! `FETCH_MAX_BYTES` of records whatever its `max_bytes`.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FetchRequest, FetchResponse, GroupId, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, LogConfig, TopicConfig};
use tokio::net::TcpStream;

fn name(s: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(s))
}

#[tokio::test]
async fn metadata_naming_a_1000_partition_topic_5000_times_answers_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("wide", 1000, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let topics = vec![MetadataRequestTopic::default().with_name(Some(name("wide"))); 5000];
    let frame = wire::request(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(Some(topics)),
    );
    assert!(frame.len() < 64 << 10, "a small request: {} bytes", frame.len());
    let reply = wire::exchange(&mut s, &frame).await.expect("an answer");
    // One topic of 1,000 partitions is about 26 KB; 5,000 copies were 130 MB.
    assert!(reply.len() < 64 << 10, "a response of {} bytes", reply.len());
    let reply: MetadataResponse = wire::response(ApiKey::Metadata, 1, reply);
    assert_eq!(reply.topics.len(), 1);
    assert_eq!(reply.topics[0].partitions.len(), 1000);
}

#[tokio::test]
async fn describe_groups_and_configs_naming_one_thing_many_times_answer_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let groups = vec![GroupId(StrBytes::from_static_str("g")); 10_000];
    let frame = wire::request(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(groups),
    );
    let reply: DescribeGroupsResponse = wire::response(
        ApiKey::DescribeGroups,
        5,
        wire::exchange(&mut s, &frame).await.unwrap(),
    );
    assert_eq!(reply.groups.len(), 1);

    // Every mention of the topic: one result, with the keys of all mentions.
    let keys = |k: &'static str| Some(vec![StrBytes::from_static_str(k)]);
    let mut resources = vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configuration_keys(keys("retention.ms"));
        10_000
    ];
    resources[1].configuration_keys = keys("cleanup.policy");
    let request = DescribeConfigsRequest::default().with_resources(resources);
    let frame = wire::request(ApiKey::DescribeConfigs, 4, &request);
    let reply: DescribeConfigsResponse = wire::response(
        ApiKey::DescribeConfigs,
        4,
        wire::exchange(&mut s, &frame).await.unwrap(),
    );
    assert_eq!(reply.results.len(), 1);
    let mut names: Vec<_> = reply.results[0]
        .configs
        .iter()
        .map(|c| c.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["cleanup.policy", "retention.ms"]);
}

#[tokio::test]
async fn a_fetch_asking_for_2_gib_gets_at_most_fetch_max_bytes() {
    const PARTITIONS: i32 = 4;
    const BATCH: usize = 512 << 10;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never));
    broker.create_topic("big", PARTITIONS as u32, config).unwrap();
    // 4 partitions of 16 MiB: 64 MiB in all, above the 55 MiB limit.
    let value = vec![7u8; BATCH - 200];
    for p in 0..PARTITIONS as u32 {
        let log = broker.partition("big", p).unwrap();
        for _ in 0..(16 << 20) / BATCH {
            let mut b = BatchBuilder::new(Compression::None);
            b.push(1, None, Some(&value), &[]);
            log.append(b.finish().unwrap()).unwrap();
        }
        log.flush().unwrap();
    }
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let partitions = (0..PARTITIONS)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_partition_max_bytes(i32::MAX)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("big"))
                .with_partitions(partitions),
        ]);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::Fetch, 11, &request))
        .await
        .unwrap();
    let reply: FetchResponse = wire::response(ApiKey::Fetch, 11, frame);
    let records: usize = reply.responses[0]
        .partitions
        .iter()
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .sum();
    assert!(records > 50 << 20, "the limit is used: {records} bytes");
    assert!(
        records <= rivulet::kafka::FETCH_MAX_BYTES,
        "{records} bytes of records"
    );
}

#[tokio::test]
async fn a_fetch_naming_a_partition_many_times_reads_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let config = TopicConfig::default().with_log(LogConfig::default().fsync(Fsync::Never));
    broker.create_topic("t", 1, config).unwrap();
    let log = broker.partition("t", 0).unwrap();
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1, None, Some(&vec![7u8; 1 << 19]), &[]);
    log.append(b.finish().unwrap()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    // Each mention used to read the 512 KiB batch again (and throw it away, over its limit).
    let partitions = vec![
        FetchPartition::default()
            .with_partition(0)
            .with_partition_max_bytes(1);
        5_000
    ];
    let request = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(i32::MAX)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("t"))
                .with_partitions(partitions),
        ]);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::Fetch, 11, &request))
        .await
        .unwrap();
    let reply: FetchResponse = wire::response(ApiKey::Fetch, 11, frame);
    assert_eq!(reply.responses.len(), 1);
    assert_eq!(
        reply.responses[0].partitions.len(),
        1,
        "one answer for the partition"
    );
    let records = reply.responses[0].partitions[0].records.as_ref().unwrap();
    assert!(records.len() > 1 << 19, "the first batch comes whole");
}

#[tokio::test]
async fn list_offsets_naming_a_partition_many_times_answers_it_once() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Each lookup by timestamp may read and decompress batches.
    let partitions = vec![
        ListOffsetsPartition::default()
            .with_partition_index(0)
            .with_timestamp(0);
        5_000
    ];
    let request = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name("t"))
                .with_partitions(partitions),
        ]);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::ListOffsets, 1, &request))
        .await
        .unwrap();
    let reply: ListOffsetsResponse = wire::response(ApiKey::ListOffsets, 1, frame);
    assert_eq!(reply.topics.len(), 1);
    assert_eq!(reply.topics[0].partitions.len(), 1);
}

#[tokio::test]
async fn offset_fetch_naming_a_partition_many_times_answers_it_once() {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
    use rivulet::{Consumer, ConsumerConfig, TopicPartition};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    // A commit with the most metadata a commit may carry: each answer repeats it.
    let mut c = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    let tp = TopicPartition::new("t", 0);
    c.assign(std::slice::from_ref(&tp)).unwrap();
    c.commit_offsets(&[(tp, 0, &"m".repeat(4096))]).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(name("t"))
                .with_partition_indexes(vec![0; 10_000]),
        ]));
    let frame = wire::request(ApiKey::OffsetFetch, 1, &request);
    assert!(frame.len() < 64 << 10, "a small request: {} bytes", frame.len());
    let reply = wire::exchange(&mut s, &frame).await.expect("an answer");
    // 10,000 answers of 4 KiB each were 40 MB.
    assert!(reply.len() < 64 << 10, "a response of {} bytes", reply.len());
    let reply: OffsetFetchResponse = wire::response(ApiKey::OffsetFetch, 1, reply);
    assert_eq!(reply.topics.len(), 1);
    assert_eq!(reply.topics[0].partitions.len(), 1);
    assert_eq!(
        reply.topics[0].partitions[0].metadata.as_deref().map(str::len),
        Some(4096)
    );
}
