//! Produce: each partition's record set is checked whole (every batch's frame, CRC-32C,
//! records, size and keys, and the idempotence checks) before any of it is written, then
//! stored as received, or compressed again for a topic whose `compression.type` names another
//! codec.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use super::acls::{Client, op, resource};
use super::conn::Refusal;
use super::{PRODUCE_DECOMPRESSION_RATIO, Server, codes};
use crate::broker::refuse_internal;
use crate::error::{BatchError, Error};
use crate::storage::producers::Verdict;
use crate::storage::{
    AppendInfo, Batch, BatchBuilder, BatchHeader, Compression, HEADER_LEN, MAX_BATCH_LEN, RecordBatch,
    RetryDuplicate, TimestampType, check_batch, frame_len,
};
use crate::{CompressionType, Fsync, LogConfig};

/// Appends what `client` may WRITE; a topic it may not is answered
/// TOPIC_AUTHORIZATION_FAILED for each of its partitions, nothing of it written.
pub(super) async fn produce(
    server: &Arc<Server>,
    client: &Client,
    mut request: ProduceRequest,
) -> ProduceResponse {
    // A transaction's records need WRITE on its transactional id too (every partition is
    // refused otherwise, as Kafka refuses them).
    let id_denied = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !client.may(server, op::WRITE, resource::TRANSACTIONAL_ID, &id.0));
    let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topic_data)
        .into_iter()
        .partition(|t| !id_denied && client.may(server, op::WRITE, resource::TOPIC, &t.name));
    let denied_code = match id_denied {
        true => ResponseError::TransactionalIdAuthorizationFailed,
        false => ResponseError::TopicAuthorizationFailed,
    };
    request.topic_data = allowed;
    let denied = denied.into_iter().map(|topic| {
        let partitions = topic
            .partition_data
            .iter()
            .map(|p| {
                PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_error_code(denied_code.code())
                    .with_base_offset(-1)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(-1)
            })
            .collect();
        TopicProduceResponse::default()
            .with_name(topic.name)
            .with_partition_responses(partitions)
    });
    let mut response = appended(server, request).await;
    response.responses.extend(denied);
    response
}

async fn appended(server: &Arc<Server>, request: ProduceRequest) -> ProduceResponse {
    // An append to a log kept with `Fsync::Always` waits for an fsync, a compressed batch is
    // decompressed to check its records (up to `PRODUCE_DECOMPRESSION_RATIO` times the topic's
    // `max.message.bytes`), and a topic with its own codec compresses batches again, so these
    // run off the async workers. Any other append is a write into the page cache, done here: handing it
    // to the blocking pool and back costs more than the write (one client's request took
    // 1.25x Redis's XADD through the pool). The one wait left is a segment roll's sync of the
    // sealed segment, once per segment.
    let inflates = compressed(&request) || recompresses(server, &request);
    // A transaction's records wait for its coordinator's lock, which an ending transaction
    // holds while its markers are synced.
    let transactional = request.transactional_id.is_some();
    let responses = if inflates || transactional || waits_for_disk(server, &request) {
        let _turn = if inflates {
            Some(
                server
                    .inflating
                    .acquire()
                    .await
                    .expect("the semaphore is never closed"),
            )
        } else {
            None
        };
        let server = server.clone();
        tokio::task::spawn_blocking(move || append_all(&server, request))
            .await
            .expect("appends do not panic")
    } else {
        append_all(server, request)
    };
    ProduceResponse::default().with_responses(responses)
}

/// Whether an append the request asks for waits for an fsync.
fn waits_for_disk(server: &Server, request: &ProduceRequest) -> bool {
    request.topic_data.iter().any(|topic| {
        topic.partition_data.iter().any(|p| {
            server
                .log(&topic.name, p.index)
                .is_ok_and(|log| log.fsync() == Fsync::Always || log.is_replicated())
        })
    })
}

