//! CreatePartitions raises a topic's partition count as Kafka does, checks everything before it
//! changes anything, and refuses what one broker cannot do; CreateTopics takes a partition
//! count from manual replica assignments.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Fsync, Producer, ProducerRecord, TopicConfig};
use tokio::net::TcpStream;

fn topic(name: &str, count: i32) -> CreatePartitionsTopic {
    CreatePartitionsTopic::default()
        .with_name(TopicName(StrBytes::from(name.to_string())))
        .with_count(count)
        .with_assignments(None)
}

/// Each topic's error code, in the request's order.
async fn create(s: &mut TcpStream, topics: Vec<CreatePartitionsTopic>, validate_only: bool) -> Vec<i16> {
    let request = CreatePartitionsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000)
        .with_validate_only(validate_only);
    let frame = wire::exchange(s, &wire::request(ApiKey::CreatePartitions, 3, &request))
        .await
        .expect("an answer");
    let reply: CreatePartitionsResponse = wire::response(ApiKey::CreatePartitions, 3, frame);
    reply.results.iter().map(|r| r.error_code).collect()
}

#[tokio::test]
async fn create_partitions_raises_the_count_and_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let count = |b: &Broker| b.describe_topic("t").unwrap().partitions.len();

    // Checked only: nothing changes.
    assert_eq!(create(&mut s, vec![topic("t", 3)], true).await, [0]);
    assert_eq!(count(&broker), 1);
    // Done, and the new partitions take records.
    assert_eq!(create(&mut s, vec![topic("t", 3)], false).await, [0]);
    assert_eq!(count(&broker), 3);
    let sent = Producer::new(&broker)
        .send(ProducerRecord::new("t", b"v").partition(2))
        .unwrap();
    assert_eq!((sent.partition, sent.offset), (2, 0));

    // INVALID_PARTITIONS (37): not above the current count; UNKNOWN_TOPIC_OR_PARTITION (3);
    // INVALID_TOPIC_EXCEPTION (17) for the internal offsets topic.
    let refused = create(
        &mut s,
        vec![topic("t", 3), topic("nope", 2), topic("__consumer_offsets", 5)],
        false,
    )
    .await;
    assert_eq!(refused, [37, 3, 17]);
    // INVALID_REPLICA_ASSIGNMENT (39): one broker holds every replica.
    let elsewhere = topic("t", 4).with_assignments(Some(vec![
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(7)]),
    ]));
    assert_eq!(create(&mut s, vec![elsewhere], false).await, [39]);
    let here = topic("t", 4).with_assignments(Some(vec![
        CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(0)]),
    ]));
    assert_eq!(create(&mut s, vec![here], false).await, [0]);
    // INVALID_REQUEST (42) for a topic named twice, and neither entry applies.
    assert_eq!(
        create(&mut s, vec![topic("t", 6), topic("t", 7)], false).await,
        [42, 42]
    );
    assert_eq!(count(&broker), 4);
    drop(broker);
}

#[tokio::test]
async fn create_topics_takes_its_partition_count_from_replica_assignments() {
    use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let assigned = |name: &'static str, brokers: &[i32], count: i32| {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_num_partitions(count)
            .with_replication_factor(-1)
            .with_assignments(
                brokers
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(i as i32)
                            .with_broker_ids(vec![BrokerId(b)])
                    })
                    .collect(),
            )
    };
    let request = CreateTopicsRequest::default().with_topics(vec![
        assigned("three", &[0, 0, 0], -1),
        assigned("elsewhere", &[0, 5], -1),
        assigned("counted", &[0], 4),
    ]);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::CreateTopics, 5, &request))
        .await
        .expect("an answer");
    let reply: CreateTopicsResponse = wire::response(ApiKey::CreateTopics, 5, frame);
    let got: Vec<(i16, i32)> = reply
        .topics
        .iter()
        .map(|t| (t.error_code, t.num_partitions))
        .collect();
    // INVALID_REPLICA_ASSIGNMENT (39) for a replica on another broker; INVALID_REQUEST (42)
    // for a count beside the assignments.
    assert_eq!(got, [(0, 3), (39, -1), (42, -1)]);
    assert_eq!(broker.describe_topic("three").unwrap().partitions.len(), 3);
    assert!(broker.describe_topic("elsewhere").is_err());
    assert!(broker.describe_topic("counted").is_err());
}
