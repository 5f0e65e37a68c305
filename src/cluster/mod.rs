//! Replication of partitions between embedded instances (feature `cluster`).
//!
//! A [`Cluster`] is one node: a [`Broker`] whose partitions are replicas, kept in step with
//! the other nodes' over a peer link. Each partition is a Raft group (openraft) whose Raft
//! log is the partition's own segment log: one entry per batch, the term stamped into the
//! batch's partition leader epoch. A controller group decides the topics and which nodes
//! hold each partition. An append is acknowledged once a majority of the partition's
//! replicas hold it; consumers see only such records.
//!
//! ```no_run
//! use rivulet::cluster::ClusterBuilder;
//! use rivulet::{Producer, ProducerRecord, TopicConfig};
//!
//! // The same three voters on every node; this is node 1 (nodes 2 and 3 run likewise).
//! let voters = [
//!     (1, "127.0.0.1:19092".parse()?),
//!     (2, "127.0.0.1:19093".parse()?),
//!     (3, "127.0.0.1:19094".parse()?),
//! ];
//! let node = ClusterBuilder::new(1, "/var/lib/app/rivulet")
//!     .peer_listen("127.0.0.1:19092".parse()?)
//!     .voters(voters)
//!     .start()?;
//! node.wait_ready(std::time::Duration::from_secs(30))?;
//! let broker = node.broker();
//! broker.create_topic("orders", 3, TopicConfig::default())?; // on every node
//! Producer::new(broker).send(ProducerRecord::new("orders", b"42"))?; // on a majority
//! node.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The parts of a node:
//!
//! - `raft`: the one place that names openraft's types;
//! - `entry`: entries as Kafka batches (control batches for openraft's own entries);
//! - `log_store`: the log as openraft's log storage, with its entry index and I/O thread;
//! - `state_machine`: commit moves the high watermark; metadata-only snapshots;
//! - `peer`: the peer link, one connection per pair of nodes shared by all groups;
//! - `partition`: one running replica of a partition, and its appends' way to the leader;
//! - `groups`: in-process group members' requests, for the node that coordinates groups;
//! - `controller`: the metadata group, applied to each node's broker.

mod controller;
mod entry;
#[cfg(test)]
mod fifo_watch;
mod groups;
mod log_store;
mod partition;
mod peer;
mod raft;
mod state_machine;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use serde::{Deserialize, Serialize};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

pub use controller::NodeInfo;

use crate::broker::{Broker, BrokerBuilder, Coordinate};
use crate::cluster::controller::{
    Command, Controller, Coordinator, Settings, controller_group, controller_voters,
};
use crate::cluster::log_store::Io;
use crate::cluster::partition::{PartitionReplica, cluster_error, raft_config, run_on};
use crate::cluster::peer::{Groups, MAX_KAFKA_ADDRESS, NotJoined, Router, Welcome};
use crate::cluster::raft::{Node, NodeId};
use crate::cluster::state_machine::ControllerHook;
use crate::config::{Fsync, LogConfig};
use crate::error::{Error, IoContext, Result};
use crate::group::OFFSETS_TOPIC;
use crate::group::offsets::topic_config as offsets_topic_config;
use crate::storage::{PartitionLog, StdFs, meta};

/// The largest node id: the producer ids a node issues end in its id (modulo 1,024).
pub const MAX_NODE_ID: u64 = 1023;

/// The file recording which node a data directory belongs to, and its cluster's voters.
const NODE_FILE: &str = "node.meta";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NodeRecord {
    node_id: u64,
    /// The cluster's founding voters.
    voters: Vec<(u64, SocketAddr)>,
    /// A node that joined the cluster: its peer address (a founder's is in the voters list).
    peer_address: Option<SocketAddr>,
}

/// Starts one node of a cluster.
#[derive(Debug)]
pub struct ClusterBuilder {
    node_id: u64,
    dir: PathBuf,
    peer_listen: Option<SocketAddr>,
    voters: Vec<(u64, SocketAddr)>,
    seeds: Vec<SocketAddr>,
    kafka_address: Option<String>,
    broker: Option<BrokerBuilder>,
    runtime: Option<Handle>,
    replication_factor: usize,
    timing: Timing,
}

