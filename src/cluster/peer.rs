//! The peer link: Raft's messages between nodes, over one TCP connection from each node to
//! each peer, shared by all the Raft groups of the two (openraft-multi's `GroupRouter`).
//!
//! A frame is a 4-byte big-endian length and a postcard-encoded [`Message`], at most
//! [`MAX_FRAME`] bytes. A connection opens with a `Hello` naming both ends, so that a peer
//! address that now belongs to another node is refused rather than fed another node's
//! messages. A node that is not yet part of the cluster opens instead with `Join`, naming
//! itself; the node it asks has the controller register it and answers with the cluster's
//! nodes, then closes the connection. Requests carry an id; their responses may come back in any order. A request
//! times out after openraft's hard time-to-live; a lost connection fails its pending requests
//! and the next request reconnects.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use openraft::AnyError;
use openraft::error::{
    ClientWriteError, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, SnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::broker::Placement;
use crate::cluster::MAX_NODE_ID;
use crate::cluster::controller::NodeInfo;
use crate::cluster::entry::{Records, UNASSIGNED};
use crate::cluster::groups::{GroupAnswer, GroupCall, GroupRefusal};
use crate::cluster::partition::cluster_error;
use crate::cluster::raft::{Appended, Node, NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::cluster::state_machine::{SnapshotData, StateMachine};
use crate::storage::producers::ProducerError;
use crate::storage::txnindex::Aborted;
use crate::storage::{Elsewhere, Fetch, PartitionLog, RecordBatch};

/// The largest frame a node sends or accepts: a full AppendEntries of the largest batches.
pub(crate) const MAX_FRAME: usize = 128 << 20;

/// How long a node waits to connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The reading side of a connection between peers.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing side of a connection between peers.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// How a node connects to its peers: TCP, or a simulated network in tests.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Opens a connection to `addr`.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(ReadHalf, WriteHalf)>>;
}

/// Where a node takes its peers' connections.
pub(crate) trait Listener: Send + 'static {
    /// The next connection, and where it comes from.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(ReadHalf, WriteHalf, SocketAddr)>>;
}

/// Peer links over TCP, without Nagle's delay.
pub(crate) struct Tcp;

impl Transport for Tcp {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<(ReadHalf, WriteHalf)>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r) as ReadHalf, Box::new(w) as WriteHalf))
        })
    }
}

impl Listener for Box<dyn Listener> {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(ReadHalf, WriteHalf, SocketAddr)>> {
        (**self).accept()
    }
}

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(ReadHalf, WriteHalf, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = TcpListener::accept(self).await?;
            if let Err(e) = stream.set_nodelay(true) {
                log::debug!("a peer link from {from}: {e}");
            }
            let (r, w) = stream.into_split();
            Ok((Box::new(r) as ReadHalf, Box::new(w) as WriteHalf, from))
        })
    }
}

/// A Raft group: a partition (or, with an empty topic, the controller).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct GroupId {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    /// Which incarnation of the topic (one deleted and created again is another).
    pub(crate) incarnation: u64,
}

pub(crate) type Raft = openraft::Raft<TypeConfig, StateMachine>;

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    Hello {
        from: NodeId,
        to: NodeId,
    },
    Request {
        id: u64,
        group: GroupId,
        rpc: Rpc,
    },
    Response {
        id: u64,
        result: Result<Reply, String>,
    },
    /// A new node asks to be registered (the only frame on its connection).
    Join(NodeInfo),
    /// The answer to `Join`.
    Joined(Result<Welcome, NotJoined>),
}

/// What a node that joins is told: the cluster's founding voters and its registered nodes
/// (itself among them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Welcome {
    pub(crate) founders: Vec<(NodeId, SocketAddr)>,
    pub(crate) nodes: Vec<NodeInfo>,
}

/// Why a node that asked to join was not registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum NotJoined {
    /// The cluster refuses it (its id is taken, say): asking again would not help.
    Refused(String),
    /// Not now (no controller leader, the node asked is busy or stopping): it may ask again.
    Unavailable(String),
}

impl std::fmt::Display for NotJoined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotJoined::Refused(why) | NotJoined::Unavailable(why) => f.write_str(why),
        }
    }
}

/// Registers a node that asks to join, at the node it asks: the controller's doing.
pub(crate) type Admit = Arc<dyn Fn(NodeInfo) -> BoxFuture<'static, Result<Welcome, NotJoined>> + Send + Sync>;

/// How many joins a node handles at once (each waits for the controller); more are told to
/// ask again, so that joins never take the connections Raft's traffic needs.
const MAX_JOINS: usize = 4;

/// How long a node that joins waits for the node it asks to register it (the controller
/// commits and applies the registration meanwhile).
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(45);

