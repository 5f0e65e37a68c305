//! ListGroups v5 names every group's type ("classic": the groups served are Kafka's classic
//! groups) and filters by type as well as by state.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;
use rivulet::{Broker, Consumer, ConsumerConfig, Fsync, TopicConfig};
use tokio::net::TcpStream;

#[tokio::test]
async fn groups_are_listed_with_their_type_and_filtered_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let mut member = Consumer::new(&broker, ConsumerConfig::default().group_id("g"));
    member.subscribe(["t"]).unwrap();
    member.poll(Duration::from_millis(200)).unwrap();

    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let s = &mut s;
    let list = |types: &[&'static str], states: &[&'static str]| {
        ListGroupsRequest::default()
            .with_types_filter(types.iter().map(|t| StrBytes::from_static_str(t)).collect())
            .with_states_filter(states.iter().map(|t| StrBytes::from_static_str(t)).collect())
    };
    // Types asked for, states asked for, and the groups listed with their types.
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 5] = [
        (&[], &[], &[("g", "classic")]),
        (&["Classic"], &[], &[("g", "classic")]),
        (&["consumer"], &[], &[]),
        (&["classic"], &["Empty"], &[]),
        (&["consumer", "classic"], &["stable"], &[("g", "classic")]),
    ];
    for (types, states, expected) in cases {
        let frame = wire::exchange(s, &wire::request(ApiKey::ListGroups, 5, &list(types, states)))
            .await
            .expect("an answer");
        let reply: ListGroupsResponse = wire::response(ApiKey::ListGroups, 5, frame);
        assert_eq!(reply.error_code, 0);
        let got: Vec<(&str, &str)> = reply
            .groups
            .iter()
            .map(|g| (g.group_id.0.as_str(), g.group_type.as_str()))
            .collect();
        assert_eq!(got, expected, "types {types:?}, states {states:?}");
    }
}