/// Raft's timing: how often leaders heartbeat, and how long followers wait before they
/// elect another leader. Give every node of a cluster the same. The defaults suit nodes on one
/// network: heartbeats every 100 ms, an election after 0.5 to 1 s of silence (a failed leader
/// is replaced in about 2 s). Longer timeouts ride out longer pauses (a slow disk, a stalled
/// process) without an election, and make failover slower by as much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often a leader tells its followers it is there.
    pub heartbeat: Duration,
    /// The shortest time a follower waits without hearing from its leader before it stands
    /// for election (each wait is drawn between this and `election_timeout_max`).
    pub election_timeout_min: Duration,
    /// The longest such wait.
    pub election_timeout_max: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(500),
            election_timeout_max: Duration::from_millis(1000),
        }
    }
}

impl Timing {
    /// Refuses timing Raft cannot work with: a heartbeat of at least 1 ms and at most 10 s,
    /// shorter than the shortest election timeout, which is shorter than the longest, at
    /// most 60 s.
    fn check(&self) -> Result<()> {
        let refuse = |reason: &'static str| {
            Err(Error::InvalidArgument {
                name: "timing",
                value: format!("{self:?}"),
                reason,
            })
        };
        if self.heartbeat < Duration::from_millis(1) || self.heartbeat > Duration::from_secs(10) {
            return refuse("the heartbeat is between 1 ms and 10 s");
        }
        if self.election_timeout_min <= self.heartbeat {
            return refuse("the shortest election timeout is longer than the heartbeat");
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return refuse("the longest election timeout is longer than the shortest");
        }
        if self.election_timeout_max > Duration::from_secs(60) {
            return refuse("the longest election timeout is at most 60 s");
        }
        Ok(())
    }
}

impl ClusterBuilder {
    /// Node `node_id` (unique in the cluster, never reused) with its data in `dir`.
    pub fn new(node_id: u64, dir: impl AsRef<Path>) -> ClusterBuilder {
        ClusterBuilder {
            node_id,
            dir: dir.as_ref().to_path_buf(),
            peer_listen: None,
            voters: Vec::new(),
            seeds: Vec::new(),
            kafka_address: None,
            broker: None,
            runtime: None,
            replication_factor: 3,
            timing: Timing::default(),
        }
    }

    /// Raft's timing for every group this node runs (default [`Timing::default`]); give every
    /// node the same.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Where the node listens for its peers (default: its own address in the voters list).
    pub fn peer_listen(mut self, addr: SocketAddr) -> Self {
        self.peer_listen = Some(addr);
        self
    }

    /// The founding nodes and their peer addresses: the same list on every node, this node
    /// among them. A data directory remembers its node id and voters, and refuses others.
    /// The first three founders by id (five, of five or more) vote in the controller's group;
    /// the others follow it as learners (see [`Cluster::controller_quorum`]).
    pub fn voters(mut self, voters: impl IntoIterator<Item = (u64, SocketAddr)>) -> Self {
        self.voters = voters.into_iter().collect();
        self
    }