/// Asks the node at `seed` to register `node` with its cluster. `Ok(Err(_))` is the seed's
/// answer; `Err` a failure to ask (the seed unreachable or not answering).
pub(crate) async fn join(
    transport: &dyn Transport,
    seed: SocketAddr,
    node: NodeInfo,
) -> io::Result<Result<Welcome, NotJoined>> {
    let (mut reader, mut writer) = tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(seed))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {seed}")))??;
    write_frame(&mut writer, &encode(&Message::Join(node))?).await?;
    let answer = tokio::time::timeout(JOIN_TIMEOUT, read_frame::<Message>(&mut reader, MAX_WELCOME))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {seed}")))??;
    match answer {
        Some(Message::Joined(answer)) => Ok(answer),
        Some(other) => Err(io::Error::other(format!("{seed} answered {other:?} to a Join"))),
        None => Err(io::Error::other(format!("{seed} closed the connection"))),
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: SnapshotData,
    },
    /// A batch for the group's leader to append (from a node that does not lead it).
    Propose(Records),
    /// Every group the sender leads now, for nodes that hold no replica of them; `seq` counts
    /// the sender's lists (sent for the controller's group, which every node runs).
    Leading {
        seq: u64,
        leading: Vec<(GroupId, Placement)>,
    },
    /// Committed batches of the group's log from offset `from` (none: only the log's bounds),
    /// for a node that holds no replica of it.
    Read {
        from: Option<i64>,
        max_bytes: u32,
    },
    /// A consumer group request of a member at the sender, for the node that coordinates
    /// groups (sent for no Raft group).
    Group(GroupCall),
    /// As `Read`, for a `read_committed` reader.
    ReadCommitted {
        from: Option<i64>,
        max_bytes: u32,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    Appended(Appended),
    /// The node does not lead the group; the leader it knows of.
    NotLeader(Option<NodeId>),
    /// Batches read, below the high watermark, and the log's bounds when read.
    Read {
        bytes: Vec<u8>,
        high_watermark: i64,
        log_start: i64,
    },
    /// The offset read from is outside the log.
    OutOfRange {
        log_start: i64,
        log_end: i64,
    },
    /// The group coordinator's answer.
    Group(Result<GroupAnswer, GroupRefusal>),
    /// Taken.
    Done,
    /// The leader's producer state refused the proposed batch.
    Refused(ProducerError),
    /// Batches read below the last stable offset, the log's start and last stable offset
    /// when read, and the transactions aborted among the batches.
    ReadCommitted {
        bytes: Vec<u8>,
        last_stable: i64,
        log_start: i64,
        aborted: Vec<Aborted>,
    },
}

/// What came of a batch proposed to a group.
#[derive(Debug)]
pub(crate) enum Proposed {
    Appended(Appended),
    /// Not appended: the node asked does not lead the group (the leader it knows of).
    NotLeader(Option<NodeId>),
    /// Not sent: the node could not be reached.
    Unreachable(String),
    /// Not appended: the leader's producer state refused the batch (or marker).
    Refused(ProducerError),
}

/// Proposes `records` to the local replica `raft`, waiting at most `ttl`. Only a refusal
/// before the entry was appended is `NotLeader`; an entry appended and then discarded by a
/// leader change may yet commit, so that is an error (outcome unknown), as is a timeout.
pub(crate) async fn propose_here(raft: &Raft, records: Records, ttl: Duration) -> Result<Proposed, String> {
    let written = tokio::time::timeout(ttl, raft.client_write(records))
        .await
        .map_err(|_| unknown_outcome(ttl))?;
    proposed(written)
}

