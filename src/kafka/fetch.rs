//! Fetch, which long-polls and hands stored batches back as they are, ListOffsets and
//! OffsetForLeaderEpoch.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProducerId,
};

use super::acls::{Client, op, resource};
use super::{FETCH_MAX_BYTES, FETCH_MAX_WAIT, Server, codes};
use crate::error::Result;
use crate::storage::{PartitionLog, Signal};

/// Answers once `min_bytes` are there or `max_wait_ms` (at most [`FETCH_MAX_WAIT`]) has
/// passed, whichever is first, with
/// whole batches from the one holding each partition's fetch offset: at least one batch (the
/// first partition with data gets one even above the limits), then up to the partition and
/// response byte limits. The response limit is the request's `max_bytes`, at most
/// [`FETCH_MAX_BYTES`].
/// Reads what `client` may READ; a topic it may not is answered TOPIC_AUTHORIZATION_FAILED
/// for each of its partitions (and does not make the fetch return early, as in Kafka).
pub(super) async fn fetch(server: &Server, client: &Client, mut request: FetchRequest) -> FetchResponse {
    let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topics)
        .into_iter()
        .partition(|t| client.may(server, op::READ, resource::TOPIC, &t.topic));
    request.topics = allowed;
    let denied: Vec<FetchableTopicResponse> = denied
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                        .with_high_watermark(-1)
                        .with_last_stable_offset(-1)
                        .with_log_start_offset(-1)
                        .with_preferred_read_replica(BrokerId(-1))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    if request.topics.is_empty() && !denied.is_empty() {
        return FetchResponse::default().with_responses(denied);
    }
    let mut response = fetch_allowed(server, request).await;
    response.responses.extend(denied);
    response
}

async fn fetch_allowed(server: &Server, mut request: FetchRequest) -> FetchResponse {
    // A partition named twice is read once, as Kafka reads it: otherwise one small request
    // naming a partition thousands of times would have it read thousands of times a pass.
    let mut seen = HashSet::new();
    for topic in &mut request.topics {
        topic
            .partitions
            .retain(|p| seen.insert((topic.topic.clone(), p.partition)));
    }
    request.topics.retain(|t| !t.partitions.is_empty());
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_MAX_WAIT);
    let deadline = Instant::now() + wait;
    let logs: Vec<Vec<Result<PartitionLog, ResponseError>>> = request
        .topics
        .iter()
        .map(|t| {
            t.partitions
                .iter()
                .map(|p| {
                    let log = server
                        .log(&t.topic.0, p.partition)
                        .map_err(|_| ResponseError::UnknownTopicOrPartition)?;
                    server.check_leader(&t.topic.0, p.partition)?;
                    check_epoch(server, &t.topic.0, p.partition, p.current_leader_epoch)?;
                    Ok(log)
                })
                .collect()
        })
        .collect();
    let signal = Signal::new();
    for log in logs.iter().flatten().flatten() {
        log.watch(&signal);
    }
    let response = loop {
        let seen = signal.count();
        let (response, bytes, failed) = read(&request, &logs);
        let left = deadline.saturating_duration_since(Instant::now());
        if bytes >= request.min_bytes.max(0) as usize || failed || left.is_zero() {
            break response;
        }
        if tokio::time::timeout(left, signal.raised_past(seen))
            .await
            .is_err()
        {
            break read(&request, &logs).0;
        }
    };
    for log in logs.iter().flatten().flatten() {
        log.unwatch(&signal);
    }
    response
}

