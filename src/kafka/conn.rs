//! One connection: length-prefixed frames in, responses out in the same order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::net::TcpStream;

use super::acls::{self, Client};
use super::{
    MAX_RESPONSE_BYTES, Server, admin, alter_configs, apis, describe_configs, fetch, groups, guard, metadata,
    produce, scram, single_node, txn,
};

/// Why a connection is closed.
pub(super) type Refusal = String;

/// Serves requests until the client hangs up or sends something that cannot be served.
pub(super) async fn serve(stream: TcpStream, peer: SocketAddr, server: &Arc<Server>) {
    log::debug!("connection from {peer}");
    stream.set_nodelay(true).ok();
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let idle = server.config.connections_max_idle;
    let client = Client::at(peer);
    loop {
        let frame = match read_frame(&mut read, server.config.max_frame_bytes, idle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(Closed::Idle) => {
                log::debug!("closing the connection from {peer}: idle for {idle:?}");
                break;
            }
            Err(Closed::Refused(why)) => {
                log::warn!("closing the connection from {peer}: {why}");
                break;
            }
        };
        let started = std::time::Instant::now();
        let (api, correlation) = (
            i16::from_be_bytes([frame[0], frame[1]]),
            i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        );
        let waits = [ApiKey::Fetch, ApiKey::JoinGroup, ApiKey::SyncGroup].map(|k| k as i16);
        let answer = if waits.contains(&api) {
            // A long poll, or a join waiting for a rebalance (as long as the client's rebalance
            // timeout), ends when its client leaves, rather than holding the connection's slot
            // until its deadline. A member that left this way is gone after its session
            // timeout, as one whose process died.
            let answering = handle(server, &client, frame);
            tokio::pin!(answering);
            tokio::select! {
                answer = &mut answering => answer,
                () = client_left(&mut read) => {
                    log::debug!("connection from {peer}: closed by the client during API {api}");
                    break;
                }
            }
        } else {
            handle(server, &client, frame).await
        };
        let took = started.elapsed();
        log::trace!("{peer}: API {api} #{correlation} answered in {took:?}");
        if took > std::time::Duration::from_secs(5) {
            log::info!("{peer}: API {api} #{correlation} took {took:?}");
        }
        match answer {
            Ok(None) => {}
            Ok(Some(response)) => match write_frame(&mut write, &response, idle).await {
                Ok(()) => {}
                Err(Closed::Idle) => {
                    log::debug!("closing the connection from {peer}: not reading for {idle:?}");
                    break;
                }
                Err(Closed::Refused(e)) => {
                    log::debug!("connection from {peer}: {e}");
                    break;
                }
            },
            Err(why) => {
                log::warn!("closing the connection from {peer}: {why}");
                break;
            }
        }
    }
    log::debug!("connection from {peer} closed");
}

/// Why [`read_frame`] gives up on a connection.
enum Closed {
    /// Nothing arrived for `connections.max.idle.ms`.
    Idle,
    /// The bytes cannot be served.
    Refused(Refusal),
}

/// The next request frame; `None` at a clean end of stream. The length is checked before
/// anything is read, and the buffer grows only as bytes arrive. Every wait for bytes, before or
/// inside a frame, ends after `idle`.
async fn read_frame<R: AsyncRead + Unpin>(
    read: &mut R,
    max: usize,
    idle: Duration,
) -> Result<Option<Bytes>, Closed> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match idle_read(read, &mut prefix[got..], idle).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(Closed::Refused("the stream ended inside a length".to_string())),
            n => got += n,
        }
    }
    let len = i32::from_be_bytes(prefix);
    if len < 8 || len as usize > max {
        return Err(Closed::Refused(format!(
            "a request of {len} bytes (at least 8, at most {max})"
        )));
    }
    let len = len as usize;
    let mut frame = Vec::new();
    while frame.len() < len {
        let want = (len - frame.len()).min(CHUNK);
        frame.reserve(want);
        let mut limited = (&mut *read).take(want as u64);
        match tokio::time::timeout(idle, limited.read_buf(&mut frame)).await {
            Err(_) => return Err(Closed::Idle),
            Ok(Err(e)) => return Err(Closed::Refused(e.to_string())),
            Ok(Ok(0)) => {
                return Err(Closed::Refused(format!(
                    "the stream ended {} bytes into a {len}-byte request",
                    frame.len()
                )));
            }
            Ok(Ok(_)) => {}
        }
    }
    Ok(Some(Bytes::from(frame)))
}

