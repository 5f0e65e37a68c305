//! The consumer protocol that in-process consumers put in JoinGroup and SyncGroup is Kafka's:
//! what rivulet encodes, an independent implementation (the `kafka-protocol` crate) decodes to
//! the same subscription and assignment, and the other way round, including versions with
//! fields rivulet does not use (generation id, rack id), which it skips.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedPartitions,
};
use kafka_protocol::messages::consumer_protocol_subscription::{
    ConsumerProtocolSubscription, TopicPartition as OwnedPartitions,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rivulet::TopicPartition;
use rivulet::group::{MemberAssignment, Subscription};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Kafka writes the version, then the body of that version.
fn with_version(version: i16, body: impl Encodable) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

fn versioned<T: Decodable>(bytes: &[u8]) -> T {
    let mut buf = Bytes::copy_from_slice(bytes);
    let version = buf.get_i16();
    let decoded = T::decode(&mut buf, version).unwrap();
    assert!(buf.is_empty(), "every byte read");
    decoded
}

#[test]
fn subscriptions_are_kafkas() {
    let ours = Subscription {
        topics: ["clicks".to_string(), "orders".to_string()].into(),
        owned: vec![
            TopicPartition::new("clicks", 0),
            TopicPartition::new("clicks", 4),
            TopicPartition::new("orders", 2),
        ],
        user_data: Some(b"sticky".to_vec()),
    };
    let theirs: ConsumerProtocolSubscription = versioned(&ours.encode());
    let topics: Vec<&str> = theirs.topics.iter().map(|t| t.as_str()).collect();
    assert_eq!(topics, ["clicks", "orders"]);
    assert_eq!(theirs.user_data.as_deref(), Some(&b"sticky"[..]));
    let owned: Vec<(&str, Vec<i32>)> = theirs
        .owned_partitions
        .iter()
        .map(|tp| (tp.topic.0.as_str(), tp.partitions.clone()))
        .collect();
    assert_eq!(owned, [("clicks", vec![0, 4]), ("orders", vec![2])]);

    // A Java client's newest layout (version 3) decodes to the same, extra fields skipped.
    for version in 0..=3 {
        let kafka = ConsumerProtocolSubscription::default()
            .with_topics(vec![
                StrBytes::from_static_str("clicks"),
                StrBytes::from_static_str("orders"),
            ])
            .with_user_data(Some(Bytes::from_static(b"sticky")))
            .with_owned_partitions(vec![
                OwnedPartitions::default()
                    .with_topic(name("clicks"))
                    .with_partitions(vec![0, 4]),
                OwnedPartitions::default()
                    .with_topic(name("orders"))
                    .with_partitions(vec![2]),
            ])
            .with_generation_id(7)
            .with_rack_id(Some(StrBytes::from_static_str("rack-a")));
        let decoded = Subscription::decode(&with_version(version, kafka)).unwrap();
        let mut expected = ours.clone();
        if version == 0 {
            expected.owned.clear(); // version 0 has no owned partitions
        }
        assert_eq!(decoded, expected, "version {version}");
    }
}

#[test]
fn assignments_are_kafkas() {
    let ours = MemberAssignment {
        partitions: vec![
            TopicPartition::new("a", 1),
            TopicPartition::new("a", 3),
            TopicPartition::new("b", 0),
        ],
        user_data: None,
    };
    let theirs: ConsumerProtocolAssignment = versioned(&ours.encode());
    let got: Vec<(&str, Vec<i32>)> = theirs
        .assigned_partitions
        .iter()
        .map(|tp| (tp.topic.0.as_str(), tp.partitions.clone()))
        .collect();
    assert_eq!(got, [("a", vec![1, 3]), ("b", vec![0])]);
    assert_eq!(theirs.user_data, None);

    for version in 0..=3 {
        let kafka = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![
                AssignedPartitions::default()
                    .with_topic(name("a"))
                    .with_partitions(vec![1, 3]),
                AssignedPartitions::default()
                    .with_topic(name("b"))
                    .with_partitions(vec![0]),
            ])
            .with_user_data(None);
        assert_eq!(
            MemberAssignment::decode(&with_version(version, kafka)).unwrap(),
            ours,
            "version {version}"
        );
    }
}