/// Whether any batch of the request is compressed (read from the batches' headers alone).
fn compressed(request: &ProduceRequest) -> bool {
    request.topic_data.iter().any(|topic| {
        topic.partition_data.iter().any(|p| {
            let mut rest = p.records.as_deref().unwrap_or_default();
            while rest.len() >= HEADER_LEN {
                if BatchHeader::decode(rest).compression() != Ok(Compression::None) {
                    return true;
                }
                // A bad frame refuses the set before anything after it is looked at.
                let Ok(len) = frame_len(rest, MAX_BATCH_LEN) else {
                    return false;
                };
                rest = &rest[len.min(rest.len())..];
            }
            false
        })
    })
}

/// Whether the request writes to a topic whose `compression.type` names a codec, so that its
/// batches may be compressed again.
fn recompresses(server: &Server, request: &ProduceRequest) -> bool {
    request.topic_data.iter().any(|topic| {
        server.broker.inner.topic(&topic.name).is_ok_and(|t| {
            matches!(t.config.read().get_compression(), CompressionType::Codec(c) if c != Compression::None)
        })
    })
}

/// Why a partition's record set was refused: one of rivulet's errors, an idempotence check's
/// error code, or the records of a batch that a compacted topic refuses for want of a key
/// (their indexes in the batch, which Kafka reports per record so that a client can tell them
/// from the batch's other records).
enum Refused {
    Error(Error),
    Code(ResponseError, String),
    Keyless(Vec<i32>),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused::Error(e)
    }
}

impl From<BatchError> for Refused {
    fn from(e: BatchError) -> Self {
        Refused::Error(Error::InvalidBatch(e))
    }
}

fn append_all(server: &Server, request: ProduceRequest) -> Vec<TopicProduceResponse> {
    let transactional_id = request.transactional_id.as_ref().map(|t| t.0.to_string());
    // Whether the transaction coordinator failed to answer for an earlier partition: the
    // request's other partitions do not wait for it again.
    let mut coordinator_down = false;
    request
        .topic_data
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let partitions = topic
                .partition_data
                .into_iter()
                .map(|p| {
                    let reply = PartitionProduceResponse::default().with_index(p.index);
                    let records = p.records.unwrap_or_default();
                    let txn = (transactional_id.as_deref(), &mut coordinator_down);
                    match append(server, &name, p.index, records, txn) {
                        Ok((info, log_start, append_time)) => reply
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(if append_time { info.log_append_time } else { -1 })
                            .with_log_start_offset(log_start),
                        Err(refused) => {
                            let (code, message, records) = match refused {
                                Refused::Error(e) => (codes::code(&e), e.to_string(), Vec::new()),
                                Refused::Code(code, message) => (code.code(), message, Vec::new()),
                                Refused::Keyless(indexes) => keyless_reply(&name, p.index, indexes),
                            };
                            reply
                                .with_error_code(code)
                                .with_record_errors(records)
                                .with_error_message(Some(StrBytes::from(message)))
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(-1)
                        }
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions)
        })
        .collect()
}