/// What a proposal came to, as openraft answered it.
fn proposed(
    written: Result<ClientWriteResponse<TypeConfig>, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>,
) -> Result<Proposed, String> {
    match written {
        Ok(written) => Ok(Proposed::Appended(written.data)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Ok(Proposed::NotLeader(f.leader_id))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn unknown_outcome(ttl: Duration) -> String {
    format!("not committed within {ttl:?}: the outcome is unknown")
}

/// How long a judged proposal that its proposer stopped waiting for may keep its partition's
/// producers waiting before the leader gives up on it too.
const JUDGED_HOLD: Duration = Duration::from_secs(60);

/// How long a leader judging a transaction's first batch waits for the transaction's
/// coordinator (holding the partition's producers' lock).
const VERIFY_WAIT: Duration = Duration::from_secs(2);

/// Proposes `records` to the local replica `raft` of `log`, as [`propose_here`] does; a
/// producer's batch (or a transaction marker) is judged first against the producers of the
/// log, here at the leader alone (a follower answers `NotLeader`): a retry of a batch the log
/// holds is answered with that batch's append once it is committed, a batch the producer
/// state refuses is `Refused`, and no other producer batch of the log is judged until this one
/// is committed or has failed (even past `ttl`, when the proposer is answered that the outcome
/// is unknown: a retry judged before the entry lands would be taken for new; at most
/// [`JUDGED_HOLD`]). The judging waits off the runtime's workers.
pub(crate) async fn propose_judged(
    raft: &Raft,
    log: Option<PartitionLog>,
    records: Records,
    ttl: Duration,
) -> Result<Proposed, String> {
    // A batch checked when it was made (or by `checked`, from another node): its header is
    // read, not its CRC computed again.
    if records.0.len() < crate::storage::HEADER_LEN {
        return Err("a proposed batch shorter than its header".to_string());
    }
    let header = *crate::storage::Batch::parse_trusted(&records.0).0.header();
    if header.producer_id < 0 {
        return propose_here(raft, records, ttl).await;
    }
    let Some(log) = log else {
        // A replica starting or stopping: nothing is taken unjudged.
        return Ok(Proposed::NotLeader(None));
    };
    let m = openraft::async_runtime::WatchReceiver::borrow_watched(&raft.metrics()).clone();
    if m.state != openraft::ServerState::Leader || m.current_leader != Some(m.id) {
        return Ok(Proposed::NotLeader(m.current_leader.filter(|&l| l != m.id)));
    }
    let (raft, runtime) = (raft.clone(), tokio::runtime::Handle::current());
    let deadline = std::time::Instant::now() + ttl;
    let busy = move || format!("the partition's producers were busy for {ttl:?}; nothing was written");
    // One proposal of the partition at a time takes a thread to be judged on; the others
    // wait here, on the runtime, within their time (an abandoned one stops waiting).
    let Ok(turn) = tokio::time::timeout(ttl, log.proposal_turn().lock_owned()).await else {
        return Err(busy());
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let Some(_producing) = log.producing_within(left()) else {
            let _ = answer.send(Err(busy()));
            return;
        };
        if left().is_zero() {
            let _ = answer.send(Err(busy()));
            return;
        }
        let batch = crate::storage::Batch::parse_trusted(&records.0).0;
        // A transaction's coordinator is asked within a part of the time left.
        let judged = log.judge(&batch, left().min(VERIFY_WAIT));
        let left = left();
        if judged.as_ref().is_ok_and(Option::is_none) && left.is_zero() {
            let _ = answer.send(Err(busy()));
            return;
        }
        let judged = match judged {
            Ok(None) => {
                // The lock stays held until the entry lands or fails, however long the
                // proposer waits.
                let mut written = runtime.spawn(async move { raft.client_write(records).await });
                let within = runtime.block_on(tokio::time::timeout(left, &mut written));
                match within {
                    Ok(joined) => joined.map_err(|e| e.to_string()).and_then(proposed),
                    Err(_) => {
                        let _ = answer.send(Err(unknown_outcome(ttl)));
                        let _ = runtime.block_on(tokio::time::timeout(JUDGED_HOLD, written));
                        return;
                    }
                }
            }
            Ok(Some(info)) => match log.answer_duplicate(&header, info) {
                Ok(info) => Ok(Proposed::Appended(Appended {
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                    max_timestamp: info.log_append_time,
                })),
                Err(why) => Err(why.to_string()),
            },
            Err(crate::Error::Producer { error, .. }) => Ok(Proposed::Refused(error)),
            Err(e) => Err(e.to_string()),
        };
        let _ = answer.send(judged);
    });
    answered
        .await
        .unwrap_or_else(|_| Err("the judging of the batch stopped".to_string()))
}

/// How long a node waits for a peer to take the list of groups it leads.
const LEADING_TTL: Duration = Duration::from_secs(5);

/// How long what a peer said it leads is believed without its saying it again.
pub(crate) const HEARD_FOR: Duration = Duration::from_secs(5);

/// How long a leader waits for a batch proposed by another node to commit.
const REMOTE_PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);

/// A message as a frame's payload, refused past [`MAX_FRAME`].
fn encode(message: &Message) -> io::Result<Vec<u8>> {
    let bytes = postcard::to_stdvec(message).map_err(io::Error::other)?;
    if bytes.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "a {}-byte peer message is over the {MAX_FRAME}-byte limit",
            bytes.len()
        )));
    }
    Ok(bytes)
}

async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) -> io::Result<()> {
    w.write_u32(bytes.len() as u32).await?;
    w.write_all(bytes).await?;
    w.flush().await
}

/// The largest first frame of a connection (a Hello or a Join), read before the peer is known.
const MAX_HELLO: usize = 1024;

/// The longest Kafka address a node that joins may give.
pub(crate) const MAX_KAFKA_ADDRESS: usize = 255;

/// The largest answer to a Join: every node of the largest cluster.
const MAX_WELCOME: usize = 2 * (MAX_NODE_ID as usize + 1) * MAX_HELLO;

/// How long a new connection has to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The most peer connections a node serves at once, and the most requests in flight on one.
const MAX_PEER_CONNECTIONS: usize = 256;
const MAX_IN_FLIGHT: usize = 1024;

