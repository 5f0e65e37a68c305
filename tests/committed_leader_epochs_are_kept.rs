//! The leader epoch a Kafka client commits with an offset is kept and answered back by
//! OffsetFetch, also after a restart (it was answered as -1).
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

fn name() -> TopicName {
    TopicName(StrBytes::from_static_str("t"))
}

async fn fetch(broker: &Broker) -> (i64, i32) {
    let (addr, _stop) = wire::serve(broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("g")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(name())
                .with_partition_indexes(vec![0]),
        ]));
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::OffsetFetch, 7, &request))
        .await
        .expect("an answer");
    let reply: OffsetFetchResponse = wire::response(ApiKey::OffsetFetch, 7, frame);
    let p = &reply.topics[0].partitions[0];
    (p.committed_offset, p.committed_leader_epoch)
}

#[tokio::test]
async fn a_committed_leader_epoch_is_answered_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
        broker.create_topic("t", 1, TopicConfig::default()).unwrap();
        let (addr, _stop) = wire::serve(&broker, Default::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(name())
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(12)
                            .with_committed_leader_epoch(7),
                    ]),
            ]);
        let frame = wire::exchange(&mut s, &wire::request(ApiKey::OffsetCommit, 8, &commit))
            .await
            .expect("an answer");
        let reply: OffsetCommitResponse = wire::response(ApiKey::OffsetCommit, 8, frame);
        assert_eq!(reply.topics[0].partitions[0].error_code, 0);
        assert_eq!(fetch(&broker).await, (12, 7));
        broker.close().unwrap();
    }
    let broker = Broker::open(dir.path()).unwrap();
    assert_eq!(fetch(&broker).await, (12, 7));
}
