//! The transactional APIs spoken to by hand (requests encoded with the `kafka-protocol`
//! crate), for what the clients' tests do not reach: AddOffsetsToTxn and TxnOffsetCommit
//! keeping a group's commit pending (OffsetFetch with `require_stable` answers
//! UNSTABLE_OFFSET_COMMIT, a plain one the earlier commit), ListOffsets under
//! `read_committed` answering the last stable offset, DescribeTransactions and
//! ListTransactions describing the open transaction, and all of it settled by EndTxn.
#![cfg(feature = "kafka")]

#[path = "common/wire.rs"]
mod wire;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    GroupId, InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListTransactionsRequest, ListTransactionsResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceResponse, TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;
use rivulet::storage::{BatchBuilder, Compression};
use rivulet::{Broker, Fsync, TopicConfig};
use tokio::net::TcpStream;

fn s(text: &'static str) -> StrBytes {
    StrBytes::from_static_str(text)
}

/// The last stable offset (or high watermark) ListOffsets answers for "t"-0.
async fn latest(stream: &mut TcpStream, isolation: i8) -> i64 {
    let list = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_isolation_level(isolation)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
        ]);
    let reply: ListOffsetsResponse = wire::ask(stream, ApiKey::ListOffsets, 5, &list).await;
    reply.topics[0].partitions[0].offset
}

/// The group's committed offset of "t"-0 and the partition's error, with `require_stable`.
async fn fetch_offset(stream: &mut TcpStream, require_stable: bool) -> (i64, i16) {
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_require_stable(require_stable)
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0]),
        ]));
    let reply: OffsetFetchResponse = wire::ask(stream, ApiKey::OffsetFetch, 7, &fetch).await;
    let p = &reply.topics[0].partitions[0];
    (p.committed_offset, p.error_code)
}

#[tokio::test]
async fn a_transaction_over_the_wire_is_described_listed_and_settled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::builder(dir.path()).fsync(Fsync::Never).open().unwrap();
    broker.create_topic("t", 1, TopicConfig::default()).unwrap();
    let (addr, _stop) = wire::serve(&broker, Default::default()).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    let txn = || TransactionalId(s("tx"));

    let init = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn()))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let reply: InitProducerIdResponse = wire::ask(&mut c, ApiKey::InitProducerId, 4, &init).await;
    assert_eq!(reply.error_code, 0);
    let (id, epoch) = (reply.producer_id, reply.producer_epoch);

    // A plain record, then the transaction: a record, and the group's commit of offset 1.
    let plain = {
        let mut b = BatchBuilder::new(Compression::None);
        b.push(1, Some(b"k"), Some(b"plain"), &[]);
        Bytes::from(b.finish().unwrap().as_bytes().to_vec())
    };
    let reply: ProduceResponse =
        wire::ask(&mut c, ApiKey::Produce, 9, &wire::produce_request("t", plain)).await;
    assert_eq!(reply.responses[0].partition_responses[0].error_code, 0);
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(txn())
        .with_v3_and_below_producer_id(id)
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![0]),
        ]);
    let reply: AddPartitionsToTxnResponse = wire::ask(&mut c, ApiKey::AddPartitionsToTxn, 3, &add).await;
    assert_eq!(
        reply.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
    let record = {
        let mut b = BatchBuilder::new(Compression::None)
            .producer(id.0, epoch, 0)
            .transactional(true);
        b.push(1, Some(b"k"), Some(b"in the transaction"), &[]);
        Bytes::from(b.finish().unwrap().as_bytes().to_vec())
    };
    let produce = wire::produce_request("t", record).with_transactional_id(Some(txn()));
    let reply: ProduceResponse = wire::ask(&mut c, ApiKey::Produce, 9, &produce).await;
    assert_eq!(reply.responses[0].partition_responses[0].error_code, 0);
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(txn())
        .with_producer_id(id)
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s("g")));
    let reply: AddOffsetsToTxnResponse = wire::ask(&mut c, ApiKey::AddOffsetsToTxn, 3, &add).await;
    assert_eq!(reply.error_code, 0);
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn())
        .with_group_id(GroupId(s("g")))
        .with_producer_id(id)
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    let reply: TxnOffsetCommitResponse = wire::ask(&mut c, ApiKey::TxnOffsetCommit, 3, &commit).await;
    assert_eq!(reply.topics[0].partitions[0].error_code, 0);

    // Open: read_committed's latest is the transaction's first offset, the commit pending.
    assert_eq!(latest(&mut c, 0).await, 2);
    assert_eq!(latest(&mut c, 1).await, 1);
    assert_eq!(
        fetch_offset(&mut c, true).await,
        (-1, 88),
        "UNSTABLE_OFFSET_COMMIT"
    );
    assert_eq!(
        fetch_offset(&mut c, false).await,
        (-1, 0),
        "nothing committed yet"
    );
    let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![
        txn(),
        txn(),
        TransactionalId(s("none")),
    ]);
    let reply: DescribeTransactionsResponse =
        wire::ask(&mut c, ApiKey::DescribeTransactions, 0, &describe).await;
    assert_eq!(
        reply.transaction_states.len(),
        2,
        "an id named twice is answered once"
    );
    let open = &reply.transaction_states[0];
    assert_eq!((open.error_code, &*open.transaction_state), (0, "Ongoing"));
    assert_eq!((open.producer_id, open.producer_epoch), (id, epoch));
    let mut described: Vec<(String, Vec<i32>)> = open
        .topics
        .iter()
        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
        .collect();
    described.sort();
    assert_eq!(
        described,
        [
            ("__consumer_offsets".to_string(), vec![0]),
            ("t".to_string(), vec![0])
        ]
    );
    assert_eq!(
        reply.transaction_states[1].error_code, 105,
        "TRANSACTIONAL_ID_NOT_FOUND"
    );
    let list = ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing"), s("Bogus")]);
    let reply: ListTransactionsResponse = wire::ask(&mut c, ApiKey::ListTransactions, 1, &list).await;
    assert_eq!(reply.unknown_state_filters, [s("Bogus")]);
    assert_eq!(reply.transaction_states.len(), 1);
    assert_eq!(&*reply.transaction_states[0].transactional_id.0, "tx");

    // Committed: the record, the offset and the stable end, all at once.
    let end = EndTxnRequest::default()
        .with_transactional_id(txn())
        .with_producer_id(id)
        .with_producer_epoch(epoch)
        .with_committed(true);
    let reply: EndTxnResponse = wire::ask(&mut c, ApiKey::EndTxn, 3, &end).await;
    assert_eq!(reply.error_code, 0);
    assert_eq!(latest(&mut c, 1).await, 3, "the record and its marker");
    assert_eq!(fetch_offset(&mut c, true).await, (1, 0));
    let list = ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing")]);
    let reply: ListTransactionsResponse = wire::ask(&mut c, ApiKey::ListTransactions, 1, &list).await;
    assert!(reply.transaction_states.is_empty());
}