/// How long a request waits for its reply at least, whatever openraft asks: an AppendEntries
/// carries up to 64 batches and its reply waits for the follower's fsync (openraft's own
/// time-to-live for it is the heartbeat interval).
const MIN_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The next frame, of at most `max` bytes; `None` at a clean end of the stream.
async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncReadExt + Unpin),
    max: usize,
) -> io::Result<Option<T>> {
    let len = match r.read_u32().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a peer sent a {len}-byte frame, over the {max}-byte limit"),
        ));
    }
    let mut bytes = vec![0; len];
    r.read_exact(&mut bytes).await?;
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Requests awaiting their responses, by id (ordered: a lost link fails them oldest first,
/// the same way every time).
type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<Reply, String>>>>>;

/// A request's frame, to be sent unless its caller has given up on it by then.
struct Outgoing {
    id: u64,
    bytes: Vec<u8>,
    deadline: tokio::time::Instant,
}

/// What a request whose frame never reached the socket is failed with: the peer cannot have
/// acted on it (a frame cut short by a failed write is never read whole).
const NOT_SENT: &str = "not sent: the peer link failed first";

/// Why a request got no reply.
enum CallError {
    /// It was never sent: trying again cannot repeat it.
    NotSent(String),
    /// It may have been acted on.
    Failed(RPCError<TypeConfig>),
}

/// One open connection to a peer.
#[derive(Clone)]
struct Link {
    out: mpsc::UnboundedSender<Outgoing>,
    pending: Pending,
    alive: Arc<AtomicBool>,
}

impl Link {
    async fn open(
        transport: &dyn Transport,
        me: NodeId,
        target: NodeId,
        addr: SocketAddr,
    ) -> io::Result<Link> {
        let (mut reader, mut writer) = tokio::time::timeout(CONNECT_TIMEOUT, transport.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr}")))??;
        write_frame(&mut writer, &encode(&Message::Hello { from: me, to: target })?).await?;
        let (out, mut queue) = mpsc::unbounded_channel::<Outgoing>();
        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let link = Link {
            out,
            pending: pending.clone(),
            alive: alive.clone(),
        };
        let writer_alive = alive.clone();
        let unsent = pending.clone();
        tokio::spawn(async move {
            while let Some(o) = queue.recv().await {
                // A request its caller gave up on is not sent (openraft sends it again).
                if o.deadline <= tokio::time::Instant::now() {
                    continue;
                }
                if let Err(e) = write_frame(&mut writer, &o.bytes).await {
                    log::debug!("peer link to node {target} at {addr}: {e}");
                    writer_alive.store(false, Ordering::SeqCst);
                    // This request and those queued behind it never reached the peer whole.
                    queue.close();
                    let mut failed = vec![o.id];
                    while let Ok(o) = queue.try_recv() {
                        failed.push(o.id);
                    }
                    let mut pending = unsent.lock();
                    for id in failed {
                        if let Some(tx) = pending.remove(&id) {
                            let _ = tx.send(Err(NOT_SENT.into()));
                        }
                    }
                    break;
                }
            }
            writer_alive.store(false, Ordering::SeqCst);
        });
        tokio::spawn(async move {
            loop {
                match read_frame::<Message>(&mut reader, MAX_FRAME).await {
                    Ok(Some(Message::Response { id, result })) => {
                        if let Some(tx) = pending.lock().remove(&id) {
                            let _ = tx.send(result);
                        }
                    }
                    Ok(Some(other)) => {
                        log::warn!("node {target} at {addr} sent {other:?} where a response was due");
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::debug!("peer link to node {target} at {addr}: {e}");
                        break;
                    }
                }
                if !alive.load(Ordering::SeqCst) {
                    break;
                }
            }
            alive.store(false, Ordering::SeqCst);
            // Dropping the senders fails the requests still waiting.
            pending.lock().clear();
        });
        Ok(link)
    }
}

/// Sends Raft's messages to peers, one shared connection per peer.
#[derive(Clone)]
pub(crate) struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    me: NodeId,
    transport: Arc<dyn Transport>,
    peers: RwLock<HashMap<NodeId, SocketAddr>>,
    /// Each peer's link, behind a lock of its own: connecting to one that is down does not
    /// hold up messages to the others.
    links: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Link>>>>>,
    next_id: AtomicU64,
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&AnyError::error(e.to_string()))
}

impl Router {
    #[cfg(test)]
    pub(crate) fn new(me: NodeId) -> Router {
        Router::with_transport(me, Arc::new(Tcp))
    }

