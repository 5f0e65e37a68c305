//! The transactional APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and the admin's DescribeTransactions and
//! ListTransactions, all answered by the broker's transaction coordinator (see the `txn`
//! module), off the async workers (each waits for the disk). FindCoordinator for a
//! transactional id is answered in `groups`.
//!
//! ACLs as Kafka checks them: WRITE on the transactional id for what changes a transaction,
//! DESCRIBE on it for what reads one, READ on the group for TxnOffsetCommit.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest, ListTransactionsResponse,
    ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::Server;
use super::acls::{Client, op, resource};
use super::codes;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::group::{MemberRef, OffsetAndMetadata};
use crate::txn::{TxnCoordinator, TxnStatus};

/// The coordinator, or the error code to answer with (NOT_COORDINATOR at a cluster's node
/// that does not lead the state topic's partition).
fn coordinator(server: &Server) -> std::result::Result<std::sync::Arc<TxnCoordinator>, i16> {
    server.broker.inner.transactions().map_err(|e| codes::code(&e))
}

fn may_write(server: &Server, client: &Client, id: &str) -> bool {
    client.may(server, op::WRITE, resource::TRANSACTIONAL_ID, id)
}

fn code_of(result: Result<()>) -> i16 {
    result.err().map_or(0, |e| codes::code(&e))
}

/// `code` as a request of `version` expects it: PRODUCER_FENCED came with KIP-588 (in the
/// version `since`); before it a fenced producer is INVALID_PRODUCER_EPOCH.
fn for_version(code: i16, version: i16, since: i16) -> i16 {
    if code == ResponseError::ProducerFenced.code() && version < since {
        return ResponseError::InvalidProducerEpoch.code();
    }
    code
}