    /// Joins a running cluster instead of founding one: the peer addresses of some of its
    /// nodes, asked in turn to register this node (which needs its own
    /// [`peer_listen`](ClusterBuilder::peer_listen) address, reachable from them: they check).
    /// Once it has joined, the data directory remembers the cluster and the node's peer
    /// address, and a restart needs neither seeds nor the voters list.
    ///
    /// A node that joins holds replicas of the partitions made after it joined (and of those
    /// whose replica assignments name it); it follows the controller's log without voting
    /// in it. Its id must be new to the cluster.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.seeds = seeds.into_iter().collect();
        self
    }

    /// The `host:port` Kafka clients reach this node at, which the cluster tells them.
    pub fn kafka_address(mut self, addr: impl Into<String>) -> Self {
        self.kafka_address = Some(addr.into());
        self
    }

    /// The node's broker settings (its directory is the cluster's data directory).
    pub fn broker(mut self, configure: impl FnOnce(BrokerBuilder) -> BrokerBuilder) -> Self {
        self.broker = Some(configure(Broker::builder(&self.dir)));
        self
    }

    /// Runs the node's network and Raft tasks on `runtime` (default: a runtime of its own).
    /// `start` and the broker's calls (producers, consumers, admin) wait for those tasks:
    /// make them from threads of your own or the runtime's blocking pool, never from its
    /// worker threads.
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// How many nodes hold each partition of a new topic that asks for no replication factor
    /// of its own ([`TopicConfig::replication_factor`](crate::TopicConfig::replication_factor)):
    /// default 3, at most the number of nodes.
    pub fn replication_factor(mut self, n: usize) -> Self {
        self.replication_factor = n.max(1);
        self
    }

    /// Starts the node: opens its broker, joins its peers, and starts the controller and the
    /// replicas it holds. Returns before the cluster is ready ([`Cluster::wait_ready`]).
    pub fn start(self) -> Result<Cluster> {
        let (own_runtime, handle) = match self.runtime.clone() {
            Some(h) => (None, h),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("rivulet-cluster")
                    .build()
                    .ctx("start", &self.dir.join("cluster"))?;
                let h = rt.handle().clone();
                (Some(rt), h)
            }
        };
        match run_on(&handle, self.start_on(handle.clone(), Seams::tcp())) {
            Ok(cluster) => {
                *cluster.inner.runtime.lock() = own_runtime;
                Ok(cluster)
            }
            Err(e) => {
                // Without waiting (a caller in an async context may not block).
                if let Some(rt) = own_runtime {
                    rt.shutdown_background();
                }
                Err(e)
            }
        }
    }

    /// [`start`](ClusterBuilder::start), on the runtime `handle` names (it runs there), with
    /// `seams` to reach and hear the peers and to run blocking work (the simulation's own).
    pub(crate) async fn start_on(self, handle: Handle, seams: Seams) -> Result<Cluster> {
        let me = self.node_id;
        let bad = |reason: String| Error::Cluster { reason };
        if me > MAX_NODE_ID {
            // Node ids are Kafka broker ids, and end the producer ids a node issues.
            return Err(bad(format!("node ids are at most {MAX_NODE_ID}")));
        }
        if self
            .kafka_address
            .as_ref()
            .is_some_and(|a| a.len() > MAX_KAFKA_ADDRESS)
        {
            return Err(bad(format!(
                "a Kafka address is at most {MAX_KAFKA_ADDRESS} bytes"
            )));
        }
        self.timing.check()?;
        let raft_config = raft_config(&self.timing)?;
        let io = seams.io;
        let cluster_dir = self.dir.join("cluster");
        if !self.voters.is_empty() && !self.seeds.is_empty() {
            return Err(bad("a node takes the voters list or seeds, not both".into()));
        }
        let node_file = cluster_dir.join(NODE_FILE);
        let saved = io
            .blocking(move || meta::read::<NodeRecord>(&node_file))
            .await
            .map_err(cluster_error)??;
        match &saved {
            Some(saved) if saved.node_id != me => {
                return Err(belongs_to_another(&cluster_dir, saved.node_id, me));
            }
            Some(saved) if saved.peer_address.is_some() && !self.voters.is_empty() => {
                return Err(bad(format!(
                    "node {me} joined its cluster: it starts with its data directory alone (or seeds)"
                )));
            }
            Some(saved) if saved.peer_address.is_none() && self.voters.is_empty() => {
                return Err(bad(format!(
                    "node {me} is a founding voter of its cluster: it starts with the voters list"
                )));
            }
            None if self.voters.is_empty() && self.seeds.is_empty() => {
                return Err(bad(
                    "a node needs the voters list (to found a cluster) or seeds (to join one)".into(),
                ));
            }
            _ => {}
        }
        let listen = |addr: SocketAddr| {
            let bound = (seams.bind)(addr);
            async move {
                bound
                    .await
                    .map_err(|e| cluster_error(format!("listening for peers on {addr}: {e}")))
            }
        };
        // Checked before anything is written; recorded once the broker has taken the directory.
        let (own, listener, founders, record, welcome) = if self.voters.is_empty() {
            match saved {
                // It joined before: its record names its address and the cluster's founders.
                Some(NodeRecord {
                    voters,
                    peer_address: Some(own),
                    ..
                }) => (
                    own,
                    listen(self.peer_listen.unwrap_or(own)).await?,
                    voters,
                    None,
                    None,
                ),
                _ => {
                    let own = self
                        .peer_listen
                        .ok_or_else(|| bad("a node that joins needs its peer listen address".into()))?;
                    if own.ip().is_unspecified() || own.port() == 0 {
                        return Err(bad(format!(
                            "a node that joins listens for its peers at an address they can reach, not {own}"
                        )));
                    }
                    // Listening first: the seed checks that it can reach the new node.
                    let listener = listen(own).await?;
                    let node = NodeInfo {
                        id: me,
                        peer_address: own,
                        kafka_address: self.kafka_address.clone(),
                    };
                    let welcome = join(&*seams.transport, &self.seeds, node).await?;
                    let mut founders = welcome.founders.clone();
                    founders.sort_unstable();
                    let record = NodeRecord {
                        node_id: me,
                        voters: founders.clone(),
                        peer_address: Some(own),
                    };
                    (own, listener, founders, Some(record), Some(welcome))
                }
            }
        } else {
            let mut ids: Vec<u64> = self.voters.iter().map(|v| v.0).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != self.voters.len() {
                return Err(bad("the voters list names a node twice".into()));
            }
            if ids.iter().any(|&id| id > MAX_NODE_ID) {
                return Err(bad(format!("node ids are at most {MAX_NODE_ID}")));
            }
            let own = self.voters.iter().find(|v| v.0 == me).map(|v| v.1);
            let Some(own) = own else {
                return Err(bad(format!("node {me} is not in the voters list")));
            };
            let (dir, voters) = (cluster_dir.clone(), self.voters.clone());
            let record = io
                .blocking(move || check_node(&dir, me, &voters))
                .await
                .map_err(cluster_error)??;
            let listener = listen(self.peer_listen.unwrap_or(own)).await?;
            (own, listener, self.voters.clone(), record, None)
        };
        let mut builder = self.broker.unwrap_or_else(|| Broker::builder(&self.dir));
        builder.replicated = true;
        let broker = io
            .blocking(move || builder.open())
            .await
            .map_err(cluster_error)??;
        let dir = cluster_dir.clone();
        let recorded = io
            .blocking(move || {
                std::fs::create_dir_all(&dir)
                    .ctx("create", &dir)
                    .and_then(|()| match record {
                        Some(record) => meta::write(&StdFs, &dir.join(NODE_FILE), &record),
                        None => Ok(()),
                    })
            })
            .await
            .map_err(cluster_error)
            .and_then(|written| written);
        if let Err(e) = recorded {
            close_after_failed_start(&broker, io).await;
            return Err(e);
        }
        let router = Router::with_transport(me, seams.transport.clone());
        for &(id, addr) in &founders {
            router.set_peer(id, addr);
        }
        for node in welcome.iter().flat_map(|w| &w.nodes) {
            router.set_peer(node.id, node.peer_address);
        }
        let groups = Arc::new(Groups::default());
        let made = {
            let (broker, router, groups, handle) =
                (broker.clone(), router.clone(), groups.clone(), handle.clone());
            let state_path = cluster_dir.join("controller.meta");
            let settings = Settings {
                founders: founders.clone(),
                replication_factor: self.replication_factor,
                raft_config: raft_config.clone(),
                io,
            };
            io.blocking(move || Controller::new(me, broker, router, groups, state_path, handle, settings))
                .await
                .map_err(cluster_error)
                .and_then(|made| made)
        };
        let controller = match made {
            Ok(c) => Arc::new(c),
            Err(e) => {
                close_after_failed_start(&broker, io).await;
                return Err(e);
            }
        };
        let (stop, stopped) = watch::channel(false);
        let stop_registering = stop.subscribe();
        let stop_telling = stop.subscribe();
        // The broker defers its topic changes to the cluster before the controller applies
        // any: an entry applied before would take the single node's way.
        let _ = broker
            .inner
            .cluster
            .set(Arc::new(Coordinator(Arc::downgrade(&controller))));
        // Peers dial the address the voters list gives (the listen address may be 0.0.0.0).
        let node = NodeInfo {
            id: me,
            peer_address: own,
            kafka_address: self.kafka_address.clone(),
        };
        let voters = controller_voters(&founders.iter().map(|f| f.0).collect::<Vec<_>>());
        let stop_adding = stop.subscribe();
        let admitting = Arc::downgrade(&controller);
        groups.admit_with(Arc::new(move |node| {
            let controller = admitting.clone();
            Box::pin(async move {
                match controller.upgrade() {
                    Some(c) => c.admit(node).await,
                    None => Err(NotJoined::Unavailable("the node is stopping".into())),
                }
            })
        }));
        let coordinating = Arc::downgrade(&controller);
        groups.coordinate_with(Arc::new(move |call| {
            let coordinator = Coordinator(coordinating.clone());
            Box::pin(async move {
                let Some(broker) = coordinating_broker(&coordinator) else {
                    return Err(groups::GroupRefusal::NotCoordinator);
                };
                groups::serve(broker, || coordinator.coordinates_groups(), call).await
            })
        }));
        let started = {
            let controller = controller.clone();
            let groups = groups.clone();
            let router = router.clone();
            let router_for_peers = router.clone();
            let metadata_dir = cluster_dir.join("metadata");
            // On the broker's file system, as its partitions are.
            let fs = broker.inner.fs();
            async move {
                let (applying, to_apply) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(controller.clone().run(to_apply));
                let log = io
                    .blocking(move || {
                        PartitionLog::builder(&metadata_dir)
                            .config(LogConfig::default().fsync(Fsync::Always))
                            .fs(fs)
                            .replicated()
                            .open()
                    })
                    .await
                    .map_err(cluster_error)??;
                let hook = ControllerHook {
                    applying,
                    saved: controller.saved(),
                };
                let metadata = PartitionReplica::start(
                    me,
                    log,
                    router,
                    controller_group(),
                    Some(hook),
                    (io, raft_config),
                )
                .await?;
                groups.insert(controller_group(), metadata.raft.clone());
                controller.watch_leader(controller_group(), &metadata.raft, voters.clone());
                let raft = metadata.raft.clone();
                let _ = controller.metadata.set(metadata);
                tokio::spawn(peer::serve(me, listener, groups, router_for_peers, stopped));
                tokio::spawn(controller.clone().tell_leading(stop_telling));
                tokio::spawn(controller.clone().add_learners(stop_adding));
                // The controller's voters start its group; the other nodes are added to it
                // as learners by its leader.
                if voters.contains(&me) && !raft.is_initialized().await.map_err(cluster_error)? {
                    let members: BTreeMap<NodeId, Node> =
                        voters.iter().map(|&v| (v, Node::default())).collect();
                    if let Err(e) = raft.initialize(members).await {
                        log::debug!("node {me}: starting the controller group: {e}");
                    }
                }
                for topic in controller.topics() {
                    if let Err(e) = controller.start_replicas(&topic).await {
                        log::error!("node {me}: starting the replicas of {topic}: {e}");
                    }
                }
                // Registered once the controller has a leader (retried until then).
                // The offsets topic is made with the cluster, so that a group's coordinator
                // (the leader of its partition) is known before anyone asks; so is the
                // transactions' state topic.
                let c = controller.clone();
                let mut stopping = stop_registering;
                tokio::spawn(async move {
                    // Until it is registered, however long the others take to come (or until
                    // the node stops).
                    let mut pause = Duration::from_millis(100);
                    loop {
                        match c.submit(Command::RegisterNode(node.clone())).await {
                            Ok(()) => break,
                            Err(e) => log::debug!("node {me}: registering: {e}"),
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = stopping.changed() => return,
                        }
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    match c.create_topic(OFFSETS_TOPIC, 1, offsets_topic_config()).await {
                        Ok(()) | Err(Error::TopicExists { .. }) => {}
                        Err(e) => log::warn!("node {me}: making the offsets topic: {e}"),
                    }
                    // And the transactions' state topic, whose leader coordinates them.
                    let txn = crate::txn::TRANSACTION_STATE_TOPIC;
                    match c.create_topic(txn, 1, crate::txn::topic_config()).await {
                        Ok(()) | Err(Error::TopicExists { .. }) => {}
                        Err(e) => log::warn!("node {me}: making {txn}: {e}"),
                    }
                });
                Ok(())
            }
            .await
        };
        if let Err(e) = started {
            close_after_failed_start(&broker, io).await;
            return Err(e);
        }
        Ok(Cluster {
            inner: Arc::new(ClusterInner {
                me,
                broker,
                controller,
                handle,
                runtime: parking_lot::Mutex::new(None),
                stop,
            }),
        })
    }
}

