//! DeleteGroups deletes a group and its committed offsets as Kafka does, and refuses a group
//! that has members or that the broker does not know; OffsetDelete deletes a group's offsets
//! of topics none of its members is subscribed to.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig, TopicPartition};
use tokio::net::TcpStream;

#[tokio::test]
async fn delete_groups_deletes_idle_groups_and_refuses_active_or_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    // "idle" has a commit and no members; "active" has a member.
    let tp = TopicPartition::new("t", 0);
    let mut idle = Consumer::new(&broker, ConsumerConfig::default().group_id("idle"));
    idle.assign(std::slice::from_ref(&tp)).unwrap();
    idle.commit_offsets(&[(tp, 0, "")]).unwrap();
    drop(idle);
    let mut active = Consumer::new(&broker, ConsumerConfig::default().group_id("active"));
    active.subscribe(["t"]).unwrap();
    active.poll(Duration::from_millis(200)).unwrap();

    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let names = ["idle", "idle", "nobody", "active"]
        .map(|g| GroupId(StrBytes::from_static_str(g)))
        .to_vec();
    for version in [0, 2] {
        let request = DeleteGroupsRequest::default().with_groups_names(names.clone());
        let frame = wire::exchange(&mut s, &wire::request(ApiKey::DeleteGroups, version, &request))
            .await
            .expect("an answer");
        let reply: DeleteGroupsResponse = wire::response(ApiKey::DeleteGroups, version, frame);
        let got: Vec<(&str, i16)> = reply
            .results
            .iter()
            .map(|r| (r.group_id.0.as_str(), r.error_code))
            .collect();
        // GROUP_ID_NOT_FOUND (69), NON_EMPTY_GROUP (68); "idle" answered once, and gone the
        // second time.
        let idle = if version == 0 { 0 } else { 69 };
        assert_eq!(
            got,
            [("idle", idle), ("nobody", 69), ("active", 68)],
            "v{version}"
        );
    }
    assert!(broker.group_offsets("idle").unwrap().is_empty());
    assert!(broker.describe_group("active").is_ok());
}

#[tokio::test]
async fn offset_delete_deletes_offsets_of_topics_no_member_subscribes_to() {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    broker.create_topic("u", 1, TopicConfig::default()).unwrap();
    let (t0, u0) = (TopicPartition::new("t", 0), TopicPartition::new("u", 0));
    let mut committer = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    committer.assign(&[t0.clone(), u0.clone()]).unwrap();
    committer.commit_offsets(&[(t0, 1, ""), (u0, 2, "")]).unwrap();
    drop(committer);
    // A member subscribed to "t" keeps using its offsets.
    let mut member = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    member.subscribe(["t"]).unwrap();
    member.poll(Duration::from_millis(200)).unwrap();

    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let ask = |group: &'static str| {
        let topic = |name: &'static str, partitions: &[i32]| {
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(name)))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                        .collect(),
                )
        };
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str(group)))
            .with_topics(vec![
                topic("t", &[0]),
                topic("u", &[0, 0, 5, -1]),
                topic("nope", &[0]),
            ])
    };
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::OffsetDelete, 0, &ask("g")))
        .await
        .expect("an answer");
    let reply: OffsetDeleteResponse = wire::response(ApiKey::OffsetDelete, 0, frame);
    let got: Vec<(&str, i32, i16)> = reply
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str(), p.partition_index, p.error_code))
        })
        .collect();
    // GROUP_SUBSCRIBED_TO_TOPIC (86) for "t"; "u"-0 deleted, named twice but answered once;
    // UNKNOWN_TOPIC_OR_PARTITION (3) for a partition or topic that does not exist.
    assert_eq!(
        (reply.error_code, got),
        (
            0,
            vec![
                ("t", 0, 86),
                ("u", 0, 0),
                ("u", 5, 3),
                ("u", -1, 3),
                ("nope", 0, 3)
            ]
        )
    );
    let left: Vec<String> = broker
        .group_offsets("g")
        .unwrap()
        .iter()
        .map(|o| o.partition.topic.clone())
        .collect();
    assert_eq!(left, ["t"]);
    // GROUP_ID_NOT_FOUND (69) for a group the broker does not know.
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::OffsetDelete, 0, &ask("none")))
        .await
        .expect("an answer");
    let reply: OffsetDeleteResponse = wire::response(ApiKey::OffsetDelete, 0, frame);
    assert_eq!(reply.error_code, 69);
}
