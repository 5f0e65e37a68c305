//! DeleteGroups deletes a group and its committed offsets as Kafka does, and refuses a group
//! that has members or that the broker does not know.
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