/// Closes the broker of a node whose start failed (closing syncs: where blocking work runs).
async fn close_after_failed_start(broker: &Broker, io: Io) {
    let closing = broker.clone();
    let _ = io.blocking(move || closing.close()).await;
}

/// Refuses a data directory that belongs to another node or another cluster; for a new one,
/// the record of this node's id and voters to write into it.
fn check_node(dir: &Path, me: u64, voters: &[(u64, SocketAddr)]) -> Result<Option<NodeRecord>> {
    let path = dir.join(NODE_FILE);
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    let record = NodeRecord {
        node_id: me,
        voters: sorted,
        peer_address: None,
    };
    match meta::read::<NodeRecord>(&path)? {
        Some(saved) if saved.node_id != me => Err(belongs_to_another(dir, saved.node_id, me)),
        Some(saved) if saved.voters != record.voters => Err(Error::Cluster {
            reason: format!(
                "{} belongs to a cluster with voters {:?}, not {:?}",
                dir.display(),
                saved.voters,
                record.voters
            ),
        }),
        Some(_) => Ok(None),
        None => Ok(Some(record)),
    }
}

/// The broker of the node `coordinator` belongs to, unless it is stopping.
fn coordinating_broker(coordinator: &Coordinator) -> Option<Broker> {
    coordinator.0.upgrade().map(|c| c.broker().clone())
}