    /// A router whose links go over `transport`.
    pub(crate) fn with_transport(me: NodeId, transport: Arc<dyn Transport>) -> Router {
        Router {
            inner: Arc::new(RouterInner {
                me,
                transport,
                peers: RwLock::new(HashMap::new()),
                links: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Where node `id` listens for its peers.
    pub(crate) fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        self.inner.peers.write().insert(id, addr);
    }

    /// Whether `id` is a node this one knows.
    pub(crate) fn knows(&self, id: NodeId) -> bool {
        self.inner.peers.read().contains_key(&id)
    }

    async fn link(&self, target: NodeId) -> Result<Link, Unreachable<TypeConfig>> {
        let slot = self.inner.links.lock().entry(target).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(link) = slot.as_ref()
            && link.alive.load(Ordering::SeqCst)
        {
            return Ok(link.clone());
        }
        let addr = self.inner.peers.read().get(&target).copied();
        let addr = addr.ok_or_else(|| unreachable(format!("no address for node {target}")))?;
        let link = Link::open(&*self.inner.transport, self.inner.me, target, addr)
            .await
            .map_err(unreachable)?;
        *slot = Some(link.clone());
        Ok(link)
    }

    /// Sends `rpc` for `group` to `target` and waits for the reply for at most `ttl` (at
    /// least [`MIN_RPC_TIMEOUT`]).
    async fn call(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: Rpc,
        ttl: Duration,
    ) -> Result<Reply, RPCError<TypeConfig>> {
        self.try_call(target, group, rpc, ttl).await.map_err(|e| match e {
            CallError::NotSent(why) => RPCError::Unreachable(unreachable(why)),
            CallError::Failed(e) => e,
        })
    }

    /// [`Router::call`], telling a request that was never sent from one that may have been.
    async fn try_call(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: Rpc,
        ttl: Duration,
    ) -> Result<Reply, CallError> {
        // A lost list of the groups a node leads is replaced a second later: its reply's delay
        // says nothing about the link that Raft's requests share.
        let gossip = matches!(rpc, Rpc::Leading { .. });
        let network =
            |why: String| CallError::Failed(RPCError::Network(NetworkError::new(&AnyError::error(why))));
        let ttl = ttl.max(MIN_RPC_TIMEOUT);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // Too large a message fails alone, not the link it would have broken.
        let bytes = encode(&Message::Request { id, group, rpc }).map_err(|e| network(e.to_string()))?;
        let link = self
            .link(target)
            .await
            .map_err(|e| CallError::NotSent(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        link.pending.lock().insert(id, tx);
        let deadline = tokio::time::Instant::now() + ttl;
        if link.out.send(Outgoing { id, bytes, deadline }).is_err() {
            link.pending.lock().remove(&id);
            return Err(CallError::NotSent(NOT_SENT.into()));
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(remote))) if remote == NOT_SENT => Err(CallError::NotSent(remote)),
            Ok(Ok(Err(remote))) => Err(network(remote)),
            Ok(Err(_)) => Err(CallError::Failed(RPCError::Unreachable(unreachable(
                "the peer link closed",
            )))),
            Err(_) => {
                link.pending.lock().remove(&id);
                // A link that answers nothing for so long may be half open: the next request
                // connects again.
                if !gossip {
                    link.alive.store(false, Ordering::SeqCst);
                }
                Err(network(format!("no reply from node {target} in {ttl:?}")))
            }
        }
    }
}

impl Router {
    /// Proposes `records` to node `target`'s replica of `group` (its leader, it is hoped).
    pub(crate) async fn propose(
        &self,
        target: NodeId,
        group: GroupId,
        records: Records,
        ttl: Duration,
    ) -> Result<Proposed, String> {
        // Only a batch that provably never reached the peer may be sent again.
        match self.try_call(target, group, Rpc::Propose(records), ttl).await {
            Ok(Reply::Appended(a)) => Ok(Proposed::Appended(a)),
            Ok(Reply::NotLeader(l)) => Ok(Proposed::NotLeader(l)),
            Ok(Reply::Refused(e)) => Ok(Proposed::Refused(e)),
            Ok(other) => Err(unexpected(other).to_string()),
            Err(CallError::NotSent(why)) => Ok(Proposed::Unreachable(why)),
            Err(CallError::Failed(e)) => Err(e.to_string()),
        }
    }
}

impl Router {
    /// Sends a member's group request to node `target`, which coordinates groups (it is
    /// hoped); `Err` if it was not answered (the link failed, or `ttl` passed).
    pub(crate) async fn group_call(
        &self,
        target: NodeId,
        group: GroupId,
        call: GroupCall,
        ttl: Duration,
    ) -> Result<Result<GroupAnswer, GroupRefusal>, String> {
        // The call's own timeout comes first (and forgets the request).
        let called = self.call(target, group, Rpc::Group(call), ttl);
        match tokio::time::timeout(ttl + Duration::from_secs(1), called).await {
            Ok(Ok(Reply::Group(answer))) => Ok(answer),
            Ok(Ok(other)) => Err(unexpected(other).to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer from node {target} in {ttl:?}")),
        }
    }

    /// Whether a connection to `addr` opens (it is closed at once).
    pub(crate) async fn reachable(&self, addr: SocketAddr) -> bool {
        let connect = self.inner.transport.connect(addr);
        matches!(tokio::time::timeout(CONNECT_TIMEOUT, connect).await, Ok(Ok(_)))
    }

    /// Reads `group`'s log at node `target` from `from` (`None`: only its bounds), at most
    /// `max_bytes` past the first batch, waiting at most `ttl`.
    pub(crate) async fn read(
        &self,
        target: NodeId,
        group: GroupId,
        (from, max_bytes, committed): (Option<i64>, usize, bool),
        ttl: Duration,
    ) -> crate::Result<Elsewhere> {
        let max_bytes = max_bytes.min(MAX_READ_BYTES) as u32;
        let rpc = match committed {
            true => Rpc::ReadCommitted { from, max_bytes },
            false => Rpc::Read { from, max_bytes },
        };
        let read = self.call(target, group, rpc, ttl);
        // The call's own timeout comes first (and forgets the request).
        let reply = tokio::time::timeout(ttl + Duration::from_secs(1), read)
            .await
            .map_err(|_| cluster_error(format!("node {target} did not answer a read in {ttl:?}")))?
            .map_err(cluster_error)?;
        match reply {
            Reply::Read {
                bytes,
                high_watermark,
                log_start,
            } => Ok((Fetch::new(bytes, high_watermark, log_start), Vec::new())),
            Reply::ReadCommitted {
                bytes,
                last_stable,
                log_start,
                aborted,
            } => Ok((Fetch::new(bytes, last_stable, log_start), aborted)),
            Reply::OutOfRange { log_start, log_end } => Err(crate::Error::OffsetOutOfRange {
                offset: from.unwrap_or_default(),
                log_start,
                log_end,
            }),
            other => Err(cluster_error(unexpected(other))),
        }
    }

    /// Tells node `target` every group this node leads (list `seq` of this node's), within
    /// [`LEADING_TTL`] (connecting included).
    pub(crate) async fn tell_leading(
        &self,
        target: NodeId,
        seq: u64,
        leading: Vec<(GroupId, Placement)>,
    ) -> Result<(), String> {
        let group = GroupId {
            topic: String::new(),
            partition: 0,
            incarnation: 0,
        };
        let told = self.call(target, group, Rpc::Leading { seq, leading }, LEADING_TTL);
        match tokio::time::timeout(LEADING_TTL, told).await {
            Ok(Ok(Reply::Done)) => Ok(()),
            Ok(Ok(other)) => Err(unexpected(other).to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("not taken within {LEADING_TTL:?}")),
        }
    }

    /// A vote or a pre-vote, and its answer.
    async fn ask_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: Rpc,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(target, group, rpc, option.hard_ttl()).await? {
            Reply::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Reply) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&AnyError::error(format!(
        "an unexpected reply: {reply:?}"
    ))))
}

impl GroupRouter<TypeConfig, GroupId> for Router {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let reply = self
            .call(target, group, Rpc::Append(rpc), option.hard_ttl())
            .await?;
        match reply {
            Reply::Append(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(target, group, Rpc::Vote(rpc), option).await
    }

    async fn pre_vote(
        &self,
        target: NodeId,
        group: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.ask_vote(target, group, Rpc::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &self,
        target: NodeId,
        group: GroupId,
        vote: Vote,
        snapshot: Snapshot<SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        match self.call(target, group, rpc, option.hard_ttl()).await {
            Ok(Reply::Snapshot(r)) => Ok(r),
            Ok(other) => Err(StreamingError::Network(NetworkError::new(&AnyError::error(
                format!("an unexpected reply: {other:?}"),
            )))),
            Err(RPCError::Unreachable(e)) => Err(StreamingError::Unreachable(e)),
            Err(e) => Err(StreamingError::Network(NetworkError::new(&AnyError::error(
                e.to_string(),
            )))),
        }
    }
}

/// openraft's network factory for one group: clients bound to (peer, group) on the router.
pub(crate) struct Network {
    pub(crate) router: Router,
    pub(crate) group: GroupId,
}

impl openraft::network::RaftNetworkFactory<TypeConfig> for Network {
    type Network = GroupNetworkAdapter<TypeConfig, GroupId, Router>;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Self::Network {
        GroupNetworkAdapter::new(self.router.clone(), target, self.group.clone())
    }
}

/// The Raft groups a node serves, by id, and what its peers said they lead.
#[derive(Default)]
pub(crate) struct Groups {
    rafts: RwLock<HashMap<GroupId, Raft>>,
    /// The logs of the partition groups, for nodes that read them from here.
    logs: RwLock<HashMap<GroupId, PartitionLog>>,
    /// What each peer last said it leads: the list's number, when it came, the groups.
    heard: RwLock<BTreeMap<NodeId, Heard>>,
    /// Registers nodes that ask to join (none yet: they are told to ask again).
    admit: std::sync::OnceLock<Admit>,
    /// The joins being handled ([`MAX_JOINS`] at most).
    joins: std::sync::atomic::AtomicUsize,
    /// Runs other nodes' members' group requests on this node's coordinator.
    coordinate: std::sync::OnceLock<Coordinate>,
}

/// Runs a group request of a member at another node here.
pub(crate) type Coordinate =
    Arc<dyn Fn(GroupCall) -> BoxFuture<'static, Result<GroupAnswer, GroupRefusal>> + Send + Sync>;

/// One peer's last list of the groups it leads.
struct Heard {
    seq: u64,
    at: tokio::time::Instant,
    leading: HashMap<GroupId, Placement>,
}

impl Groups {
    pub(crate) fn insert(&self, group: GroupId, raft: Raft) {
        self.rafts.write().insert(group, raft);
    }

    /// Serves reads of `log`, the log of `group`'s replica here, to nodes that hold none.
    pub(crate) fn serve_reads(&self, group: GroupId, log: PartitionLog) {
        self.logs.write().insert(group, log);
    }

    pub(crate) fn remove(&self, group: &GroupId) -> Option<Raft> {
        self.logs.write().remove(group);
        self.rafts.write().remove(group)
    }

    pub(crate) fn get(&self, group: &GroupId) -> Option<Raft> {
        self.rafts.read().get(group).cloned()
    }

    /// Has `coordinate` run the group requests of members at other nodes.
    pub(crate) fn coordinate_with(&self, coordinate: Coordinate) {
        let _ = self.coordinate.set(coordinate);
    }

    /// Has `admit` register the nodes that ask to join through this one.
    pub(crate) fn admit_with(&self, admit: Admit) {
        let _ = self.admit.set(admit);
    }

    /// Registers `node`, which asks node `me` to join: [`MAX_JOINS`] at a time, each for at
    /// most [`JOIN_TIMEOUT`] (less than the joining node waits, so it hears why).
    async fn admit(&self, me: NodeId, node: NodeInfo) -> Result<Welcome, NotJoined> {
        struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let busy = |why: String| Err(NotJoined::Unavailable(why));
        let Some(admit) = self.admit.get() else {
            return busy(format!("node {me} is starting"));
        };
        if self.joins.fetch_add(1, Ordering::SeqCst) >= MAX_JOINS {
            self.joins.fetch_sub(1, Ordering::SeqCst);
            return busy(format!("node {me} is handling {MAX_JOINS} joins"));
        }
        let _slot = Slot(&self.joins);
        let answer = tokio::time::timeout(JOIN_TIMEOUT - CONNECT_TIMEOUT, admit(node)).await;
        answer.unwrap_or_else(|_| busy(format!("node {me} had no answer from the controller in time")))
    }

    /// Where `group`'s replicas are, as its leader said within [`HEARD_FOR`] (the latest
    /// term heard of, if two nodes said they lead it).
    pub(crate) fn heard(&self, group: &GroupId) -> Option<Placement> {
        self.heard
            .read()
            .values()
            .filter(|h| h.at.elapsed() < HEARD_FOR)
            .filter_map(|h| h.leading.get(group))
            .max_by_key(|p| p.epoch)
            .cloned()
    }

    /// Takes node `from`'s list `seq` of the groups it leads, in place of its last one.
    fn hear(&self, from: NodeId, seq: u64, leading: Vec<(GroupId, Placement)>) {
        let leading: HashMap<GroupId, Placement> = leading
            .into_iter()
            // Only a leader speaks for its group, with a term a leader epoch can hold.
            .filter(|(_, p)| p.leader == Some(from) && p.epoch <= i32::MAX as u64)
            .collect();
        let mut heard = self.heard.write();
        if heard
            .get(&from)
            .is_some_and(|h| h.seq >= seq && h.at.elapsed() < HEARD_FOR)
        {
            return; // a list that was overtaken
        }
        let at = tokio::time::Instant::now();
        heard.insert(from, Heard { seq, at, leading });
    }

    async fn dispatch(&self, from: NodeId, group: GroupId, rpc: Rpc) -> Result<Reply, String> {
        let term = match &rpc {
            Rpc::Append(r) => Some(r.vote.leader_id().term),
            Rpc::Vote(r) | Rpc::PreVote(r) => Some(r.vote.leader_id().term),
            Rpc::Snapshot { vote, .. } => Some(vote.leader_id().term),
            Rpc::Propose(_)
            | Rpc::Leading { .. }
            | Rpc::Read { .. }
            | Rpc::ReadCommitted { .. }
            | Rpc::Group(_) => None,
        };
        let rpc = match rpc {
            Rpc::Leading { seq, leading } => {
                self.hear(from, seq, leading);
                return Ok(Reply::Done);
            }
            Rpc::Read { from, max_bytes } => return self.read(&group, from, max_bytes, false).await,
            Rpc::ReadCommitted { from, max_bytes } => return self.read(&group, from, max_bytes, true).await,
            Rpc::Group(call) => {
                let answer = match self.coordinate.get() {
                    Some(coordinate) => coordinate(call).await,
                    None => Err(GroupRefusal::NotCoordinator),
                };
                return Ok(Reply::Group(answer));
            }
            rpc => rpc,
        };
        if term.is_some_and(|t| t > i32::MAX as u64) {
            // A term must fit a Kafka leader epoch: one past it would wedge the group.
            return Err(format!(
                "term {} is past the largest leader epoch",
                term.unwrap_or_default()
            ));
        }
        let Some(raft) = self.get(&group) else {
            if matches!(rpc, Rpc::Propose(_)) {
                // Certainly not appended here: the proposer asks its own replica again.
                return Ok(Reply::NotLeader(None));
            }
            return Err(format!("no replica of {}-{} here", group.topic, group.partition));
        };
        match rpc {
            Rpc::Append(r) => raft
                .append_entries(r)
                .await
                .map(Reply::Append)
                .map_err(|e| e.to_string()),
            Rpc::Vote(r) => raft.vote(r).await.map(Reply::Vote).map_err(|e| e.to_string()),
            Rpc::PreVote(r) => raft.pre_vote(r).await.map(Reply::Vote).map_err(|e| e.to_string()),
            Rpc::Propose(records) => {
                let log = self.logs.read().get(&group).cloned();
                match propose_judged(&raft, log, checked(records)?, REMOTE_PROPOSAL_TIMEOUT).await? {
                    Proposed::Appended(a) => Ok(Reply::Appended(a)),
                    Proposed::NotLeader(l) => Ok(Reply::NotLeader(l)),
                    Proposed::Refused(e) => Ok(Reply::Refused(e)),
                    Proposed::Unreachable(why) => Err(why),
                }
            }
            Rpc::Snapshot { vote, meta, data } => raft
                .install_full_snapshot(vote, Snapshot { meta, snapshot: data })
                .await
                .map(Reply::Snapshot)
                .map_err(|e| e.to_string()),
            Rpc::Leading { .. } | Rpc::Read { .. } | Rpc::ReadCommitted { .. } | Rpc::Group(_) => {
                Err("answered above".into())
            }
        }
    }

    /// Reads `group`'s log here for another node, if this node leads the group: at most
    /// [`MAX_READ_BYTES`] (or the first batch whole), off the runtime's workers; `committed`,
    /// as a `read_committed` reader.
    async fn read(
        &self,
        group: &GroupId,
        from: Option<i64>,
        max_bytes: u32,
        committed: bool,
    ) -> Result<Reply, String> {
        let log = self.logs.read().get(group).cloned();
        let (Some(log), Some(raft)) = (log, self.get(group)) else {
            return Err(format!("no replica of {}-{} here", group.topic, group.partition));
        };
        // Only the leader answers: a deposed or lagging replica's shorter log would send the
        // reader back (a position past its end looks out of range there).
        let m = openraft::async_runtime::WatchReceiver::borrow_watched(&raft.metrics()).clone();
        if m.current_leader != Some(m.id) {
            return Err(format!(
                "node {} does not lead {}-{}",
                m.id, group.topic, group.partition
            ));
        }
        let max_bytes = (max_bytes as usize).min(MAX_READ_BYTES);
        let read = tokio::task::spawn_blocking(move || {
            if committed {
                // The last stable offset first: every transaction below it is indexed by then.
                let last_stable = log.last_stable_offset();
                let (fetch, aborted) = match from {
                    None => (
                        Fetch::new(Vec::new(), last_stable, log.log_start_offset()),
                        Vec::new(),
                    ),
                    Some(from) => log.read_pinned_committed(from, max_bytes, &mut None, Vec::new())?,
                };
                return Ok(Reply::ReadCommitted {
                    last_stable,
                    log_start: fetch.log_start_offset(),
                    bytes: fetch.into_bytes(),
                    aborted,
                });
            }
            let fetch = match from {
                None => Fetch::new(Vec::new(), log.high_watermark(), log.log_start_offset()),
                Some(from) => log.read(from, max_bytes)?,
            };
            Ok(Reply::Read {
                high_watermark: fetch.high_watermark(),
                log_start: fetch.log_start_offset(),
                bytes: fetch.into_bytes(),
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        match read {
            Ok(reply) => Ok(reply),
            Err(crate::Error::OffsetOutOfRange {
                log_start, log_end, ..
            }) => Ok(Reply::OutOfRange { log_start, log_end }),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The most bytes one read for another node returns (past its first batch).
const MAX_READ_BYTES: usize = 8 << 20;

/// A batch another node proposes: one whole batch of records (or a transaction marker), not
/// yet placed.
fn checked(records: Records) -> Result<Records, String> {
    let batch = RecordBatch::from_stored(records.0).map_err(|e| format!("a proposed batch: {e}"))?;
    let h = batch.header();
    let marker = h.is_control() && crate::storage::producers::Marker::of(&batch.view()).is_some();
    if (h.is_control() && !marker) || h.base_offset != UNASSIGNED {
        return Err("a proposed batch must be a batch of records, not yet placed".into());
    }
    Ok(Records(batch.into_bytes()))
}

/// Returns when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Serves node `me`'s groups to its peers on `listener` until `shutdown` turns true.
pub(crate) async fn serve(
    me: NodeId,
    mut listener: impl Listener,
    groups: Arc<Groups>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_CONNECTIONS));
    loop {
        let (reader, writer, from) = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("node {me}: accepting a peer: {e}");
                    tokio::select! {
                        biased;
                        _ = stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            log::warn!("node {me}: refusing a peer link from {from}: {MAX_PEER_CONNECTIONS} are open");
            continue;
        };
        let groups = groups.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_peer(me, (reader, writer), groups, router, shutdown).await {
                log::debug!("node {me}: the peer link from {from}: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_peer(
    me: NodeId,
    (mut reader, mut writer): (ReadHalf, WriteHalf),
    groups: Arc<Groups>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<Message>(&mut reader, MAX_HELLO))
        .await
        .map_err(|_| io::Error::other("no Hello in time"))??;
    let peer = match hello {
        Some(Message::Join(node)) => {
            let answer = groups.admit(me, node).await;
            write_frame(&mut writer, &encode(&Message::Joined(answer))?).await?;
            return Ok(());
        }
        Some(Message::Hello { from, to }) if to == me && from != me && router.knows(from) => from,
        Some(Message::Hello { from, to }) if to == me => {
            return Err(io::Error::other(format!(
                "node {from} is not a node of this cluster"
            )));
        }
        Some(Message::Hello { from, to }) => {
            return Err(io::Error::other(format!(
                "node {from} took this node for node {to}, but it is node {me}"
            )));
        }
        _ => return Err(io::Error::other("a peer link that did not start with Hello")),
    };
    let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
    let writing = tokio::spawn(async move {
        while let Some(bytes) = queue.recv().await {
            if write_frame(&mut writer, &bytes).await.is_err() {
                break;
            }
        }
    });
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let message = tokio::select! {
            biased;
            _ = stopped(&mut shutdown) => None,
            m = read_frame::<Message>(&mut reader, MAX_FRAME) => m?,
        };
        let Some(message) = message else { break };
        let Message::Request { id, group, rpc } = message else {
            return Err(io::Error::other("a peer sent something other than a request"));
        };
        // Past the limit, reading waits for a request to finish.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let groups = groups.clone();
        let out = out.clone();
        tokio::spawn(async move {
            let result = groups.dispatch(peer, group, rpc).await;
            let response = encode(&Message::Response { id, result }).or_else(|e| {
                encode(&Message::Response {
                    id,
                    result: Err(e.to_string()),
                })
            });
            if let Ok(bytes) = response {
                let _ = out.send(bytes);
            }
            drop(permit);
        });
    }
    drop(out);
    writing.abort();
    Ok(())
}