/// Writes a response frame. A client that takes none of it for `idle` (it stopped reading)
/// is given up on, as one that sends nothing is.
async fn write_frame<W: AsyncWrite + Unpin>(
    write: &mut W,
    response: &[u8],
    idle: Duration,
) -> Result<(), Closed> {
    let timed = |done: Result<Result<(), std::io::Error>, _>| match done {
        Err(_) => Err(Closed::Idle),
        Ok(Err(e)) => Err(Closed::Refused(e.to_string())),
        Ok(Ok(())) => Ok(()),
    };
    let len = (response.len() as u32).to_be_bytes();
    timed(tokio::time::timeout(idle, write.write_all(&len)).await)?;
    for chunk in response.chunks(CHUNK) {
        timed(tokio::time::timeout(idle, write.write_all(chunk)).await)?;
    }
    timed(tokio::time::timeout(idle, write.flush()).await)
}

/// How much of a frame is read or written at once (when reading, the buffer grows by at most
/// this much ahead of the bytes that arrived).
const CHUNK: usize = 64 << 10;

/// One read into `buf`, given up after `idle`; 0 at the end of the stream.
async fn idle_read<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut [u8],
    idle: Duration,
) -> Result<usize, Closed> {
    match tokio::time::timeout(idle, read.read(buf)).await {
        Err(_) => Err(Closed::Idle),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(0),
        Ok(Err(e)) => Err(Closed::Refused(e.to_string())),
        Ok(Ok(n)) => Ok(n),
    }
}

