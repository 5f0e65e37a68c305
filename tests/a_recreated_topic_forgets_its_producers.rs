//! A topic deleted and created again does not inherit its predecessor's idempotent-producer
//! state: a batch its producer sent to the old topic is written to the new one, not answered
//! as a duplicate with an offset the new topic never had.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceResponse};
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_recreated_topic_forgets_its_producers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();

    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let frame = wire::exchange(&mut s, &wire::request(ApiKey::InitProducerId, 4, &init))
        .await
        .unwrap();
    let id = wire::response::<InitProducerIdResponse>(ApiKey::InitProducerId, 4, frame)
        .producer_id
        .0;
    let mut b = BatchBuilder::new(Compression::None).producer(id, 0, 0);
    b.push(1, Some(b"k"), Some(b"v"), &[]);
    let batch = Bytes::from(b.finish().unwrap().as_bytes().to_vec());
    let produce = wire::request(ApiKey::Produce, 9, &wire::produce_request("t", batch));

    for round in 0..2 {
        let frame = wire::exchange(&mut s, &produce).await.unwrap();
        let reply: ProduceResponse = wire::response(ApiKey::Produce, 9, frame);
        let p = &reply.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, 0), "round {round}");
        assert_eq!(
            broker.partition("t", 0).unwrap().log_end_offset(),
            1,
            "round {round}"
        );
        broker.delete_topic("t").unwrap();
        broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    }
}