/// Appends one partition's record set: the first batch's append (its first answer, for a
/// retried batch of an idempotent producer), the log start offset, and whether the log stamps
/// append times.
///
/// The set is judged whole before any of it is written, as Kafka does: every batch's frame,
/// CRC and records, its size against `max.message.bytes`, keys on a compacted topic, and the
/// idempotence checks of the batches in order. A set with one bad batch is refused whole, so a
/// client's retry of it cannot duplicate the batches before the bad one.
fn append(
    server: &Server,
    topic: &str,
    partition: i32,
    records: Bytes,
    (transactional_id, coordinator_down): (Option<&str>, &mut bool),
) -> Result<(AppendInfo, i64, bool), Refused> {
    refuse_internal(topic)?;
    let topic = server.broker.inner.topic(topic)?;
    let index = u32::try_from(partition).unwrap_or(u32::MAX);
    let log = topic.partition(index)?;
    server
        .check_leader(&topic.name, partition)
        .map_err(|code| Refused::Code(code, "this broker does not lead the partition".to_string()))?;
    let config = log.config();
    let codec = topic.config.read().get_compression();
    let mut batches = Vec::new();
    let mut rest = &records[..];
    while !rest.is_empty() {
        let len = frame_len(rest, MAX_BATCH_LEN)?;
        let (batch, tail) = rest.split_at(len.min(rest.len()));
        // The size is checked before anything is decompressed, and decompression stops at
        // its limit.
        fits_size(&config, batch.len())?;
        let limit = config
            .get_max_message_bytes()
            .saturating_mul(PRODUCE_DECOMPRESSION_RATIO);
        let batch = RecordBatch::from_bytes_within(batch.to_vec(), limit)?;
        if batch.header().is_control() {
            // Control batches are the broker's own (markers, a replicated log's entries).
            return Err(Refused::Code(
                ResponseError::InvalidRecord,
                "clients are not allowed to write control batches".to_string(),
            ));
        }
        let batch = recompress(codec, batch, limit)?;
        // Whatever the log would refuse, before anything of the set is written.
        check_batch(&batch, &config, log.is_replicated()).map_err(|e| match e {
            Error::KeyRequired { .. } => Refused::Keyless(keyless_records(&batch)),
            e => e.into(),
        })?;
        batches.push(batch);
        rest = tail;
    }
    if batches.is_empty() {
        return Err(BatchError::Empty.into());
    }
    let headers: Vec<BatchHeader> = batches.iter().map(RecordBatch::header).collect();
    if headers.iter().any(|h| h.producer_id >= 0 && h.base_sequence < 0) {
        return Err(Refused::Code(
            ResponseError::OutOfOrderSequenceNumber,
            "a producer's batch carries sequence numbers".to_string(),
        ));
    }
    let first = match headers.iter().find(|h| h.is_transactional()) {
        Some(h) => {
            // A transaction's records: its coordinator must have the partition in the
            // producer's open transaction, and no end of it comes before they are written.
            if headers
                .iter()
                .any(|o| (o.producer_id, o.producer_epoch) != (h.producer_id, h.producer_epoch))
            {
                return Err(Refused::Code(
                    ResponseError::InvalidRecord,
                    "a transaction's record set holds batches of one producer alone".to_string(),
                ));
            }
            if transactional_id.is_none() {
                return Err(Refused::Code(
                    ResponseError::InvalidTxnState,
                    "a transaction's records name their transactional id".to_string(),
                ));
            }
            let tp = crate::TopicPartition::new(topic.name.clone(), index);
            let inner = &server.broker.inner;
            let checked = match inner.transactions_if_open() {
                // The coordinator is here: no end of the transaction comes before the write.
                Some(coordinator) => {
                    let check =
                        coordinator.check_open(transactional_id, h.producer_id, h.producer_epoch, &tp);
                    check.and_then(|()| {
                        coordinator.with_open_transaction(h.producer_id, h.producer_epoch, &tp, || {
                            Ok(append_judged(&log, batches, &headers))
                        })
                    })
                }
                // A cluster's node asks the one that coordinates. An end may come between the
                // answer and the write: one the producer did not ask for (a timeout, a newer
                // producer of its id) bumps the epoch, which the partition's leader refuses
                // the batch for; the producer asks for one only once its records are written.
                None if *coordinator_down => Err(Error::NotCoordinator {
                    reason: "the transaction coordinator did not answer".to_string(),
                }),
                None => {
                    let producer = (h.producer_id, h.producer_epoch);
                    let check =
                        inner.check_transaction(transactional_id, producer, &tp, crate::txn::CHECK_TTL);
                    *coordinator_down = matches!(check, Err(Error::NotCoordinator { .. }));
                    check.map(|()| append_judged(&log, batches, &headers))
                }
            };
            // Produce answers a fenced producer INVALID_PRODUCER_EPOCH, whatever its version.
            match checked {
                Err(Error::ProducerFenced { .. }) => {
                    return Err(Refused::Code(
                        ResponseError::InvalidProducerEpoch,
                        "the producer's epoch is fenced".to_string(),
                    ));
                }
                Err(Error::InvalidProducerIdMapping { .. }) => {
                    return Err(Refused::Code(
                        ResponseError::InvalidTxnState,
                        "the request's transactional id is not the one the producer id is bound to"
                            .to_string(),
                    ));
                }
                // As Kafka answers a produce whose transaction it could not verify: an error
                // every client retries.
                Err(Error::NotCoordinator { reason }) => {
                    return Err(Refused::Code(ResponseError::NotEnoughReplicas, reason));
                }
                other => other??,
            }
        }
        None => {
            if headers.iter().any(|h| h.producer_id >= 0) {
                // A transactional producer's id writes in its transactions alone.
                if let Some(c) = server.broker.inner.transactions_if_open()
                    && headers
                        .iter()
                        .any(|h| h.producer_id >= 0 && c.bound_id(h.producer_id).is_some())
                {
                    return Err(Refused::Code(
                        ResponseError::InvalidTxnState,
                        "a transactional producer's batch outside a transaction".to_string(),
                    ));
                }
                server
                    .producers
                    .admit(&log, &headers)
                    .map_err(|(code, why)| Refused::Code(code, why))?;
            }
            append_judged(&log, batches, &headers)?
        }
    };
    let append_time = config.get_timestamp_type() == TimestampType::LogAppendTime;
    Ok((first, log.log_start_offset(), append_time))
}