/// One pass over the partitions: the response, the record bytes in it, and whether any
/// partition had an error (which answers at once, as Kafka does).
fn read(
    request: &FetchRequest,
    logs: &[Vec<Result<PartitionLog, ResponseError>>],
) -> (FetchResponse, usize, bool) {
    let mut budget = (request.max_bytes.max(0) as usize).min(FETCH_MAX_BYTES);
    // Fetch v4+: 1 is read_committed.
    let committed = request.isolation_level == 1;
    let mut total = 0;
    let mut failed = false;
    let responses = request
        .topics
        .iter()
        .zip(logs)
        .map(|(topic, logs)| {
            let partitions = topic
                .partitions
                .iter()
                .zip(logs)
                .map(|(p, log)| {
                    let reply = PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_preferred_read_replica(BrokerId(-1));
                    let log = match log {
                        Ok(log) => log,
                        Err(code) => {
                            failed = true;
                            return reply
                                .with_error_code(code.code())
                                .with_high_watermark(-1)
                                .with_last_stable_offset(-1)
                                .with_log_start_offset(-1);
                        }
                    };
                    // The offsets reported are those of the view the records were read from,
                    // so the high watermark is never below a returned record.
                    let offsets = |reply: PartitionData, hw: i64, lso: i64, start: i64| {
                        reply
                            .with_high_watermark(hw)
                            .with_last_stable_offset(lso)
                            .with_log_start_offset(start)
                    };
                    let now = |reply| {
                        let (hw, lso) = log.stable_bounds();
                        let end = if committed { lso } else { hw };
                        offsets(reply, hw, end, log.log_start_offset())
                    };
                    // The first batch is returned whatever its size, if nothing came before it.
                    let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
                    let limit = if total == 0 { limit.max(1) } else { limit };
                    if limit == 0 {
                        return now(reply).with_records(Some(Bytes::new()));
                    }
                    // Past the first batch of the response, a batch over the limits is left
                    // for the next fetch without being read.
                    let read = match (committed, total == 0) {
                        (true, first) => log.read_committed(p.fetch_offset, limit, !first),
                        (false, true) => log.read(p.fetch_offset, limit),
                        (false, false) => log.read_at_most(p.fetch_offset, limit),
                    };
                    match read {
                        Ok(fetch) => {
                            let reply = offsets(
                                reply,
                                fetch.high_watermark(),
                                fetch.last_stable_offset(),
                                fetch.log_start_offset(),
                            );
                            let reply = match committed {
                                true => reply.with_aborted_transactions(Some(
                                    fetch
                                        .aborted_transactions()
                                        .iter()
                                        .map(|a| {
                                            AbortedTransaction::default()
                                                .with_producer_id(ProducerId(a.producer_id))
                                                .with_first_offset(a.first_offset)
                                        })
                                        .collect(),
                                )),
                                false => reply,
                            };
                            let mut bytes = fetch.into_bytes();
                            if total > 0 && bytes.len() > limit {
                                bytes.clear(); // over the limits, and not the first
                            }
                            total += bytes.len();
                            budget = budget.saturating_sub(bytes.len());
                            reply.with_records(Some(Bytes::from(bytes)))
                        }
                        Err(e) => {
                            failed = true;
                            now(reply).with_error_code(codes::code(&e))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions)
        })
        .collect();
    (FetchResponse::default().with_responses(responses), total, failed)
}

/// Refuses a fetch that names a leader epoch other than the partition's: an older one is
/// FENCED_LEADER_EPOCH, a newer one (this broker has not heard of it yet) UNKNOWN_LEADER_EPOCH.
/// -1 names none.
fn check_epoch(server: &Server, topic: &str, partition: i32, epoch: i32) -> Result<(), ResponseError> {
    if epoch < 0 {
        return Ok(());
    }
    let current = server.placement(topic, partition).epoch;
    match epoch.cmp(&current) {
        std::cmp::Ordering::Less => Err(ResponseError::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ResponseError::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Whether answering `request` looks records up by timestamp, which reads batches.
pub(super) fn reads_batches(request: &ListOffsetsRequest) -> bool {
    request
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.timestamp >= 0 || p.timestamp == -3)
}

/// ListOffsets: -2 is the log start offset, -1 the high watermark, -3 the first record with
/// the largest timestamp (v7, KIP-734), any other timestamp the first record at or after it
/// (offset -1 if there is none). A partition named twice is answered once.
/// A topic the client may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED.
pub(super) fn list_offsets(
    server: &Server,
    client: &Client,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut seen = HashSet::new();
    // ListOffsets v2+: 1 is read_committed.
    let committed = request.isolation_level == 1;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let allowed = client.may(server, op::DESCRIBE, resource::TOPIC, &name);
            let partitions = t
                .partitions
                .into_iter()
                .filter(|p| seen.insert((name.clone(), p.partition_index)))
                .map(|p| {
                    let reply =
                        ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    if !allowed {
                        return reply
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                            .with_offset(-1)
                            .with_timestamp(-1);
                    }
                    let found = server
                        .log(&t.name.0, p.partition_index)
                        .and_then(|log| lookup(&log, p.timestamp, committed));
                    if found.is_ok()
                        && let Err(code) = server.check_leader(&t.name.0, p.partition_index)
                    {
                        return reply
                            .with_error_code(code.code())
                            .with_offset(-1)
                            .with_timestamp(-1);
                    }
                    match found {
                        Ok((offset, timestamp)) => reply.with_offset(offset).with_timestamp(timestamp),
                        Err(e) => reply
                            .with_error_code(codes::code(&e))
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// OffsetForLeaderEpoch (KIP-101, KIP-320): for each partition, the largest leader epoch at
/// most the one asked for and the offset where the next epoch begins (the log end after the
/// current epoch), from which a consumer whose position lies past it learns that the log it
/// read was truncated. Epoch -1 and -1 for an epoch past every one known (a broker alone,
/// which never truncates, ends every epoch at its log end). The partition's
/// leader answers, after the request's current leader epoch is checked as a fetch's is; a
/// topic the client may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED.
pub(super) fn offset_for_leader_epoch(
    server: &Server,
    client: &Client,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let allowed = client.may(server, op::DESCRIBE, resource::TOPIC, &t.topic);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let reply = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    let answer = if allowed {
                        epoch_end(
                            server,
                            &t.topic,
                            p.partition,
                            p.current_leader_epoch,
                            p.leader_epoch,
                        )
                    } else {
                        Err(ResponseError::TopicAuthorizationFailed.code())
                    };
                    match answer {
                        Ok(Some((epoch, end))) => reply.with_leader_epoch(epoch).with_end_offset(end),
                        Ok(None) => reply,
                        Err(code) => reply.with_error_code(code),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// One partition's answer to OffsetForLeaderEpoch, or its error code.
fn epoch_end(
    server: &Server,
    topic: &str,
    partition: i32,
    current_epoch: i32,
    epoch: i32,
) -> std::result::Result<Option<(i32, i64)>, i16> {
    let log = server.log(topic, partition).map_err(|e| codes::code(&e))?;
    server.check_leader(topic, partition).map_err(|e| e.code())?;
    check_epoch(server, topic, partition, current_epoch).map_err(|e| e.code())?;
    server
        .epoch_end(topic, partition, epoch, &log)
        .map_err(|e| e.code())
}

/// The offset (and its record's timestamp) ListOffsets answers for `timestamp`; under
/// `read_committed` the latest offset is the last stable offset, and a record found by
/// timestamp at or past it is not answered (as Kafka bounds both).
fn lookup(log: &PartitionLog, timestamp: i64, committed: bool) -> Result<(i64, i64)> {
    let end = match committed {
        true => log.last_stable_offset(),
        false => log.high_watermark(),
    };
    let found = match timestamp {
        -2 => return Ok((log.log_start_offset(), -1)),
        -1 => return Ok((end, -1)),
        -3 => log.offset_of_max_timestamp()?,
        ts if ts < 0 => None,
        ts => log.offset_for_timestamp(ts)?,
    };
    Ok(found
        .filter(|f| f.offset < end)
        .map_or((-1, -1), |f| (f.offset, f.timestamp)))
}