/// Completes when the client has closed the connection (or it failed). Bytes the client sends
/// meanwhile (a pipelined request) stay buffered for the next [`read_frame`]; once there are
/// some this never completes, and the request being answered runs to its end.
async fn client_left<R: AsyncBufRead + Unpin>(read: &mut R) {
    match read.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Answers one request: `None` for a produce with acks 0, which gets no response.
pub(super) async fn handle(
    server: &Arc<Server>,
    client: &Client,
    mut frame: Bytes,
) -> Result<Option<BytesMut>, Refusal> {
    if frame.len() < 8 {
        return Err(format!("a request of {} bytes", frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api) = ApiKey::try_from(key) else {
        // Kafka closes the connection on an API key it does not know.
        return Err(format!("unknown API key {key}"));
    };
    let Some(range) = apis::served(api) else {
        return Err(format!("{api:?} is not served"));
    };
    if !range.contains(&version) {
        return match api {
            // The client learns the versions from the error reply (KIP-511).
            ApiKey::ApiVersions => Ok(Some(apis::unsupported_version(correlation))),
            _ => Err(format!("{api:?} version {version} is not served")),
        };
    }
    if api == ApiKey::Produce && version < produce::FIRST_DECODED_VERSION {
        return produce::old_version(correlation, version, frame);
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version))
        .map_err(|e| format!("a malformed {api:?} header: {e}"))?;
    guard::check(api, version, &frame)?;
    crate::telemetry::request(api);
    let request = Request {
        api,
        version,
        header,
        body: frame,
    };
    let response = match api {
        ApiKey::ApiVersions => request.reply(apis::api_versions(request.decode()?))?,
        ApiKey::Metadata => {
            let metadata_request = request.decode()?;
            let answer = if metadata::may_create(server, &metadata_request, version) {
                {
                    let client = client.clone();
                    off_workers(server, move |s| {
                        metadata::metadata(s, &client, metadata_request, version)
                    })
                    .await
                }
            } else {
                metadata::metadata(server, client, metadata_request, version)
            };
            request.reply(answer)?
        }
        ApiKey::Produce => {
            let produce: kafka_protocol::messages::ProduceRequest = request.decode()?;
            let acks = produce.acks;
            let response = produce::produce(server, client, produce).await;
            for p in response.responses.iter().flat_map(|t| &t.partition_responses) {
                crate::telemetry::partition_error("Produce", p.error_code);
            }
            if acks == 0 {
                // No response tells the client of a refusal, so the connection is closed, as
                // Kafka does: the client notices, refreshes its metadata and reconnects.
                let refused = response
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter().map(move |p| (t, p)))
                    .find(|(_, p)| p.error_code != 0);
                if let Some((t, p)) = refused {
                    return Err(format!(
                        "a produce with acks 0 to {}-{} was refused with error {}",
                        &*t.name.0, p.index, p.error_code
                    ));
                }
                return Ok(None);
            }
            request.reply(response)?
        }
        ApiKey::Fetch => {
            let response = fetch::fetch(server, client, request.decode()?).await;
            for p in response.responses.iter().flat_map(|t| &t.partitions) {
                crate::telemetry::partition_error("Fetch", p.error_code);
            }
            request.reply(response)?
        }
        ApiKey::ListOffsets => {
            let list: kafka_protocol::messages::ListOffsetsRequest = request.decode()?;
            // A lookup by timestamp reads (and may decompress) batches from the disk.
            let answer = if fetch::reads_batches(&list) {
                let client = client.clone();
                off_workers(server, move |s| fetch::list_offsets(s, &client, list)).await
            } else {
                fetch::list_offsets(server, client, list)
            };
            request.reply(answer)?
        }
        ApiKey::OffsetForLeaderEpoch => {
            request.reply(fetch::offset_for_leader_epoch(server, client, request.decode()?))?
        }
        ApiKey::CreateTopics => {
            let (create, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| admin::create_topics(s, &client, create)).await)?
        }
        ApiKey::CreatePartitions => {
            let (create, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| admin::create_partitions(s, &client, create));
            request.reply(answer.await)?
        }
        ApiKey::DeleteTopics => {
            let (delete, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| admin::delete_topics(s, &client, delete, version));
            request.reply(answer.await)?
        }
        ApiKey::FindCoordinator => {
            request.reply(groups::find_coordinator(server, client, request.decode()?))?
        }
        ApiKey::JoinGroup => {
            let client_id = request.header.client_id.as_deref().unwrap_or("").to_string();
            request.reply(groups::join_group(server, client, request.decode()?, version, client_id).await)?
        }
        ApiKey::SyncGroup => request.reply(groups::sync_group(server, client, request.decode()?).await)?,
        // A group's lock may be held by a commit waiting for the offsets topic's replication:
        // requests that take it run off the workers.
        ApiKey::Heartbeat => {
            let (beat, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| groups::heartbeat(s, &client, beat));
            request.reply(answer.await)?
        }
        ApiKey::LeaveGroup => {
            let (leave, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| groups::leave_group(s, &client, leave, version));
            request.reply(answer.await)?
        }
        ApiKey::OffsetCommit => {
            request.reply(groups::offset_commit(server, client, request.decode()?).await)?
        }
        ApiKey::OffsetFetch => {
            request.reply(groups::offset_fetch(server, client, request.decode()?, version).await)?
        }
        ApiKey::ListGroups => request.reply(groups::list_groups(server, client, request.decode()?).await)?,
        ApiKey::OffsetDelete => {
            request.reply(groups::offset_delete(server, client, request.decode()?).await)?
        }
        ApiKey::DeleteGroups => {
            request.reply(groups::delete_groups(server, client, request.decode()?).await)?
        }
        ApiKey::DescribeGroups => {
            let (describe, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| groups::describe_groups(s, &client, describe));
            request.reply(answer.await)?
        }
        ApiKey::InitProducerId => {
            let init: kafka_protocol::messages::InitProducerIdRequest = request.decode()?;
            if init.transactional_id.as_ref().is_some_and(|t| !t.0.is_empty()) {
                let client = client.clone();
                request.reply(
                    off_workers(server, move |s| txn::init_producer_id(s, &client, init, version)).await,
                )?
            } else {
                request.reply(admin::init_producer_id(server, client, init))?
            }
        }
        // The transaction coordinator waits for the disk: off the workers.
        ApiKey::AddPartitionsToTxn => {
            let (add, client) = (request.decode()?, client.clone());
            request
                .reply(off_workers(server, move |s| txn::add_partitions(s, &client, add, version)).await)?
        }
        ApiKey::AddOffsetsToTxn => {
            let (add, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| txn::add_offsets(s, &client, add, version)).await)?
        }
        ApiKey::TxnOffsetCommit => {
            let (commit, client) = (request.decode()?, client.clone());
            request.reply(
                off_workers(server, move |s| {
                    txn::txn_offset_commit(s, &client, commit, version)
                })
                .await,
            )?
        }
        ApiKey::EndTxn => {
            let (end, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| txn::end_txn(s, &client, end, version)).await)?
        }
        ApiKey::DescribeTransactions => {
            let (describe, client) = (request.decode()?, client.clone());
            request
                .reply(off_workers(server, move |s| txn::describe_transactions(s, &client, describe)).await)?
        }
        ApiKey::ListTransactions => {
            let (list, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| txn::list_transactions(s, &client, list)).await)?
        }
        ApiKey::DescribeConfigs => request.reply(describe_configs::describe_configs(
            server,
            client,
            request.decode()?,
        ))?,
        ApiKey::AlterConfigs => {
            let (alter, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| alter_configs::alter_configs(s, &client, alter));
            request.reply(answer.await)?
        }
        ApiKey::IncrementalAlterConfigs => {
            let (alter, client) = (request.decode()?, client.clone());
            let answer = off_workers(server, move |s| {
                alter_configs::incremental_alter_configs(s, &client, alter)
            });
            request.reply(answer.await)?
        }
        ApiKey::DeleteRecords => {
            let (delete, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| admin::delete_records(s, &client, delete)).await)?
        }
        ApiKey::DescribeLogDirs => request.reply(single_node::describe_log_dirs(
            server,
            client,
            request.decode()?,
            version,
        ))?,
        ApiKey::ListPartitionReassignments => request.reply(single_node::list_partition_reassignments(
            server,
            client,
            request.decode()?,
        ))?,
        ApiKey::ElectLeaders => request.reply(single_node::elect_leaders(
            server,
            client,
            request.decode()?,
            version,
        ))?,
        ApiKey::AlterReplicaLogDirs => request.reply(single_node::alter_replica_log_dirs(
            server,
            client,
            request.decode()?,
        ))?,
        ApiKey::AlterPartitionReassignments => request.reply(single_node::alter_partition_reassignments(
            server,
            client,
            request.decode()?,
        ))?,
        ApiKey::DescribeAcls => {
            // Up to MAX_ACLS matched and copied: off the workers.
            let (describe, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| acls::describe_acls(s, &client, describe)).await)?
        }
        ApiKey::CreateAcls => {
            let (create, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| acls::create_acls(s, &client, create)).await)?
        }
        ApiKey::DeleteAcls => {
            let (delete, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| acls::delete_acls(s, &client, delete)).await)?
        }
        ApiKey::DescribeUserScramCredentials => {
            request.reply(scram::describe(server, client, request.decode()?))?
        }
        ApiKey::AlterUserScramCredentials => {
            let (alter, client) = (request.decode()?, client.clone());
            request.reply(off_workers(server, move |s| scram::alter(s, &client, alter)).await)?
        }
        ApiKey::DescribeCluster => {
            request.reply(admin::describe_cluster(server, client, request.decode()?))?
        }
        _ => unreachable!("apis::served lists only the APIs handled here"),
    };
    Ok(Some(response))
}