/// Appends a record set whose producers' batches (if any) are judged against the log's
/// producer state first, while no other caller judges (so a retry cannot slip in between):
/// the first batch's append (its first answer, for a retried batch). A replicated log's
/// batches are judged by the partition's leader, one by one.
fn append_judged(
    log: &crate::storage::PartitionLog,
    batches: Vec<RecordBatch>,
    headers: &[BatchHeader],
) -> Result<AppendInfo, Refused> {
    let judged = headers.iter().any(|h| h.producer_id >= 0) && !log.is_replicated();
    let _producing = judged.then(|| log.producing());
    let plan = match judged {
        true => log.plan_producers(headers)?,
        false => vec![Verdict::Append; batches.len()],
    };
    let mut first = None;
    for (batch, verdict) in batches.into_iter().zip(plan) {
        if let Verdict::Duplicate(info) = verdict {
            // A retriable error, and the client's next retry is judged again.
            let answer = log
                .answer_duplicate(&batch.header(), info)
                .map_err(|why| match why {
                    RetryDuplicate::Failed(e) => Refused::from(e),
                    why => Refused::Code(ResponseError::RequestTimedOut, why.to_string()),
                })?;
            first.get_or_insert(answer);
            continue;
        }
        first.get_or_insert(log.append(batch)?);
    }
    Ok(first.expect("one batch at least"))
}

/// The most keyless records a refusal names: a batch may hold millions of records, and the
/// answer is built in memory. A client fails the records named as invalid and may send the
/// others again, whose next refusal names the next ones.
const MAX_RECORD_ERRORS: usize = 1_000;

/// The indexes in `batch` of its first [`MAX_RECORD_ERRORS`] records without a key.
fn keyless_records(batch: &RecordBatch) -> Vec<i32> {
    let Ok((view, _)) = Batch::parse(batch.as_bytes()) else {
        return Vec::new();
    };
    let Ok(records) = view.records() else {
        return Vec::new();
    };
    (0i32..)
        .zip(records.iter())
        .filter(|(_, r)| r.as_ref().is_ok_and(|r| r.key.is_none()))
        .map(|(index, _)| index)
        .take(MAX_RECORD_ERRORS)
        .collect()
}