fn belongs_to_another(dir: &Path, owner: u64, me: u64) -> Error {
    Error::Cluster {
        reason: format!("{} belongs to node {owner}, not node {me}", dir.display()),
    }
}

/// How long a node that joins keeps asking its seeds to register it.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);

/// Has one of `seeds` register `node` with its cluster: the seeds are asked in turn until
/// one answers (at most [`JOIN_DEADLINE`]); a refusal is returned at once.
async fn join(transport: &dyn peer::Transport, seeds: &[SocketAddr], node: NodeInfo) -> Result<Welcome> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut last = String::new();
    loop {
        for &seed in seeds {
            let asked = peer::join(transport, seed, node.clone());
            match tokio::time::timeout_at(deadline, asked).await {
                Ok(Ok(Ok(welcome))) => return Ok(welcome),
                Ok(Ok(Err(NotJoined::Refused(why)))) => {
                    return Err(cluster_error(format!("{seed} refused node {}: {why}", node.id)));
                }
                Ok(Ok(Err(NotJoined::Unavailable(why)))) => last = format!("{seed}: {why}"),
                Ok(Err(e)) => last = format!("{seed}: {e}"),
                Err(_) => break,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(cluster_error(format!(
                "no seed registered node {} within {JOIN_DEADLINE:?} (last: {last})",
                node.id
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a node is started with beside its builder's settings: how it reaches its peers, how
/// it listens for them, and where its blocking work runs (a simulation passes its own).
pub(crate) struct Seams {
    pub(crate) transport: Arc<dyn peer::Transport>,
    pub(crate) bind: Bind,
    pub(crate) io: Io,
}

/// Listens for peers at an address.
pub(crate) type Bind =
    Box<dyn Fn(SocketAddr) -> BoxFuture<'static, std::io::Result<Box<dyn peer::Listener>>> + Send + Sync>;

impl Seams {
    /// TCP, and the runtime's blocking pool.
    fn tcp() -> Seams {
        Seams {
            transport: Arc::new(peer::Tcp),
            bind: Box::new(|addr| {
                Box::pin(async move {
                    let listener = tokio::net::TcpListener::bind(addr).await?;
                    Ok(Box::new(listener) as Box<dyn peer::Listener>)
                })
            }),
            io: Io::Threads,
        }
    }
}

/// One node of a cluster. Its [`broker`](Cluster::broker) is used as a single node's is:
/// producers' appends go to each partition's leader (at whichever node it is) and return
/// once a majority holds them; topic changes are decided by the controller and made on every
/// node.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

#[derive(Debug)]
struct ClusterInner {
    me: u64,
    broker: Broker,
    controller: Arc<Controller>,
    handle: Handle,
    runtime: parking_lot::Mutex<Option<Runtime>>,
    stop: watch::Sender<bool>,
}

/// The controller's group as a node sees it: who leads it, in which term, which nodes vote
/// in it and which follow it without voting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerQuorum {
    /// The node that leads the controller's group, if one does.
    pub leader: Option<u64>,
    /// Its term.
    pub term: u64,
    /// The nodes whose votes elect the controller and commit its changes.
    pub voters: Vec<u64>,
    /// The nodes that follow the controller's log without voting.
    pub learners: Vec<u64>,
}

/// The state of one partition's replicas, as a node that holds one sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaState {
    /// The node that leads the partition, if one does.
    pub leader: Option<u64>,
    /// The leader's term: Kafka's leader epoch.
    pub epoch: u64,
    /// The nodes holding the partition.
    pub replicas: Vec<u64>,
    /// The replicas known to hold everything committed (the leader's view; a follower
    /// reports all replicas).
    pub in_sync: Vec<u64>,
}

impl Cluster {
    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.me
    }

    /// The node's broker: topics, producers and consumers work on it as on a single node's.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The nodes that have registered with the cluster.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.inner.controller.nodes()
    }

    /// The controller's group as this node last heard (empty before the node has joined it).
    pub fn controller_quorum(&self) -> ControllerQuorum {
        let Some(metadata) = self.inner.controller.metadata.get() else {
            return ControllerQuorum {
                leader: None,
                term: 0,
                voters: Vec::new(),
                learners: Vec::new(),
            };
        };
        let m = metadata.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        ControllerQuorum {
            leader: m.current_leader,
            term: m.current_term,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Waits until the controller has a leader, this node is registered, and every partition
    /// replica it holds has a leader; at most `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(cluster_error(format!(
                    "the cluster was not ready within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ready(&self) -> Result<bool> {
        let c = self.inner.controller.clone();
        let me = self.inner.me;
        run_on(&self.inner.handle, async move {
            let Some(metadata) = c.metadata.get() else {
                return Ok(false);
            };
            if metadata.raft.current_leader().await.is_none() || !c.nodes().iter().any(|n| n.id == me) {
                return Ok(false);
            }
            for raft in c.rafts().await {
                if raft.current_leader().await.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// The replicas of a partition, as this node last heard: leader, epoch, replicas, in sync
    /// (the leader's view; a follower reports every replica in sync). A node that holds no
    /// replica reports what the leader last told it (each leader tells the other nodes every
    /// second).
    pub fn replica_state(&self, topic: &str, partition: u32) -> Result<ReplicaState> {
        let group = self.inner.controller.group_of(topic, partition);
        let Some(p) = group.and_then(|g| self.inner.controller.placement(&g)) else {
            return match self.inner.controller.assignment(topic, partition) {
                Some(_) => Err(cluster_error(format!(
                    "node {} holds no replica of {topic}-{partition}",
                    self.inner.me
                ))),
                None => Err(Error::UnknownTopic {
                    topic: topic.to_string(),
                }),
            };
        };
        Ok(ReplicaState {
            leader: p.leader,
            epoch: p.epoch,
            replicas: p.replicas,
            in_sync: p.in_sync,
        })
    }

    /// Stops the node: its replicas, its peer link and its broker. The other nodes carry on
    /// (a majority of each group's replicas keeps it available).
    pub fn shutdown(&self) -> Result<()> {
        let _ = self.inner.stop.send(true);
        let c = self.inner.controller.clone();
        let stopped = run_on(&self.inner.handle, async move {
            c.stop_all().await;
            Ok(())
        });
        let closed = self.inner.broker.close();
        if let Some(rt) = self.inner.runtime.lock().take() {
            rt.shutdown_background();
        }
        stopped.and(closed)
    }
}