/// Runs `answer` on tokio's blocking pool: for requests that create, delete or truncate logs,
/// which wait for fsyncs, or that read batches from the disk, so the async workers keep
/// serving other connections meanwhile.
pub(super) async fn off_workers<R: Send + 'static>(
    server: &Arc<Server>,
    answer: impl FnOnce(&Server) -> R + Send + 'static,
) -> R {
    let server = server.clone();
    match tokio::task::spawn_blocking(move || answer(&server)).await {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down, and this connection with it.
        Err(_) => std::future::pending().await,
    }
}

/// A request whose header has been read.
struct Request {
    api: ApiKey,
    version: i16,
    header: RequestHeader,
    body: Bytes,
}

impl Request {
    /// The request's body. Every byte must be used.
    fn decode<T: Decodable>(&self) -> Result<T, Refusal> {
        let mut body = self.body.clone();
        let request = T::decode(&mut body, self.version)
            .map_err(|e| format!("a malformed {:?} request: {e}", self.api))?;
        if body.has_remaining() {
            // Kafka ignores bytes past a request's body, and clients send some: librdkafka 2.14
            // ends its "all topics" Metadata request with 3 of them.
            log::debug!(
                "ignoring {} bytes after a {:?} v{} request",
                body.remaining(),
                self.api,
                self.version
            );
        }
        Ok(request)
    }

    /// The response frame (without its length): header, then body. Sized before it is
    /// encoded: one over [`MAX_RESPONSE_BYTES`] is refused, so no frame's length wraps.
    fn reply<T: Encodable>(&self, response: T) -> Result<BytesMut, Refusal> {
        let header = ResponseHeader::default().with_correlation_id(self.header.correlation_id);
        let header_version = self.api.response_header_version(self.version);
        let failed = |e| format!("could not encode a {:?} response: {e}", self.api);
        let size = header.compute_size(header_version).map_err(failed)?
            + response.compute_size(self.version).map_err(failed)?;
        if size > MAX_RESPONSE_BYTES {
            return Err(format!(
                "a {:?} response of {size} bytes, over the limit of {MAX_RESPONSE_BYTES}",
                self.api
            ));
        }
        let mut out = BytesMut::with_capacity(size);
        header
            .encode(&mut out, header_version)
            .and_then(|()| response.encode(&mut out, self.version))
            .map_err(failed)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    use super::*;

    #[test]
    fn a_response_over_the_limit_is_refused_before_it_is_encoded() {
        let request = Request {
            api: ApiKey::Fetch,
            version: 11,
            header: RequestHeader::default(),
            body: Bytes::new(),
        };
        let fetch = |records: usize| {
            // Zeroed pages the encoder would touch; sizing does not.
            let records = Bytes::from(vec![0u8; records]);
            FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_partitions(vec![PartitionData::default().with_records(Some(records))]),
            ])
        };
        assert!(request.reply(fetch(1 << 20)).is_ok());
        let refused = request.reply(fetch(MAX_RESPONSE_BYTES)).unwrap_err();
        assert!(refused.contains("over the limit"), "{refused}");
    }
}