/// The answer for a batch refused by a compacted topic: INVALID_RECORD, with an error per
/// keyless record as Kafka gives them (clients fail those records with INVALID_RECORD and the
/// batch's other records with an error of their own, so that they can be sent again).
fn keyless_reply(
    topic: &str,
    partition: i32,
    indexes: Vec<i32>,
) -> (i16, String, Vec<BatchIndexAndErrorMessage>) {
    let why =
        format!("Compacted topic cannot accept message without key in topic partition {topic}-{partition}.");
    // One message shared by every record's error.
    let shared = StrBytes::from(why.clone());
    let records = indexes
        .into_iter()
        .map(|index| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(index)
                .with_batch_index_error_message(Some(shared.clone()))
        })
        .collect();
    (ResponseError::InvalidRecord.code(), why, records)
}

/// The batch as the topic's `compression.type` stores it: as produced under `producer`, else
/// compressed again with the topic's codec if the producer used another, as Kafka does. The
/// records, offsets, timestamps and producer fields are kept; `max.message.bytes` applies to
/// the result.
fn recompress(codec: CompressionType, batch: RecordBatch, limit: usize) -> Result<RecordBatch, Error> {
    let h = batch.header();
    let CompressionType::Codec(codec) = codec else {
        return Ok(batch);
    };
    if h.compression()? == codec || h.is_control() {
        return Ok(batch);
    }
    let (view, _) = Batch::parse(batch.as_bytes())?;
    let records = view.records_within(limit)?;
    let mut b = BatchBuilder::with_capacity(codec, batch.len()).producer(
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
    );
    for r in records.iter() {
        let r = r?;
        b.push_copy((r.offset - h.base_offset) as i32, &r);
    }
    Ok(b.last_offset_delta(h.last_offset_delta).finish()?)
}

/// Refuses a batch of `size` bytes over `max.message.bytes`.
fn fits_size(config: &LogConfig, size: usize) -> Result<(), Error> {
    let max = config.get_max_message_bytes();
    if size > max {
        return Err(Error::BatchTooLarge { size, max });
    }
    Ok(())
}

/// The first Produce version the `kafka-protocol` crate decodes (RecordBatch v2).
pub(super) const FIRST_DECODED_VERSION: i16 = 3;

/// The answer to Produce v0 to v2, whose message sets predate RecordBatch v2: every
/// partition gets `UNSUPPORTED_VERSION` (none for acks 0). The request is read by hand, as the
/// `kafka-protocol` crate does not decode these versions.
pub(super) fn old_version(
    correlation: i32,
    version: i16,
    mut frame: Bytes,
) -> Result<Option<BytesMut>, Refusal> {
    let bad = || format!("a malformed Produce v{version} request");
    let need = |frame: &Bytes, n: usize| if frame.remaining() < n { Err(bad()) } else { Ok(()) };
    // Header v1: key, version, correlation id, then a nullable client id.
    frame.advance(8);
    need(&frame, 2)?;
    let client_id = frame.get_i16();
    if client_id > 0 {
        need(&frame, client_id as usize)?;
        frame.advance(client_id as usize);
    }
    need(&frame, 10)?;
    let acks = frame.get_i16();
    frame.advance(4); // timeout
    let topics = frame.get_i32();
    let mut out = BytesMut::new();
    out.put_i32(correlation);
    out.put_i32(topics.max(0));
    for _ in 0..topics.max(0) {
        need(&frame, 2)?;
        let len = frame.get_i16().max(0) as usize;
        need(&frame, len + 4)?;
        let name = frame.split_to(len);
        out.put_i16(len as i16);
        out.put_slice(&name);
        let partitions = frame.get_i32();
        out.put_i32(partitions.max(0));
        for _ in 0..partitions.max(0) {
            need(&frame, 8)?;
            let index = frame.get_i32();
            let size = frame.get_i32().max(0) as usize;
            need(&frame, size)?;
            frame.advance(size);
            out.put_i32(index);
            out.put_i16(ResponseError::UnsupportedVersion.code());
            out.put_i64(-1); // base offset
            if version >= 2 {
                out.put_i64(-1); // log append time
            }
        }
    }
    if frame.has_remaining() {
        return Err(bad());
    }
    if version >= 1 {
        out.put_i32(0); // throttle time
    }
    Ok((acks != 0).then_some(out))
}