/// InitProducerId with a transactional id: the id's producer id and a new epoch.
pub(super) fn init_producer_id(
    server: &Server,
    client: &Client,
    request: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let id = request.transactional_id.as_ref().map_or("", |t| &t.0);
    let refused = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if !may_write(server, client, id) {
        return refused(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let c = match coordinator(server) {
        Ok(c) => c,
        Err(code) => return refused(code),
    };
    let expected = (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    match c.init_producer_id(id, request.transaction_timeout_ms, expected) {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch),
        Err(e) => refused(for_version(codes::code(&e), version, 4)),
    }
}

/// AddPartitionsToTxn v0-3: every partition is added, or none (each answered with the
/// error, the others with OPERATION_NOT_ATTEMPTED where one alone is at fault).
pub(super) fn add_partitions(
    server: &Server,
    client: &Client,
    request: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let id = request.v3_and_below_transactional_id.0.to_string();
    let partitions: Vec<TopicPartition> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.name.0.to_string(), u32::try_from(p).unwrap_or(u32::MAX)))
        })
        .collect();
    let denied_topic = |tp: &TopicPartition| !client.may(server, op::WRITE, resource::TOPIC, &tp.topic);
    let codes: Vec<i16> = if !may_write(server, client, &id) {
        vec![ResponseError::TransactionalIdAuthorizationFailed.code(); partitions.len()]
    } else if partitions.iter().any(denied_topic) {
        partitions
            .iter()
            .map(|tp| match denied_topic(tp) {
                true => ResponseError::TopicAuthorizationFailed.code(),
                false => ResponseError::OperationNotAttempted.code(),
            })
            .collect()
    } else {
        let result = coordinator(server).map(|c| {
            c.add_partitions(
                &id,
                request.v3_and_below_producer_id.0,
                request.v3_and_below_producer_epoch,
                &partitions,
            )
            .map_err(|e| (codes::code(&e), unknown_partition(&e)))
        });
        match result {
            Ok(Ok(())) => vec![0; partitions.len()],
            Err(code) => vec![code; partitions.len()],
            Ok(Err((code, Some(bad)))) => partitions
                .iter()
                .map(|tp| match *tp == bad {
                    true => code,
                    false => ResponseError::OperationNotAttempted.code(),
                })
                .collect(),
            Ok(Err((code, None))) => vec![code; partitions.len()],
        }
    };
    let mut codes = codes.into_iter().map(|code| for_version(code, version, 2));
    let results = request
        .v3_and_below_topics
        .into_iter()
        .map(|t| {
            let by_partition = t
                .partitions
                .iter()
                .map(|&p| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(by_partition)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

/// The partition an error names as unknown.
fn unknown_partition(e: &Error) -> Option<TopicPartition> {
    match e {
        Error::UnknownPartition { topic, partition, .. } => {
            Some(TopicPartition::new(topic.clone(), *partition))
        }
        _ => None,
    }
}

/// AddOffsetsToTxn: the offsets topic joins the transaction, for the group's commits.
pub(super) fn add_offsets(
    server: &Server,
    client: &Client,
    request: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let id = &request.transactional_id.0;
    let code = if !may_write(server, client, id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !client.may(server, op::READ, resource::GROUP, &request.group_id.0) {
        ResponseError::GroupAuthorizationFailed.code()
    } else {
        match coordinator(server) {
            Ok(c) => code_of(c.add_offsets(
                id,
                request.producer_id.0,
                request.producer_epoch,
                &request.group_id.0,
            )),
            Err(code) => code,
        }
    };
    AddOffsetsToTxnResponse::default().with_error_code(for_version(code, version, 2))
}

/// TxnOffsetCommit: the group's commits, shown if the transaction commits. A commit that
/// names a member and generation is checked against the group as a plain commit is; one
/// that names none (generation -1, a producer's own `sendOffsetsToTransaction(offsets,
/// groupId)`) is taken whatever the group's members.
pub(super) fn txn_offset_commit(
    server: &Server,
    client: &Client,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let id = request.transactional_id.0.to_string();
    let group = request.group_id.0.to_string();
    let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    TopicPartition::new(
                        t.name.0.to_string(),
                        u32::try_from(p.partition_index).unwrap_or(u32::MAX),
                    ),
                    OffsetAndMetadata {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_deref().unwrap_or("").to_string(),
                        commit_timestamp: crate::storage::now_ms(),
                    },
                )
            })
        })
        .collect();
    let code = if !may_write(server, client, &id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else if !client.may(server, op::READ, resource::GROUP, &group) {
        ResponseError::GroupAuthorizationFailed.code()
    } else if offsets
        .iter()
        .any(|(tp, _)| !client.may(server, op::READ, resource::TOPIC, &tp.topic))
    {
        ResponseError::TopicAuthorizationFailed.code()
    } else if server.broker.inner.is_clustered() && !server.coordinates_groups() {
        // Sent to the group's coordinator, which this node is not (any more).
        ResponseError::NotCoordinator.code()
    } else {
        let member = MemberRef {
            member_id: request.member_id.to_string(),
            generation: request.generation_id,
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        };
        // Written under the group's lock when it names a member, as a plain commit is: a
        // rebalance cannot come between the check and the write, so a fenced generation's
        // offsets are refused.
        let producer = (request.producer_id.0, request.producer_epoch);
        let named = member.generation >= 0 || !member.member_id.is_empty();
        let member = named.then_some(&member);
        code_of(
            server
                .broker
                .inner
                .commit_in_transaction(&id, producer, &group, member, &offsets),
        )
    };
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(for_version(code, version, 3))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// EndTxn: commits or aborts, answered once every marker is durable.
pub(super) fn end_txn(
    server: &Server,
    client: &Client,
    request: EndTxnRequest,
    version: i16,
) -> EndTxnResponse {
    let id = &request.transactional_id.0;
    let code = if !may_write(server, client, id) {
        ResponseError::TransactionalIdAuthorizationFailed.code()
    } else {
        match coordinator(server) {
            Ok(c) => code_of(c.end(
                id,
                request.producer_id.0,
                request.producer_epoch,
                request.committed,
            )),
            Err(code) => code,
        }
    };
    EndTxnResponse::default()
        .with_error_code(for_version(code, version, 2))
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// DescribeTransactions: each id's state (TRANSACTIONAL_ID_NOT_FOUND for one unknown).
pub(super) fn describe_transactions(
    server: &Server,
    client: &Client,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let c = coordinator(server);
    // An id named twice is answered once (each answer may name a thousand partitions).
    let mut seen = std::collections::HashSet::new();
    let states = request
        .transactional_ids
        .into_iter()
        .filter(|id| seen.insert(id.0.clone()))
        .map(|id| {
            let reply = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(StrBytes::from_static_str(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            if !client.may(server, op::DESCRIBE, resource::TRANSACTIONAL_ID, &id.0) {
                return reply.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
            }
            let c = match &c {
                Ok(c) => c,
                Err(code) => return reply.with_error_code(*code),
            };
            let Some(m) = c.describe(&id.0) else {
                return reply.with_error_code(ResponseError::TransactionalIdNotFound.code());
            };
            let mut topics: Vec<TopicData> = Vec::new();
            for tp in &m.partitions {
                match topics.last_mut().filter(|t| *t.topic.0 == tp.topic) {
                    Some(t) => t.partitions.push(tp.partition as i32),
                    None => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(StrBytes::from(tp.topic.clone())))
                            .with_partitions(vec![tp.partition as i32]),
                    ),
                }
            }
            reply
                .with_transaction_state(StrBytes::from_static_str(m.status.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions v0-1: the ids the client may describe, filtered by state, producer id
/// and (v1) how long their transaction has been open.
pub(super) fn list_transactions(
    server: &Server,
    client: &Client,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let c = match coordinator(server) {
        Ok(c) => c,
        // A cluster's node that coordinates none lists none (admins ask every node).
        Err(code) if code == ResponseError::NotCoordinator.code() => {
            return ListTransactionsResponse::default();
        }
        Err(code) => return ListTransactionsResponse::default().with_error_code(code),
    };
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match TxnStatus::from_name(name) {
            Some(s) => states.push(s),
            None => unknown.push(name.clone()),
        }
    }
    let now = crate::storage::now_ms();
    let listed = c
        .list()
        .into_iter()
        .filter(|(_, _, status, _)| states.is_empty() || states.contains(status))
        .filter(|(_, producer_id, _, _)| {
            request.producer_id_filters.is_empty()
                || request.producer_id_filters.contains(&ProducerId(*producer_id))
        })
        .filter(|(_, _, _, start)| {
            request.duration_filter < 0 || (*start >= 0 && now - start >= request.duration_filter)
        })
        .filter(|(id, _, _, _)| client.may(server, op::DESCRIBE, resource::TRANSACTIONAL_ID, id))
        .map(|(id, producer_id, status, _)| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from(id)))
                .with_producer_id(ProducerId(producer_id))
                .with_transaction_state(StrBytes::from_static_str(status.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
