//! A Fetch asking to wait `i32::MAX` ms for data answers, empty, after `FETCH_MAX_WAIT`.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use rivulet::kafka::{FETCH_MAX_WAIT, ServerConfig};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

#[tokio::test(start_paused = true)]
async fn a_fetch_asking_to_wait_25_days_answers_after_fetch_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, ServerConfig::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let forever = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(i32::MAX)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1 << 20)]),
        ]);
    let started = tokio::time::Instant::now();
    let frame = tokio::time::timeout(
        Duration::from_secs(3600),
        wire::exchange(&mut s, &wire::request(ApiKey::Fetch, 11, &forever)),
    )
    .await
    .expect("an answer within the hour")
    .expect("an answer, not a closed connection");
    let waited = started.elapsed();
    assert!(
        (FETCH_MAX_WAIT..FETCH_MAX_WAIT + Duration::from_secs(1)).contains(&waited),
        "answered after {waited:?}"
    );
    let reply: FetchResponse = wire::response(ApiKey::Fetch, 11, frame);
    let p = &reply.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
}
